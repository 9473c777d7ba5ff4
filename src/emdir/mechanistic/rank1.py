"""Rank-1 LoRA reading: each adapter's A/B vectors, its per-token scalars A.x, and probes on them.

A rank-1 LoRA on a linear layer adds `delta = scale * b (a . x)`: `b` is a fixed vector in the
layer's output space and the scalar `a . x` says how much of it each token gets. For adapters on
`o_proj`/`down_proj`, `b` is a direction written into the residual stream (Soligo et al. 2025,
"Convergent linear representations of emergent misalignment").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from emdir.analysis.activations import forward_hooked, stop_forward_hook
from emdir.errors import EmdirError
from emdir.models.archs import ArchSpec, decoder_layers, model_device, spec_of
from emdir.models.chat import split_conversation
from emdir.models.encode import encode_rows, make_batch

log = logging.getLogger(__name__)

# Logical projections whose output is added to the residual stream as it is (whatever a
# class calls them: GPT-NeoX's dense_4h_to_h is a down_proj); the B vector of any other
# projection lives in that projection's own output space.
RESIDUAL_WRITERS = ("o_proj", "down_proj")


@dataclass(frozen=True, eq=False)
class AdapterSite:
    """One rank-1 LoRA adapter: `delta = scale * b * (a . x)` on `module` of decoder block `layer`.

    `module` is named as the class's registry entry names it (`down_proj`, GPT-2's
    `mlp.c_proj`); `projections` are the logical projections it carries (empty = `module`).
    """

    name: str
    layer: int
    module: str
    a: np.ndarray  # [in_features], the A row
    b: np.ndarray  # [out_features], the B column
    scale: float
    projections: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class _Wrapped:
    """A site and the peft sub-module whose output is the site's scalar."""

    site: AdapterSite
    lora_a: nn.Module
    peft_layer: nn.Module


def _lora_layer_type() -> type:
    from peft.tuners.lora import LoraLayer

    return LoraLayer


def _wrapped_sites(model: nn.Module) -> list[_Wrapped]:
    """Every active LoRA adapter inside the decoder blocks, in block order, checked to be rank 1."""
    lora_type = _lora_layer_type()
    qualified = {id(m): n for n, m in model.named_modules()}
    blocks = decoder_layers(model)
    spec = spec_of(model)
    out: list[_Wrapped] = []
    for layer, block in enumerate(blocks):
        for local, mod in block.named_modules():
            if isinstance(mod, lora_type):
                out.extend(_sites_of(mod, layer, local, qualified.get(id(mod), local), spec))
    total = sum(isinstance(m, lora_type) for m in model.modules())
    if not out:
        raise EmdirError(
            f"no active LoRA adapter in the decoder layers of {type(model).__name__} "
            f"({total} LoRA module(s) elsewhere); load the model with its rank-1 adapter"
        )
    found = len({id(w.peft_layer) for w in out})
    if total > found:
        log.warning("%d LoRA module(s) outside the decoder layers are ignored", total - found)
    return out


def _sites_of(mod: Any, layer: int, local: str, qualified: str, spec: ArchSpec) -> list[_Wrapped]:
    """The active adapters of one peft LoRA layer at path `local` below its block."""
    known = spec.module_at(local) in spec.modules()
    # A module that is no projection of the entry is named by its own last part.
    module = spec.module_at(local) if known else local.rsplit(".", 1)[-1]
    active = [a for a in mod.active_adapters if a in mod.lora_A]
    out = []
    for adapter in active:
        rank = int(mod.r[adapter])
        if rank != 1:
            raise EmdirError(
                f"LoRA module {qualified} (adapter {adapter!r}) has rank {rank}; the rank-1 "
                "reading needs r: 1 adapters (set finetune lora.r to 1 for this fine-tune)"
            )
        if adapter in getattr(mod, "lora_variant", {}):
            raise EmdirError(
                f"LoRA module {qualified} (adapter {adapter!r}) is a LoRA variant (e.g. DoRA), "
                "whose update is not b (a . x); train a plain LoRA adapter"
            )
        name = f"L{layer}.{module}" + (f":{adapter}" if len(active) > 1 else "")
        lora_a = mod.lora_A[adapter]
        site = AdapterSite(
            name=name,
            layer=layer,
            module=module,
            a=lora_a.weight.detach().float().cpu().numpy()[0].copy(),
            b=mod.lora_B[adapter].weight.detach().float().cpu().numpy()[:, 0].copy(),
            scale=float(mod.scaling[adapter]),
            projections=spec.projections_of(module) if known else (),
        )
        out.append(_Wrapped(site, lora_a, mod))
    return out


def adapter_sites(model: nn.Module) -> list[AdapterSite]:
    """The rank-1 LoRA adapters in the decoder layers of a peft model, in block order.

    Each LoRA-wrapped linear of a decoder block with an active adapter gives one site,
    named `L{layer}.{module}` (e.g. `L15.down_proj`; `:adapter` is appended where a module
    has several active adapters). LoRA modules outside the decoder blocks (a vision tower)
    are skipped with a warning. A rank other than 1 is an error naming the module.
    """
    return [w.site for w in _wrapped_sites(model)]


def b_cosines(sites: Sequence[AdapterSite], directions: Mapping[int, np.ndarray]) -> list[dict]:
    """Cosine of each adapter's B vector with the direction at its layer.

    Layer i's direction is taken at the output of decoder block i, the residual stream the
    block's `o_proj`/`down_proj` adds B to (in Gemma 2 through a per-coordinate post-norm, so
    there the cosine is with B before that norm). Rows: adapter, layer, module, cosine,
    b_norm, note. Sites on other projections (q_proj, ...) have cosine NaN and a note: their
    B is not in the residual stream, even where its width happens to equal d_model. A zero B
    (an untrained adapter) also gives NaN with a note.
    """
    rows = []
    for site in sites:
        b = np.asarray(site.b, dtype=np.float64)
        b_norm = float(np.linalg.norm(b))
        row: dict[str, Any] = {
            "adapter": site.name,
            "layer": site.layer,
            "module": site.module,
            "cosine": float("nan"),
            "b_norm": b_norm,
            "note": "",
        }
        if not set(site.projections or (site.module,)) <= set(RESIDUAL_WRITERS):
            row["note"] = (
                f"B of {site.module} is a vector in that projection's output space "
                f"({b.size} dims), not in the residual stream"
            )
        elif b_norm == 0.0:
            row["note"] = "B is zero (an untrained adapter): it has no direction"
        else:
            v = _direction_at(directions, site)
            row["cosine"] = float(b @ v / (b_norm * np.linalg.norm(v)))
        rows.append(row)
    return rows


def _direction_at(directions: Mapping[int, np.ndarray], site: AdapterSite) -> np.ndarray:
    if site.layer not in directions:
        raise EmdirError(
            f"no direction at layer {site.layer} for adapter {site.name} (directions have "
            f"layers {sorted(directions)}); compute directions at every adapter layer"
        )
    v = np.asarray(directions[site.layer], dtype=np.float64).reshape(-1)
    if v.size != site.b.size:
        raise EmdirError(
            f"the layer-{site.layer} direction has {v.size} dims but adapter {site.name} "
            f"writes {site.b.size}; the directions come from a different model"
        )
    norm = float(np.linalg.norm(v))
    if norm == 0.0 or not np.isfinite(norm):
        raise EmdirError(f"the layer-{site.layer} direction is zero or non-finite")
    return v


@dataclass(frozen=True, eq=False)
class ScalarRecord:
    """Per-answer rank-1 scalars `a . x` (raw, without `scale`), adapters in `names` order."""

    names: list[str]
    per_answer_mean: np.ndarray  # [N, n_adapters], mean over answer tokens (0 if empty)
    per_answer_max_abs: np.ndarray  # [N, n_adapters], max |a . x| over answer tokens
    tokens: list[np.ndarray]  # per answer [T_ans, n_adapters] float32
    empty: np.ndarray  # [N] bool, the answer has no tokens


def _qa_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows in the generation format (question/system/answer/id/question_id); chat rows
    (`messages`) are converted, with their position as id."""
    out = []
    for k, row in enumerate(rows):
        if "messages" in row:
            question, system, answer = split_conversation(list(row["messages"]))
            rid = str(row.get("id", k))
            out.append(
                {
                    "id": rid,
                    "question_id": str(row.get("question_id", rid)),
                    "question": question,
                    "system": system,
                    "answer": answer,
                }
            )
        else:
            out.append(dict(row))
    return out


def _capture_hook(slot: int, store: list[torch.Tensor | None]) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if store[slot] is not None:
            raise EmdirError("a lora_A module ran twice in one forward pass; unsupported model")
        store[slot] = output.detach()[..., 0].float().cpu()

    return hook


def _batch_scalars(
    model: nn.Module, wrapped: Sequence[_Wrapped], last_block: nn.Module, batch: Any
) -> torch.Tensor:
    """[B, T, n_sites] scalars of one batch; every hook is removed before returning."""
    store: list[torch.Tensor | None] = [None] * len(wrapped)
    handles = [
        w.lora_a.register_forward_hook(_capture_hook(j, store)) for j, w in enumerate(wrapped)
    ]
    # The rest of the model after the deepest adapted block is not needed.
    handles.append(last_block.register_forward_hook(stop_forward_hook))
    forward_hooked(model, batch, handles)
    silent = [w.site.name for w, s in zip(wrapped, store, strict=True) if s is None]
    if silent:
        raise EmdirError(
            f"adapter(s) {', '.join(silent)} did not run in the forward pass (merged into the "
            "weights or disabled); load the adapter unmerged and enabled"
        )
    return torch.stack(store, dim=-1)  # type: ignore[arg-type]


@torch.no_grad()
def record_scalars(
    model: nn.Module,
    tokenizer: Any,
    spec: ArchSpec,
    rows: Sequence[Mapping[str, Any]],
    batch_size: int = 16,
) -> ScalarRecord:
    """Teacher-forced replay of answers through a rank-1 peft model, recording `a . x` per adapter.

    Rows are generation rows (question, system, answer, id, question_id) or chat rows
    (`messages` with a user and an assistant turn). Prompt and answer are encoded as in
    `activations.capture_store` (no turn-end token), right-padded in batches of
    `batch_size`. A forward hook on each adapter's `lora_A` records its output, the raw
    scalar `a . x` (not multiplied by `scale`), at every answer token; dropout is off (eval
    mode). The model is causal and the answer tokens are the ones it generated, so the scalar
    at an answer token equals the one computed during generation when that token was read,
    up to floating-point differences of batching and the KV cache. Hooks are removed even when
    the forward pass raises.
    """
    if batch_size < 1:
        raise EmdirError(f"batch_size must be >= 1, got {batch_size}")
    if not rows:
        raise EmdirError("no rows to record rank-1 scalars for; the generations file is empty")
    wrapped = _wrapped_sites(model)
    blocks = decoder_layers(model)
    last_block = blocks[max(w.site.layer for w in wrapped)]
    encoded = encode_rows(tokenizer, _qa_rows(rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    tokens: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(encoded), batch_size)
        for start in tqdm(starts, desc="rank-1 scalars", mininterval=2):
            enc = encoded[start : start + batch_size]
            scal = _batch_scalars(model, wrapped, last_block, make_batch(enc, pad, device))
            for i, e in enumerate(enc):
                tokens.append(scal[i, e.prompt_len : len(e.ids)].numpy().astype(np.float32))
    finally:
        model.train(was_training)
    n_sites = len(wrapped)
    empty = np.array([t.shape[0] == 0 for t in tokens], dtype=bool)
    mean = np.zeros((len(tokens), n_sites))
    max_abs = np.zeros((len(tokens), n_sites))
    for i, t in enumerate(tokens):
        if t.shape[0]:
            mean[i] = t.mean(axis=0, dtype=np.float64)
            max_abs[i] = np.abs(t).max(axis=0)
    return ScalarRecord(
        names=[w.site.name for w in wrapped],
        per_answer_mean=mean,
        per_answer_max_abs=max_abs,
        tokens=tokens,
        empty=empty,
    )
