"""The forward hooks behind `emdir.analysis.interventions`: position bookkeeping, and the
edits of one layer as tensors over a batch, one row per sequence when every row carries its
own interventions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from emdir.errors import EmdirError
from emdir.models.archs import retuple, untuple

if TYPE_CHECKING:
    from emdir.analysis.interventions import Intervention

POSITIONS: tuple[str, ...] = ("all", "prompt", "answer")


class InterventionContext:
    """Position bookkeeping shared by the hooks of one `intervene` block, and which rows the
    current batch holds when every row carries interventions of its own (`intervene_rows`).

    Each hook counts the positions its layer has seen since the last `start` (a forward of
    length T covers the next T positions, which is how KV-cache decoding proceeds), and
    `prompt_length` splits them into prompt (< prompt_length) and answer (>= prompt_length).
    With left-padded batches, pass the padded prompt width; with right-padded batches whose
    rows have prompts of different lengths, pass one length per row.
    """

    def __init__(self, per_row: bool = False) -> None:
        self.prompt_length: int | None = None
        self.prompt_lengths: torch.Tensor | None = None
        self.per_row = per_row
        self.batch: list[int] | None = None
        self._seen: dict[int, int] = {}
        self.generation = 0

    def start(
        self,
        prompt_length: int | Sequence[int] | None = None,
        batch: Sequence[int] | None = None,
    ) -> None:
        """Begin a new sequence (batch): reset position counters, set where the prompt ends
        (one length, or one per row), and with per-row interventions, which rows of
        `intervene_rows` the batch holds, in order."""
        lengths = None if prompt_length is None else np.atleast_1d(prompt_length)
        if lengths is not None and (lengths < 0).any():
            raise EmdirError(f"prompt_length must be >= 0, got {prompt_length}")
        if lengths is None or np.ndim(prompt_length) == 0:
            self.prompt_length = None if prompt_length is None else int(prompt_length)  # type: ignore[arg-type]
            self.prompt_lengths = None
        else:
            self.prompt_length = None
            self.prompt_lengths = torch.as_tensor(lengths, dtype=torch.long)
        if self.per_row:
            if batch is None:
                raise EmdirError(
                    "every row carries its own interventions: pass the batch's row indices to "
                    "ctx.start(prompt_length, batch)"
                )
            self.batch = [int(i) for i in batch]
        self._seen.clear()
        self.generation += 1

    def span(self, layer: int, length: int) -> int:
        """Claim the next `length` positions of `layer`; returns the first one."""
        first = self._seen.get(layer, 0)
        self._seen[layer] = first + length
        return first

    def window(self, positions: str, first: int, length: int) -> tuple[int, int]:
        """The [lo, hi) slice of this forward's positions that `positions` selects (one prompt
        length for the whole batch)."""
        if positions == "all":
            return 0, length
        if self.prompt_length is None:
            raise EmdirError(
                f"positions={positions!r} needs the prompt length: call ctx.start(prompt_length) "
                "inside `with intervene(...) as ctx:` before running the model"
            )
        cut = min(max(self.prompt_length - first, 0), length)
        return (0, cut) if positions == "prompt" else (cut, length)

    def mask(self, codes: torch.Tensor, first: int, length: int) -> torch.Tensor:
        """[B, T] bool: which of this forward's positions each row's `positions` selects;
        `codes` holds one index into POSITIONS per row."""
        if self.prompt_lengths is None:
            if self.prompt_length is None:
                raise EmdirError(
                    "positions 'prompt' / 'answer' need the prompt length: call "
                    "ctx.start(prompt_length, ...) before running the model"
                )
            cut = torch.full_like(codes, self.prompt_length)
        else:
            cut = self.prompt_lengths
        pos = torch.arange(first, first + length)
        in_prompt = pos[None, :] < cut[:, None]
        code = codes[:, None]
        return (code == 0) | ((code == 1) & in_prompt) | ((code == 2) & ~in_prompt)


@dataclass
class _Slot:
    """The k-th intervention of every row at one layer, as tensors of one batch: a signed
    vector to add (zero for rows that ablate or have none), a unit direction and the fraction
    to ablate (zero likewise), and each row's positions. Every row gets exactly its own edit:
    h + 0 and h - 0 * (h . u) u leave h as it was. One row of each tensor when every row
    shares the interventions (`intervene`), so it broadcasts over any batch."""

    add: torch.Tensor | None  # [R, d], hidden dtype
    unit: torch.Tensor | None  # [R, d] float32
    fraction: torch.Tensor | None  # [R, 1, 1] float32
    codes: torch.Tensor | None  # [R] indices into POSITIONS; None when every row uses "all"
    uniform_positions: str | None  # the one positions value of a shared slot


def _slot(ivs: Sequence[Intervention | None], dtype: torch.dtype, device: torch.device) -> _Slot:
    width = next(iv for iv in ivs if iv is not None).unit.numel()
    zero = torch.zeros(width)
    adds = [
        zero
        if iv is None or iv.op == "ablate"
        else (1.0 if iv.op == "add" else -1.0) * iv.coefficient * iv.scale * iv.unit
        for iv in ivs
    ]
    ablating = [iv is not None and iv.op == "ablate" for iv in ivs]
    any_add = any(iv is not None and iv.op != "ablate" for iv in ivs)
    positions = ["all" if iv is None else iv.positions for iv in ivs]
    return _Slot(
        add=torch.stack(adds).to(device=device, dtype=dtype) if any_add else None,
        unit=(
            torch.stack([iv.unit if a else zero for iv, a in zip(ivs, ablating, strict=True)]).to(  # type: ignore[union-attr]
                device
            )
            if any(ablating)
            else None
        ),
        fraction=(
            torch.tensor(
                [iv.coefficient if a else 0.0 for iv, a in zip(ivs, ablating, strict=True)]
            )  # type: ignore[union-attr]
            .view(-1, 1, 1)
            .to(device)
            if any(ablating)
            else None
        ),
        codes=(
            None
            if all(p == "all" for p in positions)
            else torch.tensor([POSITIONS.index(p) for p in positions])
        ),
        uniform_positions=positions[0] if len(ivs) == 1 else None,
    )


def _shared(ivs: list[Intervention | None]) -> list[Intervention | None]:
    """One entry when every row of the batch has the same intervention (a batch of one
    condition): its tensors then broadcast, and the edit is computed exactly as `intervene`
    computes it (the ablation's projection by one matrix-vector product, not a batched one)."""
    return ivs[:1] if ivs and ivs[0] is not None and all(iv is ivs[0] for iv in ivs) else ivs


def _edit(hidden: torch.Tensor, slot: _Slot, select: torch.Tensor | None) -> torch.Tensor:
    """One slot applied; `select` ([B, T] bool) limits it to the positions it names."""
    out = hidden
    if slot.add is not None:
        out = out + slot.add[:, None, :]
    if slot.unit is not None:
        # The projection is taken in float32: in bf16 its rounding error would leave a
        # visible component along v.
        h32 = out.float()
        if slot.unit.shape[0] == 1:
            proj = (h32 @ slot.unit[0]).unsqueeze(-1)
        else:
            proj = torch.bmm(h32, slot.unit[:, :, None])
        out = (h32 - slot.fraction * proj * slot.unit[:, None, :]).to(hidden.dtype)
    if select is None:
        return out
    return torch.where(select[..., None], out, hidden)


def make_hook(layer: int, rows: list[list[Intervention]], ctx: InterventionContext) -> Any:
    """The hook of one layer. `rows` holds each row's interventions at this layer (a single
    entry when all rows share them)."""
    shared = not ctx.per_row
    cache: dict[tuple[int, torch.dtype, torch.device], list[_Slot]] = {}

    def slots(dtype: torch.dtype, device: torch.device) -> list[_Slot]:
        key = (ctx.generation, dtype, device)
        if key not in cache:
            cache.clear()
            if shared:
                batch = [rows[0]]
            elif ctx.batch is None:
                raise EmdirError(
                    "every row carries its own interventions: call ctx.start(prompt_length, "
                    "batch) with the batch's row indices before running the model"
                )
            else:
                batch = [rows[i] for i in ctx.batch]
            depth = max((len(r) for r in batch), default=0)
            cache[key] = [
                _slot(_shared([r[k] if k < len(r) else None for r in batch]), dtype, device)
                for k in range(depth)
                if any(k < len(r) for r in batch)
            ]
        return cache[key]

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = untuple(output)
        length = hidden.shape[-2]
        first = ctx.span(layer, length)
        if not shared and ctx.batch is not None and len(ctx.batch) != hidden.shape[0]:
            raise EmdirError(
                f"ctx.start was given {len(ctx.batch)} rows but the forward has "
                f"{hidden.shape[0]}; pass the indices of exactly the batch's rows"
            )
        out = hidden
        for slot in slots(hidden.dtype, hidden.device):
            if slot.uniform_positions is not None and ctx.prompt_lengths is None:
                lo, hi = ctx.window(slot.uniform_positions, first, length)
                if lo >= hi:
                    continue
                if lo == 0 and hi == length:
                    out = _edit(out, slot, None)
                else:
                    # Only the selected slice changes, so the other positions stay bit-identical.
                    out = out.clone()
                    out[..., lo:hi, :] = _edit(out[..., lo:hi, :], slot, None)
            else:
                select = None if slot.codes is None else ctx.mask(slot.codes, first, length)
                if select is not None and not bool(select.any()):
                    continue
                out = _edit(
                    out, slot, None if select is not None and bool(select.all()) else select
                )
        return None if out is hidden else retuple(output, out)

    return hook
