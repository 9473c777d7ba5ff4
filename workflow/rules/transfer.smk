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
        donor_controls=donor_control_directions,
        transfer_cfg=transfer_steer_settings(),
        sampling_cfg=config["sampling"],
    script:
        "../scripts/transfer.py"


# Per receiver, shared by its whole column: receiver-space controls and its own direction.
rule transfer_reference:
    input:
        unpack(receiver_inputs),
    output:
        vectors=expand(
            "results/transfer_reference/{{receiver}}/{vector}.jsonl",
            vector=REFERENCE_VECTORS,
        ),
    log:
        "logs/transfer_reference/{receiver}.log",
    benchmark:
        "benchmarks/out/transfer_reference/{receiver}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        vectors=REFERENCE_VECTORS,
        layer=lambda wc: model_layer(wc.receiver),
        transfer_cfg=transfer_steer_settings(),
        sampling_cfg=config["sampling"],
    script:
        "../scripts/transfer_reference.py"
