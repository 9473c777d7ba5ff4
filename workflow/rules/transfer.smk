rule transfer:
    input:
        unpack(transfer_inputs),
    output:
        vectors=expand(
            "results/transfer/{{donor}}__{{receiver}}/{vector}.jsonl",
            vector=TRANSFER_VECTORS,
        ),
    log:
        "logs/transfer/{donor}__{receiver}.log",
    benchmark:
        "benchmarks/out/transfer/{donor}__{receiver}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        vectors=TRANSFER_VECTORS,
        transfer_cfg=config["transfer"],
        sampling_cfg=config["sampling"],
    script:
        "../scripts/transfer.py"
