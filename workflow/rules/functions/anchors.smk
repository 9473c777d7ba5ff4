# Input functions of rules/anchors.smk (which includes this first).


def anchor_inputs(wildcards):
    """The model and the anchor texts: a dataset, or every model's pooled answers."""
    texts = layout.anchor_answers(wildcards.seed)
    if config["transfer"]["anchor_source"] != "answers":
        texts = layout.dataset(config["transfer"]["anchors"])
    return {
        "base": layout.base_model(wildcards.model),
        "adapter": layout.adapter(wildcards.model, TRANSFER_FT, wildcards.seed),
        "texts": texts,
    }
