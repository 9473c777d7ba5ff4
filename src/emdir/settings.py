"""What the workflow reads off a checked config (emdir.config): the models the study runs
on, and the subsets of settings that some rules' params carry. A job reruns when its params
change, so each subset leaves out what does not shape that job's results."""

from __future__ import annotations

from typing import Any

from emdir.carry import SEED_KEYS

Config = dict[str, Any]


def study_models(cfg: Config) -> list[str]:
    """The models of the study (fine-tunes, directions, steering, the grid), sorted: every
    key of `models` but those marked `study: false`, which the budget sweep alone uses
    (a model the sweep could not bring into the regime keeps its curve)."""
    return sorted(m for m, entry in cfg["models"].items() if entry.get("study", True))


def transfer_controls(cfg: Config) -> list[str]:
    """The grid's controls: transfer.controls, or steering's (one control registry)."""
    tr = cfg["transfer"]
    return cfg["steering"]["controls"] if tr["controls"] is None else tr["controls"]


def transfer_random_seeds(cfg: Config) -> int:
    """The grid's random draws per cell: transfer.random_seeds, or steering's."""
    tr = cfg["transfer"]
    return cfg["steering"]["random_seeds"] if tr["random_seeds"] is None else tr["random_seeds"]


def map_settings(cfg: Config) -> dict[str, Any]:
    """The transfer settings a ridge map depends on (its layers come per model)."""
    keys = ("test_fraction", "alphas", "cv_folds", "alpha_widen", "center", "standardize", "seed")
    return {k: cfg["transfer"][k] for k in keys}


def transfer_steer_settings(cfg: Config) -> dict[str, Any]:
    """The transfer settings the steered generations depend on (layers come from the map)."""
    keys = ("ft", "mapped", "coefficient", "receiver_controls", "seed")
    return {
        **{k: cfg["transfer"][k] for k in keys},
        "controls": transfer_controls(cfg),
        "random_seeds": transfer_random_seeds(cfg),
        "wrong_layer": cfg["steering"]["wrong_layer"],
    }


def induce_settings(cfg: Config) -> dict[str, Any]:
    """The steering settings with op `add` and the inducing sweep (random controls only)."""
    induce = cfg["mechanistic"]["induce"]
    return {
        **cfg["steering"],
        "op": "add",
        "coefficients": induce["coefficients"],
        "controls": ["random"],
        "random_seeds": induce["random_seeds"],
    }


def finetune_settings(cfg: Config) -> dict[str, Any]:
    """`finetune` without the keys that say which seeds a run draws (finetune.seeds and
    finetune.carried, emdir.carry.SEED_KEYS): not a setting of any one fine-tune."""
    return {k: v for k, v in cfg["finetune"].items() if k not in SEED_KEYS}


def sweep_train(cfg: Config, run: str) -> dict[str, Any]:
    """`finetune` for one sweep run: its train keys over finetune.train, the sweep's steps,
    an evaluation every sweep.eval_every steps, no early stop; LoRA targets as the models'
    fine-tunes have them (resolved per model by the workflow)."""
    ft = finetune_settings(cfg)
    sweep = cfg["sweep"]
    train = {**ft["train"], **sweep["runs"][run], "steps": sweep["steps"], "epochs": None}
    return {**ft, "train": train, "eval_every": sweep["eval_every"], "stop_at_spillover": None}


def model_finetune(cfg: Config, model: str, ft: dict[str, Any]) -> dict[str, Any]:
    """`ft` (a fine-tune's or a sweep run's `finetune`) with the model's own
    `models.<key>.gradient_checkpointing` over the shared one, if it sets it: recomputing
    activations in the backward pass changes a job's memory and time, not what it learns,
    so a model too large for the machine keeps the budget every other model trains on.
    A model that does not set it gets `ft` as it was (its params, and so its jobs, unchanged)."""
    own = cfg["models"][model].get("gradient_checkpointing")
    return ft if own is None else {**ft, "gradient_checkpointing": bool(own)}
