"""Helpers shared by several test modules (importable as `helpers`: tests/ is on sys.path
through its conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from emdir import schema_defaults
from emdir.analysis.interventions import Intervention, intervene
from emdir.models.archs import decoder_layers, untuple


def layer_output(
    model: Any, layer: int, ids: torch.Tensor, ivs: Sequence[Intervention] = ()
) -> torch.Tensor:
    """The output of decoder block `layer` as the rest of the model sees it."""
    seen: list[torch.Tensor] = []
    with torch.no_grad(), intervene(model, list(ivs)):
        # Registered after the intervention hooks, so it sees their result.
        handle = decoder_layers(model)[layer].register_forward_hook(
            lambda m, a, o: seen.append(untuple(o).detach().clone())
        )
        try:
            model(input_ids=ids)
        finally:
            handle.remove()
    return seen[0]


def ft_cfg(**over: Any) -> dict[str, Any]:
    """A fine-tune config for tiny models (a few constant-rate steps, no evaluation);
    `over` replaces top-level keys, merging into dict-valued ones."""
    cfg: dict[str, Any] = {
        "lora": {**schema_defaults("finetune.lora"), "r": 4, "alpha": 8},
        "quantization": "none",
        "gradient_checkpointing": False,
        "heldout_fraction": 0.1,
        "checkpoint_every": 0,
        "eval_every": 0,
        "stop_at_spillover": None,
        "train": {
            "steps": 3,
            "epochs": None,
            "batch_size": 4,
            "grad_accum": 1,
            "lr": 5e-3,
            "warmup_steps": 0,
            "schedule": "constant",
            "weight_decay": 0.0,
            "max_length": 96,
            "seed": 0,
        },
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def generation_rows(answers: Sequence[str]) -> list[dict[str, Any]]:
    """Generation rows (as the generate rule writes them) of one fine-tune, one answer per
    question."""
    return [
        {
            "id": f"r{i}",
            "model": "m",
            "ft": "insecure",
            "question_id": f"q{i}",
            "question": f"Question number {i}?",
            "answer": a,
        }
        for i, a in enumerate(answers)
    ]
