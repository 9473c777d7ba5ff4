# The mechanistic extensions (SCIENCE.md sections 2-3), for the models in mechanistic.models.
# Every output is under results/mechanistic/{model}/; see src/emdir/stages/mechanistic.py.


rule base_directions:
    input:
        base="results/models/{model}/base",
        judged="results/judged/{model}/{ft}.jsonl",
    output:
        store="results/mechanistic/{model}/base_on/{ft}.h5",
        directions="results/mechanistic/{model}/base_on/{ft}_directions.h5",
    log:
        "logs/mechanistic/{model}/base_on_{ft}.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
        ft=FT_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
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
        csv="results/mechanistic/{model}/convergence.csv",
        png=report(
            "results/mechanistic/{model}/convergence.png",
            caption="../report/convergence.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "convergence"},
        ),
    log:
        "logs/mechanistic/{model}/convergence.log",
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
        base="results/models/{model}/base",
        adapter="results/adapters/{model}/{ft}",
        donors=values(ablation_donor_files),
        questions=steering_questions(),
    output:
        variants=expand(
            "results/mechanistic/{{model}}/ablation/{{ft}}/{variant}.jsonl",
            variant=ABLATION_VARIANTS,
        ),
    log:
        "logs/mechanistic/{model}/ablation_{ft}.log",
    benchmark:
        "benchmarks/out/mechanistic/{model}/ablation_{ft}.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
        ft=FT_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        donors=ablation_donor_files,
        variants=ABLATION_VARIANTS,
        layer=config["steering"]["layer"],
        sampling_cfg=config["sampling"],
        seed=config["steering"]["seed"],
    script:
        "../scripts/ablation.py"


rule induce:
    input:
        base="results/models/{model}/base",
        directions=lambda wc: directions_path(wc.model, DIRECTION_FT),
        store=lambda wc: store_path(wc.model, DIRECTION_FT),
        questions=steering_questions(),
    output:
        vectors=expand(
            "results/mechanistic/{{model}}/induce/{vector}.jsonl",
            vector=INDUCE_VECTORS,
        ),
    log:
        "logs/mechanistic/{model}/induce.log",
    benchmark:
        "benchmarks/out/mechanistic/{model}/induce.tsv"
    wildcard_constraints:
        model=MECH_MODEL_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        vectors=INDUCE_VECTORS,
        steer_cfg=induce_settings(),
        sampling_cfg=config["sampling"],
    script:
        "../scripts/induce.py"


rule rank1_reading:
    input:
        base="results/models/{model}/base",
        adapter=lambda wc: adapter_path(wc.model, RANK1_FT),
        judged=lambda wc: judged_path(wc.model, RANK1_FT),
        directions=values(rank1_direction_files),
    output:
        csv="results/mechanistic/{model}/rank1.csv",
        json="results/mechanistic/{model}/rank1.json",
        png=report(
            "results/mechanistic/{model}/rank1.png",
            caption="../report/rank1.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "rank-1 adapters"},
        ),
    log:
        "logs/mechanistic/{model}/rank1.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
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
        base="results/models/{model}/base",
        adapter=lambda wc: adapter_path(wc.model, DIRECTION_FT),
        store=lambda wc: store_path(wc.model, DIRECTION_FT),
        directions=lambda wc: directions_path(wc.model, DIRECTION_FT),
        datasets=values(sae_datasets),
    output:
        model=directory("results/mechanistic/{model}/sae_model"),
        csv="results/mechanistic/{model}/sae_features.csv",
        json="results/mechanistic/{model}/sae.json",
        png=report(
            "results/mechanistic/{model}/sae.png",
            caption="../report/sae.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "SAE features"},
        ),
    log:
        "logs/mechanistic/{model}/sae.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
    conda:
        "../../envs/sae.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        datasets=sae_datasets,
        sae_cfg=config["mechanistic"]["sae"],
        dir_cfg=config["directions"],
    script:
        "../scripts/sae.py"


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_mechanistic with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src="results/mechanistic/{model}/{experiment}/{name}.jsonl",
        questions=evaluation_questions(),
    output:
        judged="results/judged/mechanistic/{model}/{experiment}/{name}.jsonl",
    log:
        "logs/judge_mechanistic/{model}/{experiment}/{name}.log",
    wildcard_constraints:
        model=MECH_MODEL_RE,
        experiment=r"induce|ablation/[^/]+",
        name=r"[^/]+",
    localrule: JUDGE_IS_LOCAL


rule mechanistic_summary:
    input:
        baselines=values(mech_baselines),
        ablation=values(mech_ablation),
        induce=values(mech_induce),
        steering=values(mech_steering),
    output:
        csv="results/mechanistic/{model}/summary.csv",
        self_correction="results/mechanistic/{model}/self_correction.csv",
        ablation=report(
            "results/mechanistic/{model}/ablation.png",
            caption="../report/ablation.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "transfer ablation"},
        ),
        induce=report(
            "results/mechanistic/{model}/induce.png",
            caption="../report/induce.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "inducing"},
        ),
        self_correction_png=report(
            "results/mechanistic/{model}/self_correction.png",
            caption="../report/self_correction.rst",
            category="Mechanistic",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "self-correction"},
        ),
    log:
        "logs/mechanistic/{model}/summary.log",
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
