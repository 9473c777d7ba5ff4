"""The direction's figures: held-out separation per layer, class histograms of the
projections, and the direction's cosine similarity across layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emdir.errors import EmdirError
from emdir.report.figures import diverging_colormap, figure_legend, require_columns, save_png


def separation_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Held-out accuracy and AUROC of the direction vs layer, one line per model.

    With an optional `ft` column holding more than one value, each (model, ft) pair is its
    own line labelled "model/ft", dashed for every ft but the first to appear.
    """
    require_columns(df, ("model", "layer", "accuracy", "auroc"), "separation plot")
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
    save_png(fig, out_png)


def projections_png(df: pd.DataFrame, out_png: str | Path, layer_label: str = "") -> None:
    """Histograms of each sample's projection onto the direction, per class, one panel per model.

    Bins are shared within a panel; held-out samples are filled, training samples outlined.
    Densities rather than counts, so the two splits are comparable.
    """
    require_columns(df, ("model", "label", "projection", "heldout"), "projection plot")
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
    figure_legend(fig, axes)
    save_png(fig, out_png)


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
    cmap = diverging_colormap()
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
    save_png(fig, out_png)
