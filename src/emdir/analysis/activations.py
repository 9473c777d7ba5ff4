"""Residual-stream capture: pooled decoder-block outputs per answer, streamed into an HDF5 store."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from tqdm import tqdm

import emdir
from emdir.analysis.hdf5 import first_nonfinite, get_attrs, set_attrs
from emdir.errors import EmdirError
from emdir.io import atomic_path
from emdir.models.archs import ArchSpec, d_model, decoder_layers, model_device, untuple
from emdir.models.encode import Batch, encode_rows, make_batch
from emdir.provenance import stamp

log = logging.getLogger(__name__)

POOLINGS: tuple[str, ...] = ("answer_mean", "last_prompt", "prompt_mean")
_DTYPES = ("float32", "float16")
_CAPTURE_FIX = (
    "the model produced non-finite activations, so the store was not written; check the "
    "dtypes (float16/bfloat16 overflow: load the model and store activations in float32)"
)
_READ_FIX = (
    "the store is corrupt or the model produced non-finite activations: delete it to "
    "recapture, and if that recurs check the dtypes (float16/bfloat16 overflow)"
)


class _StopForward(Exception):
    """Raised by the deepest hooked block: the rest of the model (norm, LM head) is not needed."""


@dataclass
class _Pooled:
    """Per-layer pooled vectors of one batch, filled in by the layer hooks."""

    vectors: dict[str, list[torch.Tensor | None]]
    norm_sum: np.ndarray


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1).clamp(min=1).unsqueeze(-1)


def _pool_hook(
    slot: int, batch: Batch, poolings: Sequence[str], pooled: _Pooled, stop: bool
) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        h = untuple(output).float()
        last = h[torch.arange(h.shape[0], device=h.device), batch.last_prompt]
        for name in poolings:
            if name == "answer_mean":
                vec = torch.where(batch.empty.unsqueeze(-1), last, _masked_mean(h, batch.answer))
            elif name == "last_prompt":
                vec = last
            else:
                vec = _masked_mean(h, batch.prompt)
            pooled.vectors[name][slot] = vec.cpu()
        norms = torch.linalg.vector_norm(h, dim=-1) * batch.answer
        pooled.norm_sum[slot] = float(norms.sum(dtype=torch.float64))
        if stop:
            raise _StopForward

    return hook


def _run_batch(
    model: nn.Module,
    blocks: nn.ModuleList,
    sel: Sequence[int],
    batch: Batch,
    poolings: Sequence[str],
) -> _Pooled:
    pooled = _Pooled({p: [None] * len(sel) for p in poolings}, np.zeros(len(sel)))
    deepest = max(sel)
    handles = [
        blocks[layer].register_forward_hook(
            _pool_hook(slot, batch, poolings, pooled, stop=layer == deepest)
        )
        for slot, layer in enumerate(sel)
    ]
    forward_hooked(model, batch, handles)
    return pooled


def stop_forward_hook(module: nn.Module, args: Any, output: Any) -> None:
    """A forward hook that ends the pass at its module (see `forward_hooked`)."""
    raise _StopForward


def forward_hooked(model: nn.Module, batch: Batch, handles: Sequence[Any]) -> None:
    """Run `model` on a padded batch with hooks already registered (`handles`); a hook may end
    the pass early by raising `_StopForward`. Every handle is removed, also on error."""
    try:
        model(input_ids=batch.ids, attention_mask=batch.attention, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def capture_layers(model: Any, wanted: Any) -> list[int] | None:
    """activations.layers: None for all, else 0-based indices (negative count from the last)."""
    if wanted == "all":
        return None
    n = len(decoder_layers(model))
    out = [int(i) + n if int(i) < 0 else int(i) for i in wanted]
    bad = [w for w, o in zip(wanted, out, strict=True) if not 0 <= o < n]
    if bad:
        raise EmdirError(f"activations.layers {bad} out of range: the model has {n} layers")
    return out


def text_rows(texts: str | Path, prefix: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Chat-format rows of a dataset file as the rows capture_store reads (id, question,
    system, answer), the first `limit` of them."""
    from emdir.data.datasets import read_chat_file
    from emdir.models.chat import split_conversation

    rows = []
    for k, r in enumerate(read_chat_file(texts)):
        if limit is not None and k >= limit:
            break
        question, system, answer = split_conversation(r["messages"])
        rows.append(
            {
                "id": f"{prefix}_{k}",
                "question_id": f"{prefix}_{k}",
                "question": question,
                "system": system,
                "answer": answer,
            }
        )
    return rows


@torch.no_grad()
def capture_store(
    model: nn.Module,
    tokenizer: Any,
    spec: ArchSpec,
    rows: Sequence[Mapping[str, Any]],
    labels: np.ndarray,
    out_path: str | Path,
    layers: Sequence[int] | None = None,
    poolings: Sequence[str] = ("answer_mean", "last_prompt"),
    batch_size: int = 16,
    dtype: str = "float32",
    attrs: Mapping[str, Any] | None = None,
    adapter_off: ArrayLike | None = None,
) -> Path:
    """Run each row (prompt + answer, teacher-forced) through the model and write the store.

    Layer i is the output of decoder block i, captured by a forward hook (never
    `hidden_states`, whose last entry is after the final norm). Poolings per layer:
    `answer_mean` (mean over answer tokens; a row with an empty answer gets its last
    prompt token and is flagged in /samples/empty_answer), `last_prompt`, `prompt_mean`.
    /resid/token_norm_mean [L] is the mean L2 norm over all answer tokens: the
    `resid_norm` steering scale. Datasets are created at their final shape and filled
    batch by batch; the file appears at `out_path` only when complete.

    `adapter_off` (bool per row) runs those rows with the peft adapter disabled, i.e. through
    the base model (the `models` contrast: the same inputs through base and fine-tuned model);
    /samples/adapter_off records it and token_norm_mean covers the adapter-on rows only.
    """
    n = len(rows)
    if n == 0:
        raise EmdirError("no rows to capture activations for; the generations file is empty")
    y = np.asarray(labels)
    if y.shape != (n,):
        raise EmdirError(f"{y.size} labels for {n} rows; give one label per row")
    if not np.all(np.isin(y, (-1, 0, 1))):
        raise EmdirError("labels must be 1, 0 or -1 (unlabelled)")
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown or not poolings:
        raise EmdirError(f"pooling(s) {unknown or '(none)'} unknown; choose from {POOLINGS}")
    if dtype not in _DTYPES:
        raise EmdirError(f"activation dtype {dtype!r} unsupported; use one of {_DTYPES}")
    if batch_size < 1:
        raise EmdirError(f"batch_size must be >= 1, got {batch_size}")
    blocks = decoder_layers(model)
    sel = list(range(len(blocks))) if layers is None else [int(i) for i in layers]
    bad = [i for i in sel if not 0 <= i < len(blocks)]
    if bad or not sel or len(set(sel)) != len(sel):
        raise EmdirError(
            f"layers {list(layers or [])} invalid: need distinct indices in 0..{len(blocks) - 1}"
        )
    width = d_model(model)
    off = np.zeros(n, dtype=bool) if adapter_off is None else np.asarray(adapter_off, dtype=bool)
    if off.shape != (n,):
        raise EmdirError(f"adapter_off has {off.size} entries for {n} rows")
    if off.any() and not hasattr(model, "disable_adapter"):
        raise EmdirError(
            "rows marked to run through the base model, but the model has no peft adapter "
            "to disable; load it with its adapter (the `models` contrast needs a fine-tune)"
        )
    encoded = encode_rows(tokenizer, rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)

    file_attrs: dict[str, Any] = {
        "model": str(rows[0].get("model") or getattr(model.config, "_name_or_path", "")),
        "ft": str(rows[0].get("ft") or ""),
        "n_layers": len(blocks),
        "d_model": width,
        "pooling": list(poolings),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "emdir_version": emdir.__version__,
    }
    file_attrs.update(stamp())
    file_attrs.update({k: v for k, v in (attrs or {}).items() if v is not None})

    was_training = model.training
    model.eval()
    norm_sum = np.zeros(len(sel))
    norm_count = 0
    empty = np.array([len(e.ids) == e.prompt_len for e in encoded])
    ids = [str(r["id"]) for r in rows]
    try:
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
            resid = {
                p: f.create_dataset(
                    f"resid/{p}",
                    shape=(n, len(sel), width),
                    dtype=dtype,
                    chunks=(1, len(sel), width),
                )
                for p in poolings
            }
            spans = list(_spans(off, batch_size))
            for start, stop in tqdm(spans, desc="activations", mininterval=2):
                enc = encoded[start:stop]
                batch = make_batch(enc, pad, device)
                with model.disable_adapter() if off[start] else contextlib.nullcontext():
                    pooled = _run_batch(model, blocks, sel, batch, poolings)
                for p in poolings:
                    block = torch.stack(pooled.vectors[p], dim=1)  # type: ignore[arg-type]
                    values = block.numpy().astype(dtype)
                    _reject_non_finite(
                        values, start, out_path, f"resid/{p}", sel, ids, _CAPTURE_FIX
                    )
                    resid[p][start:stop] = values
                if not off[start]:
                    norm_sum += pooled.norm_sum
                    norm_count += sum(len(e.ids) - e.prompt_len for e in enc)
            if norm_count == 0:
                log.warning("no row has answer tokens; token_norm_mean is NaN")
            f["resid/token_norm_mean"] = (
                norm_sum / norm_count if norm_count else np.full(len(sel), np.nan)
            ).astype(np.float32)
            f["layers"] = np.asarray(sel, dtype=np.int64)
            text = h5py.string_dtype()
            f.create_dataset("samples/id", data=ids, dtype=text)
            f.create_dataset(
                "samples/question_id", data=[str(r["question_id"]) for r in rows], dtype=text
            )
            f["samples/label"] = y.astype(np.int8)
            f["samples/empty_answer"] = empty
            f["samples/adapter_off"] = off
            set_attrs(f, file_attrs)
    finally:
        model.train(was_training)
    return Path(out_path)


def _reject_non_finite(
    values: np.ndarray,
    start: int,
    path: str | Path,
    dataset: str,
    layers: Sequence[int] | np.ndarray,
    ids: Sequence[str] | np.ndarray,
    fix: str,
) -> None:
    """Raise, naming the store, dataset, layer and row, if `values` (store rows from `start`
    on) holds a NaN or inf."""
    hit = first_nonfinite(values)
    if hit is not None:
        row, slot = start + hit[0], hit[1]
        raise EmdirError(
            f"{path}: {dataset} is NaN or inf at layer {int(layers[slot])}, row {row} "
            f"(id {ids[row]!r}); {fix}"
        )


def _spans(flags: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """[start, stop) batches of at most `size` rows, never mixing rows with different flags."""
    start = 0
    while start < flags.size:
        stop = start + 1
        while stop < flags.size and stop - start < size and flags[stop] == flags[start]:
            stop += 1
        yield start, stop
        start = stop


@dataclass(frozen=True, eq=False)
class ActivationStore:
    """An activation store's metadata, with residual arrays read on demand."""

    path: Path
    ids: np.ndarray
    question_ids: np.ndarray
    labels: np.ndarray
    empty_answer: np.ndarray
    adapter_off: np.ndarray
    layers: np.ndarray
    token_norm_mean: np.ndarray
    poolings: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def slot(self, layer: int) -> int:
        """Index along the store's layer axis of model layer `layer`."""
        hits = np.flatnonzero(self.layers == layer)
        if hits.size == 0:
            raise EmdirError(
                f"{self.path}: layer {layer} was not captured (layers: {self.layers.tolist()})"
            )
        return int(hits[0])

    def resid_norm(self, layer: int) -> float:
        """Mean residual norm over answer tokens at model layer `layer`."""
        return float(self.token_norm_mean[self.slot(layer)])

    def resid(self, pooling: str = "answer_mean") -> np.ndarray:
        """The [N, L_sel, d] array of one pooling, loaded into memory; a NaN or inf anywhere
        in it is an error naming the layer and row."""
        if pooling not in self.poolings:
            raise EmdirError(
                f"{self.path}: pooling {pooling!r} not in the store (has {list(self.poolings)})"
            )
        dataset = f"resid/{pooling}"
        with h5py.File(self.path, "r") as f:
            values = np.asarray(f[dataset][()])
        _reject_non_finite(values, 0, self.path, dataset, self.layers, self.ids, _READ_FIX)
        return values


def read_store(path: str | Path) -> ActivationStore:
    """Open a store written by `capture_store` (small arrays loaded, residuals lazily)."""
    p = Path(path)
    if not p.exists():
        raise EmdirError(f"{p}: activation store not found; run the activations rule first")
    try:
        with h5py.File(p, "r") as f:
            return ActivationStore(
                path=p,
                ids=f["samples/id"].asstr()[()],
                question_ids=f["samples/question_id"].asstr()[()],
                labels=f["samples/label"][()],
                empty_answer=f["samples/empty_answer"][()],
                adapter_off=f["samples/adapter_off"][()]
                if "samples/adapter_off" in f
                else np.zeros(f["samples/label"].shape, dtype=bool),
                layers=f["layers"][()],
                token_norm_mean=f["resid/token_norm_mean"][()],
                poolings=tuple(k for k in f["resid"] if k in POOLINGS),
                attrs=get_attrs(f),
            )
    except (KeyError, OSError) as exc:
        raise EmdirError(
            f"{p}: not a complete activation store ({exc}); delete it and rerun"
        ) from None
