# Input functions of rules/finetune.smk (which includes this first).


def ft_dataset(wildcards):
    return layout.dataset(config["finetunes"][wildcards.ft]["dataset"])
