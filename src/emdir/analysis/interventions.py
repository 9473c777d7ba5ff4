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

from emdir.analysis.hooks import POSITIONS, InterventionContext, make_hook
from emdir.errors import EmdirError
from emdir.models.archs import d_model, decoder_layers

Op = Literal["add", "subtract", "ablate"]
Positions = Literal["all", "prompt", "answer"]
ScaleMode = Literal["absolute", "dim_norm", "resid_norm"]

OPS: tuple[str, ...] = ("add", "subtract", "ablate")
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


def _check(iv: Any, n_layers: int, width: int) -> None:
    if not isinstance(iv, Intervention):
        raise EmdirError(f"expected an Intervention, got {type(iv).__name__}")
    if iv.layer >= n_layers:
        raise EmdirError(
            f"intervention layer {iv.layer} is out of range: the model has {n_layers} "
            "decoder layers (0-based)"
        )
    if iv.unit.numel() != width:
        raise EmdirError(
            f"intervention vector has dimension {iv.unit.numel()} but the model's residual "
            f"stream has {width}; was the vector made from another model?"
        )


@contextlib.contextmanager
def _installed(
    model: nn.Module, rows: Sequence[Sequence[Intervention]], ctx: InterventionContext
) -> Iterator[InterventionContext]:
    layers = decoder_layers(model)
    width = d_model(model)
    by_layer: dict[int, list[list[Intervention]]] = {}
    for k, row in enumerate(rows):
        for iv in row:
            _check(iv, len(layers), width)
            if not iv.is_noop():
                by_layer.setdefault(int(iv.layer), [[] for _ in rows])[k].append(iv)
    handles = []
    try:
        for layer in sorted(by_layer):
            hook = make_hook(layer, by_layer[layer], ctx)
            handles.append(layers[layer].register_forward_hook(hook))
        yield ctx
    finally:
        for handle in handles:
            handle.remove()


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
    with _installed(model, [list(interventions)], InterventionContext()) as ctx:
        yield ctx


@contextlib.contextmanager
def intervene_rows(
    model: nn.Module, rows: Sequence[Sequence[Intervention]]
) -> Iterator[InterventionContext]:
    """Every row its own interventions (vector, coefficient, layer, op, positions), applied by
    one hook per layer in one tensor operation for the whole batch:

        with intervene_rows(model, per_row) as ctx:
            ctx.start(prompt_len, batch=[3, 4, 9])   # the rows of `per_row` in this batch
            model.generate(...)

    A row with no interventions (or coefficient 0) is left bit-identical to an unhooked
    forward, so steered rows and their unsteered twins can share a batch. A row's edits at
    one layer apply in the order given, as `intervene` applies them.
    """
    with _installed(model, [list(r) for r in rows], InterventionContext(per_row=True)) as ctx:
        yield ctx
