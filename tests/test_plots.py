"""Figures render to non-empty PNG files, whatever the grid size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emdir.errors import EmdirError
from emdir.plots import separation_png, steering_png, transfer_matrix_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _grid(n: int, with_spec: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    models = [f"model-{i}" for i in range(n)]
    rows = []
    for donor in models:
        for receiver in models:
            for vector in ("target", "random", "orthogonal"):
                value = float(rng.uniform(-10, 45))
                row = {
                    "donor": donor,
                    "receiver": receiver,
                    "vector": vector,
                    "suppression": value,
                    "lo": value - 8,
                    "hi": value + 8,
                }
                if with_spec and vector == "target":
                    spec = float(rng.uniform(-15, 30))
                    row.update(
                        specificity=spec,
                        spec_lo=spec - 10,
                        spec_hi=spec + 10,
                        strongest_control="random",
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("n", [1, 4, 5])
def test_transfer_matrix_png(tmp_path: Path, n: int) -> None:
    out = tmp_path / f"grid{n}" / "transfer_matrix.png"
    transfer_matrix_png(_grid(n), out)
    _assert_png(out)


def test_transfer_matrix_png_with_nan_and_missing_cells(tmp_path: Path) -> None:
    df = _grid(4)
    target = df["vector"] == "target"
    df.loc[target & (df["donor"] == "model-1") & (df["receiver"] == "model-2"), "suppression"] = (
        np.nan
    )
    df.loc[target & (df["donor"] == "model-0") & (df["receiver"] == "model-3"), "specificity"] = (
        np.nan
    )
    df = df[~((df["donor"] == "model-3") & (df["receiver"] == "model-0"))]
    out = tmp_path / "nan.png"
    transfer_matrix_png(df, out)
    _assert_png(out)


def test_transfer_matrix_png_without_specificity(tmp_path: Path) -> None:
    out = tmp_path / "plain.png"
    transfer_matrix_png(_grid(6, with_spec=False), out)
    _assert_png(out)


def test_transfer_matrix_png_names_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(EmdirError, match="lacks column.*suppression"):
        transfer_matrix_png(pd.DataFrame({"donor": ["a"], "receiver": ["b"]}), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_steering_png(tmp_path: Path) -> None:
    rows = []
    for model in ("llama", "qwen", "gemma", "mistral"):
        rows.append(
            {
                "model": model,
                "vector": "none",
                "coefficient": 0.0,
                "spillover": 55.0,
                "lo": 50.0,
                "hi": 60.0,
            }
        )
        for vector, slope in (("target", 40.0), ("random", 8.0)):
            for c in (0.25, 0.5, 1.0):
                s = 55.0 - slope * c
                rows.append(
                    {
                        "model": model,
                        "vector": vector,
                        "coefficient": c,
                        "spillover": s,
                        "lo": s - 5,
                        "hi": s + 5,
                    }
                )
    out = tmp_path / "steering.png"
    steering_png(pd.DataFrame(rows), out)
    _assert_png(out)


def test_separation_png(tmp_path: Path) -> None:
    rows = [
        {
            "model": m,
            "layer": layer,
            "accuracy": 0.5 + 0.1 * layer,
            "auroc": np.nan if m == "b" else 0.55 + 0.1 * layer,
        }
        for m, n_layers in (("a", 4), ("b", 5))
        for layer in range(n_layers)
    ]
    out = tmp_path / "separation.png"
    separation_png(pd.DataFrame(rows), out)
    _assert_png(out)
