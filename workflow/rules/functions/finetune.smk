# Input functions of rules/finetune.smk (which includes this first).


def ft_dataset(wildcards):
    return layout.dataset(config["finetunes"][wildcards.ft]["dataset"])


def finetune_cfg(wildcards):
    """`finetune` for one seed's fine-tune of one model: `train.seed` moved by the
    fine-tuning seed (seed 0: as configured); `lora.target_modules` resolved to the
    projections this model's class has when the config leaves it null (so a class with all
    seven gets the list of seven, as before null meant anything); the list of seeds itself
    is not a setting of any one fine-tune; the model's own `gradient_checkpointing`, if
    it sets one.
    """
    cfg = {k: v for k, v in config["finetune"].items() if k != "seeds"}
    train = cfg["train"]
    own = {
        **cfg,
        "lora": class_lora(cfg["lora"], wildcards.model),
        "train": {**train, "seed": train["seed"] + seed_of(wildcards)},
    }
    return model_finetune(config, wildcards.model, own)


def class_lora(lora, model):
    """`finetune.lora` with null `target_modules` resolved to the projections `model`'s
    class has (the fine-tunes' and the sweep's params carry the list, not null)."""
    if lora["target_modules"] is not None:
        return lora
    arch = config["models"][model]["arch"]
    return {**lora, "target_modules": lora_projections(arch, None, "finetune.lora")}
