# Input and params functions of rules/base_model.smk (which includes this first): what
# each model's source needs.


def archive_cfg(wildcards):
    """A model's pinned archive, less `find_links` (where the wheels are read, not what they are)."""
    archive = config["models"][wildcards.model]["archive"]
    return {k: v for k, v in archive.items() if k != "find_links"}


def model_cfg(wildcards):
    """The model's entry as its base model sees it: transfer_layer only matters to
    transfer, `study` to what is planned (marking a model `study: false` rebuilds nothing),
    `gradient_checkpointing` to its fine-tunes, its RESOURCE_KEYS (emdir.carry:
    `train_memory_gb`) to what they reserve.
    """
    entry = config["models"][wildcards.model]
    later = ("transfer_layer", "study", "gradient_checkpointing", *RESOURCE_KEYS)
    out = {k: v for k, v in entry.items() if k not in later}
    if "archive" in entry:
        out["archive"] = archive_cfg(wildcards)
    return out


def tiny_cfg(wildcards):
    """The tiny-model settings, or None for hub models (so they never trigger a hub rerun)."""
    return (
        config["tiny"]
        if config["models"][wildcards.model]["source"] == "tiny"
        else None
    )


def base_model_inputs(wildcards):
    """Tiny models are trained from the tokenizer and corpus, archives converted from their
    fetched file, local models read from their path; hub models need nothing local."""
    model = wildcards.model
    entry = config["models"][model]
    if entry["source"] == "tiny":
        return {
            "tokenizer": layout.TOKENIZER,
            "corpus": layout.dataset(config["tiny"]["corpus"]),
        }
    if entry["source"] == "archive":
        return {
            "weights": layout.weights(model),
            "record": layout.weights_record(model),
        }
    if entry["source"] == "local":
        return {"local": entry["path"]}
    return {}
