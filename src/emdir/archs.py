"""Architecture registry: where each model class keeps its decoder layers and LoRA targets.

Adding an architecture means adding an `ArchSpec` entry, not a branch in the code.
The registry is keyed by `config.architectures[0]`, as transformers writes it. Chat format
(turn end, system role) belongs to a model's tokenizer, not its class: see `emdir.chat`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from emdir.errors import EmdirError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ArchSpec:
    """What emdir needs to know about one model class."""

    name: str
    family: str
    # Alternative attribute paths to the decoder-layer list, tried in order (peft wraps add
    # `base_model.model.` in front; that prefix is stripped before lookup).
    layer_paths: tuple[str, ...]
    # Path to the text config inside the model config ("" = the config itself).
    text_config_attr: str
    # Regex for the decoder-layer list as peft sees module names: LoRA targets are built under
    # it, so only language-model projections are wrapped, never a vision tower.
    lora_layer_prefix: str

    def lora_targets(
        self, modules: Sequence[str] = PROJECTIONS, layers: Sequence[int] | None = None
    ) -> str:
        """peft `target_modules` regex: these projections, in these decoder blocks (None = all).

        `layers` are decoder-block indices (0-based), as everywhere in emdir.
        """
        bad = sorted(set(modules) - set(PROJECTIONS))
        if bad or not modules:
            raise EmdirError(
                f"LoRA target modules {bad or list(modules)} are not projections; "
                f"use some of {', '.join(PROJECTIONS)}"
            )
        if layers is not None and (not layers or any(int(i) < 0 for i in layers)):
            raise EmdirError(f"LoRA layers {list(layers)} must be non-negative block indices")
        blocks = r"\d+" if layers is None else "(" + "|".join(str(int(i)) for i in layers) + ")"
        mods = "|".join(re.escape(m) for m in modules)
        return rf"{self.lora_layer_prefix}\.{blocks}\.(self_attn|mlp)\.({mods})"

    @property
    def lora_target_regex(self) -> str:
        """All seven projections of every decoder block."""
        return self.lora_targets()


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            name="Qwen2ForCausalLM",
            family="qwen2",
            layer_paths=("model.layers",),
            text_config_attr="",
            lora_layer_prefix=r".*model\.layers",
        ),
        ArchSpec(
            name="Gemma2ForCausalLM",
            family="gemma2",
            layer_paths=("model.layers",),
            text_config_attr="",
            lora_layer_prefix=r".*model\.layers",
        ),
        ArchSpec(
            name="LlamaForCausalLM",
            family="llama",
            layer_paths=("model.layers",),
            text_config_attr="",
            lora_layer_prefix=r".*model\.layers",
        ),
        ArchSpec(
            name="MistralForCausalLM",
            family="mistral",
            layer_paths=("model.layers",),
            text_config_attr="",
            lora_layer_prefix=r".*model\.layers",
        ),
        ArchSpec(
            name="Mistral3ForConditionalGeneration",
            family="mistral3",
            # transformers 5 nests the text model under model.language_model; older
            # releases used language_model.model.
            layer_paths=("model.language_model.layers", "language_model.model.layers"),
            text_config_attr="text_config",
            lora_layer_prefix=r".*language_model\.(model\.)?layers",
        ),
    )
}


def arch_of(config: Any) -> ArchSpec:
    """The registry entry for a transformers config (by `architectures[0]`)."""
    names = getattr(config, "architectures", None) or []
    if not names:
        raise EmdirError(
            "model config has no `architectures` entry; save the model with save_pretrained "
            "or set config.architectures"
        )
    try:
        return ARCHS[names[0]]
    except KeyError:
        raise EmdirError(
            f"architecture {names[0]!r} is not in emdir's registry ({', '.join(sorted(ARCHS))}); "
            "add an ArchSpec entry to emdir/archs.py"
        ) from None


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
        "update layer_paths in emdir/archs.py for this transformers version"
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
