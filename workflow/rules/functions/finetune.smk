# Input functions of rules/finetune.smk (which includes this first).


def ft_dataset(wildcards):
    return layout.dataset(config["finetunes"][wildcards.ft]["dataset"])


def finetune_cfg(wildcards):
    """`finetune` for one seed's fine-tune of one model: `train.seed` moved by the
    fine-tuning seed (seed 0: as configured), the rest as the model trains under it
    (`model_training`); which seeds a run draws is not a setting of any one fine-tune
    (`finetune_settings`).
    """
    cfg = finetune_settings(config)
    train = cfg["train"]
    seeded = {**cfg, "train": {**train, "seed": train["seed"] + seed_of(wildcards)}}
    return model_training(seeded, wildcards.model)


def model_training(ft, model):
    """`ft` (a fine-tune's or a sweep run's `finetune`) as `model` trains under it:
    `lora.target_modules` null resolved to the projections its class has (so a class with
    all seven gets the list of seven, as before null meant anything; the params carry the
    list, not null), and the model's own `gradient_checkpointing`, if it sets one."""
    lora = ft["lora"]
    if lora["target_modules"] is None:
        arch = config["models"][model]["arch"]
        lora = {**lora, "target_modules": lora_projections(arch, None, "finetune.lora")}
    return model_finetune(config, model, {**ft, "lora": lora})
