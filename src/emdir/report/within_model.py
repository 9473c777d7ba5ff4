"""The within-model summary: per model and fine-tune, spillover rates (`finetune_summary`,
from the answers alone), the steering dose-response with effects, specificity and Holm's
verdicts at the read strength, how well the direction separates the classes per layer, its
figures, and the comparison with the paper's numbers (SCIENCE.md section 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.errors import EmdirError
from emdir.io import read_jsonl
from emdir.report import figures_directions, figures_steering
from emdir.report.dose_response import deepest_layer, steering_rows
from emdir.report.effects import (
    PairedConditions,
    bootstrap_settings,
    ci_columns,
    holm_family,
    load_scored,
    mean3,
    require_scored,
    scored_rows,
    spill,
    write_csv,
)

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


def finetune_summary(
    generations: Mapping[str, str | Path],
    outs: Mapping[str, str | Path],
    question_set: str,
    stats_cfg: Mapping[str, Any],
    direction_ft: str,
    code_sets: Sequence[str] = ("code",),
) -> None:
    """The fine-tunes' own tables, from their judged answers alone: spillover, garble,
    coherence and misalignment per model x fine-tune (`outs["spillover"]`) and the fine-tunes'
    spillover against each other (`outs["contrasts"]`, `finetune_contrasts`). `generations`
    keys are `model/ft` (ft may be `base`). `code_sets` names the coding-question sets: how
    often those are answered with code is the sanity check that a model still codes when
    asked to."""
    boot = bootstrap_settings(stats_cfg)
    rates = []
    answers: dict[str, list[list[dict[str, Any]]]] = {}  # model/ft -> [its scored answers]
    for key, path in generations.items():
        model, ft = key.split("/")
        all_rows = read_jsonl(path, required=("category", "scores"))
        rows = require_scored(all_rows, path, question_set)
        answers[key] = [rows]
        in_set = sum(1 for r in all_rows if r.get("question_set") == question_set)
        code_rows = [r for r in scored_rows(all_rows, None) if r.get("question_set") in code_sets]
        p = PairedConditions({"x": rows}, boot)
        rates.append(
            {
                "model": model,
                "ft": ft,
                "question_set": question_set,
                "n": len(rows),
                **p.size("x"),
                # answers of the set left out as unscored (empty, or judge failures)
                "n_unscored": in_set - len(rows),
                **p.denominators("x"),
                **dict(zip(("spillover", "lo", "hi"), p.mean3("x", "spill"), strict=True)),
                **ci_columns("garble", p.mean3("x", "garble")),
                **ci_columns("coherence", p.mean3("x", "coh")),
                **ci_columns("misalignment", p.mean3("x", "mis")),
                "code_questions_answered_with_code": 100 * spill(code_rows).mean()
                if code_rows
                else np.nan,
            }
        )
    write_csv(pd.DataFrame(rates), outs["spillover"])
    write_csv(finetune_contrasts(answers, direction_ft, boot), outs["contrasts"])


def within_model_summary(
    generations: Mapping[str, str | Path],
    steering: Mapping[str, str | Path],
    directions: Mapping[str, str | Path],
    outs: Mapping[str, str | Path],
    steer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    direction_ft: str,
    config_label: str = "",
) -> None:
    """Per steering output and coefficient: spillover, misalignment and coherence with CIs,
    effects against the unsteered baseline, and for the target the specificity against the
    strongest control; separation per layer; figures; the comparison with the paper. The
    fine-tunes' own rates are `finetune_summary`'s.

    `steering` keys are `model/ft/vector`, `directions` keys `model/ft`, `generations` keys
    `model/ft` (the unsteered baselines; ft may be `base`). `outs` names the files: summary,
    calibration, steering, separation, projections, cosine, comparison, comparison_png.
    """
    from emdir.analysis import directions as dm

    qset = str(steer_cfg["question_set"])
    boot = bootstrap_settings(stats_cfg)
    answers = {key: [load_scored(path, qset)] for key, path in generations.items()}

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
        grouped.setdefault((model, ft), {})[vector] = load_scored(spath, qset)
    summary, curve, calibration = [], [], []
    for (model, ft), steered in grouped.items():
        if "target" not in steered:
            raise EmdirError(f"no target steering output for {model}/{ft}")
        rows, points, calib = steering_rows(
            model,
            ft,
            {v: [rows] for v, rows in steered.items()},
            answers[f"{model}/{ft}"],
            [dirs.get(f"{model}/{direction_ft}")],
            direction_ft,
            steer_cfg,
            boot,
        )
        summary += rows
        curve += points
        calibration += calib
    summary = holm_family(
        summary, "specificity_points", lambda r: bool(r.get("read")), boot, "models at read"
    )
    summary_df = pd.DataFrame(summary)
    write_csv(summary_df, outs["summary"])
    write_csv(pd.DataFrame(calibration), outs["calibration"])
    figures_steering.steering_png(pd.DataFrame(curve), outs["steering"])
    figures_directions.separation_png(pd.DataFrame(sep_rows), outs["separation"])
    _direction_figures(dirs, direction_ft, summary_df, outs)
    one_seed = {key: [d] for key, d in dirs.items()}
    comparison = paper_comparison(one_seed, direction_ft, summary_df, boot, config_label)
    write_csv(comparison, outs["comparison"])
    figures_steering.paper_comparison_png(comparison, outs["comparison_png"])


def finetune_contrasts(
    answers: Mapping[str, Sequence[list[dict[str, Any]]]],
    direction_ft: str,
    boot: Mapping[str, Any],
) -> pd.DataFrame:
    """Is the spillover about the fine-tuning set's content or about fine-tuning on code at
    all? Per model: every fine-tune against the base model, and `direction_ft` (insecure)
    against each other fine-tune (the controls), as differences in spillover and garble paired
    by question (one question bootstrap draws both sides' answers to the same questions).

    `answers` maps `model/ft` (ft may be `base`) to one list of scored answers per fine-tuning
    seed (the base model's: its one draw, repeated); with several seeds the interval is the
    two-level `SeedBootstrap`'s and the difference the mean of the seeds'. `call` says which
    side of zero the interval lies on: `higher`, `lower` or `inconclusive`."""
    by_model: dict[str, dict[str, Sequence[list[dict[str, Any]]]]] = {}
    for key, draws in answers.items():
        model, ft = key.split("/")
        by_model.setdefault(model, {})[ft] = draws
    rows = []
    for model, fts in by_model.items():
        pairs = [(ft, "base") for ft in fts if ft != "base" and "base" in fts]
        if direction_ft in fts:
            pairs += [(direction_ft, ft) for ft in fts if ft not in ("base", direction_ft)]
        for a, b in pairs:
            n = max(len(fts[a]), len(fts[b]))
            draws_a = list(fts[a]) * (n // len(fts[a]))
            draws_b = list(fts[b]) * (n // len(fts[b]))
            p = PairedConditions(
                [{"a": x, "b": y} for x, y in zip(draws_a, draws_b, strict=True)], boot
            )
            diff, lo, hi = p.diff3("a", "b", "spill")
            rows.append(
                {
                    "model": model,
                    "ft": a,
                    "versus": b,
                    "n_seeds": n,
                    **p.size("a"),
                    "spillover": p.mean3("a", "spill")[0],
                    "versus_spillover": p.mean3("b", "spill")[0],
                    "difference": diff,
                    "lo": lo,
                    "hi": hi,
                    "call": "higher" if lo > 0 else "lower" if hi < 0 else "inconclusive",
                    **ci_columns("garble_difference", p.diff3("a", "b", "garble")),
                }
            )
    return pd.DataFrame(rows)


def _steered_layer(summary: pd.DataFrame, model: str) -> int | None:
    """The deepest steered layer of a model's target rows (None without steering rows)."""
    rows = summary[(summary["model"] == model) & (summary["vector"] == "target")]
    if rows.empty:
        return None
    return deepest_layer(rows["layer"].iloc[0])


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
    figures_directions.projections_png(pd.DataFrame(proj_rows), outs["projections"])
    figures_directions.cosine_layers_png(matrices, layer_lists, outs["cosine"])


def paper_comparison(
    dirs: Mapping[str, Sequence[Any]],
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

    Each value of `dirs` is a list of one seed's directions per fine-tuning seed; with
    several, the separation is their mean with a seed-and-answer interval, and `summary`
    holds the pooled rows.
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

    for key, ds in dirs.items():
        model, ft = key.split("/")
        layers = [int(v) for v in ds[0].attrs["layers"]]
        layer = _steered_layer(summary, model)
        slot = layers.index(layer) if layer in layers else len(layers) - 1
        acc = _heldout_accuracy(ds, slot, boot)
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


def _heldout_accuracy(ds: Sequence[Any], slot: int, boot: Mapping[str, Any]) -> tuple[float, ...]:
    """Held-out accuracy (%) at one layer slot with its CI: over held-out answers for one
    seed's directions, over seeds and then answers (`SeedBootstrap`) for several; without
    held-out projections, the mean stored accuracy and no interval."""
    from emdir.analysis.replicates import SeedBootstrap
    from emdir.analysis.stats import clustered

    if any(d.projection is None for d in ds):
        return 100 * float(np.mean([d.accuracy[slot] for d in ds])), np.nan, np.nan
    if len(ds) == 1:
        return mean3(ds[0].projection.heldout_correct(slot), boot)
    correct = [np.asarray(d.projection.heldout_correct(slot), dtype=float) for d in ds]
    seeds = [{"acc": clustered(c, np.arange(c.size), "held-out")} for c in correct]
    e = SeedBootstrap(seeds, **boot).mean_ci("acc")
    return 100 * e.value, 100 * e.lo, 100 * e.hi
