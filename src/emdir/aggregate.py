"""Aggregation: spillover rates, steering effects and the transfer grid, each with bootstrap CIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir import plots
from emdir.errors import EmdirError
from emdir.io import atomic_path, read_jsonl
from emdir.stats import bootstrap_diff_ci, bootstrap_mean_ci, specificity_ci


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


def coherence(rows: list[dict[str, Any]]) -> float:
    vals = [r["scores"].get("coherent") for r in rows if r["scores"].get("coherent") is not None]
    return float(np.mean(vals)) if vals else float("nan")


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


def _specificity_columns(spec: Any, value_column: str) -> dict[str, Any]:
    """Target effect minus the strongest control, in points with its CI; passes when the CI
    is above zero."""
    return {
        value_column: 100 * spec.value,
        "spec_lo": 100 * spec.lo,
        "spec_hi": 100 * spec.hi,
        "strongest_control": spec.strongest_control,
        "passes_specificity": spec.lo > 0,
    }


def within_model_summary(
    generations: Mapping[str, str | Path],
    steering: Mapping[str, str | Path],
    directions: Mapping[str, str | Path],
    out_csv: str | Path,
    spill_csv: str | Path,
    steer_png: str | Path,
    sep_png: str | Path,
    steer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    code_sets: Sequence[str] = ("code",),
) -> None:
    """Spillover per model x fine-tune; steering effect, controls and specificity per coefficient.

    `code_sets` names the coding-question sets: how often those are answered with code is the
    sanity check that a model still codes when asked to.
    """
    from emdir.directions import read_directions

    qset = str(steer_cfg["question_set"])
    boot = _boot(stats_cfg)
    rates = []
    for key, path in generations.items():
        model, ft = key.split("/")
        all_rows = read_jsonl(path, required=("category", "scores"))
        rows = _require(all_rows, path, qset)
        est = bootstrap_mean_ci(spill(rows), **boot)
        code_rows = [r for r in _scored(all_rows, None) if r.get("question_set") in code_sets]
        rates.append(
            {
                "model": model,
                "ft": ft,
                "question_set": qset,
                "n": len(rows),
                "spillover": 100 * est.value,
                "lo": 100 * est.lo,
                "hi": 100 * est.hi,
                "coherence": coherence(rows),
                "code_questions_answered_with_code": 100 * spill(code_rows).mean()
                if code_rows
                else np.nan,
            }
        )
    _write_csv(pd.DataFrame(rates), spill_csv)

    sep_rows, summary, curve = [], [], []
    for model, dpath in directions.items():
        d = read_directions(dpath)
        layers = list(d.attrs["layers"])
        for i, layer in enumerate(layers):
            sep_rows.append(
                {"model": model, "layer": layer, "accuracy": d.accuracy[i], "auroc": d.auroc[i]}
            )
        ft = str(d.attrs.get("ft"))
        base_rows = _load(generations[f"{model}/{ft}"], qset)
        baseline = spill(base_rows)
        b = bootstrap_mean_ci(baseline, **boot)
        curve.append(
            {
                "model": model,
                "vector": "none",
                "coefficient": 0.0,
                "spillover": 100 * b.value,
                "lo": 100 * b.lo,
                "hi": 100 * b.hi,
            }
        )
        steered: dict[str, list[dict[str, Any]]] = {}
        for key, spath in steering.items():
            m, f, vector = key.split("/")
            if m == model and f == ft:
                steered[vector] = _load(spath, qset)
        if "target" not in steered:
            raise EmdirError(f"no target steering output for {model}/{ft}")
        for coef in steer_cfg["coefficients"]:
            per = {
                v: [r for r in rows if r["intervention"]["coefficient"] == float(coef)]
                for v, rows in steered.items()
            }
            layer = per["target"][0]["intervention"]["layer"]
            slot = layers.index(layer)
            controls = {v: spill(rows) for v, rows in per.items() if v != "target"}
            spec = specificity_ci(spill(per["target"]), controls, baseline, **boot)
            for vector, rows in per.items():
                s = bootstrap_mean_ci(spill(rows), **boot)
                eff = bootstrap_diff_ci(baseline, spill(rows), **boot)
                row = {
                    "model": model,
                    "ft": ft,
                    "vector": vector,
                    "layer": layer,
                    "coefficient": float(coef),
                    "norm": rows[0]["intervention"]["norm"],
                    "n": len(rows),
                    "spillover": 100 * s.value,
                    "lo": 100 * s.lo,
                    "hi": 100 * s.hi,
                    "baseline_spillover": 100 * b.value,
                    "effect_points": 100 * eff.value,
                    "effect_lo": 100 * eff.lo,
                    "effect_hi": 100 * eff.hi,
                    "coherence": coherence(rows),
                    "separation_accuracy": d.accuracy[slot],
                    "separation_auroc": d.auroc[slot],
                }
                if vector == "target":
                    row.update(_specificity_columns(spec, "specificity_points"))
                summary.append(row)
                curve.append(
                    {
                        "model": model,
                        "vector": vector,
                        "coefficient": float(coef),
                        "spillover": 100 * s.value,
                        "lo": 100 * s.lo,
                        "hi": 100 * s.hi,
                    }
                )
    _write_csv(pd.DataFrame(summary), out_csv)
    plots.steering_png(pd.DataFrame(curve), steer_png)
    plots.separation_png(pd.DataFrame(sep_rows), sep_png)


def transfer_matrix(
    baselines: Mapping[str, str | Path],
    cells: Mapping[str, str | Path],
    out_csv: str | Path,
    out_png: str | Path,
    transfer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    rates_csv: str | Path | None = None,
) -> None:
    """Suppression (points) per donor/receiver cell for the mapped direction and its controls.

    With `rates_csv` (the within-model spillover table), each row also carries the receiver's
    base-model spillover: how far from the un-fine-tuned model a cell's steering lands.
    """
    boot = _boot(stats_cfg)
    qsets: dict[str, str | None] = {r: None for r in baselines}
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for key, path in cells.items():
        pair, vector = key.split("/")
        donor, receiver = pair.split("__")
        rows = _load(path, None)
        qsets[receiver] = rows[0].get("question_set")
        grouped.setdefault((donor, receiver), {})[vector] = rows
    # The baseline is the receiver's unsteered answers to the same question set.
    base = {r: spill(_load(p, qsets[r])) for r, p in baselines.items()}
    out = []
    for (donor, receiver), vecs in grouped.items():
        if "target" not in vecs:
            raise EmdirError(f"transfer cell {donor}->{receiver} has no target output")
        baseline = base[receiver]
        controls = {v: spill(rows) for v, rows in vecs.items() if v != "target"}
        spec = (
            specificity_ci(spill(vecs["target"]), controls, baseline, **boot) if controls else None
        )
        for vector, rows in vecs.items():
            eff = bootstrap_diff_ci(baseline, spill(rows), **boot)
            row: dict[str, Any] = {
                "donor": donor,
                "receiver": receiver,
                "vector": vector,
                "n": len(rows),
                "coefficient": float(transfer_cfg["coefficient"]),
                "baseline_spillover": 100 * baseline.mean(),
                "spillover": 100 * spill(rows).mean(),
                "suppression": 100 * eff.value,
                "lo": 100 * eff.lo,
                "hi": 100 * eff.hi,
                "coherence": coherence(rows),
            }
            if vector == "target" and spec is not None:
                row.update(_specificity_columns(spec, "specificity"))
            out.append(row)
    df = pd.DataFrame(out)
    if rates_csv is not None:
        rates = pd.read_csv(rates_csv)
        base_rate = dict(
            zip(rates[rates.ft == "base"].model, rates[rates.ft == "base"].spillover, strict=True)
        )
        df["receiver_base_spillover"] = df.receiver.map(base_rate)
    _write_csv(df, out_csv)
    plots.transfer_matrix_png(df, out_png)
