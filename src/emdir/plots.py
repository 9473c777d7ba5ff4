"""Figures: the donor x receiver transfer matrix, steering dose-response, layer separation and
training curves."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from emdir.errors import EmdirError
from emdir.io import atomic_path

# Figures are built on a bare `Figure` (Agg canvas) rather than pyplot, so no global state
# or interactive backend is involved.
_CMAP = "RdBu_r"
_NAN_COLOUR = "#d9d9d9"
_TARGET = "target"
_SPEC_COLUMNS = ("specificity", "spec_lo", "spec_hi", "strongest_control")


def transfer_matrix_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Draw the donor x receiver grid of target suppression (and specificity, when present).

    Rows are donors and columns receivers, in order of first appearance. Each target cell
    shows its value and CI, and beneath it the strongest control's effect; the specificity
    panel marks with * and a bold border the cells whose CI excludes zero.
    """
    _require(df, ("donor", "receiver", "vector", "suppression", "lo", "hi"), "transfer matrix")
    donors = list(dict.fromkeys(df["donor"]))
    receivers = list(dict.fromkeys(df["receiver"]))
    target = df[df["vector"] == _TARGET]
    controls = df[df["vector"] != _TARGET]
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
                passes[i, j] = row["spec_lo"] > 0 or row["spec_hi"] < 0
                star = "*" if passes[i, j] else ""
                spec_text[i][j] = (
                    f"{_ci(row['specificity'], row['spec_lo'], row['spec_hi'])}{star}"
                    f"\nvs {row['strongest_control']}"
                )

    n = max(shape)
    panels = 2 if has_spec else 1
    side = 1.4 * n + 2.6
    fig = Figure(figsize=(side * panels, side - 0.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    fontsize = max(6.5, 11.0 - 0.6 * n)
    _heatmap(axes[0], supp, supp_text, donors, receivers, fontsize)
    axes[0].set_title("Target suppression (points, 95% CI)\nbelow: strongest control", fontsize=10)
    if has_spec:
        _heatmap(axes[1], spec, spec_text, donors, receivers, fontsize)
        axes[1].set_title("Specificity: target - strongest control\n* = CI excludes 0", fontsize=10)
        for i, j in zip(*np.nonzero(passes), strict=True):
            axes[1].add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5)
            )
    _save(fig, out_png)


def steering_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Within-model dose-response: spillover (%) vs coefficient, one line per vector, CI bars.

    Rows at coefficient 0 are the unsteered baseline: each vector's line starts from its own
    coefficient-0 row if it has one, else from the model's baseline row.
    """
    _require(df, ("model", "vector", "coefficient", "spillover", "lo", "hi"), "steering plot")
    models = list(dict.fromkeys(df["model"]))
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax, model in zip(axes, models, strict=False):
        rows = df[df["model"] == model]
        base = rows[rows["coefficient"] == 0]
        for vector in dict.fromkeys(rows.loc[rows["coefficient"] != 0, "vector"]):
            line = rows[rows["vector"] == vector]
            if not (line["coefficient"] == 0).any() and not base.empty:
                line = pd.concat([base.iloc[[0]], line])
            line = line.sort_values("coefficient")
            err = np.vstack([line["spillover"] - line["lo"], line["hi"] - line["spillover"]])
            ax.errorbar(
                line["coefficient"],
                line["spillover"],
                yerr=err,
                marker="o",
                capsize=3,
                label=str(vector),
            )
        if not base.empty:
            ax.axhline(base["spillover"].iloc[0], color="grey", linestyle=":", linewidth=1)
        ax.set_title(str(model))
        ax.set_xlabel("coefficient")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("code spillover (%)")
    _save(fig, out_png)


def separation_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Held-out accuracy and AUROC of the direction vs layer, one line per model."""
    _require(df, ("model", "layer", "accuracy", "auroc"), "separation plot")
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for model in dict.fromkeys(df["model"]):
        rows = df[df["model"] == model].sort_values("layer")
        for ax, metric in zip(axes, ("accuracy", "auroc"), strict=True):
            ax.plot(rows["layer"], rows[metric], marker="o", markersize=3, label=str(model))
    for ax, metric in zip(axes, ("held-out accuracy", "held-out AUROC"), strict=True):
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xlabel("layer (decoder block output)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
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


def _ci(value: float, lo: float, hi: float) -> str:
    return f"{value:.1f}\n[{lo:.1f}, {hi:.1f}]"


def _control(ctl: pd.DataFrame) -> str:
    finite = ctl[ctl["suppression"].notna()]
    if finite.empty:
        return ""
    best = finite.loc[finite["suppression"].idxmax()]
    return f"\n{best['vector']}: {best['suppression']:.1f}"


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise EmdirError(
            f"{what}: table lacks column(s) {', '.join(missing)}; rerun the aggregate rule"
        )
    if df.empty:
        raise EmdirError(f"{what}: the table has no rows; check that the upstream rules ran")


def _save(fig: Figure, out_png: str | Path) -> None:
    # The temporary name has no .png suffix, so the format must be explicit.
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
