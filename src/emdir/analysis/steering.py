"""Steering: the target direction and its controls applied at matched magnitude, sampled.

A *site* is a decoder block whose output is steered. At every site each vector (the target
direction or a control from `emdir.analysis.controls`) is a unit vector applied with the same
magnitude unit n, so controls are matched in magnitude to the target (SCIENCE.md: "matched
magnitude"). `sample_steered` generates under the interventions and records each answer's
functional cost (KL to the unsteered model).

This module imports neither torch nor h5py at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from emdir.analysis.directions import Directions
    from emdir.analysis.interventions import Intervention
    from emdir.models.generate import Prompt, SamplingParams


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


def sample_steered(
    model: Any,
    tok: Any,
    prompts: Sequence[Prompt],
    ivs: Sequence[Intervention],
    sampling: SamplingParams,
    model_key: str,
    ft: str,
    desc: str,
) -> list[dict[str, Any]]:
    """Generation rows for `prompts` sampled under the interventions `ivs`, each with its
    intervention record and `kl`: the functional cost of the vector, the KL from the
    unsteered to the steered next-token distribution along the answer (nats per token)."""
    from emdir.analysis.calibration import kl_to_unsteered
    from emdir.analysis.interventions import intervene
    from emdir.models.generate import generation_rows, sample

    with intervene(model, ivs) as ctx:
        answers = sample(model, tok, prompts, sampling, desc=desc, on_batch=ctx.start)
    record = ivs[0].to_record() if len(ivs) == 1 else [iv.to_record() for iv in ivs]
    rows = generation_rows(prompts, answers, model_key, ft, intervention=record)
    kl = kl_to_unsteered(model, tok, prompts, [a for a, _ in answers], ivs)
    for row, value in zip(rows, kl, strict=True):
        row["kl"] = round(float(value), 6)
    return rows
