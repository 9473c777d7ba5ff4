rule data:
    output:
        jsonl="resources/data/{dataset}.jsonl",
    log:
        "logs/data/{dataset}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        kind=lookup(dpath="datasets/{dataset}/generator", within=config),
        params=lookup(dpath="datasets/{dataset}/params", within=config),
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
