from emdir.settings import transfer_steer_settings


include: "functions/transfer.smk"


rule transfer:
    input:
        unpack(transfer_inputs),
    output:
        vectors=expand(layout.transfer(), vector=TRANSFER_VECTORS, allow_missing=True),
    log:
        "logs/{seed}transfer/{donor}__{receiver}.log",
    benchmark:
        "benchmarks/out/{seed}transfer/{donor}__{receiver}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=120,
    params:
        vectors=TRANSFER_VECTORS,
        donor_controls=donor_control_directions,
        transfer_cfg=transfer_steer_settings(config),
        sampling_cfg=sampling_cfg,
    script:
        "../scripts/transfer.py"


# Per receiver, shared by its whole column: receiver-space controls and its own direction.
rule transfer_reference:
    input:
        unpack(receiver_inputs),
    output:
        vectors=expand(
            layout.transfer_reference(), vector=REFERENCE_VECTORS, allow_missing=True
        ),
    log:
        "logs/{seed}transfer_reference/{receiver}.log",
    benchmark:
        "benchmarks/out/{seed}transfer_reference/{receiver}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    params:
        vectors=REFERENCE_VECTORS,
        layer=receiver_layer,
        transfer_cfg=transfer_steer_settings(config),
        sampling_cfg=sampling_cfg,
    script:
        "../scripts/transfer_reference.py"
