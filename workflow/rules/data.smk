include: "functions/data.smk"


rule download:
    output:
        jsonl=layout.download(),
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
        sha256=lookup(dpath="datasets/{dataset}/sha256", within=config, default=None),
        key="datasets.{dataset}",
    script:
        "../scripts/download.py"


rule data:
    input:
        unpack(dataset_source),
    output:
        jsonl=layout.dataset(),
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
        yaml=layout.questions_download(),
    log:
        "logs/download/questions/{qset}.log",
    wildcard_constraints:
        qset=URL_QSET_RE,
    localrule: True
    params:
        url=lookup(dpath="questions/{qset}/url", within=config),
        sha256=lookup(dpath="questions/{qset}/sha256", within=config, default=None),
        key="questions.{qset}",


rule questions:
    input:
        unpack(question_source),
    output:
        yaml=layout.questions(),
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
