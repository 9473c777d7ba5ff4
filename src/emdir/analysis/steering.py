"""The steering experiment: the target direction and its matched-magnitude controls, per site.

A *site* is a decoder block whose output is steered. At every site each vector (the target
direction or a control) is a unit vector applied with the same magnitude unit n, so controls
are matched in magnitude to the target (SCIENCE.md: "matched magnitude").

This is the one control registry: within-model steering (`steering.controls`) and the
transfer grid (`transfer.controls`, each control built in the donor's space and mapped through
the same ridge map as the target) name and build their controls here.

Controls:
- `random`: uniformly random unit vectors, `random_seeds` of them (`random_0`, ...), drawn
  afresh for every model (within-model) and every donor/receiver cell (transfer);
- `orthogonal`: a random unit vector orthogonal to the target at that site;
- `wrong_layer`: the direction fitted at another layer (`steering.wrong_layer`), applied here;
- `<ft>_direction`: the direction of another fine-tune (e.g. `secure_direction`) at that site.

This module imports neither torch nor h5py at import time: the Snakefile reads vector names
from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from emdir.errors import EmdirError

if TYPE_CHECKING:
    from emdir.analysis.directions import Directions
    from emdir.analysis.interventions import Intervention

TARGET = "target"
RANDOM = "random"
ORTHOGONAL = "orthogonal"
WRONG_LAYER = "wrong_layer"
DIRECTION_SUFFIX = "_direction"


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


def stream_seed(seed: int, stream: str) -> list[int]:
    """A seed sequence for draws that belong to `stream` (a model key, or "donor->receiver"):
    different streams get independent draws, the same stream the same ones."""
    digest = hashlib.sha256(stream.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:4], "big")]


def site_vectors(
    name: str,
    sites: Sequence[int],
    target: Directions,
    others: Mapping[str, Directions] | None = None,
    wrong_layer: int = 0,
    seed: int = 0,
    stream: str = "",
) -> dict[int, np.ndarray]:
    """The unit vector that vector `name` applies at each site (model layer).

    Random and orthogonal draws depend on `seed`, `stream` (whose draws these are: the model,
    or the transfer cell), the control's index and the layer, so no two models or cells share
    a random control.
    """
    from emdir.analysis import directions as dm

    base = stream_seed(seed, stream)
    others = others or {}
    out: dict[int, np.ndarray] = {}
    for layer in sites:
        here = unit_at(target, layer)
        if name == TARGET:
            out[layer] = here
        elif name.startswith(f"{RANDOM}_") and name[len(RANDOM) + 1 :].isdigit():
            index = int(name[len(RANDOM) + 1 :])
            out[layer] = dm.random_unit(here.size, [*base, index, layer])
        elif name == ORTHOGONAL:
            out[layer] = dm.orthogonal_unit(here, [*base, layer])
        elif name == WRONG_LAYER:
            wrong = resolve_layers(target.attrs["layers"], wrong_layer)[0]
            if wrong in sites:
                raise EmdirError(
                    f"steering.wrong_layer ({wrong_layer} = layer {wrong}) is a steered layer; "
                    "choose a layer that is not in steering.layer"
                )
            out[layer] = unit_at(target, wrong)
        elif name.endswith(DIRECTION_SUFFIX):
            ft = name.removesuffix(DIRECTION_SUFFIX)
            if ft not in others:
                raise EmdirError(
                    f"control {name!r} needs the directions of fine-tune {ft!r}, which were "
                    "not given to this job"
                )
            out[layer] = unit_at(others[ft], layer)
        else:
            raise EmdirError(
                f"steering vector {name!r} is unknown; controls are random, orthogonal, "
                "wrong_layer or <fine-tune>_direction"
            )
    return out


def site_scales(
    mode: str,
    sites: Sequence[int],
    target: Directions,
    resid_norm: Mapping[int, float],
    absolute: float = 1.0,
) -> dict[int, float]:
    """The magnitude unit n at each site, shared by the target and every control there."""
    from emdir.analysis.interventions import matched_scale

    layers = [int(v) for v in target.attrs["layers"]]
    return {
        layer: matched_scale(
            mode,
            layer,
            direction_norm=float(target.norm[layers.index(layer)]),
            resid_norm=resid_norm[layer],
            absolute=absolute,
        )
        for layer in sites
    }


def interventions(
    name: str,
    vectors: Mapping[int, np.ndarray],
    scales: Mapping[int, float],
    op: str,
    coefficient: float,
    positions: str = "all",
) -> list[Intervention]:
    """One intervention per site: the vector's unit direction at coefficient x n."""
    from emdir.analysis.interventions import Intervention

    return [
        Intervention(
            layer=layer,
            vector=vec,
            op=op,  # type: ignore[arg-type]
            coefficient=float(coefficient),
            scale=float(scales[layer]),
            positions=positions,  # type: ignore[arg-type]
            name=name,
        )
        for layer, vec in vectors.items()
    ]


def layer_label(record: Any) -> str:
    """The `layer` of a generation row's intervention record: "3", or "1+2+3" for several."""
    records = record if isinstance(record, list) else [record]
    return "+".join(str(r["layer"]) for r in records)


# ---------------------------------------------------------------- transfer ablation

LAYERWISE = "layerwise"
SINGLE = "single"


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
