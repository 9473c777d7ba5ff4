# Input and params functions of rules/steering.smk (which includes this first).


def control_directions(wildcards):
    """Fine-tune key -> directions file, for the `<ft>_direction` controls."""
    return {
        ft: layout.directions(wildcards.model, ft, wildcards.seed) for ft in CONTROL_FTS
    }
