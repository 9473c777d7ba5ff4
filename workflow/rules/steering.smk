rule steering:
    input:
        unpack(model_inputs),
        unpack(direction_inputs),
        controls=values(control_directions),
        questions=steering_questions(),
    output:
        vectors=expand(
            "results/steering/{{model}}/{{ft}}/{vector}.jsonl", vector=STEERING_VECTORS
        ),
    log:
        "logs/steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/steering/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=re.escape(DIRECTION_FT),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        vectors=STEERING_VECTORS,
        control_directions=control_directions,
        steer_cfg=config["steering"],
        sampling_cfg=config["sampling"],
    script:
        "../scripts/steering.py"


# The direction of directions.ft, at the same norms, applied to another fine-tune (e.g. the
# insecure direction on the secure fine-tune): does it act on a model that lacks the behaviour?
use rule steering as steering_also with:
    input:
        unpack(model_inputs),
        unpack(direction_inputs),
        questions=steering_questions(),
    output:
        vectors=["results/steering/{model}/{ft}/target.jsonl"],
    log:
        "logs/steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/steering/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=ALSO_STEER_RE,
    params:
        vectors=["target"],
        control_directions={},
        steer_cfg=config["steering"],
        sampling_cfg=config["sampling"],
