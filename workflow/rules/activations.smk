rule activations:
    input:
        unpack(model_inputs),
        judged=layout.judged(),
    output:
        store=layout.activations(),
    log:
        "logs/{seed}activations/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}activations/{model}/{ft}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        dir_cfg=config["directions"],
        act_cfg=config["activations"],
    script:
        "../scripts/activations.py"
