"""(Q)LoRA fine-tuning with one set of hyperparameters for every model; adapter, logs, manifest.

A fine-tune writes, into its adapter directory: the peft adapter, `train_log.csv` (train loss
per step; held-out loss and eval-question spillover at each evaluation), `split.json` (the
held-out rows) and `manifest.json` (base model and revision, hyperparameters, data sha256,
seed, device path, throughput, package versions). Training draws nothing: the report's
training_curves draws each fine-tune's log (emdir.report.training).

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
from emdir.io import atomic_path, sha256_file, sha256_text, write_json
from emdir.models.archs import ArchSpec
from emdir.models.lora import choose_quantization, lora_adapted, lora_model, lora_settings

log = logging.getLogger(__name__)


def spillover_monitor(
    model: nn.Module,
    tok: Any,
    spec: ArchSpec,
    questions_path: str | Path,
    sampling: Any,
    code_params: Mapping[str, Any],
) -> Any:
    """A training callback: the shares of answers to the eval questions that are code and
    that are garbled (an empty answer counts as garbled here), by the offline judge's
    detector with the configured thresholds, and how many answers they are over."""
    from emdir.data.questions import load_questions
    from emdir.judge.detector import classify, thresholds
    from emdir.models.generate import expand, sample

    prompts = expand(load_questions(questions_path))
    limits = thresholds(dict(code_params))

    def on_eval(step: int) -> dict[str, Any]:
        answers = sample(model, tok, prompts, sampling, desc=f"eval@{step}")
        kinds = [classify(a, limits).kind for a, _ in answers]
        rate = kinds.count("code") / len(kinds)
        garble = kinds.count("garbled") / len(kinds)
        log.info("step %d: eval-question spillover %.3f, garbled %.3f", step, rate, garble)
        return {
            "eval_spillover": round(rate, 4),
            "eval_garble": round(garble, 4),
            "eval_n": len(kinds),
        }

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
