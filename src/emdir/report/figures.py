"""What every figure module shares: checking a table's columns, the diverging colour map, one
legend per figure, and saving a PNG stamped with provenance.

Figures are built on a bare `Figure` (Agg canvas) rather than pyplot, so no global state or
interactive backend is involved. The figure modules are by topic: figures_steering
(dose-response, comparison with the paper), figures_directions (separation, projections,
cosine across layers), figures_transfer (the grid and its asymmetry), figures_training and
figures_mechanistic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from emdir.errors import EmdirError
from emdir.io import atomic_path
from emdir.provenance import stamp

# The steered direction's vector name; its series and cells are drawn first and bolder.
TARGET = "target"
_CMAP = "RdBu_r"
_NAN_COLOUR = "#d9d9d9"


def diverging_colormap() -> Colormap:
    """Red-white-blue, centred by the caller's symmetric limits; NaN cells grey."""
    return matplotlib.colormaps[_CMAP].with_extremes(bad=_NAN_COLOUR)


def figure_legend(fig: Figure, axes: Iterable[Axes]) -> None:
    """One legend for the whole figure, right of the panels, with each label once."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8)


def any_finite(values: pd.Series) -> bool:
    """Whether any value of a column is a finite number (non-numbers count as missing)."""
    return bool(np.isfinite(pd.to_numeric(values, errors="coerce").to_numpy(float)).any())


def require_columns(
    df: pd.DataFrame, columns: Iterable[str], what: str, allow_empty: bool = False
) -> None:
    """Raise, naming the figure (`what`), when the table lacks a column or has no rows."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise EmdirError(
            f"{what}: table lacks column(s) {', '.join(missing)}; rerun the aggregate rule"
        )
    if df.empty and not allow_empty:
        raise EmdirError(f"{what}: the table has no rows; check that the upstream rules ran")


def save_png(fig: Figure, out_png: str | Path) -> None:
    """Write the figure atomically as a 150-dpi PNG whose text chunks record which code,
    config and packages drew it."""
    # The temporary name has no .png suffix, so the format must be explicit.
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, metadata=stamp())
