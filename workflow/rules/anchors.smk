include: "functions/anchors.smk"


rule anchor_answers:
    input:
        judged=expand(layout.judged(ft=TRANSFER_FT), model=MODELS),
    output:
        texts=layout.ANCHOR_ANSWERS,
    log:
        "logs/anchor_answers.log",
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
        "logs/anchors/{model}.log",
    benchmark:
        "benchmarks/out/anchors/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=60,
    script:
        "../scripts/anchors.py"
