rule generate:
    input:
        unpack(model_inputs),
        questions=evaluation_questions(),
    output:
        jsonl=layout.generations(),
    log:
        "logs/{seed}generate/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}generate/{model}/{ft}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        sampling_cfg=sampling_cfg,
    script:
        "../scripts/generate.py"
