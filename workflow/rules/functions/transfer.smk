# Input and params functions of rules/transfer.smk (which includes this first).


def donor_control_directions(wildcards):
    """Fine-tune key -> the donor's directions file, for the grid's `<ft>_direction` controls."""
    return {
        ft: layout.directions(wildcards.donor, ft, wildcards.seed)
        for ft in TRANSFER_CONTROL_FTS
    }


def receiver_inputs(wildcards):
    """What steering a receiver needs: its model, direction, store and the questions."""
    receiver, seed = wildcards.receiver, wildcards.seed
    return {
        "base": layout.base_model(receiver),
        "adapter": layout.adapter(receiver, TRANSFER_FT, seed),
        "receiver_directions": layout.directions(receiver, TRANSFER_FT, seed),
        "receiver_store": layout.activations(receiver, TRANSFER_FT, seed),
        "questions": layout.questions(STEER["question_set"]),
        **(
            {"read_strength": layout.read_strength(receiver, seed)}
            if READ_STRENGTH
            else {}
        ),
    }


def transfer_inputs(wildcards):
    inputs = receiver_inputs(wildcards)
    del inputs["receiver_directions"]  # the cells use the donor's direction only
    return {
        **inputs,
        "donor_directions": layout.directions(
            wildcards.donor, TRANSFER_FT, wildcards.seed
        ),
        "map": layout.ridge_map(wildcards.donor, wildcards.receiver, wildcards.seed),
        **{f"control_{ft}": p for ft, p in donor_control_directions(wildcards).items()},
    }
