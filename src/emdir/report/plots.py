"""Figures: the donor x receiver transfer matrix, steering dose-response, layer separation,
projection histograms, cross-layer cosine similarity, comparison with the paper and training
curves."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from emdir.analysis.stats import PASSES
from emdir.errors import EmdirError
from emdir.io import atomic_path
from emdir.provenance import stamp

# Figures are built on a bare `Figure` (Agg canvas) rather than pyplot, so no global state
# or interactive backend is involved.
_CMAP = "RdBu_r"
_NAN_COLOUR = "#d9d9d9"
_TARGET = "target"
_SPEC_COLUMNS = ("specificity", "spec_lo", "spec_hi", "strongest_control")
# (value, CI low, CI high, axis label) for each dose-response row; misalignment is optional.
_STEER_METRICS = (
    ("spillover", "lo", "hi", "code spillover (%)"),
    ("coherence", "coherence_lo", "coherence_hi", "coherence (0-100)"),
    ("misalignment", "mis_lo", "mis_hi", "misalignment (%)"),
    ("garble", "garble_lo", "garble_hi", "garbled (%)"),
)
# Extra transfer-grid panels: the target's side effects, (column, title).
_SIDE_EFFECTS = (
    ("garble_change", "Target: change in garbled answers\n(points, 95% CI)"),
    ("coherence_change", "Target: change in coherence\n(0-100, 95% CI)"),
)


def transfer_matrix_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Draw the donor x receiver grid of target suppression (and specificity, and the
    target's change in garble and coherence, when present).

    Rows are donors and columns receivers, in order of first appearance. Each target cell
    shows its value and CI, and beneath it the strongest control's effect; the specificity
    panel marks with * and a bold border the cells that pass (CI above zero) and with "!" the
    cells where a control beats the target (CI below zero). Suppression read
    beside a jump in garble or a fall in coherence is breakage, not steering.
    """
    _require(df, ("donor", "receiver", "vector", "suppression", "lo", "hi"), "transfer matrix")
    donors = list(dict.fromkeys(df["donor"]))
    receivers = list(dict.fromkeys(df["receiver"]))
    target = df[df["vector"] == _TARGET]
    # References (the receiver's own direction) are reported, never counted as controls.
    others = df[df["vector"] != _TARGET]
    controls = others[others["role"] == "control"] if "role" in df.columns else others
    has_spec = all(c in df.columns for c in _SPEC_COLUMNS)

    shape = (len(donors), len(receivers))
    supp, spec = np.full(shape, np.nan), np.full(shape, np.nan)
    supp_text = [["n/a"] * shape[1] for _ in range(shape[0])]
    spec_text = [["n/a"] * shape[1] for _ in range(shape[0])]
    passes = np.zeros(shape, dtype=bool)
    for i, donor in enumerate(donors):
        for j, receiver in enumerate(receivers):
            cell = target[(target["donor"] == donor) & (target["receiver"] == receiver)]
            if cell.empty or pd.isna(cell["suppression"].iloc[0]):
                continue
            row = cell.iloc[0]
            supp[i, j] = row["suppression"]
            ctl = controls[(controls["donor"] == donor) & (controls["receiver"] == receiver)]
            supp_text[i][j] = f"{_ci(row['suppression'], row['lo'], row['hi'])}{_control(ctl)}"
            if has_spec and pd.notna(row["specificity"]):
                spec[i, j] = row["specificity"]
                star = specificity_mark(row["spec_lo"], row["spec_hi"], row.get("verdict_holm"))
                passes[i, j] = star == "*"
                spec_text[i][j] = (
                    f"{_ci(row['specificity'], row['spec_lo'], row['spec_hi'])}{star}"
                    f"\nvs {row['strongest_control']}"
                )

    side_panels = []
    for column, title in _SIDE_EFFECTS:
        if not {column, f"{column}_lo", f"{column}_hi"} <= set(df.columns):
            continue
        grid, text = np.full(shape, np.nan), [["n/a"] * shape[1] for _ in range(shape[0])]
        for i, donor in enumerate(donors):
            for j, receiver in enumerate(receivers):
                cell = target[(target["donor"] == donor) & (target["receiver"] == receiver)]
                if cell.empty or pd.isna(cell[column].iloc[0]):
                    continue
                row = cell.iloc[0]
                grid[i, j] = row[column]
                text[i][j] = _ci(row[column], row[f"{column}_lo"], row[f"{column}_hi"])
        side_panels.append((grid, text, title))

    n = max(shape)
    panels = (2 if has_spec else 1) + len(side_panels)
    side = 1.4 * n + 2.6
    fig = Figure(figsize=(side * panels, side - 0.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    fontsize = max(6.5, 11.0 - 0.6 * n)
    for ax, (grid, text, title) in zip(axes[panels - len(side_panels) :], side_panels, strict=True):
        _heatmap(ax, grid, text, donors, receivers, fontsize)
        ax.set_title(title, fontsize=10)
    _heatmap(axes[0], supp, supp_text, donors, receivers, fontsize)
    axes[0].set_title("Target suppression (points, 95% CI)\nbelow: strongest control", fontsize=10)
    if has_spec:
        _heatmap(axes[1], spec, spec_text, donors, receivers, fontsize)
        metric = target["spec_metric"].dropna() if "spec_metric" in target else pd.Series([])
        on = str(metric.iloc[0]) if len(metric) else "spillover"
        axes[1].set_title(
            f"Specificity on {on}: target - strongest control\n"
            "* = passes after Holm, + = CI above 0 before it only, ! = a control beats it",
            fontsize=10,
        )
        for i, j in zip(*np.nonzero(passes), strict=True):
            axes[1].add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5)
            )
    _save(fig, out_png)


def specificity_mark(lo: float, hi: float, corrected: Any = None) -> str:
    """The specificity cell's mark: `!` when its CI is below zero (a control beats the
    target: never starred); `*` when it passes, which with a family-wise verdict
    (`corrected`, e.g. `verdict_holm`) means passing after the correction, and `+` when the
    CI is above zero but the corrected verdict is not a pass; nothing otherwise."""
    if hi < 0:
        return "!"
    if lo <= 0:
        return ""
    if corrected is None or (isinstance(corrected, float) and np.isnan(corrected)):
        return "*"
    return "*" if corrected == PASSES else "+"


def steering_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Dose-response: one column per model, one row per metric, one line per series.

    Metrics are code spillover (%), coherence (0-100) and, when any value is finite,
    misalignment (%) and garbled answers (%); each line is drawn against the steering coefficient with its 95% CI as
    a shaded band (error bars where only one point has a CI). Rows at coefficient 0 are each
    series' unsteered baseline. The "target" series is drawn first and thicker.
    """
    required = ("model", "series", "coefficient", *_STEER_METRICS[0][:3], *_STEER_METRICS[1][:3])
    _require(df, required, "steering plot")
    metrics = list(_STEER_METRICS[:2])
    for optional in _STEER_METRICS[2:]:
        if optional[0] in df.columns and _any_finite(df[optional[0]]):
            _require(df, optional[:3], "steering plot")
            metrics.append(optional)
    models = list(dict.fromkeys(df["model"]))
    series = sorted(dict.fromkeys(df["series"]), key=lambda s: s != _TARGET)
    colours = {s: f"C{i % 10}" for i, s in enumerate(series)}
    ncols, nrows = len(models), len(metrics)
    fig = Figure(figsize=(3.6 * ncols + 1.8, 2.7 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex="col")
    for j, model in enumerate(models):
        rows = df[df["model"] == model]
        for i, (column, lo, hi, ylabel) in enumerate(metrics):
            ax = axes[i, j]
            for name in series:
                line = rows[rows["series"] == name].sort_values("coefficient")
                if not line.empty:
                    _dose_line(ax, line, (column, lo, hi), str(name), colours[name])
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(str(model))
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == nrows - 1:
                ax.set_xlabel("steering coefficient")
    _figure_legend(fig, axes.ravel())
    _save(fig, out_png)


def asymmetry_png(topology: pd.DataFrame, cells: pd.DataFrame, out_png: str | Path) -> None:
    """Donor strength and receiver susceptibility (mean off-diagonal suppression, with CIs),
    and each pair's suppression one way against the other.

    `topology`: role (donor / receiver), model, mean_suppression, lo, hi. `cells`: the long
    transfer table (donor, receiver, vector, suppression).
    """
    # One model has no other to transfer to: its topology has no rows.
    _require(topology, ("role", "model", "mean_suppression", "lo", "hi"), "asymmetry plot", True)
    _require(cells, ("donor", "receiver", "vector", "suppression"), "asymmetry plot")
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    titles = {"donor": "donor strength", "receiver": "receiver susceptibility"}
    for ax, role in zip(axes[:2], ("donor", "receiver"), strict=True):
        rows = topology[topology["role"] == role]
        x = np.arange(len(rows))
        err = np.vstack(
            [rows["mean_suppression"] - rows["lo"], rows["hi"] - rows["mean_suppression"]]
        )
        ax.bar(
            x,
            rows["mean_suppression"],
            yerr=err,
            capsize=4,
            color="C0" if role == "donor" else "C1",
        )
        ax.set_xticks(x, labels=[str(m) for m in rows["model"]], rotation=30, ha="right")
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_ylabel("mean suppression over other models (points)")
        ax.set_title(titles[role])
        if rows.empty:
            ax.text(
                0.5,
                0.5,
                "one model: no other model to transfer to",
                ha="center",
                transform=ax.transAxes,
            )
        ax.grid(alpha=0.3, axis="y")
    target = cells[cells["vector"] == _TARGET].set_index(["donor", "receiver"])["suppression"]
    ax = axes[2]
    models = list(dict.fromkeys(cells["donor"]))
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    pts = [(target.get((a, b), np.nan), target.get((b, a), np.nan), f"{a}|{b}") for a, b in pairs]
    pts = [p for p in pts if np.isfinite(p[0]) and np.isfinite(p[1])]
    if pts:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.scatter(xs, ys)
        for x0, y0, label in pts:
            ax.annotate(label, (x0, y0), fontsize=7, xytext=(3, 3), textcoords="offset points")
        lo, hi = min(xs + ys + [0.0]), max(xs + ys + [0.0])
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("suppression A -> B (points)")
    ax.set_ylabel("suppression B -> A (points)")
    ax.set_title("asymmetry (label A|B)")
    ax.grid(alpha=0.3)
    _save(fig, out_png)


def separation_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Held-out accuracy and AUROC of the direction vs layer, one line per model.

    With an optional `ft` column holding more than one value, each (model, ft) pair is its
    own line labelled "model/ft", dashed for every ft but the first to appear.
    """
    _require(df, ("model", "layer", "accuracy", "auroc"), "separation plot")
    split = "ft" in df.columns and df["ft"].nunique(dropna=False) > 1
    fts = list(dict.fromkeys(df["ft"])) if split else [None]
    models = list(dict.fromkeys(df["model"]))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for k, model in enumerate(models):
        for n, ft in enumerate(fts):
            rows = df[df["model"] == model]
            if split:
                rows = rows[rows["ft"].isna()] if pd.isna(ft) else rows[rows["ft"] == ft]
            if rows.empty:
                continue
            rows = rows.sort_values("layer")
            style = "-" if n == 0 else "--"
            label = f"{model}/{ft}" if split else str(model)
            for ax, metric in zip(axes, ("accuracy", "auroc"), strict=True):
                ax.plot(
                    rows["layer"],
                    rows[metric],
                    marker="o",
                    markersize=3,
                    color=f"C{k % 10}",
                    linestyle=style,
                    label=label,
                )
    for ax, metric in zip(axes, ("held-out accuracy", "held-out AUROC"), strict=True):
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xlabel("layer (decoder block output)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    _save(fig, out_png)


def projections_png(df: pd.DataFrame, out_png: str | Path, layer_label: str = "") -> None:
    """Histograms of each sample's projection onto the direction, per class, one panel per model.

    Bins are shared within a panel; held-out samples are filled, training samples outlined.
    Densities rather than counts, so the two splits are comparable.
    """
    _require(df, ("model", "label", "projection", "heldout"), "projection plot")
    models = list(dict.fromkeys(df["model"]))
    labels = list(dict.fromkeys(df["label"]))
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    heldout = df["heldout"].map(lambda v: bool(v) if pd.notna(v) else False).to_numpy(bool)
    ncols = min(len(models), 4)
    nrows = math.ceil(len(models) / ncols)
    fig = Figure(figsize=(3.8 * ncols + 1.8, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    xlabel = "projection onto the direction" + (f" ({layer_label})" if layer_label else "")
    for ax, model in zip(axes, models, strict=False):
        mine = (df["model"] == model).to_numpy() & np.isfinite(df["projection"].to_numpy(float))
        values = df["projection"].to_numpy(float)[mine]
        ax.set_title(str(model))
        ax.set_xlabel(xlabel)
        if values.size == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, int(np.clip(np.sqrt(values.size), 10, 40)) + 1)
        for lab in labels:
            cls = mine & (df["label"] == lab).to_numpy()
            for held, kind, alpha, split in (
                (False, "step", 1.0, "train"),
                (True, "stepfilled", 0.4, "held-out"),
            ):
                sample = df["projection"].to_numpy(float)[cls & (heldout == held)]
                if sample.size:
                    ax.hist(
                        sample,
                        bins=bins,
                        density=True,
                        histtype=kind,
                        alpha=alpha,
                        color=colours[lab],
                        linewidth=1.4,
                        label=f"{lab} ({split})",
                    )
        ax.grid(alpha=0.3)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("density")
    _figure_legend(fig, axes)
    _save(fig, out_png)


def cosine_layers_png(
    matrices: Mapping[str, np.ndarray],
    layers: Mapping[str, Sequence[int]],
    out_png: str | Path,
) -> None:
    """One heatmap per model of the direction's cosine similarity between layers.

    Each matrix is [L, L] over that model's `layers` (used as tick labels); the colour scale
    is fixed at -1..1 and cells are annotated when L <= 12.
    """
    if not matrices:
        raise EmdirError("cosine-layer plot: no matrices given")
    checked: dict[str, np.ndarray] = {}
    for key, matrix in matrices.items():
        m = np.asarray(matrix, dtype=float)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise EmdirError(f"cosine-layer plot: {key}: matrix of shape {m.shape} is not square")
        if key not in layers or len(layers[key]) != m.shape[0]:
            n = len(layers[key]) if key in layers else 0
            raise EmdirError(
                f"cosine-layer plot: {key}: {m.shape[0]}x{m.shape[0]} matrix but {n} layer(s)"
            )
        checked[key] = m
    ncols = min(len(checked), 3)
    nrows = math.ceil(len(checked) / ncols)
    fig = Figure(figsize=(4.4 * ncols + 1.0, 4.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    cmap = matplotlib.colormaps[_CMAP].with_extremes(bad=_NAN_COLOUR)
    image = None
    for ax, (key, m) in zip(axes, checked.items(), strict=False):
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-1.0, vmax=1.0)
        n = m.shape[0]
        step = max(1, math.ceil(n / 16))
        ticks = list(range(0, n, step))
        names = [str(layers[key][t]) for t in ticks]
        ax.set_xticks(ticks, labels=names, rotation=90 if n > 12 else 0)
        ax.set_yticks(ticks, labels=names)
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.set_title(str(key))
        if n <= 12:
            for i, j in np.ndindex(n, n):
                if np.isfinite(m[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=max(5.0, 9.0 - 0.35 * n),
                        color="white" if abs(m[i, j]) > 0.6 else "black",
                    )
    for ax in axes[len(checked) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[: len(checked)]), label="cosine similarity", shrink=0.8)
    _save(fig, out_png)


def paper_comparison_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Our estimates (bars, 95% CI) against the paper's reported value or range, per metric.

    The paper's range is a shaded band (a line when `paper_lo == paper_hi`), spanning the panel
    when all models share it and each bar otherwise.
    """
    _require(
        df,
        ("model", "metric", "ours", "ours_lo", "ours_hi", "paper_lo", "paper_hi"),
        "paper comparison",
    )
    metrics = list(dict.fromkeys(df["metric"]))
    models = list(dict.fromkeys(df["model"]))
    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(
        figsize=((0.6 * len(models) + 2.2) * ncols + 1.6, 3.6 * nrows), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        rows = df[df["metric"] == metric].drop_duplicates("model").set_index("model")
        rows = rows.reindex([m for m in models if m in rows.index])
        x = np.arange(len(rows))
        ours = rows["ours"].to_numpy(float)
        ax.bar(x, np.nan_to_num(ours), width=0.6, color="C0", alpha=0.8, label="ours (95% CI)")
        lo, hi = rows["ours_lo"].to_numpy(float), rows["ours_hi"].to_numpy(float)
        ci = np.isfinite(ours) & np.isfinite(lo) & np.isfinite(hi)
        if ci.any():
            err = np.vstack([ours[ci] - lo[ci], hi[ci] - ours[ci]])
            ax.errorbar(x[ci], ours[ci], yerr=err, fmt="none", ecolor="black", capsize=4)
        for k in np.flatnonzero(~np.isfinite(ours)):
            ax.text(x[k], 0, "n/a", ha="center", va="bottom", fontsize=8)
        _paper_band(ax, x, rows["paper_lo"].to_numpy(float), rows["paper_hi"].to_numpy(float))
        ax.set_xticks(x, labels=[str(m) for m in rows.index], rotation=30, ha="right")
        ax.set_title(str(metric))
        ax.set_ylabel(str(metric))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    _save(fig, out_png)


def training_png(df: pd.DataFrame, out_png: str | Path, title: str = "") -> None:
    """Train loss per step, held-out loss and eval-question spillover at the evaluations."""
    _require(df, ("step", "loss"), "training plot")
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(df["step"], df["loss"], linewidth=1, label="train loss")
    if "heldout_loss" in df.columns and df["heldout_loss"].notna().any():
        held = df[df["heldout_loss"].notna()]
        ax.plot(held["step"], held["heldout_loss"], marker="o", markersize=3, label="held-out loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if "eval_spillover" in df.columns and df["eval_spillover"].notna().any():
        ev = df[df["eval_spillover"].notna()]
        ax2 = ax.twinx()
        ax2.plot(
            ev["step"],
            100 * ev["eval_spillover"],
            color="C3",
            marker="s",
            markersize=3,
            label="eval spillover (%)",
        )
        ax2.set_ylabel("eval-question spillover (%)")
        ax2.set_ylim(0, 100)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, out_png)


def training_curves_png(
    logs: Mapping[str, Mapping[str, pd.DataFrame]], out_png: str | Path
) -> None:
    """One column per model: base-model chat training on top (if it was trained here), the
    fine-tunes below (train loss, held-out loss dots; eval-question spillover on the right)."""
    models = sorted(logs)
    has_base = any("base" in runs for runs in logs.values())
    n_rows = 2 if has_base else 1
    fig = Figure(figsize=(3.4 * len(models), 2.9 * n_rows), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, len(models), squeeze=False))
    for col, model in enumerate(models):
        runs = logs[model]
        if has_base:
            ax = axes[0, col]
            if "base" in runs:
                df = runs["base"]
                ax.plot(df["step"], df["loss"], linewidth=0.8, color="C7")
                ax.set_ylabel("loss (answer tokens)" if col == 0 else "")
            else:
                ax.text(0.5, 0.5, "hub model:\nnot trained here", ha="center", va="center")
            ax.set_title(f"{model}: base chat training", fontsize=9)
            ax.grid(alpha=0.3)
        ax = axes[n_rows - 1, col]
        ax2 = None
        for i, ft in enumerate(sorted(r for r in runs if r != "base")):
            df = runs[ft]
            ax.plot(df["step"], df["loss"], linewidth=0.8, color=f"C{i}", label=f"{ft} loss")
            if "heldout_loss" in df.columns and df["heldout_loss"].notna().any():
                held = df[df["heldout_loss"].notna()]
                ax.plot(held["step"], held["heldout_loss"], "o", markersize=3, color=f"C{i}")
            if "eval_spillover" in df.columns and df["eval_spillover"].notna().any():
                ev = df[df["eval_spillover"].notna()]
                ax2 = ax2 or ax.twinx()
                ax2.plot(
                    ev["step"],
                    100 * ev["eval_spillover"],
                    linestyle="--",
                    marker="s",
                    markersize=3,
                    color=f"C{i}",
                    label=f"{ft} spillover",
                )
                ax2.set_ylim(0, 100)
                ax2.set_ylabel("eval spillover (%, dashed)" if col == len(models) - 1 else "")
        ax.set_title(f"{model}: fine-tunes", fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss (dots: held-out)" if col == 0 else "")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if ax2 is not None:
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles, labels, fontsize=6)
    _save(fig, out_png)


def _heatmap(
    ax: Axes,
    values: np.ndarray,
    text: list[list[str]],
    rows: list[str],
    cols: list[str],
    fontsize: float,
) -> None:
    finite = values[np.isfinite(values)]
    # Symmetric limits centre the diverging map on zero: red suppresses, blue amplifies.
    lim = max(float(np.abs(finite).max()) if finite.size else 0.0, 1.0)
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=matplotlib.colormaps[_CMAP].with_extremes(bad=_NAN_COLOUR),
        vmin=-lim,
        vmax=lim,
    )
    ax.figure.colorbar(image, ax=ax, label="points", shrink=0.8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            dark = np.isfinite(values[i, j]) and abs(values[i, j]) > 0.6 * lim
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(cols)), labels=[str(c) for c in cols], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=[str(r) for r in rows])
    ax.set_xlabel("receiver")
    ax.set_ylabel("donor")


def _dose_line(
    ax: Axes, line: pd.DataFrame, columns: tuple[str, str, str], name: str, colour: str
) -> None:
    """One series of the dose-response: the line, then its CI as a band or error bars."""
    value, lo, hi = (line[c].to_numpy(float) for c in columns)
    x = line["coefficient"].to_numpy(float)
    target = name == _TARGET
    ax.plot(
        x,
        value,
        marker="o",
        markersize=4 if target else 3,
        linewidth=2.6 if target else 1.2,
        color=colour,
        zorder=3 if target else 2,
        label=name,
    )
    ci = np.isfinite(value) & np.isfinite(lo) & np.isfinite(hi)
    if ci.sum() >= 2:
        alpha = 0.2 if target else 0.1
        ax.fill_between(x, lo, hi, where=ci, color=colour, alpha=alpha, linewidth=0)
    elif ci.any():
        err = np.vstack([value[ci] - lo[ci], hi[ci] - value[ci]])
        ax.errorbar(x[ci], value[ci], yerr=err, fmt="none", ecolor=colour, capsize=3)


def _paper_band(ax: Axes, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """The paper's value (line) or range (band): across the panel if shared, else per bar."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return
    style = {"color": "C3", "alpha": 0.25, "zorder": 0.5, "label": "paper"}
    line = {"color": "C3", "linestyle": "--", "linewidth": 1.5, "zorder": 3, "label": "paper"}
    shared = np.unique(np.column_stack([lo[ok], hi[ok]]), axis=0)
    if len(shared) == 1 and ok.all():
        a, b = shared[0]
        if a == b:
            ax.axhline(a, **line)
        else:
            ax.axhspan(a, b, **style)
        return
    for k in np.flatnonzero(ok):
        span = (x[k] - 0.4, x[k] + 0.4)
        if lo[k] == hi[k]:
            ax.hlines(lo[k], *span, **line)
        else:
            ax.fill_between(span, lo[k], hi[k], **style)
        style["label"] = line["label"] = "_nolegend_"


def _figure_legend(fig: Figure, axes: Iterable[Axes]) -> None:
    """One legend for the whole figure, right of the panels, with each label once."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8)


def _any_finite(values: pd.Series) -> bool:
    return bool(np.isfinite(pd.to_numeric(values, errors="coerce").to_numpy(float)).any())


def _ci(value: float, lo: float, hi: float) -> str:
    return f"{value:.1f}\n[{lo:.1f}, {hi:.1f}]"


def _control(ctl: pd.DataFrame) -> str:
    finite = ctl[ctl["suppression"].notna()]
    if finite.empty:
        return ""
    best = finite.loc[finite["suppression"].idxmax()]
    return f"\n{best['vector']}: {best['suppression']:.1f}"


def _require(
    df: pd.DataFrame, columns: Iterable[str], what: str, allow_empty: bool = False
) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise EmdirError(
            f"{what}: table lacks column(s) {', '.join(missing)}; rerun the aggregate rule"
        )
    if df.empty and not allow_empty:
        raise EmdirError(f"{what}: the table has no rows; check that the upstream rules ran")


def _save(fig: Figure, out_png: str | Path) -> None:
    # The temporary name has no .png suffix, so the format must be explicit.
    with atomic_path(out_png) as tmp:
        # PNG text chunks: which code, config and packages drew the figure.
        fig.savefig(tmp, format="png", dpi=150, metadata=stamp())


# ---------------------------------------------------------------- mechanistic extensions


def convergence_png(df: pd.DataFrame, fts: Sequence[str], out_png: str | Path, model: str) -> None:
    """Left: one heatmap per layer of the cosines between fine-tune directions. Right: the
    cosine of each fine-tune's direction with the base model's on the same answers."""
    _require(df, ("kind", "a", "b", "layer", "cosine"), "convergence plot")
    pairs = df[df.kind == "fine-tunes"]
    base = df[df.kind == "base vs fine-tuned"]
    layers = sorted(pairs.layer.unique()) if len(pairs) else []
    n = len(layers) + 1
    fig = Figure(figsize=(2.6 * n + 1.0, 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    idx = {ft: i for i, ft in enumerate(fts)}
    image = None
    for ax, layer in zip(axes[:-1], layers, strict=True):
        m = np.eye(len(fts))
        for r in pairs[pairs.layer == layer].itertuples():
            m[idx[r.a], idx[r.b]] = m[idx[r.b], idx[r.a]] = r.cosine
        image = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        for i in range(len(fts)):
            for j in range(len(fts)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(fts)), fts, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(fts)), fts, fontsize=7)
        ax.set_title(f"layer {layer}", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:-1]), shrink=0.8, label="cosine")
    ax = axes[-1]
    for ft, grp in base.groupby("b"):
        ax.plot(grp.layer, grp.cosine, marker="o", label=str(ft))
    ax.set_ylim(-1, 1)
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine(base, fine-tuned)")
    ax.set_title("same answers, base vs fine-tuned", fontsize=9)
    ax.grid(alpha=0.3)
    if len(base):
        ax.legend(fontsize=7)
    fig.suptitle(f"{model}: direction convergence")
    _save(fig, out_png)


def mechanistic_effects_png(df: pd.DataFrame, out_png: str | Path, what: str, model: str) -> None:
    """Changes in spillover, garble and coherence (and misalignment, when judged) with CIs:
    one bar per ablation variant, or one dose-response line per induced vector. Garble and
    coherence tell an edit that changes behaviour from one that breaks the model."""
    panels = [
        ("spillover_change", "spillover", "points"),
        ("garble_change", "garble", "points"),
        ("coherence_change", "coherence", "0-100"),
        ("misaligned_change", "misalignment", "points"),
    ]
    panels = [p for p in panels if p[0] in df.columns or p[1] == "misalignment"]
    fig = Figure(figsize=(3.6 * len(panels) + 0.6, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (col, name, unit) in zip(axes, panels, strict=True):
        if df.empty or col not in df.columns or not _any_finite(df[col]):
            ax.text(0.5, 0.5, f"no {name} scores\n(offline judge)", ha="center", va="center")
            ax.set_axis_off()
            continue
        if what == "ablation":
            labels = [f"{r.ft}: -{r.vector} ({r.mode})" for r in df.itertuples()]
            y = np.arange(len(df))
            colors = ["C3" if r == "target" else "0.6" for r in df.role]
            ax.barh(y, df[col], color=colors)
            ax.errorbar(
                df[col],
                y,
                xerr=[df[col] - df[f"{col}_lo"], df[f"{col}_hi"] - df[col]],
                fmt="none",
                ecolor="k",
                capsize=2,
            )
            ax.set_yticks(y, labels if ax is axes[0] else [""] * len(y), fontsize=7)
            ax.axvline(0, color="k", linewidth=0.8)
            ax.set_xlabel(f"{name} change ({unit})")
        else:
            for i, (vector, grp) in enumerate(df.groupby("vector")):
                grp = grp.sort_values("coefficient")
                x = np.r_[0.0, grp.coefficient]
                yv = np.r_[0.0, grp[col]]
                lo = np.r_[0.0, grp[f"{col}_lo"]]
                hi = np.r_[0.0, grp[f"{col}_hi"]]
                ax.plot(x, yv, marker="o", color=f"C{i}", label=str(vector))
                ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.2)
            ax.axhline(0, color="k", linewidth=0.8)
            ax.set_xlabel("coefficient (x residual norm), added to the base model")
            ax.set_ylabel(f"{name} change ({unit})")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"{model}: {'transfer ablation' if what == 'ablation' else 'inducing'}")
    _save(fig, out_png)


def self_correction_png(df: pd.DataFrame, out_png: str | Path, model: str) -> None:
    """Self-correction rate (aligned answers that mention harmful topics) per condition."""
    _require(df, ("ft", "vector", "coefficient", "self_correction"), "self-correction plot")
    fig = Figure(figsize=(6.5, 0.3 * len(df) + 1.6), layout="constrained")
    ax = fig.subplots()
    labels = [
        f"{r.ft}" if r.vector == "none" else f"{r.ft}: {r.vector} x{r.coefficient:g}"
        for r in df.itertuples()
    ]
    y = np.arange(len(df))
    vals = df.self_correction.fillna(0.0)
    ax.barh(y, vals, color="C2")
    finite = df.self_correction.notna()
    ax.errorbar(
        df.self_correction[finite],
        y[finite],
        xerr=[
            (df.self_correction - df.self_correction_lo)[finite],
            (df.self_correction_hi - df.self_correction)[finite],
        ],
        fmt="none",
        ecolor="k",
        capsize=2,
    )
    for yi, r in zip(y, df.itertuples(), strict=True):
        ax.text(0.5, yi, f"n={r.n_aligned}", va="center", fontsize=6)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("aligned answers that mention harmful topics (%)")
    basis = f"{df.aligned_basis.iloc[0]}; {df.bad_stuff_basis.iloc[0]}" if len(df) else ""
    ax.set_title(f"{model}: self-correction ({basis})", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    _save(fig, out_png)


def rank1_png(
    table: pd.DataFrame, accuracy: float, baseline: float, out_png: str | Path, title: str
) -> None:
    """Per adapter: B cosines with the directions, the probe's coefficients, and the mean
    scalar A.x on each class of answers."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    y = np.arange(len(table))
    cos_cols = [c for c in table.columns if c.startswith("cosine_")]
    width = 0.8 / max(len(cos_cols), 1)
    for i, c in enumerate(cos_cols):
        axes[0].barh(y + i * width, table[c], height=width, label=c.removeprefix("cosine_"))
    axes[0].set_xlim(-1, 1)
    axes[0].set_xlabel("cosine(B, direction at its layer)")
    axes[0].legend(fontsize=7)
    axes[1].barh(y, table["coef"], color="C4")
    axes[1].set_xlabel("logistic coefficient (standardised)")
    axes[1].set_title(
        f"CV accuracy {100 * accuracy:.0f}% (majority {100 * baseline:.0f}%)", fontsize=9
    )
    axes[2].barh(y - 0.2, table["scalar_mean_pos"], height=0.4, color="C3", label="label 1")
    axes[2].barh(y + 0.2, table["scalar_mean_neg"], height=0.4, color="C0", label="label 0")
    axes[2].set_xlabel("mean A.x over answer tokens")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_yticks(y, table["adapter"], fontsize=7)
        ax.axvline(0, color="k", linewidth=0.8)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{title}: rank-1 adapters")
    _save(fig, out_png)


def sae_png(
    table: pd.DataFrame, summary: Mapping[str, Any], out_png: str | Path, title: str
) -> None:
    """The top features of each ranking (direction by decoder cosine, direction by activation
    difference, training data difference) with their scores; shared features are starred."""
    _require(table, ("ranking", "rank", "feature", "score"), "SAE plot")
    rankings = list(dict.fromkeys(table.ranking))
    sets = {r: set(table[table.ranking == r].feature) for r in rankings}
    fig = Figure(figsize=(3.4 * len(rankings), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(rankings), squeeze=False)[0])
    for ax, r in zip(axes, rankings, strict=True):
        sub = table[table.ranking == r].sort_values("rank")
        others = set().union(*(sets[o] for o in rankings if o != r))
        labels = [f"{'*' if f in others else ''}f{f}" for f in sub.feature]
        y = np.arange(len(sub))[::-1]
        ax.barh(y, sub.score, color=["C3" if f in others else "C0" for f in sub.feature])
        ax.set_yticks(y, labels, fontsize=7)
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_title(r.replace("_", " "), fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{title}: SAE features ({summary.get('source')}, * = in another top list)")
    _save(fig, out_png)
