rule within_model_summary:
    input:
        generations=values(summary_generations),
        steering=values(summary_steering),
        directions=values(summary_directions),
    output:
        summary="results/within_model/summary.csv",
        calibration="results/within_model/calibration.csv",
        spillover="results/spillover_rates.csv",
        steering=report(
            "results/within_model/steering.png",
            caption="../report/steering.rst",
            category="Within-model",
            labels={"figure": "steering"},
        ),
        separation=report(
            "results/within_model/separation.png",
            caption="../report/separation.rst",
            category="Within-model",
            labels={"figure": "separation"},
        ),
        projections=report(
            "results/within_model/projections.png",
            caption="../report/projections.rst",
            category="Within-model",
            labels={"figure": "projections"},
        ),
        cosine=report(
            "results/within_model/cosine_layers.png",
            caption="../report/cosine_layers.rst",
            category="Within-model",
            labels={"figure": "cosine across layers"},
        ),
        comparison="results/within_model/paper_comparison.csv",
        comparison_png=report(
            "results/within_model/paper_comparison.png",
            caption="../report/paper_comparison.rst",
            category="Within-model",
            labels={"figure": "paper comparison"},
        ),
    log:
        "logs/within_model_summary.log",
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
        code_sets=[
            q for q, s in config["questions"].items() if s.get("generator") == "code"
        ],
    script:
        "../scripts/within_model_summary.py"


# One model's read strength (steering.read), which the grid steers its receivers at when
# transfer.coefficient is `read`.
rule read_strength:
    input:
        baseline=model_baseline,
        steering=values(model_steering),
    output:
        json="results/calibration/{model}.json",
    log:
        "logs/read_strength/{model}.log",
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
        rates="results/spillover_rates.csv",
    output:
        csv="results/transfer_matrix.csv",
        png=report(
            "results/transfer_matrix.png",
            caption="../report/transfer_matrix.rst",
            category="Transfer",
            labels={"figure": "transfer matrix"},
        ),
        topology="results/transfer_topology.csv",
        asymmetry=report(
            "results/transfer_asymmetry.png",
            caption="../report/transfer_asymmetry.rst",
            category="Transfer",
            labels={"figure": "donor strength and receiver susceptibility"},
        ),
    log:
        "logs/transfer_matrix.log",
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
            **transfer_steer_settings(),
            "behaviour": config["steering"]["behaviour"],
        },
        stats_cfg=config["stats"],
    script:
        "../scripts/transfer_matrix.py"


rule provenance:
    input:
        FINAL_OUTPUTS,
    output:
        json="results/provenance.json",
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
        csv="results/training/summary.csv",
        png=report(
            "results/training/curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"figure": "training curves"},
        ),
    log:
        "logs/training_curves.log",
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
