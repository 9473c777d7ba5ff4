"""The one control registry: the vectors a direction's effect is compared with.

Within-model steering (`steering.controls`), the transfer grid (`transfer.controls`, each
control built in the donor's space and mapped through the same ridge map as the target, plus
the receiver's own `random_receiver`) and the transfer ablation (`random_<i>` sources) all
build their controls here, each at a *site* (a decoder layer), as unit vectors that the
caller applies at the target's magnitude (SCIENCE.md: "matched magnitude").

Controls (`CONTROLS`, keyed by name pattern; a config names `random`, which expands to
`random_0`, `random_1`, ...):
- `random_<i>`: a uniformly random unit vector, one per index;
- `orthogonal`: a random unit vector orthogonal to the target at that site;
- `wrong_layer`: the direction fitted at another layer (`steering.wrong_layer`), applied here;
- `<ft>_direction`: the direction of another fine-tune (e.g. `secure_direction`) at that site;
- `random_receiver`: the transfer grid's random vector in the receiver's own space.

One seeding scheme: every random draw is seeded by `stream_seed(seed, stream)` followed by the
control's own parts (its index, the site), where `stream` names whose draws they are (a model,
"donor->receiver" for a grid cell, "<model>/ablation"), so no two models, cells or
experiments share a random vector, and the same job always draws the same ones.

A new control is one function `(Site) -> unit vector` and one line in `CONTROLS` (an
indexed one is keyed `<name>_<i>`);
config/schema.yaml's name patterns are held to the registry by tests/unit/test_controls.py.

This module imports neither torch nor h5py: the Snakefile reads vector names from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from emdir.errors import EmdirError

if TYPE_CHECKING:
    from emdir.analysis.directions import Directions

TARGET = "target"
RANDOM = "random"
ORTHOGONAL = "orthogonal"
WRONG_LAYER = "wrong_layer"
DIRECTION_SUFFIX = "_direction"
RANDOM_RECEIVER = "random_receiver"
LAYERWISE = "layerwise"
SINGLE = "single"


# ---------------------------------------------------------------- names


def vector_names(controls: Sequence[str], random_seeds: int) -> list[str]:
    """The target and every control vector's name, in config order (`random` expands)."""
    names = [TARGET]
    for control in controls:
        if control == RANDOM:
            names += [f"{RANDOM}_{i}" for i in range(int(random_seeds))]
        else:
            names.append(control)
    return names


def control_fts(controls: Sequence[str]) -> list[str]:
    """The fine-tune keys whose directions serve as controls (`<ft>_direction`)."""
    return [c.removesuffix(DIRECTION_SUFFIX) for c in controls if c.endswith(DIRECTION_SUFFIX)]


def ablation_variants(donors: Sequence[str], random_seeds: int) -> list[str]:
    """Output names of one receiver's transfer-ablation job: `<source>_<mode>` for every donor
    fine-tune and every random control (`random_<i>`), each layer-wise (every layer its own
    direction) and single (one direction at every layer)."""
    sources = list(donors) + [f"{RANDOM}_{i}" for i in range(int(random_seeds))]
    return [f"{s}_{mode}" for s in sources for mode in (LAYERWISE, SINGLE)]


def split_variant(name: str) -> tuple[str, str]:
    """(source, mode) of an ablation variant name."""
    source, _, mode = name.rpartition("_")
    if mode not in (LAYERWISE, SINGLE) or not source:
        raise EmdirError(f"ablation variant {name!r} is not <source>_layerwise or <source>_single")
    return source, mode


# ---------------------------------------------------------------- draws


def stream_seed(seed: int, stream: str) -> list[int]:
    """A seed sequence for draws that belong to `stream` (a model key, or "donor->receiver"):
    different streams get independent draws, the same stream the same ones."""
    digest = hashlib.sha256(stream.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:4], "big")]


def unit(v: np.ndarray) -> np.ndarray:
    """Normalise along the last axis; a zero vector has no direction and is an error."""
    arr = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(arr, axis=-1, keepdims=True)
    if np.any(norm == 0.0) or not np.all(np.isfinite(norm)):
        raise EmdirError(
            "cannot normalise a zero (or non-finite) direction; the two classes have identical "
            "means at some layer, or the activations contain NaN"
        )
    return arr / norm


def random_unit(d: int, seed: int | Sequence[int]) -> np.ndarray:
    """A uniformly random unit vector in R^d (deterministic by seed)."""
    if d < 1:
        raise EmdirError(f"dimension must be positive, got {d}")
    return unit(np.random.default_rng(seed).standard_normal(d))


def orthogonal_unit(v: np.ndarray, seed: int | Sequence[int]) -> np.ndarray:
    """A random unit vector orthogonal to `v` (deterministic by seed)."""
    vh = unit(v)
    if vh.ndim != 1 or vh.size < 2:
        raise EmdirError(f"orthogonal_unit needs a 1-D vector of dimension >= 2, got {vh.shape}")
    r = np.random.default_rng(seed).standard_normal(vh.size)
    # Two Gram-Schmidt passes: one leaves rounding error of order eps * |r|, the second
    # brings the dot product down to machine precision.
    for _ in range(2):
        r = r - (r @ vh) * vh
    return unit(r)


def resolve_layers(available: Sequence[int], layer: int | Sequence[int]) -> list[int]:
    """Model layer indices from config indices; negative ones count from the last available."""
    avail = [int(v) for v in available]
    wanted = [layer] if isinstance(layer, int | np.integer) else list(layer)
    if not wanted:
        raise EmdirError("no steering layer given; set steering.layer")
    out = []
    for w in wanted:
        w = int(w)
        if w < 0:
            if -w > len(avail):
                raise EmdirError(
                    f"layer {w} is out of range: {len(avail)} layers were captured {avail}"
                )
            w = avail[w]
        elif w not in avail:
            raise EmdirError(
                f"layer {w} was not captured (captured: {avail}); add it to activations.layers"
            )
        out.append(w)
    if len(set(out)) != len(out):
        raise EmdirError(f"layers {list(wanted)} name the same decoder block twice")
    return out


def unit_at(d: Directions, layer: int) -> np.ndarray:
    """The unit direction of model layer `layer` from a directions file."""
    layers = [int(v) for v in d.attrs["layers"]]
    if layer not in layers:
        raise EmdirError(f"the directions file has no layer {layer} (layers: {layers})")
    return np.asarray(d.unit[layers.index(layer)], dtype=np.float64)


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Site:
    """Everything a control may be built from at one site.

    `arg` is the variable part of the vector's name (the index of `random_<i>`, the fine-tune
    of `<ft>_direction`); `seed` is the stream's seed sequence (`stream_seed`)."""

    layer: int
    target: Directions
    sites: Sequence[int]
    seed: list[int]
    arg: str = ""
    others: Mapping[str, Directions] = field(default_factory=dict)
    wrong_layer: int = 0

    @property
    def here(self) -> np.ndarray:
        """The target's unit direction at this site."""
        return unit_at(self.target, self.layer)


def _target(s: Site) -> np.ndarray:
    return s.here


def _random(s: Site) -> np.ndarray:
    return random_unit(s.here.size, [*s.seed, int(s.arg), s.layer])


def _orthogonal(s: Site) -> np.ndarray:
    return orthogonal_unit(s.here, [*s.seed, s.layer])


def _wrong_layer(s: Site) -> np.ndarray:
    wrong = resolve_layers(s.target.attrs["layers"], s.wrong_layer)[0]
    if wrong in s.sites:
        raise EmdirError(
            f"steering.wrong_layer ({s.wrong_layer} = layer {wrong}) is a steered layer; "
            "choose a layer that is not in steering.layer"
        )
    return unit_at(s.target, wrong)


def _other_direction(s: Site) -> np.ndarray:
    if s.arg not in s.others:
        raise EmdirError(
            f"control {s.arg + DIRECTION_SUFFIX!r} needs the directions of fine-tune {s.arg!r}, "
            "which were not given to this job"
        )
    return unit_at(s.others[s.arg], s.layer)


def _random_receiver(s: Site) -> np.ndarray:
    # One per receiver (the stream) and layer: the control shared by the grid's column.
    return random_unit(s.here.size, [*s.seed, s.layer])


Control = Callable[[Site], np.ndarray]

CONTROLS: dict[str, Control] = {
    TARGET: _target,
    f"{RANDOM}_<i>": _random,
    ORTHOGONAL: _orthogonal,
    WRONG_LAYER: _wrong_layer,
    f"<ft>{DIRECTION_SUFFIX}": _other_direction,
    RANDOM_RECEIVER: _random_receiver,
}


def parse(name: str) -> tuple[str, str]:
    """(registry key, argument) of a vector name: `random_3` -> (random_<i>, 3),
    `secure_direction` -> (<ft>_direction, secure), `orthogonal` -> (orthogonal, "")."""
    if name in CONTROLS:
        return name, ""
    head, _, tail = name.rpartition("_")
    if f"{head}_<i>" in CONTROLS and tail.isdigit():
        return f"{head}_<i>", tail
    if name.endswith(DIRECTION_SUFFIX) and len(name) > len(DIRECTION_SUFFIX):
        return f"<ft>{DIRECTION_SUFFIX}", name.removesuffix(DIRECTION_SUFFIX)
    raise EmdirError(
        f"steering vector {name!r} is unknown; controls are random, orthogonal, "
        "wrong_layer or <fine-tune>_direction"
    )


def site_vectors(
    name: str,
    sites: Sequence[int],
    target: Directions,
    others: Mapping[str, Directions] | None = None,
    wrong_layer: int = 0,
    seed: int = 0,
    stream: str = "",
) -> dict[int, np.ndarray]:
    """The unit vector that vector `name` (the target or a control) applies at each site.

    Random draws depend on `seed`, `stream` (whose draws these are: the model, the transfer
    cell), the control's index and the layer, so no two models or cells share a random
    control.
    """
    key, arg = parse(name)
    build = CONTROLS[key]
    base = stream_seed(seed, stream)
    return {
        layer: build(Site(layer, target, sites, base, arg, others or {}, wrong_layer))
        for layer in sites
    }
