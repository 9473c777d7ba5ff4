"""Architecture registry: everything emdir needs to know about each model class, one entry each.

The entries are `emdir.models.registry.ARCHS` (torch-free, so the workflow reads them when it
plans jobs); adding an architecture means adding an `ArchSpec` entry there (and its name to
the `arch` enum of config/schema.yaml, which a test holds to this registry), not a branch in
the code. An entry (`emdir.models.archspec.ArchSpec`) holds where the class keeps its decoder
layers and text config, where each logical projection lives in a block (split, fused, renamed
or absent) and where LoRA may wrap them, the tiny random-init recipe the tests and the offline
default build, and the chat format its tiny tokenizer wears. No module name of a class
appears in the code outside the registry. This module re-exports it and holds what needs a
model object: decoder layers, text config, sizes, the head's tricks.

The registry is keyed by `config.architectures[0]`, as transformers writes it. A real model's
chat format belongs to its own tokenizer, not its class: see `emdir.models.chat`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from emdir.errors import EmdirError

# Re-exported: the registry and its vocabulary, which callers import from here.
from emdir.models.archspec import PROJECTIONS as PROJECTIONS
from emdir.models.archspec import ArchSpec as ArchSpec
from emdir.models.archspec import TinyRecipe as TinyRecipe
from emdir.models.registry import ARCHS as ARCHS
from emdir.models.registry import arch_of as arch_of
from emdir.models.registry import check_registered as check_registered


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip peft wrappers so layer paths are those of the transformers model."""
    inner = model
    for _ in range(3):
        base = getattr(inner, "base_model", None)
        if (
            base is not None
            and hasattr(base, "model")
            and type(inner).__name__.startswith(("Peft", "Lora"))
        ):
            inner = base.model
        else:
            break
    return inner


def _resolve(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def spec_of(model: nn.Module) -> ArchSpec:
    """The registry entry of a model (through any peft wrapper)."""
    return arch_of(_unwrap(model).config)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks; layer i of emdir is the output of block i."""
    inner = _unwrap(model)
    spec = arch_of(inner.config)
    for path in spec.layer_paths:
        try:
            layers = _resolve(inner, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    raise EmdirError(
        f"{spec.name}: none of the layer paths {spec.layer_paths} exists on this model; "
        "update layer_paths in emdir/models/registry.py for this transformers version"
    )


def text_config(config: Any) -> Any:
    """The language-model part of a (possibly multimodal) config."""
    spec = arch_of(config)
    return getattr(config, spec.text_config_attr) if spec.text_config_attr else config


def n_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def d_model(model: nn.Module) -> int:
    return int(text_config(_unwrap(model).config).hidden_size)


def untuple(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder layer's output (a tensor in transformers 5, a tuple before)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected decoder-layer output type {type(output).__name__}")


def retuple(original: Any, hidden: torch.Tensor) -> Any:
    """Put a modified hidden state back in the shape the layer returned."""
    if isinstance(original, torch.Tensor):
        return hidden
    return (hidden, *original[1:])


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def contiguous_head(model: nn.Module) -> Iterator[None]:
    """Hand the LM head a contiguous input while the block runs.

    With `logits_to_keep` a model slices its last hidden states (`h[:, -k:, :]`) before the
    head; in bfloat16 on the CPU, torch multiplies such a strided [B, k, d] view by
    expanding the [V, d] weight to one copy per row (a bmm): 13 GB and 130 s for a 40-row
    prefill of Qwen2.5-Coder-0.5B instead of 2 GB and 13 s. A contiguous input takes the
    plain matrix product. float32 heads are left as they are: the strided product is fast
    there, and the contiguous one rounds differently in a few rows (1 of 200 answers of a
    tiny model changed), which would move answers that earlier runs drew."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or head.weight.dtype == torch.float32:
        yield
        return
    handle = head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def head_at(model: nn.Module, rows: Sequence[int], positions: Sequence[int]) -> Iterator[None]:
    """While the block runs, the LM head reads only the (row, position) pairs of its input
    (positions within the slice that `logits_to_keep` leaves): the model returns their
    logits as [1, N, V], in the order given, after its own final processing (Gemma 2's
    soft-capping). No logits are formed at padding or prompt positions."""
    head = model.get_output_embeddings()
    r = torch.as_tensor(list(rows), dtype=torch.long)
    t = torch.as_tensor(list(positions), dtype=torch.long)

    def gather(_m: nn.Module, args: Any) -> Any:
        hidden = args[0]
        return (hidden[r.to(hidden.device), t.to(hidden.device)].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
