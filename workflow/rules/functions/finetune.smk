# Input functions of rules/finetune.smk (which includes this first).


def ft_dataset(wildcards):
    return layout.dataset(config["finetunes"][wildcards.ft]["dataset"])


def finetune_cfg(wildcards):
    """`finetune` for one seed's fine-tune: `train.seed` moved by the fine-tuning seed (seed
    0: as configured); the list of seeds itself is not a setting of any one fine-tune.
    """
    cfg = {k: v for k, v in config["finetune"].items() if k != "seeds"}
    train = cfg["train"]
    return {**cfg, "train": {**train, "seed": train["seed"] + seed_of(wildcards)}}
