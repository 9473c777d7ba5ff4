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


rule questions:
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
        kind=lookup(dpath="questions/{qset}/generator", within=config),
        params=lookup(dpath="questions/{qset}/params", within=config),
        samples=lookup(dpath="questions/{qset}/samples", within=config),
    script:
        "../scripts/questions.py"
