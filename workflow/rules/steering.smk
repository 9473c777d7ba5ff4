include: "functions/steering.smk"


rule steering:
    input:
        unpack(model_inputs),
        directions=for_model(layout.directions, DIRECTION_FT),
        store=for_model(layout.activations, DIRECTION_FT),
        controls=values(control_directions),
        questions=layout.questions(config["steering"]["question_set"]),
    output:
        vectors=expand(layout.steering(), vector=STEERING_VECTORS, allow_missing=True),
    log:
        "logs/{seed}steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}steering/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=re.escape(DIRECTION_FT),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=MODEL_MEM_MB,
        runtime=120,
    params:
        vectors=STEERING_VECTORS,
        control_directions=control_directions,
        steer_cfg=config["steering"],
        sampling_cfg=sampling_cfg,
    script:
        "../scripts/steering.py"


# The direction of directions.ft, at the same norms, applied to another fine-tune (e.g. the
# insecure direction on the secure fine-tune): does it act on a model that lacks the behaviour?
use rule steering as steering_also with:
    input:
        unpack(model_inputs),
        directions=for_model(layout.directions, DIRECTION_FT),
        store=for_model(layout.activations, DIRECTION_FT),
        questions=layout.questions(config["steering"]["question_set"]),
    output:
        vectors=[layout.steering(vector="target")],
    log:
        "logs/{seed}steering/{model}/{ft}.log",
    benchmark:
        "benchmarks/out/{seed}steering/{model}/{ft}.tsv"
    wildcard_constraints:
        ft=ALSO_STEER_RE,
    params:
        vectors=["target"],
        control_directions={},
        steer_cfg=config["steering"],
        sampling_cfg=sampling_cfg,
