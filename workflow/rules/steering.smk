rule steering:
    input:
        unpack(model_inputs),
        directions="results/directions/{model}/{ft}.h5",
        store="results/activations/{model}/{ft}.h5",
        questions=steering_questions(),
    output:
        vectors=expand(
            "results/steering/{{model}}/{{ft}}/{vector}.jsonl", vector=STEERING_VECTORS
        ),
    log:
        "logs/steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/steering/{model}/{ft}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        vectors=STEERING_VECTORS,
        steer_cfg=config["steering"],
        sampling_cfg=config["sampling"],
    script:
        "../scripts/steering.py"
