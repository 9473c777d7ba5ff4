# Input and params functions of rules/sweep.smk (which includes this first).

from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

SWEEP = config["sweep"]
SWEEP_RUNS = sorted(SWEEP["runs"])
SWEEP_MODELS = sorted(SWEEP["models"] or ALL_MODELS)


def _check_sweep():
    if SWEEP["dataset"] is None:
        raise WorkflowError(
            "config: sweep.dataset is null; name the dataset the sweep fine-tunes on (and "
            "sweep.runs) to build results/sweep/"
        )


def sweep_dataset(wildcards):
    _check_sweep()
    return layout.dataset(SWEEP["dataset"])


def sweep_cfg(wildcards):
    """`finetune` for one sweep run of one model: the run's train keys, the sweep's steps
    and evaluations, as the model trains under them (`model_training`, as its fine-tunes).
    """
    return model_training(sweep_train(config, wildcards.run), wildcards.model)


def sweep_adapters(wildcards=None):
    _check_sweep()
    return {
        f"{m}/{run}": layout.sweep_adapter(m, run)
        for m in SWEEP_MODELS
        for run in SWEEP_RUNS
    }


def sweep_train_cfgs(wildcards=None):
    return {run: sweep_train(config, run)["train"] for run in SWEEP_RUNS}


def sweep_sampling(wildcards):
    """The monitor's sampling settings: seed 0's (the sweep runs under fine-tuning seed 0)."""
    return sampling_cfg(SimpleNamespace(seed=""))
