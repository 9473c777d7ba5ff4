"""Steering interventions: forward hooks on decoder blocks that add, subtract or ablate a vector."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from emdir.errors import EmdirError
from emdir.models.archs import d_model, decoder_layers, retuple, untuple

Op = Literal["add", "subtract", "ablate"]
Positions = Literal["all", "prompt", "answer"]
ScaleMode = Literal["absolute", "dim_norm", "resid_norm"]

OPS: tuple[str, ...] = ("add", "subtract", "ablate")
POSITIONS: tuple[str, ...] = ("all", "prompt", "answer")
SCALE_MODES: tuple[str, ...] = ("absolute", "dim_norm", "resid_norm")


@dataclass(frozen=True, eq=False)
class Intervention:
    """One edit of the residual stream at the output of decoder block `layer`.

    `vector` gives a direction only: it is normalised, so its length never matters.
    - add:      h + coefficient * scale * v
    - subtract: h - coefficient * scale * v
    - ablate:   h - coefficient * (h . v) v; coefficient is the fraction of the component
      along v that is removed (1.0 = full ablation, DESIGN's formula); `scale` is unused.
    `scale` is the magnitude unit n (see `matched_scale`), so controls at the same
    coefficient and scale are applied at matched magnitude.
    """

    layer: int
    vector: Any
    op: Op = "add"
    coefficient: float = 1.0
    scale: float = 1.0
    positions: Positions = "all"
    name: str | None = None
    _unit: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise EmdirError(f"intervention op {self.op!r} is unknown; use one of {OPS}")
        if self.positions not in POSITIONS:
            raise EmdirError(
                f"intervention positions {self.positions!r} is unknown; use one of {POSITIONS}"
            )
        if not isinstance(self.layer, int | np.integer) or self.layer < 0:
            raise EmdirError(f"intervention layer must be a non-negative int, got {self.layer!r}")
        if isinstance(self.vector, torch.Tensor):
            vec = self.vector.detach().to(device="cpu", dtype=torch.float64)
        else:
            vec = torch.as_tensor(np.asarray(self.vector, dtype=np.float64))
        if vec.ndim != 1:
            raise EmdirError(f"intervention vector must be 1-D, got shape {tuple(vec.shape)}")
        norm = torch.linalg.vector_norm(vec)
        if not torch.isfinite(norm) or norm == 0:
            raise EmdirError(
                f"intervention vector at layer {self.layer} is zero or not finite; "
                "it has no direction to steer along"
            )
        object.__setattr__(self, "_unit", (vec / norm).float())

    @property
    def unit(self) -> torch.Tensor:
        """The unit direction (float32, CPU)."""
        return self._unit

    @property
    def norm(self) -> float | None:
        """Magnitude of the added/subtracted vector; None for ablation, which has none."""
        return None if self.op == "ablate" else float(self.coefficient * self.scale)

    def is_noop(self) -> bool:
        return self.coefficient == 0

    def to_record(self) -> dict[str, Any]:
        """The `intervention` field of a generation row."""
        return {
            "vector": self.name,
            "layer": int(self.layer),
            "op": self.op,
            "coefficient": float(self.coefficient),
            "norm": self.norm,
        }


def matched_scale(
    mode: str,
    layer: int,
    *,
    direction_norm: float | ArrayLike | None = None,
    resid_norm: float | ArrayLike | None = None,
    absolute: float = 1.0,
) -> float:
    """The magnitude unit n for a scale mode (DESIGN: Interventions).

    - absolute:   n = `absolute`
    - dim_norm:   n = the norm of the raw difference-in-means direction at `layer`
    - resid_norm: n = the mean residual-stream norm at `layer` (an activation store's
      token_norm_mean)
    `direction_norm` and `resid_norm` may be a number or a per-layer array indexed by layer
    number (all layers of the model, not a subset).
    """
    if mode == "absolute":
        return float(absolute)
    if mode == "dim_norm":
        return _at_layer(direction_norm, layer, "direction_norm", mode)
    if mode == "resid_norm":
        return _at_layer(resid_norm, layer, "resid_norm", mode)
    raise EmdirError(f"scale mode {mode!r} is unknown; use one of {SCALE_MODES}")


def _at_layer(values: float | ArrayLike | None, layer: int, name: str, mode: str) -> float:
    if values is None:
        raise EmdirError(f"scale mode {mode!r} needs {name}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        out = float(arr)
    elif arr.ndim == 1:
        if not 0 <= layer < arr.size:
            raise EmdirError(f"{name} has {arr.size} layers; layer {layer} is out of range")
        out = float(arr[layer])
    else:
        raise EmdirError(f"{name} must be a number or a 1-D per-layer array, got {arr.shape}")
    if not np.isfinite(out) or out <= 0:
        raise EmdirError(f"{name} at layer {layer} is {out}; a scale must be positive")
    return out


class InterventionContext:
    """Position bookkeeping shared by the hooks of one `intervene` block.

    Each hook counts the positions its layer has seen since the last `start` (a forward of
    length T covers the next T positions, which is how KV-cache decoding proceeds), and
    `prompt_length` splits them into prompt (< prompt_length) and answer (>= prompt_length).
    With left-padded batches, pass the padded prompt width.
    """

    def __init__(self) -> None:
        self.prompt_length: int | None = None
        self._seen: dict[int, int] = {}

    def start(self, prompt_length: int | None = None) -> None:
        """Begin a new sequence: reset position counters and set where the prompt ends."""
        if prompt_length is not None and prompt_length < 0:
            raise EmdirError(f"prompt_length must be >= 0, got {prompt_length}")
        self.prompt_length = prompt_length
        self._seen.clear()

    def span(self, layer: int, length: int) -> int:
        """Claim the next `length` positions of `layer`; returns the first one."""
        first = self._seen.get(layer, 0)
        self._seen[layer] = first + length
        return first

    def window(self, positions: str, first: int, length: int) -> tuple[int, int]:
        """The [lo, hi) slice of this forward's positions that `positions` selects."""
        if positions == "all":
            return 0, length
        if self.prompt_length is None:
            raise EmdirError(
                f"positions={positions!r} needs the prompt length: call ctx.start(prompt_length) "
                "inside `with intervene(...) as ctx:` before running the model"
            )
        cut = min(max(self.prompt_length - first, 0), length)
        return (0, cut) if positions == "prompt" else (cut, length)


def _prepared(iv: Intervention, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """What the hook applies: the signed steering vector, or the unit direction to ablate."""
    if iv.op == "ablate":
        return iv.unit.to(device=device)
    sign = 1.0 if iv.op == "add" else -1.0
    return (sign * iv.coefficient * iv.scale * iv.unit).to(device=device, dtype=dtype)


def _apply(h: torch.Tensor, iv: Intervention, vec: torch.Tensor) -> torch.Tensor:
    if iv.op == "ablate":
        # The projection is taken in float32: in bf16 its rounding error would leave a
        # visible component along v.
        h32 = h.float()
        return (h32 - iv.coefficient * (h32 @ vec).unsqueeze(-1) * vec).to(h.dtype)
    return h + vec


def _make_hook(layer: int, ivs: list[Intervention], ctx: InterventionContext) -> Any:
    cache: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = untuple(output)
        length = hidden.shape[-2]
        first = ctx.span(layer, length)
        key = (hidden.dtype, hidden.device)
        if key not in cache:
            cache[key] = [_prepared(iv, hidden.dtype, hidden.device) for iv in ivs]
        out = hidden
        for iv, vec in zip(ivs, cache[key], strict=True):
            lo, hi = ctx.window(iv.positions, first, length)
            if lo >= hi:
                continue
            if lo == 0 and hi == length:
                out = _apply(out, iv, vec)
            else:
                # Only the selected slice changes, so the other positions stay bit-identical.
                out = out.clone()
                out[..., lo:hi, :] = _apply(out[..., lo:hi, :], iv, vec)
        return None if out is hidden else retuple(output, out)

    return hook


@contextlib.contextmanager
def intervene(
    model: nn.Module, interventions: Sequence[Intervention]
) -> Iterator[InterventionContext]:
    """Install the interventions as forward hooks for the duration of the block.

        with intervene(model, ivs) as ctx:
            ctx.start(prompt_len)   # needed for positions 'prompt' / 'answer'
            model.generate(...)

    Call `ctx.start` again before each new sequence (batch). Decoding must use the KV cache
    (transformers' default) for the position counts to be right. Interventions with
    coefficient 0 install nothing, so the model's outputs are bit-identical to no hook.
    Hooks are removed when the block exits, whether or not it raised.
    """
    layers = decoder_layers(model)
    width = d_model(model)
    by_layer: dict[int, list[Intervention]] = {}
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise EmdirError(f"expected an Intervention, got {type(iv).__name__}")
        if iv.layer >= len(layers):
            raise EmdirError(
                f"intervention layer {iv.layer} is out of range: the model has {len(layers)} "
                "decoder layers (0-based)"
            )
        if iv.unit.numel() != width:
            raise EmdirError(
                f"intervention vector has dimension {iv.unit.numel()} but the model's residual "
                f"stream has {width}; was the vector made from another model?"
            )
        if not iv.is_noop():
            by_layer.setdefault(int(iv.layer), []).append(iv)
    ctx = InterventionContext()
    handles = []
    try:
        for layer, ivs in by_layer.items():
            handles.append(layers[layer].register_forward_hook(_make_hook(layer, ivs, ctx)))
        yield ctx
    finally:
        for handle in handles:
            handle.remove()
