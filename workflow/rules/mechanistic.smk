# The mechanistic extensions (SCIENCE.md sections 2-3), for the models in mechanistic.models.
# Every output is under results/mechanistic/{model}/; see src/emdir/stages/mechanistic.py.

from emdir.settings import induce_settings


include: "functions/mechanistic.smk"


rule base_directions:
    input:
        base=layout.base_model(),
        judged=layout.judged(),
    output:
        store=layout.base_on_store(),
        directions=layout.base_on_directions(),
    log:
        "logs/{seed}mechanistic/{model}/base_on_{ft}.log",
    benchmark:
        "benchmarks/out/{seed}mechanistic/{model}/base_on_{ft}.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
        ft=FT_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        dir_cfg=config["directions"],
        act_cfg=config["activations"],
        stats_cfg=config["stats"],
    script:
        "../scripts/base_directions.py"


rule convergence:
    input:
        fts=values(convergence_fts),
        bases=values(convergence_bases),
    output:
        csv=layout.CONVERGENCE["csv"],
        png=report(
            layout.CONVERGENCE["png"],
            caption="../report/convergence.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "convergence"},
        ),
    log:
        "logs/{seed}mechanistic/{model}/convergence.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        fts=convergence_fts,
        bases=convergence_bases,
    script:
        "../scripts/convergence.py"


rule ablation:
    input:
        base=layout.base_model(),
        adapter=layout.adapter(),
        donors=values(ablation_donor_files),
        questions=layout.questions(config["steering"]["question_set"]),
    output:
        variants=expand(
            layout.ablation(), variant=ABLATION_VARIANTS, allow_missing=True
        ),
    log:
        "logs/{seed}mechanistic/{model}/ablation_{ft}.log",
    benchmark:
        "benchmarks/out/{seed}mechanistic/{model}/ablation_{ft}.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
        ft=FT_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=120,
    params:
        donors=ablation_donor_files,
        variants=ABLATION_VARIANTS,
        layer=config["steering"]["layer"],
        sampling_cfg=sampling_cfg,
        seed=config["steering"]["seed"],
    script:
        "../scripts/ablation.py"


rule induce:
    input:
        base=layout.base_model(),
        directions=for_model(layout.directions, DIRECTION_FT),
        store=for_model(layout.activations, DIRECTION_FT),
        questions=layout.questions(config["steering"]["question_set"]),
    output:
        vectors=expand(layout.induce(), vector=INDUCE_VECTORS, allow_missing=True),
    log:
        "logs/{seed}mechanistic/{model}/induce.log",
    benchmark:
        "benchmarks/out/{seed}mechanistic/{model}/induce.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=120,
    params:
        vectors=INDUCE_VECTORS,
        steer_cfg=induce_settings(config),
        sampling_cfg=sampling_cfg,
    script:
        "../scripts/induce.py"


rule rank1_reading:
    input:
        base=layout.base_model(),
        adapter=for_model(layout.adapter, RANK1_FT),
        judged=for_model(layout.judged, RANK1_FT),
        directions=values(rank1_direction_files),
    output:
        csv=layout.RANK1["csv"],
        json=layout.RANK1["json"],
        png=report(
            layout.RANK1["png"],
            caption="../report/rank1.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "rank-1 adapters"},
        ),
    log:
        "logs/{seed}mechanistic/{model}/rank1.log",
    benchmark:
        "benchmarks/out/{seed}mechanistic/{model}/rank1.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        ft=RANK1_FT,
        directions=rank1_direction_files,
        rank_cfg=config["mechanistic"]["rank1"],
        dir_cfg=config["directions"],
        batch_size=config["activations"]["batch_size"],
    script:
        "../scripts/rank1.py"


rule sae:
    input:
        base=layout.base_model(),
        adapter=for_model(layout.adapter, DIRECTION_FT),
        store=for_model(layout.activations, DIRECTION_FT),
        directions=for_model(layout.directions, DIRECTION_FT),
        datasets=values(sae_datasets),
    output:
        model=directory(layout.SAE_MODEL),
        csv=layout.SAE["csv"],
        json=layout.SAE["json"],
        png=report(
            layout.SAE["png"],
            caption="../report/sae.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "SAE features"},
        ),
    log:
        "logs/{seed}mechanistic/{model}/sae.log",
    benchmark:
        "benchmarks/out/{seed}mechanistic/{model}/sae.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
    conda:
        "../../envs/sae.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        datasets=sae_datasets,
        sae_cfg=config["mechanistic"]["sae"],
        dir_cfg=config["directions"],
    script:
        "../scripts/sae.py"


# One judge job per generating job: an ablation job's variants, the induce job's vectors.
# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_mechanistic with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=expand(layout.ablation(), variant=ABLATION_VARIANTS, allow_missing=True),
        questions=evaluation_questions(),
    output:
        judged=expand(
            layout.judged_copy(layout.ablation()),
            variant=ABLATION_VARIANTS,
            allow_missing=True,
        ),
    log:
        "logs/{seed}judge_mechanistic/{model}/ablation_{ft}.log",
    benchmark:
        "benchmarks/out/{seed}judge_mechanistic/{model}/ablation_{ft}.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
        ft=FT_RE,
    localrule: JUDGE_IS_LOCAL


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_induce with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=expand(layout.induce(), vector=INDUCE_VECTORS, allow_missing=True),
        questions=evaluation_questions(),
    output:
        judged=expand(
            layout.judged_copy(layout.induce()),
            vector=INDUCE_VECTORS,
            allow_missing=True,
        ),
    log:
        "logs/{seed}judge_mechanistic/{model}/induce.log",
    benchmark:
        "benchmarks/out/{seed}judge_induce/{model}.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
    localrule: JUDGE_IS_LOCAL


rule mechanistic_summary:
    input:
        baselines=values(mech_baselines),
        ablation=values(mech_ablation),
        induce=values(mech_induce),
        steering=values(mech_steering),
    output:
        csv=layout.MECHANISTIC_SUMMARY["csv"],
        self_correction=layout.MECHANISTIC_SUMMARY["self_correction"],
        ablation=report(
            layout.MECHANISTIC_SUMMARY["ablation"],
            caption="../report/ablation.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "transfer ablation"},
        ),
        induce=report(
            layout.MECHANISTIC_SUMMARY["induce"],
            caption="../report/induce.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "inducing"},
        ),
        self_correction_png=report(
            layout.MECHANISTIC_SUMMARY["self_correction_png"],
            caption="../report/self_correction.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "self-correction"},
        ),
    log:
        "logs/{seed}mechanistic/{model}/summary.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        baselines=mech_baselines,
        ablation=mech_ablation,
        induce=mech_induce,
        steering=mech_steering,
        question_set=config["steering"]["question_set"],
        stats_cfg=config["stats"],
        sc_cfg=config["mechanistic"]["self_correction"],
    script:
        "../scripts/mechanistic_summary.py"


# One mechanistic model's ablation, inducing and convergence tables pooled over the
# fine-tuning seeds (only with more than one seed).
rule pooled_mechanistic:
    input:
        files=pooled_mech_files,
        summaries=expand(
            layout.MECHANISTIC_SUMMARY["csv"], seed=SEED_DIRS, allow_missing=True
        ),
        convergence=expand(
            layout.CONVERGENCE["csv"], seed=SEED_DIRS, allow_missing=True
        ),
    output:
        summary=layout.POOLED_MECHANISTIC["summary"],
        convergence=layout.POOLED_MECHANISTIC["convergence"],
    log:
        "logs/pooled/mechanistic/{model}.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        seeds=SEEDS,
        baselines=pooled_mech(mech_baselines),
        ablation=pooled_mech(mech_ablation),
        induce=pooled_mech(mech_induce),
        directions=pooled_mech(convergence_fts),
        question_set=config["steering"]["question_set"],
        stats_cfg=config["stats"],
    script:
        "../scripts/pooled_mechanistic.py"
