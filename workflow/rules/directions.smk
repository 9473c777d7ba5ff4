rule directions:
    input:
        store="results/activations/{model}/{ft}.h5",
    output:
        directions="results/directions/{model}/{ft}.h5",
    log:
        "logs/directions/{model}/{ft}.log",
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
