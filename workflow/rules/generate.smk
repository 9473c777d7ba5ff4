rule generate:
    input:
        unpack(model_inputs),
        questions=evaluation_questions(),
    output:
        jsonl=layout.generations(),
    log:
        "logs/generate/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/generate/{model}/{ft}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        sampling_cfg=config["sampling"],
    script:
        "../scripts/generate.py"
