rule anchors:
    input:
        unpack(anchor_inputs),
    output:
        anchors="results/anchors/{model}.h5",
    log:
        "logs/anchors/{model}.log",
    benchmark:
        "benchmarks/out/anchors/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        transfer_cfg=config["transfer"],
    script:
        "../scripts/anchors.py"
