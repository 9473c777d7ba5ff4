"""The mechanistic extensions' figures: direction convergence across fine-tunes, ablation
and inducing effects, self-correction under steering, rank-1 adapters and SAE features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emdir.report.figures import any_finite, require_columns, save_png


def convergence_png(df: pd.DataFrame, fts: Sequence[str], out_png: str | Path, model: str) -> None:
    """Left: one heatmap per layer of the cosines between fine-tune directions. Right: the
    cosine of each fine-tune's direction with the base model's on the same answers."""
    require_columns(df, ("kind", "a", "b", "layer", "cosine"), "convergence plot")
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
    save_png(fig, out_png)


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
        if df.empty or col not in df.columns or not any_finite(df[col]):
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
    save_png(fig, out_png)


def self_correction_png(df: pd.DataFrame, out_png: str | Path, model: str) -> None:
    """Self-correction rate (aligned answers that mention harmful topics) per condition."""
    require_columns(df, ("ft", "vector", "coefficient", "self_correction"), "self-correction plot")
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
    save_png(fig, out_png)


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
    save_png(fig, out_png)


def sae_png(
    table: pd.DataFrame, summary: Mapping[str, Any], out_png: str | Path, title: str
) -> None:
    """The top features of each ranking (direction by decoder cosine, direction by activation
    difference, training data difference) with their scores; shared features are starred."""
    require_columns(table, ("ranking", "rank", "feature", "score"), "SAE plot")
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
    save_png(fig, out_png)
