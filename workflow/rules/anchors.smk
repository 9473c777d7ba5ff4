include: "functions/anchors.smk"


rule anchor_answers:
    input:
        judged=expand(layout.judged(ft=TRANSFER_FT), model=MODELS, allow_missing=True),
    output:
        texts=layout.anchor_answers(),
    log:
        "logs/{seed}anchor_answers.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/anchor_answers.py"


rule anchors:
    input:
        unpack(anchor_inputs),
    output:
        anchors=layout.anchors(),
    log:
        "logs/{seed}anchors/{model}.log",
    benchmark:
        "benchmarks/out/{seed}anchors/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    script:
        "../scripts/anchors.py"
