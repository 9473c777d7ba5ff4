"""One model's steering dose-response: every vector at every swept coefficient against the
unsteered answers, the read strength (steering.read), controls matched by cost, and the
calibration of where each vector first moves the behaviour.

`steering_rows` gives within_model_summary its rows and figure points; `read_strength` is its
own rule, whose JSON the transfer grid steers receivers at. Conditions are named
`<vector>@<coefficient>` beside the unsteered `base`, all in one question bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emdir.errors import EmdirError
from emdir.io import write_json
from emdir.report.effects import (
    BEHAVIOUR,
    PairedConditions,
    bootstrap_settings,
    ci_columns,
    load_scored,
)


def _cost(p: PairedConditions, name: str, cost: str) -> float:
    """A vector's functional cost: coherence lost (points, unsteered minus steered) or mean
    KL to the unsteered model (nats per answer token)."""
    if cost == "coherence":
        return p.point("base", "coh") - p.point(name, "coh")
    if cost == "kl":
        return p.point(name, "kl")
    raise EmdirError(f"steering.read.cost {cost!r} is unknown; use coherence or kl")


def _cond(vector: str, coef: float) -> str:
    return f"{vector}@{coef:g}"


def choose_read(
    p: PairedConditions,
    controls: Sequence[str],
    coefficients: Sequence[float],
    read_cfg: Mapping[str, Any],
) -> tuple[float, bool]:
    """The read strength: the largest coefficient at which every control's cost stays within
    `read.max_cost`; (the smallest coefficient, False) when none does."""
    cost, limit = str(read_cfg["cost"]), float(read_cfg["max_cost"])
    coefs = sorted(float(c) for c in coefficients)
    ok = [
        c
        for c in coefs
        if all(
            np.isfinite(v) and v <= limit
            for v in (_cost(p, _cond(ctl, c), cost) for ctl in controls)
        )
    ]
    return (ok[-1], True) if ok else (coefs[0], False)


def matched_coefficients(
    p: PairedConditions,
    target: str,
    control: str,
    coef: float,
    coefficients: Sequence[float],
    rules: Sequence[str],
) -> list[float]:
    """The control's coefficients the target at `coef` is compared with: the same one
    (`norm`) and the one whose cost is closest to the target's (`kl`, `coherence`)."""
    out = []
    for rule in rules:
        if rule == "norm":
            out.append(float(coef))
            continue
        want = _cost(p, _cond(target, coef), rule)
        gaps = [
            (abs(_cost(p, _cond(control, float(c)), rule) - want), float(c))
            for c in sorted(coefficients)
        ]
        gaps = [g for g in gaps if np.isfinite(g[0])]
        if gaps:
            out.append(min(gaps)[1])
    return sorted(set(out))


def _steering_conditions(
    steered: Mapping[str, list[dict[str, Any]]],
    base_rows: list[dict[str, Any]],
    coefficients: Sequence[float],
    where: str,
) -> dict[str, list[dict[str, Any]]]:
    """The baseline (`base`) and every vector at every coefficient (`<vector>@<c>`)."""
    conds = {"base": base_rows}
    for vector, rows in steered.items():
        for c in coefficients:
            sel = [r for r in rows if row_coefficient(r) == float(c)]
            if not sel:
                raise EmdirError(
                    f"steering output {where}/{vector} has no answers at coefficient {c:g}; "
                    "rerun the steering rule"
                )
            conds[_cond(vector, float(c))] = sel
    return conds


def read_strength(
    baseline: str | Path,
    steering: Mapping[str, str | Path],
    out: str | Path,
    steer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
) -> None:
    """One model's read strength (steering.read) as JSON, for the transfer grid: the
    largest swept coefficient at which every control's cost stays within the limit."""
    qset = str(steer_cfg["question_set"])
    steered = {v: load_scored(path, qset) for v, path in steering.items()}
    coefs = [float(c) for c in steer_cfg["coefficients"]]
    p = PairedConditions(
        _steering_conditions(steered, load_scored(baseline, qset), coefs, str(baseline)),
        bootstrap_settings(stats_cfg),
    )
    controls = [v for v in steered if v != "target"]
    if not controls:
        raise EmdirError("steering.read needs controls to read at; configure steering.controls")
    coef, ok = choose_read(p, controls, coefs, steer_cfg["read"])
    cost = str(steer_cfg["read"]["cost"])
    write_json(
        out,
        {
            "read_coefficient": coef,
            "controls_within_cost": ok,
            "cost": cost,
            "max_cost": float(steer_cfg["read"]["max_cost"]),
            "costs": {f"{c:g}": {v: _cost(p, _cond(v, c), cost) for v in steered} for c in coefs},
        },
    )


def steering_rows(
    model: str,
    ft: str,
    steered: Mapping[str, Sequence[list[dict[str, Any]]]],
    base_rows: Sequence[list[dict[str, Any]]],
    ds: Sequence[Any],
    direction_ft: str,
    steer_cfg: Mapping[str, Any],
    boot: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Summary rows (every vector at every coefficient: the dose-response), figure points and
    calibration rows of one model/fine-tune, all from one paired bootstrap.

    Per fine-tuning seed: each vector's answers, the unsteered answers and the directions
    (None where there are none), one entry a seed. With one seed this is that seed's table;
    with several, every value is pooled over the seeds (`PairedConditions`), and so are the
    vectors' norms and the separation (their mean over seeds)."""
    from emdir.analysis.steering import layer_label

    coefs = sorted(float(c) for c in steer_cfg["coefficients"])
    where = f"{model}/{ft}"
    seeds = [
        _steering_conditions({v: rows[k] for v, rows in steered.items()}, base, coefs, where)
        for k, base in enumerate(base_rows)
    ]
    p = PairedConditions(seeds, boot)
    behaviour = BEHAVIOUR[str(steer_cfg["behaviour"])]
    controls = [v for v in steered if v != "target"]
    read_c, within = (
        choose_read(p, controls, coefs, steer_cfg["read"]) if controls else (np.nan, False)
    )
    series = {v: series_name(v, ft, direction_ft) for v in steered}
    base4 = tuple(p.mean3("base", m) for m in ("spill", "garble", "coh", "mis"))
    curve = [_curve_point(model, series[v], 0.0, *base4) for v in steered]
    record = steered["target"][0][0]["intervention"]
    layer = layer_label(record)
    separation = _separation(ds, deepest_layer(layer))
    rows: list[dict[str, Any]] = []
    for c in coefs:
        for vector in steered:
            name = _cond(vector, c)
            spill3, garble3 = p.mean3(name, "spill"), p.mean3(name, "garble")
            coh3, mis3 = p.mean3(name, "coh"), p.mean3(name, "mis")
            row: dict[str, Any] = {
                "model": model,
                "ft": ft,
                "direction_ft": direction_ft,
                "vector": vector,
                "layer": layer,
                "op": _first_site(record)["op"],
                "coefficient": c,
                "read": bool(c == read_c),
                "norm": float(
                    np.mean([_first_site(s[name][0]["intervention"])["norm"] for s in seeds])
                ),
                **p.size(name),
                "spillover": spill3[0],
                "lo": spill3[1],
                "hi": spill3[2],
                "baseline_spillover": p.point("base", "spill") * 100,
                **dict(
                    zip(
                        ("effect_points", "effect_lo", "effect_hi"),
                        p.diff3("base", name, "spill"),
                        strict=True,
                    )
                ),
                **ci_columns("garble", garble3),
                **ci_columns("garble_change", p.diff3(name, "base", "garble")),
                **ci_columns("coherence", coh3),
                **ci_columns("coherence_change", p.diff3(name, "base", "coh")),
                **ci_columns("kl", p.mean3(name, "kl")),
                **ci_columns("misalignment", mis3),
                **ci_columns("misalignment_effect", p.diff3("base", name, "mis")),
                **separation,
            }
            if vector == "target" and controls:
                against = {
                    (ctl if c2 == c else f"{ctl} x{c2:g}"): _cond(ctl, c2)
                    for ctl in controls
                    for c2 in matched_coefficients(p, "target", ctl, c, coefs, steer_cfg["match"])
                }
                row.update(p.specificity("base", name, against, behaviour, "specificity_points"))
            rows.append(row)
            curve.append(_curve_point(model, series[vector], c, spill3, garble3, coh3, mis3))
    calibration = []
    if controls:
        for vector in steered:
            moves = {
                m: next(
                    (c for c in coefs if _excludes_zero(p.diff3("base", _cond(vector, c), m))),
                    np.nan,
                )
                for m in ("spill", behaviour)
            }
            at = _cond(vector, read_c)
            calibration.append(
                {
                    "model": model,
                    "ft": ft,
                    "vector": vector,
                    "behaviour": str(steer_cfg["behaviour"]),
                    "moves_behaviour_at": moves[behaviour],
                    "moves_spillover_at": moves["spill"],
                    "read_coefficient": read_c,
                    "controls_within_cost": within,
                    "read_cost": str(steer_cfg["read"]["cost"]),
                    "max_cost": float(steer_cfg["read"]["max_cost"]),
                    **ci_columns("behaviour_effect_at_read", p.diff3("base", at, behaviour)),
                    **ci_columns("coherence_change_at_read", p.diff3(at, "base", "coh")),
                    **ci_columns("kl_at_read", p.mean3(at, "kl")),
                }
            )
    return rows, curve, calibration


def series_name(vector: str, ft: str, direction_ft: str) -> str:
    """A dose-response series: the vector, with the fine-tune it steers when that is not the
    directions' own (`target on secure`)."""
    return vector if ft == direction_ft else f"{vector} on {ft}"


def _separation(ds: Sequence[Any], layer: int) -> dict[str, float]:
    """The directions' held-out separation at `layer`, averaged over seeds (NaN without)."""
    if not ds or any(d is None for d in ds):
        return {"separation_accuracy": np.nan, "separation_auroc": np.nan}
    slots = [list(d.attrs["layers"]).index(layer) for d in ds]
    return {
        "separation_accuracy": float(
            np.mean([d.accuracy[i] for d, i in zip(ds, slots, strict=True)])
        ),
        "separation_auroc": float(np.mean([d.auroc[i] for d, i in zip(ds, slots, strict=True)])),
    }


def _excludes_zero(v: tuple[float, ...]) -> bool:
    return bool(v[1] > 0 or v[2] < 0)


def _curve_point(
    model: str,
    series: str,
    coefficient: float,
    spill3: tuple[float, ...],
    garble3: tuple[float, ...],
    coh3: tuple[float, ...],
    mis3: tuple[float, ...],
) -> dict[str, Any]:
    """One point of the dose-response figure: spillover, garble, coherence, misalignment with
    CIs."""
    return {
        "model": model,
        "series": series,
        "coefficient": coefficient,
        **dict(zip(("spillover", "lo", "hi"), spill3, strict=True)),
        **ci_columns("garble", garble3),
        **ci_columns("coherence", coh3),
        **dict(zip(("misalignment", "mis_lo", "mis_hi"), mis3, strict=True)),
    }


def _first_site(record: Any) -> Mapping[str, Any]:
    """An intervention record, or the first site's of a several-site (list) record: the
    sites of one output share op, coefficient and norm unit."""
    return record[0] if isinstance(record, list) else record


def row_coefficient(row: Mapping[str, Any]) -> float:
    """The steering coefficient of a judged row's intervention (its first site's)."""
    return float(_first_site(row["intervention"])["coefficient"])


def deepest_layer(layer: str) -> int:
    """The deepest layer of a `layer` label ("3" or "1+2+3")."""
    return max(int(x) for x in str(layer).split("+"))
