rule directions:
    input:
        store=layout.activations(),
    output:
        directions=layout.directions(),
    log:
        "logs/{seed}directions/{model}/{ft}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        dir_cfg=config["directions"],
        stats_cfg=config["stats"],
    script:
        "../scripts/directions.py"
