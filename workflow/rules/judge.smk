from emdir.judge import scoring_config


include: "functions/judge.smk"


rule judge:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=layout.generations(),
        # Questions may carry their own judge prompts (Betley's files do).
        questions=evaluation_questions(),
    output:
        judged=layout.judged(),
    log:
        "logs/{seed}judge/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}judge/{model}/{ft}.tsv"
    localrule: JUDGE_IS_LOCAL
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        judge_cfg=scoring_config(config["judge"]),
        # Not a result-shaping setting: moving the cache must not rerun every judge job.
        cache=judge_cache,
    message:
        f"judge {{input.src}} with the {judge_backend_label()}"
    script:
        "../scripts/judge.py"


# One judge job per generating job: the steering job's vectors, a transfer cell's, a
# receiver's references (one process, and one load of the base model, per job).
# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_steering with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=expand(layout.steering(), vector=STEERING_VECTORS, allow_missing=True),
        questions=evaluation_questions(),
    output:
        judged=expand(
            layout.judged_copy(layout.steering()),
            vector=STEERING_VECTORS,
            allow_missing=True,
        ),
    log:
        "logs/{seed}judge_steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}judge_steering/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=re.escape(DIRECTION_FT),
    localrule: JUDGE_IS_LOCAL


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_steering_also with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=[layout.steering(vector="target")],
        questions=evaluation_questions(),
    output:
        judged=[layout.judged_copy(layout.steering(vector="target"))],
    log:
        "logs/{seed}judge_steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}judge_steering_also/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=ALSO_STEER_RE,
    localrule: JUDGE_IS_LOCAL


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_transfer with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=expand(layout.transfer(), vector=TRANSFER_VECTORS, allow_missing=True),
        questions=evaluation_questions(),
    output:
        judged=expand(
            layout.judged_copy(layout.transfer()),
            vector=TRANSFER_VECTORS,
            allow_missing=True,
        ),
    log:
        "logs/{seed}judge_transfer/{donor}__{receiver}.log",
    benchmark:
        "benchmarks/out/{seed}judge_transfer/{donor}__{receiver}.tsv"
    localrule: JUDGE_IS_LOCAL


rule judge_plan:
    input:
        values(judge_plan_files),
        questions=evaluation_questions(),
    output:
        plan=layout.JUDGE_PLAN,
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
        cache=judge_cache,
    script:
        "../scripts/judge_plan.py"


# `use rule ... with:` does not inherit `localrule`; it is set again.
use rule judge as judge_reference with:
    input:
        # The offline backend scores coherence under the answering model's base model.
        unpack(coherence_model),
        src=expand(
            layout.transfer_reference(), vector=REFERENCE_VECTORS, allow_missing=True
        ),
        questions=evaluation_questions(),
    output:
        judged=expand(
            layout.judged_copy(layout.transfer_reference()),
            vector=REFERENCE_VECTORS,
            allow_missing=True,
        ),
    log:
        "logs/{seed}judge_reference/{receiver}.log",
    benchmark:
        "benchmarks/out/{seed}judge_reference/{receiver}.tsv"
    localrule: JUDGE_IS_LOCAL
