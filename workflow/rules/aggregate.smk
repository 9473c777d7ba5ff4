from emdir.settings import transfer_steer_settings


include: "functions/aggregate.smk"


# The fine-tunes' own tables, from their judged answers alone: spillover per model x
# fine-tune and the fine-tunes against each other (is the spillover about the set's content
# or about fine-tuning on code?). A target that needs no directions or steering.
rule finetune_summary:
    input:
        generations=values(summary_generations),
    output:
        spillover=layout.WITHIN_MODEL["spillover"],
        contrasts=layout.WITHIN_MODEL["contrasts"],
    log:
        "logs/{seed}finetune_summary.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        generations=summary_generations,
        question_set=config["steering"]["question_set"],
        stats_cfg=config["stats"],
        direction_ft=DIRECTION_FT,
        code_sets=code_question_sets(),
    script:
        "../scripts/finetune_summary.py"


rule within_model_summary:
    input:
        generations=values(summary_generations),
        steering=values(summary_steering),
        directions=values(summary_directions),
    output:
        summary=layout.WITHIN_MODEL["summary"],
        calibration=layout.WITHIN_MODEL["calibration"],
        steering=report(
            layout.WITHIN_MODEL["steering"],
            caption="../report/steering.rst",
            category="Within-model",
            labels={"figure": "steering"},
        ),
        separation=report(
            layout.WITHIN_MODEL["separation"],
            caption="../report/separation.rst",
            category="Within-model",
            labels={"figure": "separation"},
        ),
        projections=report(
            layout.WITHIN_MODEL["projections"],
            caption="../report/projections.rst",
            category="Within-model",
            labels={"figure": "projections"},
        ),
        cosine=report(
            layout.WITHIN_MODEL["cosine"],
            caption="../report/cosine_layers.rst",
            category="Within-model",
            labels={"figure": "cosine across layers"},
        ),
        comparison=layout.WITHIN_MODEL["comparison"],
        comparison_png=report(
            layout.WITHIN_MODEL["comparison_png"],
            caption="../report/paper_comparison.rst",
            category="Within-model",
            labels={"figure": "paper comparison"},
        ),
    log:
        "logs/{seed}within_model_summary.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        generations=summary_generations,
        steering=summary_steering,
        directions=summary_directions,
        steer_cfg=config["steering"],
        stats_cfg=config["stats"],
        direction_ft=DIRECTION_FT,
        config_files=CONFIG_FILES,
    script:
        "../scripts/within_model_summary.py"


# One model's read strength (steering.read), which the grid steers its receivers at when
# transfer.coefficient is `read`.
rule read_strength:
    input:
        baseline=for_model(layout.judged, DIRECTION_FT),
        steering=values(model_steering),
    output:
        json=layout.read_strength(),
    log:
        "logs/{seed}read_strength/{model}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        steering=model_steering,
        steer_cfg=config["steering"],
        stats_cfg=config["stats"],
    script:
        "../scripts/read_strength.py"


rule transfer_matrix:
    input:
        baselines=values(matrix_baselines),
        cells=values(matrix_cells),
        references=values(matrix_references),
        maps=values(matrix_maps),
        rates=layout.WITHIN_MODEL["spillover"],
    output:
        csv=layout.TRANSFER_MATRIX["csv"],
        png=report(
            layout.TRANSFER_MATRIX["png"],
            caption="../report/transfer_matrix.rst",
            category="Transfer",
            labels={"figure": "transfer matrix"},
        ),
        topology=layout.TRANSFER_MATRIX["topology"],
        asymmetry=report(
            layout.TRANSFER_MATRIX["asymmetry"],
            caption="../report/transfer_asymmetry.rst",
            category="Transfer",
            labels={"figure": "donor strength and receiver susceptibility"},
        ),
    log:
        "logs/{seed}transfer_matrix.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        baselines=matrix_baselines,
        cells=matrix_cells,
        references=matrix_references,
        maps=matrix_maps,
        transfer_cfg={
            **transfer_steer_settings(config),
            "behaviour": config["steering"]["behaviour"],
        },
        stats_cfg=config["stats"],
    script:
        "../scripts/transfer_matrix.py"


rule provenance:
    input:
        FINAL_OUTPUTS,
    output:
        json=layout.PROVENANCE,
    log:
        "logs/provenance.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        config_files=CONFIG_FILES,
    script:
        "../scripts/provenance.py"


rule training_curves:
    input:
        bases=values(training_bases),
        adapters=values(training_adapters),
    output:
        csv=layout.TRAINING["csv"],
        png=report(
            layout.TRAINING["png"],
            caption="../report/training_curves.rst",
            category="Training",
            labels={"figure": "training curves"},
        ),
        # one figure per fine-tune: <model>/<ft>.png
        finetunes=directory(layout.TRAINING_FINETUNES),
    log:
        "logs/{seed}training_curves.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        bases=training_bases,
        adapters=training_adapters,
    script:
        "../scripts/training_curves.py"


# The fine-tunes' tables pooled over the fine-tuning seeds (only with more than one seed):
# every seed's rows and the pooled ones, intervals over seeds and questions. Needs only the
# fine-tunes' answers: the cheapest target whose verdicts hold across seeds.
rule pooled_finetunes:
    input:
        generations=flat(pooled_generations),
        spillover=per_seed_table(layout.WITHIN_MODEL["spillover"]),
    output:
        spillover=layout.POOLED["spillover"],
        contrasts=layout.POOLED["contrasts"],
    log:
        "logs/pooled_finetunes.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seeds=SEEDS,
        generations=pooled_generations,
        question_set=config["steering"]["question_set"],
        stats_cfg=config["stats"],
        direction_ft=DIRECTION_FT,
    script:
        "../scripts/pooled_finetunes.py"


# The within-model tables pooled over the fine-tuning seeds (only with more than one seed):
# every seed's rows and the pooled ones, intervals over seeds and questions.
rule pooled_within_model:
    input:
        generations=flat(pooled_generations),
        steering=flat(pooled_steering),
        directions=flat(pooled_directions),
        summaries=per_seed_table(layout.WITHIN_MODEL["summary"]),
        rates=layout.POOLED["spillover"],
    output:
        summary=layout.POOLED["summary"],
        steering=report(
            layout.POOLED["steering"],
            caption="../report/steering.rst",
            category="Within-model",
            labels={"figure": "steering, pooled over seeds"},
        ),
        comparison=layout.POOLED["comparison"],
        comparison_png=report(
            layout.POOLED["comparison_png"],
            caption="../report/paper_comparison.rst",
            category="Within-model",
            labels={"figure": "paper comparison, pooled over seeds"},
        ),
    log:
        "logs/pooled_within_model.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        seeds=SEEDS,
        generations=pooled_generations,
        steering=pooled_steering,
        directions=pooled_directions,
        steer_cfg=config["steering"],
        stats_cfg=config["stats"],
        direction_ft=DIRECTION_FT,
        config_files=CONFIG_FILES,
    script:
        "../scripts/pooled_within_model.py"


# One seed's inputs to the two rules above, for pooling on another machine (emdir.carry):
# its judged answers without their text, its directions and its own tables, with a manifest.
# Commit the folder and name it in finetune.carried where the seeds are pooled.
rule carry_seed:
    input:
        carry_files,
    output:
        directory(layout.CARRIED),
    log:
        "logs/carry_seed{n}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seed_dir=lambda wildcards: layout.replicate(wildcards.n),
        study=study_config(config),
        scope="study",
    script:
        "../scripts/carry_seed.py"


# Seed n's fine-tunes only (emdir.carry): their judged answers without text and the seed's
# fine-tune tables, for pooling the fine-tune tables where the seed's steering sweep was not
# run. The pooled within-model tables refuse such a seed.
use rule carry_seed as carry_finetunes with:
    input:
        carry_finetune_files,
    output:
        directory(layout.CARRIED_FINETUNES),
    log:
        "logs/carry_finetunes{n}.log",
    params:
        scope="finetunes",


# The grid pooled over the fine-tuning seeds (only with more than one seed).
rule pooled_transfer_matrix:
    input:
        baselines=flat(pooled_baselines),
        cells=flat(pooled_cells),
        references=flat(pooled_references),
        maps=flat(pooled_maps),
        per_seed=expand(layout.TRANSFER_MATRIX["csv"], seed=SEED_DIRS),
    output:
        csv=layout.POOLED["grid"],
        png=report(
            layout.POOLED["grid_png"],
            caption="../report/transfer_matrix.rst",
            category="Transfer",
            labels={"figure": "transfer matrix, pooled over seeds"},
        ),
        topology=layout.POOLED["topology"],
    log:
        "logs/pooled_transfer_matrix.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        seeds=SEEDS,
        baselines=pooled_baselines,
        cells=pooled_cells,
        references=pooled_references,
        maps=pooled_maps,
        transfer_cfg={
            **transfer_steer_settings(config),
            "behaviour": config["steering"]["behaviour"],
        },
        stats_cfg=config["stats"],
    script:
        "../scripts/pooled_transfer_matrix.py"


# This run's tables (the first seed's) against a reference folder (config `reference`), on
# demand: snakemake results/reference_check.csv
rule reference_check:
    input:
        run=[
            layout.WITHIN_MODEL["spillover"].format(seed=SEED_DIRS[0]),
            layout.WITHIN_MODEL["summary"].format(seed=SEED_DIRS[0]),
            layout.WITHIN_MODEL["contrasts"].format(seed=SEED_DIRS[0]),
            layout.TRANSFER_MATRIX["csv"].format(seed=SEED_DIRS[0]),
        ],
        # With more than one seed, the pooled tables are checked too.
        pooled=(
            [layout.POOLED[k] for k in ("spillover", "contrasts", "summary", "grid")]
            if len(SEEDS) > 1
            else []
        ),
        reference=reference_tables,
    output:
        csv=layout.REFERENCE_CHECK["csv"],
        txt=layout.REFERENCE_CHECK["txt"],
    log:
        "logs/reference_check.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        # The folder of the run's tables: spillover_rates.csv's.
        run_dir=lambda wildcards, input: str(Path(input.run[0]).parent),
        reference=reference_dir(),
    script:
        "../scripts/reference_check.py"
