rule download:
    output:
        jsonl="resources/downloads/{dataset}.jsonl",
    log:
        "logs/download/{dataset}.log",
    wildcard_constraints:
        dataset=URL_DATASET_RE,
    # Compute nodes are often offline: downloads run where Snakemake runs.
    localrule: True
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        url=lookup(dpath="datasets/{dataset}/url", within=config),
        sha256=lambda wc: config["datasets"][wc.dataset].get("sha256"),
        key=lambda wc: f"datasets.{wc.dataset}",
    script:
        "../scripts/download.py"


rule data:
    input:
        unpack(dataset_source),
    output:
        jsonl="resources/data/{dataset}.jsonl",
    log:
        "logs/data/{dataset}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spec=lookup(dpath="datasets/{dataset}", within=config),
    script:
        "../scripts/data.py"


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule download as download_questions with:
    output:
        yaml="resources/downloads/questions/{qset}.yaml",
    log:
        "logs/download/questions/{qset}.log",
    wildcard_constraints:
        qset=URL_QSET_RE,
    localrule: True
    params:
        url=lookup(dpath="questions/{qset}/url", within=config),
        sha256=lambda wc: config["questions"][wc.qset].get("sha256"),
        key=lambda wc: f"questions.{wc.qset}",


rule questions:
    input:
        unpack(question_source),
    output:
        yaml="resources/questions/{qset}.yaml",
    log:
        "logs/questions/{qset}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        spec=lookup(dpath="questions/{qset}", within=config),
    script:
        "../scripts/questions.py"
