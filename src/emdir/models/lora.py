"""LoRA on any registered architecture: the quantization a device allows, the adapter's
settings, the peft model, and a check that every requested projection was adapted (fused
renamed and Conv1D projections included: the ArchSpec entry says where they live)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from emdir.errors import EmdirError
from emdir.models.archs import ArchSpec, n_layers

log = logging.getLogger(__name__)


def choose_quantization(requested: str) -> str:
    """`auto` means NF4 QLoRA on CUDA and plain LoRA on CPU; `nf4` needs bitsandbytes."""
    if requested == "auto":
        return "nf4" if torch.cuda.is_available() else "none"
    if requested not in ("nf4", "none"):
        raise EmdirError(f"finetune.quantization {requested!r} is unknown; use auto, nf4 or none")
    return requested


def lora_settings(ft_cfg: Mapping[str, Any], ft_spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The shared `finetune.lora`, with a fine-tune's own `lora` keys (e.g. rank 1) on top."""
    merged = dict(ft_cfg["lora"])
    merged.update((ft_spec or {}).get("lora", {}))
    return merged


def lora_model(
    model: nn.Module,
    spec: ArchSpec,
    lora_cfg: Mapping[str, Any],
    quantized: bool,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """Wrap the chosen language-model projections (never a vision tower) in LoRA adapters."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
        # bitsandbytes repacks 4-bit weights for its CPU inference kernel at the first
        # eval-mode, no-grad forward (our checkpoint evaluations) and never packs them back,
        # after which training steps fail; keep the training layout throughout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    # Unset (the schema's default) means every projection the class has, in every block.
    modules = lora_cfg.get("target_modules") or None
    targets = spec.lora_targets(modules, layers=lora_cfg.get("layers"))
    cfg = LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=float(lora_cfg["alpha"]),
        lora_dropout=float(lora_cfg["dropout"]),
        use_rslora=bool(lora_cfg["rslora"]),
        target_modules=targets,
        fan_in_fan_out=spec.fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        wrapped = get_peft_model(model, cfg)
    except ValueError as exc:  # peft's NoMatchingPeftModuleError
        raise EmdirError(
            f"LoRA targets {targets!r} matched no module of {spec.name} ({exc}); "
            "check finetune.lora.target_modules and layers against the model's depth"
        ) from None
    check_lora_coverage(wrapped, spec, modules, lora_cfg.get("layers"))
    check_weight_layout(wrapped, spec)
    return wrapped


def _adapted_sites(model: nn.Module, spec: ArchSpec) -> dict[str, tuple[int, str] | None]:
    """Each module peft wrapped in LoRA, with its (decoder block, module) under the LoRA prefix."""
    from peft.tuners.lora import LoraLayer

    return {
        name: spec.lora_site(name)
        for name, mod in model.named_modules()
        if isinstance(mod, LoraLayer)
    }


def check_lora_coverage(
    model: nn.Module, spec: ArchSpec, modules: Sequence[str] | None, layers: Sequence[int] | None
) -> None:
    """Every requested projection (None = every one the class has) got an adapter in every
    requested block, else an error
    naming what matched nothing (a class whose modules are named otherwise, a block past the
    model's depth): a partial adapter must not pass for the requested one."""
    sites = {s for s in _adapted_sites(model, spec).values() if s is not None}
    blocks = range(n_layers(model)) if layers is None else [int(i) for i in layers]
    missing: dict[str, list[int]] = {}
    for module in spec.lora_modules(modules):
        for block in blocks:
            if (block, module) not in sites:
                missing.setdefault(module, []).append(block)
    if missing:
        what = "; ".join(
            f"{'/'.join(spec.projections_of(m))} (module {m}) in blocks {b}"
            for m, b in missing.items()
        )
        raise EmdirError(
            f"LoRA targets matched no module of {spec.name} for: {what} (paths below the "
            f"block: {', '.join(spec.path_of(m) for m in missing)}); check "
            "finetune.lora.target_modules and layers against the model's modules and depth "
            "(fused or renamed projections belong in the ArchSpec entry in emdir/models/registry.py)"
        )


def check_weight_layout(model: nn.Module, spec: ArchSpec) -> None:
    """Every adapted module stores its weight as the entry says ([in, out] for Conv1D, with
    `fan_in_fan_out`), so peft's merged update is the transposed one where it must be."""
    from peft.tuners.lora import LoraLayer
    from transformers.pytorch_utils import Conv1D

    wrong = sorted(
        name
        for name, mod in model.named_modules()
        if isinstance(mod, LoraLayer)
        and isinstance(mod.get_base_layer(), Conv1D) != spec.fan_in_fan_out
    )
    if wrong:
        kind = "nn.Linear" if spec.fan_in_fan_out else "Conv1D"
        raise EmdirError(
            f"{spec.name}: LoRA wrapped {kind} modules ({', '.join(wrong[:4])}) while its "
            f"ArchSpec entry says fan_in_fan_out={spec.fan_in_fan_out}; fix fan_in_fan_out "
            "in emdir/models/registry.py"
        )


def lora_adapted(model: nn.Module, spec: ArchSpec) -> dict[str, Any]:
    """What the adapter really wraps, for the manifest: module paths with the block index as
    `*` (sorted, without peft's `base_model.model.` prefix) and the decoder blocks."""
    sites = _adapted_sites(model, spec)
    patterns = set()
    for name in sites:
        bare = name.removeprefix("base_model.model.")
        split = spec.split_site(bare)
        patterns.add(f"{split[0]}.*.{split[2]}" if split else bare)
    return {
        "modules": sorted(patterns),
        "blocks": sorted({s[0] for s in sites.values() if s is not None}),
        "n_wrapped": len(sites),
    }
