"""Model stages: the tiny models' tokenizer, pinned weights, base chat models and LoRA
fine-tunes (rules tokenizer, fetch_weights, base_model, finetune)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emdir import __version__
from emdir.data.datasets import read_chat_file
from emdir.errors import EmdirError
from emdir.io import atomic_path, sha256_file, write_json
from emdir.models.load import set_threads

log = logging.getLogger(__name__)


def tokenizer(corpus: str | Path, out_dir: str | Path, cfg: Mapping[str, Any]) -> None:
    """Train the shared byte-level BPE tokenizer of the tiny models on the chat corpus."""
    from emdir.models.zoo import train_tokenizer

    rows = read_chat_file(corpus)
    texts = [m["content"] for r in rows for m in r["messages"]]
    with atomic_path(out_dir) as tmp:
        train_tokenizer(texts, tmp, int(cfg["vocab_size"]))


def fetch_weights(
    model_key: str, archive: Mapping[str, Any], out: str | Path, record: str | Path
) -> None:
    """Rule fetch_weights: a model's pinned archive, assembled and verified (see
    emdir.models.weights), and the record of where it came from (for the base manifest)."""
    from emdir.models.weights import fetch_archive

    write_json(record, fetch_archive(f"models.{model_key}.archive", archive, out))


def base_model(
    model_key: str,
    model_cfg: Mapping[str, Any],
    tiny_cfg: Mapping[str, Any] | None,
    tokenizer_dir: str | Path | None,
    corpus: str | Path | None,
    weights: str | Path | None,
    weights_record: str | Path | None,
    out_dir: str | Path,
    threads: int,
) -> None:
    """A base chat model in Hugging Face format (or a manifest naming where it is), by source:
    hub (a manifest), local folder (a manifest with the folder's file hashes), GGUF from a local
    file or a pinned archive (converted here, once), tiny (built and taught to chat here)."""
    source = model_cfg["source"]
    manifest: dict[str, Any] = {
        "source": source,
        "arch": model_cfg["arch"],
        "dtype": model_cfg.get("dtype", "auto"),
        "emdir_version": __version__,
    }
    if source == "hub":
        manifest.update(hf_id=model_cfg["hf_id"], revision=model_cfg["revision"])
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            write_json(tmp / "manifest.json", manifest)
        return
    if source in ("local", "archive"):
        from emdir.models.weights import base_from_weights

        set_threads(threads)
        base_from_weights(
            f"models.{model_key}", model_cfg, weights, weights_record, out_dir, manifest
        )
        return
    if tokenizer_dir is None or corpus is None or tiny_cfg is None:
        raise EmdirError(f"model {model_key!r}: a tiny model needs the tokenizer and chat corpus")
    set_threads(threads)
    from emdir.models import zoo
    from emdir.models.train import TrainParams, encode_rows, train

    shape = zoo.TinyShape(**tiny_cfg["shape"])
    # No evaluation while a base model learns to chat (fine-tunes evaluate spillover).
    params = TrainParams(**tiny_cfg["train"], eval_every=0)
    model, tok = zoo.build_tiny(model_cfg["arch"], tokenizer_dir, shape, params.seed)
    examples = encode_rows(tok, read_chat_file(corpus), params.max_length)
    log.info(
        "%s: teaching a tiny %s to chat on %d examples", model_key, model_cfg["arch"], len(examples)
    )
    tlog = train(model, examples, params, tok.pad_token_id, desc=f"{model_key} base")
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tlog.write_csv(tmp / "train_log.csv")
        manifest.update(
            shape=asdict(shape),
            train=asdict(params),
            corpus_sha256=sha256_file(corpus),
            final_loss=tlog.rows[-1]["loss"],
        )
        write_json(tmp / "manifest.json", manifest)


def finetune(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    dataset: str | Path,
    eval_questions: str | Path,
    out_dir: str | Path,
    ft_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    judge_cfg: Mapping[str, Any],
    threads: int,
    ft_spec: Mapping[str, Any] | None = None,
) -> None:
    """LoRA fine-tune with the shared hyperparameters; logs loss and eval-question spillover."""
    from emdir.models.finetune import run_finetune

    set_threads(threads)
    run_finetune(
        model_key,
        ft,
        base_dir,
        read_chat_file(dataset),
        dataset,
        eval_questions,
        out_dir,
        ft_cfg,
        sampling_cfg,
        ft_spec=ft_spec,
        code_params=judge_cfg["offline"],
    )
