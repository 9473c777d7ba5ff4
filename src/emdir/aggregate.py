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


def garbled(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer garble indicator (1 = neither well-formed prose nor code)."""
    return np.array([1.0 if r["category"] == "garbled" else 0.0 for r in rows])


def misaligned(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer emergent-misalignment indicator over the answers the judge could rate (the
    row's `em`); empty with a judge that does not score alignment (the offline one)."""
    return np.array([1.0 if r["em"] else 0.0 for r in rows if r.get("em") is not None])


def coherent(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer coherence scores (0-100) where the judge gave one."""
    return np.array(
        [r["scores"]["coherent"] for r in rows if r["scores"].get("coherent") is not None],
        dtype=np.float64,
    )


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


_NAN3 = (np.nan, np.nan, np.nan)


def _mean3(x: np.ndarray, boot: Mapping[str, Any], scale: float = 100.0) -> tuple[float, ...]:
    """(value, lo, hi) of a mean with its CI, times `scale`; NaNs when there is nothing."""
    if x.size == 0:
        return _NAN3
    e = bootstrap_mean_ci(x, **boot)
    return scale * e.value, scale * e.lo, scale * e.hi


def _diff3(
    a: np.ndarray, b: np.ndarray, boot: Mapping[str, Any], scale: float = 100.0
) -> tuple[float, ...]:
    """(value, lo, hi) of mean(a) - mean(b) with its CI, times `scale`."""
    if a.size == 0 or b.size == 0:
        return _NAN3
    e = bootstrap_diff_ci(a, b, **boot)
    return scale * e.value, scale * e.lo, scale * e.hi


def _columns(prefix: str, values: tuple[float, ...]) -> dict[str, float]:
    return dict(zip((prefix, f"{prefix}_lo", f"{prefix}_hi"), values, strict=True))


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
    from emdir import directions as dm
    from emdir.steering import layer_label

    qset = str(steer_cfg["question_set"])
    boot = _boot(stats_cfg)
    rates = []
    for key, path in generations.items():
        model, ft = key.split("/")
        all_rows = read_jsonl(path, required=("category", "scores"))
        rows = _require(all_rows, path, qset)
        code_rows = [r for r in _scored(all_rows, None) if r.get("question_set") in code_sets]
        rates.append(
            {
                "model": model,
                "ft": ft,
                "question_set": qset,
                "n": len(rows),
                **dict(zip(("spillover", "lo", "hi"), _mean3(spill(rows), boot), strict=True)),
                **_columns("garble", _mean3(garbled(rows), boot)),
                **_columns("coherence", _mean3(coherent(rows), boot, 1.0)),
                **_columns("misalignment", _mean3(misaligned(rows), boot)),
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
    summary, curve = [], []
    for (model, ft), steered in grouped.items():
        if "target" not in steered:
            raise EmdirError(f"no target steering output for {model}/{ft}")
        base_rows = _load(generations[f"{model}/{ft}"], qset)
        baseline = _metrics(base_rows)
        d = dirs.get(f"{model}/{direction_ft}")
        # The unsteered baseline is every series' coefficient-0 point.
        base3 = (
            _mean3(baseline["spill"], boot),
            _mean3(baseline["garble"], boot),
            _mean3(baseline["coh"], boot, 1.0),
            _mean3(baseline["mis"], boot),
        )
        series = {v: v if ft == direction_ft else f"{v} on {ft}" for v in steered}
        curve += [_curve_point(model, series[v], 0.0, *base3) for v in steered]
        for coef in steer_cfg["coefficients"]:
            per = {
                v: [r for r in rows if _coefficient(r) == float(coef)]
                for v, rows in steered.items()
            }
            empty = [v for v, rows in per.items() if not rows]
            if empty:
                raise EmdirError(
                    f"steering outputs of {model}/{ft} ({', '.join(empty)}) have no answers at "
                    f"coefficient {coef}; rerun the steering rule"
                )
            controls = {v: spill(rows) for v, rows in per.items() if v != "target"}
            spec = (
                specificity_ci(spill(per["target"]), controls, baseline["spill"], **boot)
                if controls
                else None
            )
            record = per["target"][0]["intervention"]
            layer = layer_label(record)
            slot = list(d.attrs["layers"]).index(_deepest(layer)) if d is not None else None
            for vector, rows in per.items():
                values = _metrics(rows)
                spill3 = _mean3(values["spill"], boot)
                garble3 = _mean3(values["garble"], boot)
                coh3 = _mean3(values["coh"], boot, 1.0)
                mis3 = _mean3(values["mis"], boot)
                row = {
                    "model": model,
                    "ft": ft,
                    "direction_ft": direction_ft,
                    "vector": vector,
                    "layer": layer,
                    "op": _first_site(record)["op"],
                    "coefficient": float(coef),
                    "norm": _first_site(rows[0]["intervention"])["norm"],
                    "n": len(rows),
                    "spillover": spill3[0],
                    "lo": spill3[1],
                    "hi": spill3[2],
                    "baseline_spillover": 100 * baseline["spill"].mean(),
                    **dict(
                        zip(
                            ("effect_points", "effect_lo", "effect_hi"),
                            _diff3(baseline["spill"], values["spill"], boot),
                            strict=True,
                        )
                    ),
                    **_columns("garble", garble3),
                    **_columns("garble_change", _diff3(values["garble"], baseline["garble"], boot)),
                    **_columns("coherence", coh3),
                    **_columns(
                        "coherence_change", _diff3(values["coh"], baseline["coh"], boot, 1.0)
                    ),
                    **_columns("misalignment", mis3),
                    **_columns("misalignment_effect", _diff3(baseline["mis"], values["mis"], boot)),
                    "separation_accuracy": d.accuracy[slot] if slot is not None else np.nan,
                    "separation_auroc": d.auroc[slot] if slot is not None else np.nan,
                }
                if vector == "target" and spec is not None:
                    row.update(_specificity_columns(spec, "specificity_points"))
                summary.append(row)
                curve.append(
                    _curve_point(
                        model,
                        series[vector],
                        float(coef),
                        spill3,
                        garble3,
                        coh3,
                        mis3,
                    )
                )
    summary_df = pd.DataFrame(summary)
    _write_csv(summary_df, outs["summary"])
    plots.steering_png(pd.DataFrame(curve), outs["steering"])
    plots.separation_png(pd.DataFrame(sep_rows), outs["separation"])
    _direction_figures(dirs, direction_ft, summary_df, outs)
    comparison = paper_comparison(dirs, direction_ft, summary_df, boot, config_label)
    _write_csv(comparison, outs["comparison"])
    plots.paper_comparison_png(comparison, outs["comparison_png"])


def _metrics(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-answer spillover, garble, coherence and misalignment of one condition."""
    return {
        "spill": spill(rows),
        "garble": garbled(rows),
        "coh": coherent(rows),
        "mis": misaligned(rows),
    }


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
    from emdir.directions import cosine_matrix

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
    and the changes in garble and coherence are the target's at the largest coefficient.
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
        top = target.loc[target["coefficient"].idxmax()]
        common = {"ft": ft, "layer": str(top["layer"]), "coefficient": top["coefficient"]}
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
    from emdir.stats import bootstrap_mean_effect

    boot = _boot(stats_cfg)
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
    # The baseline is the receiver's unsteered answers to the same question set.
    base_metrics = {r: _metrics(_load(p, qsets[r])) for r, p in baselines.items()}
    base = {r: m["spill"] for r, m in base_metrics.items()}
    out = []
    for (donor, receiver), vecs in grouped.items():
        if "target" not in vecs:
            raise EmdirError(f"transfer cell {donor}->{receiver} has no target output")
        vecs = {**vecs, **shared.get(receiver, {})}
        baseline = base[receiver]
        controls = {v: spill(rows) for v, rows in vecs.items() if v not in ("target", "own")}
        spec = (
            specificity_ci(spill(vecs["target"]), controls, baseline, **boot) if controls else None
        )
        for vector, rows in vecs.items():
            values, before = _metrics(rows), base_metrics[receiver]
            eff = bootstrap_diff_ci(baseline, values["spill"], **boot)
            row: dict[str, Any] = {
                "donor": donor,
                "receiver": receiver,
                "vector": vector,
                "role": "target"
                if vector == "target"
                else "reference"
                if vector == "own"
                else "control",
                "n": len(rows),
                "coefficient": float(transfer_cfg["coefficient"]),
                "baseline_spillover": 100 * baseline.mean(),
                "spillover": 100 * values["spill"].mean(),
                "suppression": 100 * eff.value,
                "lo": 100 * eff.lo,
                "hi": 100 * eff.hi,
                **_columns("garble", _mean3(values["garble"], boot)),
                **_columns("garble_change", _diff3(values["garble"], before["garble"], boot)),
                **_columns("coherence", _mean3(values["coh"], boot, 1.0)),
                **_columns("coherence_change", _diff3(values["coh"], before["coh"], boot, 1.0)),
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
    if topology_csv is None and asymmetry_png is None:
        return
    topo = []
    for kind, axis in (("donor", "donor"), ("receiver", "receiver")):
        for model in dict.fromkeys(df[axis]):
            keys = [k for k in grouped if k[0 if kind == "donor" else 1] == model and k[0] != k[1]]
            if not keys:
                continue
            est = bootstrap_mean_effect(
                [(r, spill(grouped[(d, r)]["target"])) for d, r in keys], base, **boot
            )
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
                "tokens_per_second": float(df["tokens"].sum() / df["seconds"].sum())
                if {"tokens", "seconds"} <= set(df.columns) and df["seconds"].sum() > 0
                else np.nan,
            }
        )
    if not rows:
        raise EmdirError("no training logs: every model is a hub model and no fine-tune ran")
    _write_csv(pd.DataFrame(rows), out_csv)
    plots.training_curves_png(logs, out_png)
