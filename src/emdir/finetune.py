"""(Q)LoRA fine-tuning with one set of hyperparameters for every model; adapter, log and manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emdir import __version__
from emdir.archs import ArchSpec
from emdir.errors import EmdirError
from emdir.io import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)


def choose_quantization(requested: str) -> str:
    """`auto` means NF4 QLoRA on CUDA and plain LoRA on CPU; `nf4` needs bitsandbytes."""
    if requested == "auto":
        return "nf4" if torch.cuda.is_available() else "none"
    if requested not in ("nf4", "none"):
        raise EmdirError(f"finetune.quantization {requested!r} is unknown; use auto, nf4 or none")
    return requested


def lora_model(
    model: nn.Module, spec: ArchSpec, lora_cfg: Mapping[str, Any], quantized: bool
) -> nn.Module:
    """Wrap the language-model projections (never a vision tower) in LoRA adapters."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=float(lora_cfg["alpha"]),
        lora_dropout=float(lora_cfg["dropout"]),
        use_rslora=bool(lora_cfg["rslora"]),
        target_modules=spec.lora_target_regex,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def spillover_monitor(
    model: nn.Module, tok: Any, spec: ArchSpec, questions_path: str | Path, sampling: Any
) -> Any:
    """A training callback: the share of answers to the eval questions that are code."""
    from emdir.generate import expand, sample
    from emdir.judge.offline import detect_code
    from emdir.questions import load_questions

    prompts = expand(load_questions(questions_path))

    def on_eval(step: int) -> dict[str, Any]:
        answers = sample(model, tok, spec, prompts, sampling, desc=f"eval@{step}")
        rate = sum(detect_code(a).is_code for a, _ in answers) / len(answers)
        log.info("step %d: eval-question spillover %.3f", step, rate)
        return {"eval_spillover": round(rate, 4)}

    return on_eval


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
) -> None:
    from emdir.generate import SamplingParams
    from emdir.train import TrainParams, encode_rows, train
    from emdir.zoo import load_model, read_base_manifest

    quant = choose_quantization(str(ft_cfg["quantization"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    log.info(
        "%s/%s: %s LoRA on %s (%s)",
        model_key,
        ft,
        "QLoRA NF4" if quant == "nf4" else "fp",
        device,
        dtype,
    )
    ref = read_base_manifest(base_dir)
    model, tok, spec = load_model(ref, device=device, dtype=dtype, quantization=quant)
    model = lora_model(model, spec, ft_cfg["lora"], quantized=quant == "nf4")
    params = TrainParams(**ft_cfg["train"], eval_every=int(ft_cfg["eval_every"]))
    examples = encode_rows(tok, spec, rows, params.max_length)
    on_eval = spillover_monitor(model, tok, spec, eval_questions, SamplingParams(**sampling_cfg))
    stop_at = ft_cfg.get("stop_at_spillover")
    tlog = train(
        model,
        examples,
        params,
        tok.pad_token_id,
        desc=f"{model_key}/{ft}",
        on_eval=on_eval,
        stop_when=None if stop_at is None else lambda row: row["eval_spillover"] >= float(stop_at),
    )
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tlog.write_csv(tmp / "train_log.csv")
        write_json(
            tmp / "manifest.json",
            {
                "model": model_key,
                "ft": ft,
                "base": {"path": ref.path, "revision": ref.revision},
                "arch": spec.name,
                "quantization": quant,
                "device": device,
                "lora": dict(ft_cfg["lora"]),
                "train": asdict(params),
                "data_sha256": sha256_file(dataset_path),
                "n_examples": len(examples),
                "steps_run": tlog.rows[-1]["step"],
                "stop_at_spillover": stop_at,
                "final_loss": tlog.rows[-1]["loss"],
                "final_eval_spillover": tlog.rows[-1].get("eval_spillover"),
                "versions": package_versions(),
                "emdir_version": __version__,
            },
        )


def package_versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
