rule judge:
    input:
        src="results/generations/{model}/{ft}.jsonl",
    output:
        judged="results/judged/{model}/{ft}.jsonl",
    log:
        "logs/judge/{model}/{ft}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        judge_cfg=config["judge"],
    script:
        "../scripts/judge.py"


use rule judge as judge_steering with:
    input:
        src="results/steering/{model}/{ft}/{vector}.jsonl",
    output:
        judged="results/judged/steering/{model}/{ft}/{vector}.jsonl",
    log:
        "logs/judge_steering/{model}/{ft}/{vector}.log",


use rule judge as judge_transfer with:
    input:
        src="results/transfer/{donor}__{receiver}/{vector}.jsonl",
    output:
        judged="results/judged/transfer/{donor}__{receiver}/{vector}.jsonl",
    log:
        "logs/judge_transfer/{donor}__{receiver}/{vector}.log",
