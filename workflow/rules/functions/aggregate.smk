# Input and params functions of rules/aggregate.smk (which includes this first). Each
# returns a dict for the script (passed as params) whose values are also the rule's inputs,
# so the DAG and the script see the same files.


def summary_generations(wildcards=None):
    return {
        f"{m}/{ft}": layout.judged(m, ft)
        for m in MODELS
        for ft in ["base"] + model_fts(m)
    }


def summary_steering(wildcards=None):
    return {
        f"{m}/{ft}/{v}": judged_steering(m, ft, v) for m, ft, v in steering_outputs()
    }


def summary_directions(wildcards=None):
    """Directions of directions.ft and of the control fine-tunes, keyed model/ft."""
    fts = [DIRECTION_FT] + CONTROL_FTS
    return {f"{m}/{ft}": layout.directions(m, ft) for m in MODELS for ft in fts}


def code_question_sets():
    return [q for q, s in config["questions"].items() if s.get("generator") == "code"]


def model_steering(wildcards):
    """Vector -> one model's judged steering output (directions.ft), for its read strength."""
    return {
        v: judged_steering(wildcards.model, DIRECTION_FT, v) for v in STEERING_VECTORS
    }


def matrix_baselines(wildcards=None):
    return {r: layout.judged(r, TRANSFER_FT) for r in MODELS}


def matrix_cells(wildcards=None):
    return {
        f"{layout.pair(d, r)}/{v}": layout.judged_copy(layout.transfer(d, r, v))
        for d, r in PAIRS
        for v in TRANSFER_VECTORS
    }


def matrix_references(wildcards=None):
    return {
        f"{r}/{v}": layout.judged_copy(layout.transfer_reference(r, v))
        for r in MODELS
        for v in REFERENCE_VECTORS
    }


def matrix_maps(wildcards=None):
    return {layout.pair(d, r): layout.ridge_map(d, r) for d, r in PAIRS}


def training_bases(wildcards=None):
    return {m: layout.base_model(m) for m in MODELS}


def training_adapters(wildcards=None):
    return {f"{m}/{ft}": layout.adapter(m, ft) for m in MODELS for ft in model_fts(m)}
