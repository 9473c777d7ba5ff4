rule judge:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src="results/generations/{model}/{ft}.jsonl",
        # Questions may carry their own judge prompts (Betley's files do).
        questions=evaluation_questions(),
        # The offline backend scores coherence under the answering model's base model.
    output:
        judged="results/judged/{model}/{ft}.jsonl",
    log:
        "logs/judge/{model}/{ft}.log",
    localrule: JUDGE_IS_LOCAL
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        judge_cfg=judge_settings(),
        # Not a result-shaping setting: moving the cache must not rerun every judge job.
        cache=lambda wc: config["judge"]["cache"],
    message:
        f"judge {{input.src}} with the {judge_backend_label()}"
    script:
        "../scripts/judge.py"


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_steering with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src="results/steering/{model}/{ft}/{vector}.jsonl",
        questions=evaluation_questions(),
    output:
        judged="results/judged/steering/{model}/{ft}/{vector}.jsonl",
    log:
        "logs/judge_steering/{model}/{ft}/{vector}.log",
    localrule: JUDGE_IS_LOCAL


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_transfer with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src="results/transfer/{donor}__{receiver}/{vector}.jsonl",
        questions=evaluation_questions(),
    output:
        judged="results/judged/transfer/{donor}__{receiver}/{vector}.jsonl",
    log:
        "logs/judge_transfer/{donor}__{receiver}/{vector}.log",
    localrule: JUDGE_IS_LOCAL


rule judge_plan:
    input:
        values(judge_plan_files),
        questions=evaluation_questions(),
    output:
        plan="results/judge_plan.txt",
    log:
        "logs/judge_plan.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        files=judge_plan_files,
        judge_cfg=config["judge"],
        cache=lambda wc: config["judge"]["cache"],
    script:
        "../scripts/judge_plan.py"


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_reference with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src="results/transfer_reference/{receiver}/{vector}.jsonl",
        questions=evaluation_questions(),
    output:
        judged="results/judged/transfer_reference/{receiver}/{vector}.jsonl",
    log:
        "logs/judge_reference/{receiver}/{vector}.log",
    localrule: JUDGE_IS_LOCAL
