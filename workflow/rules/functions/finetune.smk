# Input functions of rules/finetune.smk (which includes this first).


def ft_dataset(wildcards):
    return layout.dataset(config["finetunes"][wildcards.ft]["dataset"])


def finetune_cfg(wildcards):
    """`finetune` for one seed's fine-tune of one model: `train.seed` moved by the
    fine-tuning seed (seed 0: as configured); `lora.target_modules` resolved to the
    projections this model's class has when the config leaves it null (so a class with all
    seven gets the list of seven, as before null meant anything); the list of seeds itself
    is not a setting of any one fine-tune.
    """
    cfg = {k: v for k, v in config["finetune"].items() if k != "seeds"}
    train = cfg["train"]
    lora = cfg["lora"]
    if lora["target_modules"] is None:
        arch = config["models"][wildcards.model]["arch"]
        lora = {**lora, "target_modules": lora_projections(arch, None, "finetune.lora")}
    return {
        **cfg,
        "lora": lora,
        "train": {**train, "seed": train["seed"] + seed_of(wildcards)},
    }
