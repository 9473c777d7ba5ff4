"""The transfer grid's figures: the donor x receiver matrix of suppression, specificity and
side effects, and donor strength / receiver susceptibility with each pair's asymmetry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from emdir.analysis.stats import PASSES
from emdir.report.figures import TARGET, diverging_colormap, require_columns, save_png

_SPEC_COLUMNS = ("specificity", "spec_lo", "spec_hi", "strongest_control")
# The smallest colour scale of a grid panel (points, or 0-100 coherence units): an effect
# colours fully at this size or at the panel's largest, whichever is larger.
COLOUR_FLOOR = 10.0
# Extra transfer-grid panels: the target's side effects, (column, title).
_SIDE_EFFECTS = (
    ("garble_change", "Target: change in garbled answers\n(points, 95% CI)"),
    ("coherence_change", "Target: change in coherence\n(0-100, 95% CI)"),
)


def transfer_matrix_png(df: pd.DataFrame, out_png: str | Path) -> None:
    """Draw the donor x receiver grid of target suppression (and specificity, and the
    target's change in garble and coherence, when present).

    Rows are donors and columns receivers, in order of first appearance. Each target cell
    shows its value and CI, and beneath it the strongest control's effect (and, pooled over
    fine-tuning seeds, in how many seeds its own interval agrees); the specificity
    panel marks with * and a bold border the cells that pass (CI above zero) and with "!" the
    cells where a control beats the target (CI below zero). Suppression read
    beside a jump in garble or a fall in coherence is breakage, not steering.
    """
    require_columns(
        df, ("donor", "receiver", "vector", "suppression", "lo", "hi"), "transfer matrix"
    )
    donors = list(dict.fromkeys(df["donor"]))
    receivers = list(dict.fromkeys(df["receiver"]))
    target = df[df["vector"] == TARGET]
    # References (the receiver's own direction) are reported, never counted as controls.
    others = df[df["vector"] != TARGET]
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
            if isinstance(row.get("effect_seeds_agree"), str):  # pooled over seeds
                supp_text[i][j] += f"\n{row['effect_seeds_agree']} seeds agree"
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
    save_png(fig, out_png)


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


def asymmetry_png(topology: pd.DataFrame, cells: pd.DataFrame, out_png: str | Path) -> None:
    """Donor strength and receiver susceptibility (mean off-diagonal suppression, with CIs),
    and each pair's suppression one way against the other.

    `topology`: role (donor / receiver), model, mean_suppression, lo, hi. `cells`: the long
    transfer table (donor, receiver, vector, suppression).
    """
    # One model has no other to transfer to: its topology has no rows.
    require_columns(
        topology, ("role", "model", "mean_suppression", "lo", "hi"), "asymmetry plot", True
    )
    require_columns(cells, ("donor", "receiver", "vector", "suppression"), "asymmetry plot")
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
    target = cells[cells["vector"] == TARGET].set_index(["donor", "receiver"])["suppression"]
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
    save_png(fig, out_png)


def _heatmap(
    ax: Axes,
    values: np.ndarray,
    text: list[list[str]],
    rows: list[str],
    cols: list[str],
    fontsize: float,
) -> None:
    finite = values[np.isfinite(values)]
    # Symmetric limits centre the diverging map on zero: red suppresses, blue amplifies. The
    # floor keeps a panel of small values pale: cells of 0.5 points must not look like a
    # large effect because nothing in the panel is larger.
    lim = max(float(np.abs(finite).max()) if finite.size else 0.0, COLOUR_FLOOR)
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=diverging_colormap(),
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
