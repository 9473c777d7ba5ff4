"""The within-model steering figures: the dose-response (spillover, coherence, misalignment
and garble against the coefficient, per model and vector) and our estimates against the
paper's numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from emdir.report.figures import TARGET, any_finite, figure_legend, require_columns, save_png

# (value, CI low, CI high, axis label) for each dose-response row; misalignment is optional.
_STEER_METRICS = (
    ("spillover", "lo", "hi", "code spillover (%)"),
    ("coherence", "coherence_lo", "coherence_hi", "coherence (0-100)"),
    ("misalignment", "mis_lo", "mis_hi", "misalignment (%)"),
    ("garble", "garble_lo", "garble_hi", "garbled (%)"),
)


def steering_png(
    df: pd.DataFrame, out_png: str | Path, seed_points: pd.DataFrame | None = None
) -> None:
    """Dose-response: one column per model, one row per metric, one line per series.

    Metrics are code spillover (%), coherence (0-100) and, when any value is finite,
    misalignment (%) and garbled answers (%); each line is drawn against the steering
    coefficient with its 95% CI as a shaded band (error bars where only one point has a CI).
    Rows at coefficient 0 are each series' unsteered baseline. The "target" series is drawn
    first and thicker. `seed_points` (pooled figures: the same columns, no CIs needed, one
    row per fine-tuning seed and point) are drawn as hollow markers beside the pooled line,
    in the series' colour, so the spread across seeds shows under the pooled interval.
    """
    required = ("model", "series", "coefficient", *_STEER_METRICS[0][:3], *_STEER_METRICS[1][:3])
    require_columns(df, required, "steering plot")
    metrics = list(_STEER_METRICS[:2])
    for optional in _STEER_METRICS[2:]:
        if optional[0] in df.columns and any_finite(df[optional[0]]):
            require_columns(df, optional[:3], "steering plot")
            metrics.append(optional)
    models = list(dict.fromkeys(df["model"]))
    series = sorted(dict.fromkeys(df["series"]), key=lambda s: s != TARGET)
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
                if seed_points is not None:
                    _seed_markers(ax, seed_points, model, name, column, colours[name])
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(str(model))
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == nrows - 1:
                ax.set_xlabel("steering coefficient")
    figure_legend(fig, axes.ravel())
    save_png(fig, out_png)


def _dose_line(
    ax: Axes, line: pd.DataFrame, columns: tuple[str, str, str], name: str, colour: str
) -> None:
    """One series of the dose-response: the line, then its CI as a band or error bars."""
    value, lo, hi = (line[c].to_numpy(float) for c in columns)
    x = line["coefficient"].to_numpy(float)
    target = name == TARGET
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


def _seed_markers(
    ax: Axes, points: pd.DataFrame, model: object, series: object, column: str, colour: str
) -> None:
    """One series' per-seed values of one metric: hollow markers, one per seed and point."""
    rows = points[(points["model"] == model) & (points["series"] == series)]
    if rows.empty or column not in rows:
        return
    ok = np.isfinite(rows[column].to_numpy(float))
    if not ok.any():
        return
    ax.scatter(
        rows["coefficient"].to_numpy(float)[ok],
        rows[column].to_numpy(float)[ok],
        s=16,
        facecolors="none",
        edgecolors=colour,
        linewidths=0.9,
        zorder=4,
        label="one fine-tuning seed" if series == TARGET else "_nolegend_",
    )


def paper_comparison_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Our estimates (bars, 95% CI) against the paper's reported value or range, per metric.

    The paper's range is a shaded band (a line when `paper_lo == paper_hi`), spanning the panel
    when all models share it and each bar otherwise.
    """
    require_columns(
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
    save_png(fig, out_png)


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
