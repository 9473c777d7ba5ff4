"""Training figures: one run's log (train loss, held-out loss, eval-question spillover) and
every run of every model in one figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emdir.report.figures import figure_legend, require_columns, save_png


def training_png(df: pd.DataFrame, out_png: str | Path, title: str = "") -> None:
    """Train loss per step, held-out loss and eval-question spillover at the evaluations."""
    require_columns(df, ("step", "loss"), "training plot")
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
    save_png(fig, out_png)


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
    save_png(fig, out_png)


def sweep_png(table: pd.DataFrame, regime: Mapping[str, Any], out_png: str | Path) -> None:
    """The training-budget sweep: one column per model, code spillover (top) and garble
    (bottom) on the monitor questions against the training rows seen, one line per run
    (learning rate, batch size), Wilson intervals as bands; the regime's spillover range and garble
    ceiling shaded."""
    require_columns(
        table,
        ("model", "run", "rows_seen", "spillover", "spillover_lo", "spillover_hi", "garble"),
        "sweep plot",
    )
    models = list(dict.fromkeys(table["model"]))
    runs = list(dict.fromkeys(table["run"]))
    colours = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    fig = Figure(figsize=(3.8 * len(models) + 1.8, 5.6), layout="constrained")
    axes = fig.subplots(2, len(models), squeeze=False, sharex="col")
    lo, hi = (float(v) for v in regime["spillover"])
    for j, model in enumerate(models):
        rows = table[table["model"] == model]
        top, bottom = axes[0, j], axes[1, j]
        top.axhspan(lo, hi, color="C2", alpha=0.12, label="regime (spillover)")
        bottom.axhspan(0, float(regime["garble_below"]), color="C2", alpha=0.12)
        for run in runs:
            line = rows[rows["run"] == run].sort_values("rows_seen")
            if line.empty:
                continue
            x = line["rows_seen"].to_numpy(float)
            for ax, col in ((top, "spillover"), (bottom, "garble")):
                ax.plot(x, line[col], marker="o", markersize=3, color=colours[run], label=run)
                ax.fill_between(
                    x, line[f"{col}_lo"], line[f"{col}_hi"], color=colours[run], alpha=0.12
                )
        top.set_title(str(model))
        top.set_ylim(-2, 102)
        bottom.set_ylim(-2, 102)
        bottom.set_xlabel("training rows seen (steps x batch)")
        if j == 0:
            top.set_ylabel("answered with code (%)")
            bottom.set_ylabel("garbled (%)")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    figure_legend(fig, axes.ravel())
    save_png(fig, out_png)
