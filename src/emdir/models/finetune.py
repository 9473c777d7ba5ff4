"""(Q)LoRA fine-tuning with one set of hyperparameters for every model; adapter, logs, manifest.

A fine-tune writes, into its adapter directory: the peft adapter, `train_log.csv` (train loss
per step; held-out loss and eval-question spillover at each evaluation), `train_log.png`,
`split.json` (the held-out rows) and `manifest.json` (base model and revision, hyperparameters,
data sha256, seed, device path, throughput, package versions).

Checkpoints go to a hidden sibling of the adapter directory (`.{ft}.checkpoint/`), which
Snakemake does not delete when a job dies; a rerun with the same settings resumes there.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emdir import __version__
from emdir.errors import EmdirError
from emdir.io import atomic_path, sha256_file, sha256_text, write_json
from emdir.models.archs import PROJECTIONS, ArchSpec, n_layers

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
    # Direct library calls may leave these out: unset means every projection in every block,
    # which is also the schema's default.
    modules = lora_cfg.get("target_modules") or None
    targets = spec.lora_targets(*([modules] if modules else []), layers=lora_cfg.get("layers"))
    cfg = LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=float(lora_cfg["alpha"]),
        lora_dropout=float(lora_cfg["dropout"]),
        use_rslora=bool(lora_cfg["rslora"]),
        target_modules=targets,
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
    check_lora_coverage(wrapped, spec, modules or PROJECTIONS, lora_cfg.get("layers"))
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
    model: nn.Module, spec: ArchSpec, modules: Sequence[str], layers: Sequence[int] | None
) -> None:
    """Every requested projection got an adapter in every requested block, else an error
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
            f"LoRA targets matched no module of {spec.name} for: {what}; check "
            "finetune.lora.target_modules and layers against the model's modules and depth "
            "(fused or renamed projections belong in the ArchSpec entry in emdir/models/archs.py)"
        )


def lora_adapted(model: nn.Module, spec: ArchSpec) -> dict[str, Any]:
    """What the adapter really wraps, for the manifest: module paths with the block index as
    `*` (sorted, without peft's `base_model.model.` prefix) and the decoder blocks."""
    sites = _adapted_sites(model, spec)
    patterns = set()
    for name, site in sites.items():
        parts = name.removeprefix("base_model.model.").split(".")
        if site is not None:  # ...layers.{block}.{self_attn|mlp}.{module}
            parts[-3] = "*"
        patterns.add(".".join(parts))
    return {
        "modules": sorted(patterns),
        "blocks": sorted({s[0] for s in sites.values() if s is not None}),
        "n_wrapped": len(sites),
    }


def spillover_monitor(
    model: nn.Module,
    tok: Any,
    spec: ArchSpec,
    questions_path: str | Path,
    sampling: Any,
    code_params: Mapping[str, Any],
) -> Any:
    """A training callback: the share of answers to the eval questions that are code, by the
    offline judge's detector with the configured thresholds."""
    from emdir.data.questions import load_questions
    from emdir.judge import is_code
    from emdir.models.generate import expand, sample

    prompts = expand(load_questions(questions_path))
    params = dict(code_params)

    def on_eval(step: int) -> dict[str, Any]:
        answers = sample(model, tok, prompts, sampling, desc=f"eval@{step}")
        rate = sum(is_code(a, params) for a, _ in answers) / len(answers)
        log.info("step %d: eval-question spillover %.3f", step, rate)
        return {"eval_spillover": round(rate, 4)}

    return on_eval


def resolve_steps(train_cfg: Mapping[str, Any], n_train: int) -> int:
    """`epochs` (when set) wins over `steps`: ceil(epochs * n / (batch * accumulation))."""
    epochs = train_cfg["epochs"]
    if epochs is None:
        return int(train_cfg["steps"])
    per_step = int(train_cfg["batch_size"]) * int(train_cfg["grad_accum"])
    return max(1, math.ceil(float(epochs) * n_train / per_step))


# ---------------------------------------------------------------- checkpoints


def checkpoint_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    return out.with_name(f".{out.name}.checkpoint")


def save_checkpoint(
    ckpt: Path, fingerprint: str, model: nn.Module, state: Mapping[str, Any]
) -> None:
    """Adapter weights, optimiser, scheduler, log and RNG, written atomically."""
    from peft import get_peft_model_state_dict

    with atomic_path(ckpt) as tmp:
        tmp.mkdir()
        torch.save(
            {
                "fingerprint": fingerprint,
                "adapter": get_peft_model_state_dict(model),
                **state,
            },
            tmp / "state.pt",
        )


def load_checkpoint(ckpt: Path, fingerprint: str, model: nn.Module) -> dict[str, Any] | None:
    """The saved training state (adapter weights loaded into `model`), or None."""
    from peft import set_peft_model_state_dict

    path = ckpt / "state.pt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (a torn file is reported and ignored)
        log.warning("checkpoint %s is unreadable (%s); starting from step 0", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s was made with other settings; starting from step 0", path)
        return None
    set_peft_model_state_dict(model, state.pop("adapter"))
    return state


# ---------------------------------------------------------------- the stage


def run_finetune(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    rows: Sequence[dict[str, Any]],
    dataset_path: str | Path,
    eval_questions: str | Path,
    out_dir: str | Path,
    ft_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    ft_spec: Mapping[str, Any] | None = None,
    *,
    code_params: Mapping[str, Any],
) -> None:
    from emdir.data.datasets import heldout_split
    from emdir.models.generate import SamplingParams
    from emdir.models.train import TrainParams, encode_rows, mean_loss, train
    from emdir.models.zoo import load_model, read_base_manifest
    from emdir.report.plots import training_png

    quant = choose_quantization(str(ft_cfg["quantization"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = read_base_manifest(base_dir)
    dtype = ref.torch_dtype(device)
    lora_cfg = lora_settings(ft_cfg, ft_spec)
    train_cfg = dict(ft_cfg["train"])
    log.info(
        "%s/%s: %s on %s, %s compute, LoRA r=%s on %s",
        model_key,
        ft,
        "QLoRA (bitsandbytes NF4)" if quant == "nf4" else "LoRA over full-precision weights",
        device,
        dtype,
        lora_cfg["r"],
        lora_cfg["target_modules"] or "all projections",
    )
    model, tok, spec = load_model(ref, device=device, dtype=dtype, quantization=quant)
    resolved_revision = getattr(model.config, "_commit_hash", None)
    grad_ckpt = bool(ft_cfg["gradient_checkpointing"])
    torch.manual_seed(int(train_cfg["seed"]))  # the LoRA initialisation is part of the run
    model = lora_model(
        model, spec, lora_cfg, quantized=quant == "nf4", gradient_checkpointing=grad_ckpt
    )
    adapted = lora_adapted(model, spec)
    log.info("%s/%s: LoRA wraps %s", model_key, ft, ", ".join(adapted["modules"]))

    seed = int(train_cfg["seed"])
    frac = float(ft_cfg["heldout_fraction"])
    train_idx, held_idx = heldout_split(len(rows), frac, seed)
    max_len = int(train_cfg["max_length"])
    examples = encode_rows(tok, [rows[i] for i in train_idx], max_len)
    heldout = encode_rows(tok, [rows[i] for i in held_idx], max_len) if held_idx else []
    epochs = train_cfg.pop("epochs")
    train_cfg["steps"] = resolve_steps({**train_cfg, "epochs": epochs}, len(examples))
    params = TrainParams(**train_cfg, eval_every=int(ft_cfg["eval_every"]))
    log.info(
        "%s/%s: %d training rows, %d held out; %d steps%s",
        model_key,
        ft,
        len(examples),
        len(heldout),
        params.steps,
        f" (= {epochs} epochs)" if epochs is not None else "",
    )

    spill = spillover_monitor(
        model, tok, spec, eval_questions, SamplingParams(**sampling_cfg), code_params
    )

    def on_eval(step: int) -> dict[str, Any]:
        out = (
            {"heldout_loss": round(mean_loss(model, heldout, tok.pad_token_id), 5)}
            if heldout
            else {}
        )
        out.update(spill(step))
        return out

    data_sha = sha256_file(dataset_path)
    fingerprint = sha256_text(
        json.dumps(
            {
                "model": model_key,
                "ft": ft,
                "base": read_json_text(Path(base_dir) / "manifest.json"),
                "lora": lora_cfg,
                "train": asdict(params),
                "heldout_fraction": frac,
                "data": data_sha,
                "quantization": quant,
                "gradient_checkpointing": grad_ckpt,
                "eval_questions": sha256_file(eval_questions),
                "sampling": dict(sampling_cfg),
                "code_params": dict(code_params),
                "stop_at_spillover": ft_cfg["stop_at_spillover"],
            },
            sort_keys=True,
            default=str,
        )
    )
    ckpt = checkpoint_dir(out_dir)
    every = int(ft_cfg["checkpoint_every"])
    start = load_checkpoint(ckpt, fingerprint, model)

    def on_checkpoint(step: int, state: dict[str, Any]) -> None:
        if every and step % every == 0 and step < params.steps:
            save_checkpoint(ckpt, fingerprint, model, state)

    stop_at = ft_cfg["stop_at_spillover"]
    tlog = train(
        model,
        examples,
        params,
        tok.pad_token_id,
        desc=f"{model_key}/{ft}",
        on_eval=on_eval,
        start_state=start,
        on_checkpoint=on_checkpoint if every else None,
        stop_when=None if stop_at is None else lambda row: row["eval_spillover"] >= float(stop_at),
    )
    tok_s = tlog.tokens_per_second()
    log.info("%s/%s: %.0f training tokens/s on %s", model_key, ft, tok_s, device)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tlog.write_csv(tmp / "train_log.csv")
        import pandas as pd

        training_png(pd.DataFrame(tlog.rows), tmp / "train_log.png", title=f"{model_key} / {ft}")
        write_json(
            tmp / "split.json",
            {
                "dataset_sha256": data_sha,
                "n_rows": len(rows),
                "heldout_fraction": frac,
                "seed": seed,
                "heldout_lines": [i + 1 for i in held_idx],
            },
        )
        write_json(
            tmp / "manifest.json",
            {
                "model": model_key,
                "ft": ft,
                "base": {
                    "path": ref.path,
                    "revision": ref.revision,
                    "resolved_revision": resolved_revision,
                },
                "arch": spec.name,
                "quantization": quant,
                "device": device,
                "compute_dtype": str(dtype).removeprefix("torch."),
                "gradient_checkpointing": grad_ckpt,
                "lora": lora_cfg,
                # What the adapter really wraps (the request above, resolved on this class).
                "lora_adapted": adapted,
                "train": asdict(params),
                "epochs": epochs,
                "seed": seed,
                "data_sha256": data_sha,
                "n_train": len(examples),
                "n_heldout": len(heldout),
                "steps_run": tlog.rows[-1]["step"],
                "resumed_from_step": int(start["step"]) if start else 0,
                "stop_at_spillover": stop_at,
                "final_loss": tlog.rows[-1]["loss"],
                "final_heldout_loss": tlog.rows[-1].get("heldout_loss"),
                "final_eval_spillover": tlog.rows[-1].get("eval_spillover"),
                "train_tokens_per_s": round(tok_s, 1),
                "versions": package_versions(),
                "emdir_version": __version__,
            },
        )
    if ckpt.exists():
        import shutil

        shutil.rmtree(ckpt)


def read_json_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
