"""The README's default numbers are the committed reference tables' (docs/reference/default),
not hand copies: its garble-rate row and its read-strength row are checked against them."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference" / "default"
MODELS = ["gemma2", "llama", "ministral3", "qwen2"]


def _row(label: str) -> list[str]:
    """The README table row that starts with `label`, as its cells after the label."""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| {label}"):
            return [c.strip() for c in line.strip("|").split("|")[1:]]
    raise AssertionError(f"the README has no row {label!r}")


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell.replace("**", ""))]


def test_the_readme_quotes_the_reference_tables() -> None:
    rates = pd.read_csv(REFERENCE / "spillover_rates.csv").set_index(["model", "ft"])
    cells = _row("garbled: base / insecure / secure (%)")
    assert len(cells) == len(MODELS)
    for model, cell in zip(MODELS, cells, strict=True):
        want = [rates.loc[(model, ft), "garble"] for ft in ("base", "insecure", "secure")]
        assert _numbers(cell) == want, (model, cell, want)
    summary = pd.read_csv(REFERENCE / "within_model" / "summary.csv")
    read = summary[(summary.vector == "target") & (summary.ft == "insecure") & summary.read]
    cells = _row("target at the read strength: garble change [CI]")
    for model, cell in zip(MODELS, cells, strict=True):
        r = read[read.model == model].iloc[0]
        want = [r.garble_change, r.garble_change_lo, r.garble_change_hi]
        assert _numbers(cell) == want, (model, cell, want)
