"""Steering: the target direction and its controls applied at matched magnitude, sampled.

A *site* is a decoder block whose output is steered. At every site each vector (the target
direction or a control from `emdir.analysis.controls`) is a unit vector applied with the same
magnitude unit n, so controls are matched in magnitude to the target (SCIENCE.md: "matched
magnitude"). `sample_conditions` generates under the interventions and records each answer's
functional cost (KL to the unsteered model).

This module imports neither torch nor h5py at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from emdir.analysis.directions import Directions
    from emdir.analysis.interventions import Intervention
    from emdir.models.generate import Prompt, SamplingParams
    from emdir.resume import Pieces


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


def sample_conditions(
    model: Any,
    tok: Any,
    prompts: Sequence[Prompt],
    conditions: Mapping[str, Sequence[Intervention]],
    sampling: SamplingParams,
    model_key: str,
    ft: str,
    desc: str,
    pieces: Pieces | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Generation rows for every condition (a name and its interventions) over `prompts`,
    each row with its intervention record and `kl`: the functional cost of the vector, the
    KL from the unsteered to the steered next-token distribution along the answer (nats per
    token).

    All conditions are sampled together: every (condition, prompt) row carries its own
    interventions (`intervene_rows`), condition after condition in prompt order, cut into
    batches of `sampling.batch_size` rows (`auto`: as many as `sampling.max_memory_gb`
    allows), so one decoding step multiplies hundreds of rows. Every answer keeps its own
    seed, so a row's answer does not depend on the batch it lands in beyond float rounding;
    the batches are a function of the config alone. A batch is the unit that `pieces` keeps
    across a kill.
    """
    from emdir.models.generate import generation_rows
    from emdir.models.memory import kl_batch, sampling_batch

    names = list(conditions)
    size, widths = sampling_batch(model, tok, prompts, sampling)
    # Condition after condition, each in prompt order: a batch of a condition's prompts is
    # the batch that condition drew alone before, so float32 answers stay bit-identical.
    order = [(c, j) for c in range(len(names)) for j in range(len(prompts))]
    kl_size = kl_batch(model, widths, sampling)
    done: dict[tuple[int, int], dict[str, Any]] = {}
    for start in range(0, len(order), size):
        unit = order[start : start + size]
        label = f"{desc} rows {start + 1}-{start + len(unit)} of {len(order)}"
        compute = functools.partial(
            _draw, model, tok, prompts, conditions, names, unit, sampling, kl_size, label
        )
        key = f"rows {start}-{start + len(unit)} of {len(order)} kl{kl_size}"
        for r in compute() if pieces is None else pieces.rows(key, compute):
            done[(int(r["condition"]), int(r["prompt"]))] = r
    out: dict[str, list[dict[str, Any]]] = {}
    for c, name in enumerate(names):
        ivs = conditions[name]
        drawn = [done[(c, j)] for j in range(len(prompts))]
        record = ivs[0].to_record() if len(ivs) == 1 else [iv.to_record() for iv in ivs]
        rows = generation_rows(
            prompts, [(r["answer"], int(r["seed"])) for r in drawn], model_key, ft, record
        )
        for row, r in zip(rows, drawn, strict=True):
            row["kl"] = round(float(r["kl"]), 6)
        out[name] = rows
    return out


def _draw(
    model: Any,
    tok: Any,
    prompts: Sequence[Prompt],
    conditions: Mapping[str, Sequence[Intervention]],
    names: Sequence[str],
    unit: Sequence[tuple[int, int]],
    sampling: SamplingParams,
    kl_size: int,
    label: str,
) -> list[dict[str, Any]]:
    """One batch of `sample_conditions`: the (condition, prompt) rows of `unit` sampled
    together, each under its own interventions, then their KL costs."""
    from emdir.analysis.calibration import kl_per_row
    from emdir.analysis.interventions import intervene_rows
    from emdir.models.generate import sample

    unit_prompts = [prompts[j] for _, j in unit]
    unit_ivs = [list(conditions[names[c]]) for c, _ in unit]
    with intervene_rows(model, unit_ivs) as ctx:
        answers = sample(
            model,
            tok,
            unit_prompts,
            sampling,
            desc=label,
            on_batch=ctx.start,
            batch_size=len(unit),
        )
    kl = kl_per_row(model, tok, unit_prompts, [a for a, _ in answers], unit_ivs, kl_size)
    return [
        {"condition": c, "prompt": j, "answer": a, "seed": seed, "kl": float(k)}
        for (c, j), (a, seed), k in zip(unit, answers, kl, strict=True)
    ]
