"""Aggregation: spillover rates, steering effects and the transfer grid, each with bootstrap CIs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.analysis.stats import (
    PASSES,
    Clustered,
    QuestionBootstrap,
    bootstrap_mean_ci,
    clustered,
    holm,
    paired_specificity,
    verdict,
)
from emdir.errors import EmdirError
from emdir.io import atomic_path, read_jsonl, write_json
from emdir.report import plots


def _scored(rows: list[dict[str, Any]], question_set: str | None) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r.get("category") != "unscored"
        and (question_set is None or r.get("question_set") == question_set)
    ]


def spill(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer code-spillover indicator (1 = the answer is code)."""
    return np.array([1.0 if r["category"] == "code" else 0.0 for r in rows])


def garbled(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer garble indicator (1 = neither well-formed prose nor code)."""
    return np.array([1.0 if r["category"] == "garbled" else 0.0 for r in rows])


def _boot(stats_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "n_boot": int(stats_cfg["n_boot"]),
        "seed": int(stats_cfg["seed"]),
        "level": float(stats_cfg["level"]),
    }


def _write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")


def _require(
    rows: list[dict[str, Any]], path: str | Path, question_set: str | None
) -> list[dict[str, Any]]:
    """The scored rows of one question set; none at all is an error naming the file."""
    scored = _scored(rows, question_set)
    if not scored:
        raise EmdirError(f"{path}: no scored answers to question set {question_set!r}")
    return scored


def _load(path: str | Path, question_set: str | None) -> list[dict[str, Any]]:
    return _require(read_jsonl(path, required=("category", "scores")), path, question_set)


_NAN3 = (np.nan, np.nan, np.nan)


def _mean3(x: np.ndarray, boot: Mapping[str, Any], scale: float = 100.0) -> tuple[float, ...]:
    """(value, lo, hi) of a mean with its CI, times `scale`; NaNs when there is nothing."""
    if x.size == 0:
        return _NAN3
    e = bootstrap_mean_ci(x, **boot)
    return scale * e.value, scale * e.lo, scale * e.hi


def _columns(prefix: str, values: tuple[float, ...]) -> dict[str, float]:
    return dict(zip((prefix, f"{prefix}_lo", f"{prefix}_hi"), values, strict=True))


# ---------------------------------------------------------------- question bootstrap

_SCALE = {"spill": 100.0, "garble": 100.0, "mis": 100.0, "coh": 1.0, "kl": 1.0}
# steering.behaviour -> the per-answer metric it reads
BEHAVIOUR = {"spillover": "spill", "garble": "garble"}


def _per_answer(rows: list[dict[str, Any]]) -> dict[str, Clustered]:
    """Each per-answer metric of one condition with the answers' question ids: the spillover
    indicator for every answer; the garble indicator for every answer whose garble verdict is
    known (an LLM judge cannot call prose garbled without its coherence score); coherence
    (0-100), misalignment (the row's `em`) and KL over the answers that have one. A metric no
    answer has (misalignment with the offline judge) is left out."""
    qid = [r["question_id"] for r in rows]
    known = [r for r in rows if "garbled" not in r.get("unscored", {})]
    out = {
        "spill": clustered(spill(rows), qid, "spillover"),
        "garble": clustered(garbled(known), [r["question_id"] for r in known], "garble"),
    }
    optional = {
        "coh": [(r["question_id"], r["scores"].get("coherent")) for r in rows],
        "mis": [
            (r["question_id"], None if r.get("em") is None else float(bool(r["em"]))) for r in rows
        ],
        "kl": [(r["question_id"], r.get("kl")) for r in rows],
    }
    for metric, pairs in optional.items():
        kept = [(q, v) for q, v in pairs if v is not None]
        if kept:
            out[metric] = clustered([v for _, v in kept], [q for q, _ in kept], metric)
    return out


class PairedConditions:
    """Every condition of one comparison in one question bootstrap: the same resampled
    questions for the baseline, the target and each control (conditions are named
    `<name>|<metric>`)."""

    def __init__(self, conditions: Mapping[str, list[dict[str, Any]]], boot: Mapping[str, Any]):
        flat = {
            f"{name}|{metric}": c
            for name, rows in conditions.items()
            for metric, c in _per_answer(rows).items()
        }
        self.qb = QuestionBootstrap(flat, **boot)

    def has(self, name: str, metric: str) -> bool:
        return f"{name}|{metric}" in self.qb.conditions

    def point(self, name: str, metric: str) -> float:
        return self.qb.mean(f"{name}|{metric}") if self.has(name, metric) else np.nan

    def mean3(self, name: str, metric: str) -> tuple[float, ...]:
        if not self.has(name, metric):
            return _NAN3
        e = self.qb.mean_ci(f"{name}|{metric}")
        k = _SCALE[metric]
        return k * e.value, k * e.lo, k * e.hi

    def diff3(self, a: str, b: str, metric: str) -> tuple[float, ...]:
        """mean(a) - mean(b), paired over questions."""
        if not (self.has(a, metric) and self.has(b, metric)):
            return _NAN3
        e = self.qb.diff_ci(f"{a}|{metric}", f"{b}|{metric}")
        k = _SCALE[metric]
        return k * e.value, k * e.lo, k * e.hi

    def size(self, name: str) -> dict[str, int]:
        n_q, n_a = self.qb.size(f"{name}|spill")
        return {"n_questions": n_q, "n_answers": n_a}

    def denominators(self, name: str) -> dict[str, int]:
        """How many answers each rate of `name` is over (`n_<column>`; 0 for a metric no
        answer has), beside n_answers, which counts every scored answer."""
        return {
            f"n_{column}": self.qb.size(f"{name}|{metric}")[1] if self.has(name, metric) else 0
            for metric, column in (
                ("garble", "garble"),
                ("coh", "coherence"),
                ("mis", "misalignment"),
            )
        }

    def specificity(
        self,
        baseline: str,
        target: str,
        controls: Mapping[str, str],
        metric: str,
        column: str = "specificity",
    ) -> dict[str, Any]:
        t = paired_specificity(
            self.qb,
            f"{baseline}|{metric}",
            f"{target}|{metric}",
            {k: f"{v}|{metric}" for k, v in controls.items()},
        )
        return {
            "spec_metric": {v: k for k, v in BEHAVIOUR.items()}[metric],
            column: _SCALE[metric] * t.value,
            "spec_lo": _SCALE[metric] * t.lo,
            "spec_hi": _SCALE[metric] * t.hi,
            "strongest_control": t.strongest_control,
            "spec_p": t.p,
        }


def _holm_family(
    rows: list[dict[str, Any]],
    value_column: str,
    member: Callable[[dict[str, Any]], bool],
    boot: Mapping[str, Any],
    family_name: str,
) -> list[dict[str, Any]]:
    """Verdicts for every row with a specificity: `verdict` from its own p-value, and for
    the rows `member` selects (one family) `spec_p_holm` and `verdict_holm` after Holm's
    correction across the family. Only `verdict_holm == passes` counts as passing."""
    alpha = 1.0 - float(boot["level"])
    family = [i for i, r in enumerate(rows) if "spec_p" in r and member(r)]
    adjusted = holm([rows[i]["spec_p"] for i in family]) if family else []
    for r in rows:
        if "spec_p" in r:
            r["verdict"] = verdict(r[value_column], r["spec_p"], alpha)
    for i, p in zip(family, adjusted, strict=True):
        rows[i]["family"] = family_name
        rows[i]["family_size"] = len(family)
        rows[i]["spec_p_holm"] = float(p)
        rows[i]["verdict_holm"] = verdict(rows[i][value_column], float(p), alpha)
        rows[i]["passes_specificity"] = rows[i]["verdict_holm"] == PASSES
    return rows


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


def _matched(
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


# The paper's within-model numbers (SCIENCE.md section 1); None where it gives no number.
PAPER = {
    "separation accuracy (%)": (99.6, 99.6),
    "spillover suppression (points)": (21.0, 51.0),
    "specificity (points)": (None, None),
    "control fine-tune separation (%)": (50.0, 50.0),
    # The paper reads effects where the target keeps the model coherent; these say whether
    # ours did (SCIENCE.md gives no number).
    "garble change (points)": (None, None),
    "coherence change (0-100)": (None, None),
}


def _class_names(attrs: Mapping[str, Any]) -> tuple[str, str]:
    """(label 1, label 0) names of a directions file's classes, for figures."""
    if attrs.get("contrast") == "models":
        return "fine-tuned model", "base model"
    if attrs.get("label_rule") == "misaligned":
        return "misaligned", "aligned"
    if attrs.get("label_rule") == "garbled":
        return "garbled", "prose"
    return "code spillover", "no spillover"


def within_model_summary(
    generations: Mapping[str, str | Path],
    steering: Mapping[str, str | Path],
    directions: Mapping[str, str | Path],
    outs: Mapping[str, str | Path],
    steer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    direction_ft: str,
    config_label: str = "",
    code_sets: Sequence[str] = ("code",),
) -> None:
    """Spillover per model x fine-tune; per steering output and coefficient: spillover,
    misalignment and coherence with CIs, effects against the unsteered baseline, and for the
    target the specificity against the strongest control; separation per layer; figures; the
    comparison with the paper.

    `steering` keys are `model/ft/vector`, `directions` keys `model/ft`, `generations` keys
    `model/ft` (ft may be `base`). `outs` names the files: summary, spillover, steering,
    separation, projections, cosine, comparison, comparison_png. `code_sets` names the
    coding-question sets: how often those are answered with code is the sanity check that a
    model still codes when asked to.
    """
    from emdir.analysis import directions as dm

    qset = str(steer_cfg["question_set"])
    boot = _boot(stats_cfg)
    rates = []
    for key, path in generations.items():
        model, ft = key.split("/")
        all_rows = read_jsonl(path, required=("category", "scores"))
        rows = _require(all_rows, path, qset)
        in_set = sum(1 for r in all_rows if r.get("question_set") == qset)
        code_rows = [r for r in _scored(all_rows, None) if r.get("question_set") in code_sets]
        p = PairedConditions({"x": rows}, boot)
        rates.append(
            {
                "model": model,
                "ft": ft,
                "question_set": qset,
                "n": len(rows),
                **p.size("x"),
                # answers of the set left out as unscored (empty, or judge failures)
                "n_unscored": in_set - len(rows),
                **p.denominators("x"),
                **dict(zip(("spillover", "lo", "hi"), p.mean3("x", "spill"), strict=True)),
                **_columns("garble", p.mean3("x", "garble")),
                **_columns("coherence", p.mean3("x", "coh")),
                **_columns("misalignment", p.mean3("x", "mis")),
                "code_questions_answered_with_code": 100 * spill(code_rows).mean()
                if code_rows
                else np.nan,
            }
        )
    _write_csv(pd.DataFrame(rates), outs["spillover"])

    dirs = {key: dm.read_directions(path) for key, path in directions.items()}
    sep_rows = []
    for key, d in dirs.items():
        model, ft = key.split("/")
        for i, layer in enumerate(d.attrs["layers"]):
            sep_rows.append(
                {
                    "model": model,
                    "ft": ft,
                    "layer": layer,
                    "accuracy": d.accuracy[i],
                    "auroc": d.auroc[i],
                }
            )

    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for key, spath in steering.items():
        model, ft, vector = key.split("/")
        grouped.setdefault((model, ft), {})[vector] = _load(spath, qset)
    summary, curve, calibration = [], [], []
    for (model, ft), steered in grouped.items():
        if "target" not in steered:
            raise EmdirError(f"no target steering output for {model}/{ft}")
        rows, points, calib = _steering_rows(
            model,
            ft,
            steered,
            _load(generations[f"{model}/{ft}"], qset),
            dirs.get(f"{model}/{direction_ft}"),
            direction_ft,
            steer_cfg,
            boot,
        )
        summary += rows
        curve += points
        calibration += calib
    summary = _holm_family(
        summary, "specificity_points", lambda r: bool(r.get("read")), boot, "models at read"
    )
    summary_df = pd.DataFrame(summary)
    _write_csv(summary_df, outs["summary"])
    _write_csv(pd.DataFrame(calibration), outs["calibration"])
    plots.steering_png(pd.DataFrame(curve), outs["steering"])
    plots.separation_png(pd.DataFrame(sep_rows), outs["separation"])
    _direction_figures(dirs, direction_ft, summary_df, outs)
    comparison = paper_comparison(dirs, direction_ft, summary_df, boot, config_label)
    _write_csv(comparison, outs["comparison"])
    plots.paper_comparison_png(comparison, outs["comparison_png"])


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
            sel = [r for r in rows if _coefficient(r) == float(c)]
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
    steered = {v: _load(path, qset) for v, path in steering.items()}
    coefs = [float(c) for c in steer_cfg["coefficients"]]
    p = PairedConditions(
        _steering_conditions(steered, _load(baseline, qset), coefs, str(baseline)), _boot(stats_cfg)
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


def _steering_rows(
    model: str,
    ft: str,
    steered: Mapping[str, list[dict[str, Any]]],
    base_rows: list[dict[str, Any]],
    d: Any,
    direction_ft: str,
    steer_cfg: Mapping[str, Any],
    boot: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Summary rows (every vector at every coefficient: the dose-response), figure points and
    calibration rows of one model/fine-tune, all from one paired question bootstrap."""
    from emdir.analysis.steering import layer_label

    coefs = sorted(float(c) for c in steer_cfg["coefficients"])
    conds = _steering_conditions(steered, base_rows, coefs, f"{model}/{ft}")
    p = PairedConditions(conds, boot)
    behaviour = BEHAVIOUR[str(steer_cfg["behaviour"])]
    controls = [v for v in steered if v != "target"]
    read_c, within = (
        choose_read(p, controls, coefs, steer_cfg["read"]) if controls else (np.nan, False)
    )
    series = {v: v if ft == direction_ft else f"{v} on {ft}" for v in steered}
    base4 = tuple(p.mean3("base", m) for m in ("spill", "garble", "coh", "mis"))
    curve = [_curve_point(model, series[v], 0.0, *base4) for v in steered]
    record = steered["target"][0]["intervention"]
    layer = layer_label(record)
    slot = list(d.attrs["layers"]).index(_deepest(layer)) if d is not None else None
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
                "norm": _first_site(conds[name][0]["intervention"])["norm"],
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
                **_columns("garble", garble3),
                **_columns("garble_change", p.diff3(name, "base", "garble")),
                **_columns("coherence", coh3),
                **_columns("coherence_change", p.diff3(name, "base", "coh")),
                **_columns("kl", p.mean3(name, "kl")),
                **_columns("misalignment", mis3),
                **_columns("misalignment_effect", p.diff3("base", name, "mis")),
                "separation_accuracy": d.accuracy[slot] if slot is not None else np.nan,
                "separation_auroc": d.auroc[slot] if slot is not None else np.nan,
            }
            if vector == "target" and controls:
                against = {
                    (ctl if c2 == c else f"{ctl} x{c2:g}"): _cond(ctl, c2)
                    for ctl in controls
                    for c2 in _matched(p, "target", ctl, c, coefs, steer_cfg["match"])
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
                    **_columns("behaviour_effect_at_read", p.diff3("base", at, behaviour)),
                    **_columns("coherence_change_at_read", p.diff3(at, "base", "coh")),
                    **_columns("kl_at_read", p.mean3(at, "kl")),
                }
            )
    return rows, curve, calibration


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
        **_columns("garble", garble3),
        **_columns("coherence", coh3),
        **dict(zip(("misalignment", "mis_lo", "mis_hi"), mis3, strict=True)),
    }


def _first_site(record: Any) -> Mapping[str, Any]:
    """An intervention record, or the first site's of a several-site (list) record: the
    sites of one output share op, coefficient and norm unit."""
    return record[0] if isinstance(record, list) else record


def _coefficient(row: Mapping[str, Any]) -> float:
    return float(_first_site(row["intervention"])["coefficient"])


def _deepest(layer: str) -> int:
    """The deepest layer of a `layer` label ("3" or "1+2+3")."""
    return max(int(x) for x in str(layer).split("+"))


def _steered_layer(summary: pd.DataFrame, model: str) -> int | None:
    """The deepest steered layer of a model's target rows (None without steering rows)."""
    rows = summary[(summary["model"] == model) & (summary["vector"] == "target")]
    if rows.empty:
        return None
    return _deepest(rows["layer"].iloc[0])


def _direction_figures(
    dirs: Mapping[str, Any],
    direction_ft: str,
    summary: pd.DataFrame,
    outs: Mapping[str, str | Path],
) -> None:
    """Class histograms of the projections at the steered layer, and the cosine similarity of
    each model's direction across layers."""
    from emdir.analysis.directions import cosine_matrix

    proj_rows: list[dict[str, Any]] = []
    matrices, layer_lists = {}, {}
    for key, d in dirs.items():
        model, ft = key.split("/")
        if ft != direction_ft:
            continue
        layers = [int(v) for v in d.attrs["layers"]]
        matrices[model], layer_lists[model] = cosine_matrix(d.raw), layers
        if d.projection is None:
            raise EmdirError(f"{key}: the directions file has no projections; rerun directions")
        layer = _steered_layer(summary, model)
        slot = layers.index(layer) if layer in layers else len(layers) - 1
        pos, neg = _class_names(d.attrs)
        for value, label, held in zip(
            d.projection.values[:, slot], d.projection.label, d.projection.heldout, strict=True
        ):
            proj_rows.append(
                {
                    "model": f"{model} (layer {layers[slot]})",
                    "label": pos if label else neg,
                    "projection": float(value),
                    "heldout": bool(held),
                }
            )
    plots.projections_png(pd.DataFrame(proj_rows), outs["projections"])
    plots.cosine_layers_png(matrices, layer_lists, outs["cosine"])


def paper_comparison(
    dirs: Mapping[str, Any],
    direction_ft: str,
    summary: pd.DataFrame,
    boot: Mapping[str, Any],
    config_label: str,
) -> pd.DataFrame:
    """Our separation, suppression and specificity per model beside the paper's numbers.

    Separation is the held-out accuracy at the steered layer (the last captured layer when
    nothing is steered) with a bootstrap CI over held-out answers; suppression, specificity
    and the changes in garble and coherence are the target's at the read strength
    (steering.read; the largest coefficient when no read strength was chosen).
    """
    out = []

    def add(model: str, metric: str, ours: tuple[float, ...], **extra: Any) -> None:
        lo, hi = PAPER[metric]
        row = {
            "model": model,
            "metric": metric,
            "ours": ours[0],
            "ours_lo": ours[1],
            "ours_hi": ours[2],
            "paper_lo": np.nan if lo is None else lo,
            "paper_hi": np.nan if hi is None else hi,
        }
        row["in_paper_range"] = (
            bool(lo - 1e-9 <= ours[0] <= hi + 1e-9)
            if lo is not None and np.isfinite(ours[0])
            else None
        )
        out.append({**row, **extra, "config": config_label})

    for key, d in dirs.items():
        model, ft = key.split("/")
        layers = [int(v) for v in d.attrs["layers"]]
        layer = _steered_layer(summary, model)
        slot = layers.index(layer) if layer in layers else len(layers) - 1
        acc = (
            _mean3(d.projection.heldout_correct(slot), boot)
            if d.projection is not None
            else (100 * d.accuracy[slot], np.nan, np.nan)
        )
        metric = (
            "separation accuracy (%)" if ft == direction_ft else "control fine-tune separation (%)"
        )
        add(model, metric, acc, ft=ft, layer=str(layers[slot]), coefficient=np.nan)
        if ft != direction_ft:
            continue
        target = summary[
            (summary["model"] == model)
            & (summary["ft"] == direction_ft)
            & (summary["vector"] == "target")
        ]
        if target.empty:
            continue
        read = target[target["read"]] if "read" in target else target.iloc[0:0]
        top = read.iloc[0] if not read.empty else target.loc[target["coefficient"].idxmax()]
        common = {
            "ft": ft,
            "layer": str(top["layer"]),
            "coefficient": top["coefficient"],
            **{k: top[k] for k in ("n_questions", "n_answers") if k in top},
        }
        add(
            model,
            "spillover suppression (points)",
            (top["effect_points"], top["effect_lo"], top["effect_hi"]),
            **common,
        )
        if "specificity_points" in top and pd.notna(top["specificity_points"]):
            add(
                model,
                "specificity (points)",
                (top["specificity_points"], top["spec_lo"], top["spec_hi"]),
                **common,
            )
        for metric, column in (
            ("garble change (points)", "garble_change"),
            ("coherence change (0-100)", "coherence_change"),
        ):
            if column in top:
                add(
                    model,
                    metric,
                    (top[column], top[f"{column}_lo"], top[f"{column}_hi"]),
                    **common,
                )
    return pd.DataFrame(out)


def transfer_matrix(
    baselines: Mapping[str, str | Path],
    cells: Mapping[str, str | Path],
    out_csv: str | Path,
    out_png: str | Path,
    transfer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    rates_csv: str | Path | None = None,
    references: Mapping[str, str | Path] | None = None,
    topology_csv: str | Path | None = None,
    asymmetry_png: str | Path | None = None,
    maps: Mapping[str, str | Path] | None = None,
) -> None:
    """Suppression (points) per donor/receiver cell for the mapped direction and its controls.

    Long format: one row per cell and vector, with `role` target / control / reference, and
    beside each suppression the garble rate and coherence with their changes (and CIs).
    Controls are the cell's own (through the map) plus the receiver's shared ones
    (`references` keyed `receiver/vector`: `random_receiver`); the receiver's own direction
    (`own`) is a reference, reported beside each cell but never a control. Specificity is
    the target's effect minus the strongest control's, with CI. With `rates_csv` (the
    within-model spillover table), each row also carries the receiver's base-model spillover.
    With `topology_csv` / `asymmetry_png`: donor strength (row means) and receiver
    susceptibility (column means) over off-diagonal cells, with CIs, and their figure.
    """
    boot = _boot(stats_cfg)
    behaviour = BEHAVIOUR[str(transfer_cfg["behaviour"])]
    qsets: dict[str, str | None] = {r: None for r in baselines}
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for key, path in cells.items():
        pair, vector = key.split("/")
        donor, receiver = pair.split("__")
        rows = _load(path, None)
        qsets[receiver] = rows[0].get("question_set")
        grouped.setdefault((donor, receiver), {})[vector] = rows
    shared: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for key, path in (references or {}).items():
        receiver, vector = key.split("/")
        shared.setdefault(receiver, {})[vector] = _load(path, None)
    # One question bootstrap for the whole grid: every receiver answers the same questions,
    # so each replicate resamples them once for every baseline, cell and reference.
    conds: dict[str, list[dict[str, Any]]] = {
        f"base:{r}": _load(path, qsets[r]) for r, path in baselines.items()
    }
    for (donor, receiver), vecs in grouped.items():
        conds.update({f"{donor}>{receiver}:{v}": rows for v, rows in vecs.items()})
    for receiver, vecs in shared.items():
        conds.update({f"ref:{receiver}:{v}": rows for v, rows in vecs.items()})
    p = PairedConditions(conds, boot)
    from emdir.analysis.ridge import map_summary

    summaries = {
        k: {f"map_{m}": v for m, v in map_summary(path).items()} for k, path in (maps or {}).items()
    }
    out = []
    for (donor, receiver), vecs in grouped.items():
        if "target" not in vecs:
            raise EmdirError(f"transfer cell {donor}->{receiver} has no target output")
        names = {v: f"{donor}>{receiver}:{v}" for v in vecs}
        names.update({v: f"ref:{receiver}:{v}" for v in shared.get(receiver, {})})
        base = f"base:{receiver}"
        controls = {v: n for v, n in names.items() if v not in ("target", "own")}
        randoms = [v for v in controls if v.startswith("random_") and v[7:].isdigit()]
        for vector, name in names.items():
            eff = p.diff3(base, name, "spill")
            row: dict[str, Any] = {
                "donor": donor,
                "receiver": receiver,
                "cell": "diagonal (self-map check)" if donor == receiver else "transfer",
                "vector": vector,
                "role": "target"
                if vector == "target"
                else "reference"
                if vector == "own"
                else "control",
                **p.size(name),
                "coefficient": _coefficient(conds[name][0]),
                "baseline_spillover": 100 * p.point(base, "spill"),
                "spillover": 100 * p.point(name, "spill"),
                "suppression": eff[0],
                "lo": eff[1],
                "hi": eff[2],
                **_columns("garble", p.mean3(name, "garble")),
                **_columns("garble_change", p.diff3(name, base, "garble")),
                **_columns("coherence", p.mean3(name, "coh")),
                **_columns("coherence_change", p.diff3(name, base, "coh")),
                **_columns("kl", p.mean3(name, "kl")),
            }
            if vector == "target":
                if controls:
                    row.update(p.specificity(base, name, controls, behaviour))
                if randoms:
                    effects = [p.diff3(base, names[v], behaviour)[0] for v in randoms]
                    row.update(
                        {
                            "random_draws": len(randoms),
                            "random_effect_mean": float(np.mean(effects)),
                            "random_effect_min": float(np.min(effects)),
                            "random_effect_max": float(np.max(effects)),
                        }
                    )
                row.update(summaries.get(f"{donor}__{receiver}", {}))
            out.append(row)
    out = _holm_family(out, "specificity", lambda r: r["cell"] == "transfer", boot, "transfer")
    out = _holm_family(out, "specificity", lambda r: r["cell"] != "transfer", boot, "diagonal")
    df = pd.DataFrame(out)
    if rates_csv is not None:
        rates = pd.read_csv(rates_csv)
        base_rate = dict(
            zip(rates[rates.ft == "base"].model, rates[rates.ft == "base"].spillover, strict=True)
        )
        df["receiver_base_spillover"] = df.receiver.map(base_rate)
    _write_csv(df, out_csv)
    plots.transfer_matrix_png(df, out_png)
    if topology_csv is None and asymmetry_png is None:
        return
    topo = []
    for kind, axis in (("donor", "donor"), ("receiver", "receiver")):
        for model in dict.fromkeys(df[axis]):
            keys = [k for k in grouped if k[0 if kind == "donor" else 1] == model and k[0] != k[1]]
            if not keys:
                continue
            reps = np.mean(
                [
                    p.qb.reps(f"base:{r}|spill") - p.qb.reps(f"{d}>{r}:target|spill")
                    for d, r in keys
                ],
                axis=0,
            )
            value = float(
                np.mean(
                    [
                        p.point(f"base:{r}", "spill") - p.point(f"{d}>{r}:target", "spill")
                        for d, r in keys
                    ]
                )
            )
            est = p.qb.estimate(value, reps)
            topo.append(
                {
                    "role": kind,
                    "model": model,
                    "cells": len(keys),
                    "mean_suppression": 100 * est.value,
                    "lo": 100 * est.lo,
                    "hi": 100 * est.hi,
                }
            )
    # A one-model grid has no off-diagonal cell: the table keeps its columns, with no rows.
    topo_df = pd.DataFrame(topo, columns=["role", "model", "cells", "mean_suppression", "lo", "hi"])
    if topology_csv is not None:
        _write_csv(topo_df, topology_csv)
    if asymmetry_png is not None:
        plots.asymmetry_png(topo_df, df, asymmetry_png)


def training_curves(
    base_dirs: Mapping[str, str | Path],
    adapter_dirs: Mapping[str, str | Path],
    out_csv: str | Path,
    out_png: str | Path,
) -> None:
    """Every training run's log in one figure and one row each: base-model chat training
    (tiny models only; a hub model has no log) and every fine-tune, keyed "model/ft"."""
    logs: dict[str, dict[str, pd.DataFrame]] = {}
    rows = []
    runs = [(key, "base", Path(d)) for key, d in base_dirs.items()] + [
        (key.split("/", 1)[0], key.split("/", 1)[1], Path(d)) for key, d in adapter_dirs.items()
    ]
    for model, run, d in runs:
        path = d / "train_log.csv"
        if not path.exists():
            if run == "base":
                continue  # a hub model: nothing was trained here
            raise EmdirError(f"{path} is missing: rerun the fine-tune (delete {d} first)")
        df = pd.read_csv(path)
        if not {"step", "loss"} <= set(df.columns):
            raise EmdirError(f"{path} has no step/loss columns: rerun the training that wrote it")
        logs.setdefault(model, {})[run] = df
        evals = df[df["heldout_loss"].notna()] if "heldout_loss" in df else df.iloc[0:0]
        spills = df["eval_spillover"].dropna() if "eval_spillover" in df else pd.Series([])
        rows.append(
            {
                "model": model,
                "run": run,
                "steps": int(df["step"].max()),
                "first_loss": float(df["loss"].iloc[0]),
                "final_loss": float(df["loss"].iloc[-1]),
                "final_heldout_loss": float(evals["heldout_loss"].iloc[-1])
                if len(evals)
                else np.nan,
                "final_eval_spillover": float(spills.iloc[-1]) if len(spills) else np.nan,
            }
        )
    if not rows:
        raise EmdirError("no training logs: every model is a hub model and no fine-tune ran")
    _write_csv(pd.DataFrame(rows), out_csv)
    plots.training_curves_png(logs, out_png)
