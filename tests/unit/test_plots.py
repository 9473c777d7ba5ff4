"""Figures render to non-empty PNG files, whatever the grid size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emdir.errors import EmdirError
from emdir.report.figures_directions import cosine_layers_png, projections_png, separation_png
from emdir.report.figures_steering import paper_comparison_png, steering_png
from emdir.report.figures_transfer import transfer_matrix_png

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


def _steering(models: tuple[str, ...] = ("llama", "qwen"), judge: bool = True) -> pd.DataFrame:
    series = {
        "target": 40.0,
        "random_0": 8.0,
        "orthogonal": 4.0,
        "wrong_layer": 10.0,
        "secure_direction": 2.0,
        "target on secure": 12.0,
    }
    rows = []
    for model in models:
        for name, slope in series.items():
            for c in (0.0, 0.25, 0.5, 1.0):
                s = 55.0 - slope * c
                mis = 20.0 - slope * c / 4 if judge else np.nan
                rows.append(
                    {
                        "model": model,
                        "series": name,
                        "coefficient": c,
                        "spillover": s,
                        "lo": s - 5,
                        "hi": s + 5,
                        "coherence": 90.0 - 10 * c,
                        "coherence_lo": 85.0 - 10 * c,
                        "coherence_hi": 95.0 - 10 * c,
                        "misalignment": mis,
                        "mis_lo": mis - 3,
                        "mis_hi": mis + 3,
                    }
                )
    # Shuffled, so the plot must sort each line by coefficient itself.
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.mark.parametrize("judge", [True, False])
def test_steering_png(tmp_path: Path, judge: bool) -> None:
    out = tmp_path / "steering.png"
    steering_png(_steering(("llama", "qwen", "gemma"), judge=judge), out)
    _assert_png(out)


def test_steering_png_with_nan_ci_and_single_coefficient(tmp_path: Path) -> None:
    df = _steering()
    df.loc[df["series"] == "orthogonal", ["lo", "hi"]] = np.nan
    df.loc[df["coefficient"] == 0.5, ["coherence", "coherence_lo", "coherence_hi"]] = np.nan
    df = df.drop(columns=["misalignment", "mis_lo", "mis_hi"])
    single = _steering(("mistral",))
    single = single[single["coefficient"] == 1.0]
    out = tmp_path / "steering.png"
    steering_png(pd.concat([df, single], ignore_index=True), out)
    _assert_png(out)


def test_steering_png_names_missing_columns(tmp_path: Path) -> None:
    df = _steering().drop(columns=["coherence_hi"])
    with pytest.raises(EmdirError, match="lacks column.*coherence_hi"):
        steering_png(df, tmp_path / "x.png")
    with pytest.raises(EmdirError, match="no rows"):
        steering_png(_steering().iloc[:0], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


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


def test_separation_png_by_ft(tmp_path: Path) -> None:
    rows = [
        {
            "model": m,
            "ft": ft,
            "layer": layer,
            "accuracy": 0.5 + 0.1 * layer,
            "auroc": np.nan if ft == "secure" else 0.6,
        }
        for m in ("a", "b")
        for ft in ("insecure", "secure")
        for layer in range(4)
    ]
    out = tmp_path / "separation.png"
    separation_png(pd.DataFrame(rows), out)
    _assert_png(out)


def test_separation_png_names_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(EmdirError, match="lacks column.*auroc"):
        separation_png(
            pd.DataFrame({"model": ["a"], "layer": [1], "accuracy": [0.5]}), tmp_path / "x.png"
        )


def _projections(n_models: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {
            "model": f"model-{m}",
            "label": label,
            "projection": float(rng.normal(shift, 1.0)),
            "heldout": bool(k % 4 == 0),
        }
        for m in range(n_models)
        for label, shift in (("code spillover", 2.0), ("no spillover", -1.0))
        for k in range(80)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_models", [1, 5])
def test_projections_png(tmp_path: Path, n_models: int) -> None:
    out = tmp_path / "projections.png"
    projections_png(_projections(n_models), out, layer_label="layer 14")
    _assert_png(out)


def test_projections_png_with_nan_and_one_class(tmp_path: Path) -> None:
    df = _projections(3)
    df.loc[df.index[::7], "projection"] = np.nan
    df = df[~((df["model"] == "model-1") & (df["label"] == "no spillover"))]
    df.loc[df["model"] == "model-2", "projection"] = np.nan
    out = tmp_path / "projections.png"
    projections_png(df, out)
    _assert_png(out)


def test_projections_png_names_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(EmdirError, match="lacks column.*heldout"):
        projections_png(_projections(1).drop(columns=["heldout"]), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def _cosines(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, 16)).cumsum(axis=0)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize("sizes", [(6,), (4, 12, 32)])
def test_cosine_layers_png(tmp_path: Path, sizes: tuple[int, ...]) -> None:
    matrices = {f"model-{n}": _cosines(n, n) for n in sizes}
    layers = {f"model-{n}": list(range(2, 2 * n + 2, 2)) for n in sizes}
    out = tmp_path / "cosine.png"
    cosine_layers_png(matrices, layers, out)
    _assert_png(out)


def test_cosine_layers_png_with_nan(tmp_path: Path) -> None:
    m = _cosines(5)
    m[1, :] = m[:, 1] = np.nan
    out = tmp_path / "cosine.png"
    cosine_layers_png({"a": m}, {"a": [3, 6, 9, 12, 15]}, out)
    _assert_png(out)


def test_cosine_layers_png_rejects_bad_shapes(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    with pytest.raises(EmdirError, match="not square"):
        cosine_layers_png({"a": np.zeros((3, 4))}, {"a": [1, 2, 3]}, out)
    with pytest.raises(EmdirError, match="a: 3x3 matrix but 2 layer"):
        cosine_layers_png({"a": _cosines(3)}, {"a": [1, 2]}, out)
    with pytest.raises(EmdirError, match="b: 3x3 matrix but 0 layer"):
        cosine_layers_png({"b": _cosines(3)}, {"a": [1, 2, 3]}, out)
    with pytest.raises(EmdirError, match="no matrices"):
        cosine_layers_png({}, {}, out)
    assert not list(tmp_path.iterdir())


def _comparison() -> pd.DataFrame:
    rows = []
    for k, model in enumerate(("llama", "qwen", "gemma", "mistral")):
        acc = 80.0 + 3 * k
        rows.append(
            {
                "model": model,
                "metric": "separation accuracy (%)",
                "ours": acc,
                "ours_lo": acc - 4,
                "ours_hi": acc + 4,
                "paper_lo": 85.0,
                "paper_hi": 95.0,
            }
        )
        supp = 20.0 + 5 * k
        rows.append(
            {
                "model": model,
                "metric": "spillover suppression (points)",
                "ours": supp,
                "ours_lo": supp - 6,
                "ours_hi": supp + 6,
                "paper_lo": 30.0 + k,
                "paper_hi": 30.0 + k,
            }
        )
    return pd.DataFrame(rows)


def test_paper_comparison_png(tmp_path: Path) -> None:
    out = tmp_path / "paper.png"
    paper_comparison_png(_comparison(), out)
    _assert_png(out)


def test_paper_comparison_png_with_nan(tmp_path: Path) -> None:
    df = _comparison()
    df.loc[df["model"] == "qwen", ["ours_lo", "ours_hi"]] = np.nan
    df.loc[df["model"] == "gemma", "ours"] = np.nan
    df.loc[df["model"] == "mistral", ["paper_lo", "paper_hi"]] = np.nan
    df.loc[df["metric"].str.startswith("separation"), ["paper_lo", "paper_hi"]] = 90.0
    out = tmp_path / "paper.png"
    paper_comparison_png(df, out)
    _assert_png(out)


def test_paper_comparison_png_names_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(EmdirError, match="lacks column.*paper_lo, paper_hi"):
        paper_comparison_png(
            _comparison().drop(columns=["paper_lo", "paper_hi"]), tmp_path / "x.png"
        )
    assert not list(tmp_path.iterdir())


def test_figures_carry_provenance_in_png_metadata(tmp_path: Path) -> None:
    from PIL import Image

    from emdir.provenance import stamp

    out = tmp_path / "sep.png"
    df = pd.DataFrame(
        {"model": ["m", "m"], "layer": [0, 1], "accuracy": [0.6, 0.8], "auroc": [0.7, 0.9]}
    )
    separation_png(df, out)
    text = Image.open(out).text
    for key, value in stamp().items():
        assert text[key] == value


def test_a_cell_beaten_by_its_control_is_not_marked_as_passing() -> None:
    from emdir.report.figures_transfer import specificity_mark

    assert specificity_mark(2.0, 9.0) == "*"
    assert specificity_mark(-9.0, -2.0) == "!"  # significantly negative: beaten, not passing
    assert specificity_mark(-2.0, 3.0) == ""
    # With a family-wise verdict, only a pass after the correction is starred; a CI above
    # zero that does not survive it is marked "+"; a beaten target is never starred.
    assert specificity_mark(2.0, 9.0, "passes") == "*"
    assert specificity_mark(2.0, 9.0, "inconclusive") == "+"
    assert specificity_mark(-9.0, -2.0, "beaten by a control") == "!"
    assert specificity_mark(-9.0, -2.0, "passes") == "!"
    assert specificity_mark(-2.0, 3.0, "inconclusive") == ""
    assert specificity_mark(2.0, 9.0, float("nan")) == "*"  # no family: the CI alone


def test_a_grid_panel_of_small_values_stays_pale() -> None:
    """The colour scale has a floor: cells of 0 and 0.5 points are not coloured like a large
    effect because nothing in their panel is larger; a large effect sets its own scale."""
    from matplotlib.figure import Figure

    from emdir.report.figures_transfer import COLOUR_FLOOR, _heatmap

    for values, lim in (([[0.0, 0.5], [-0.5, 0.0]], COLOUR_FLOOR), ([[0.0, 30.0], [-4, 1]], 30.0)):
        ax = Figure().subplots()
        grid = np.array(values)
        _heatmap(ax, grid, [["x"] * 2] * 2, ["a", "b"], ["a", "b"], 8.0)
        assert ax.images[0].get_clim() == (-lim, lim)


def test_a_pooled_grid_says_in_how_many_seeds_each_cell_agrees(monkeypatch) -> None:
    import emdir.report.figures_transfer as ft

    shown: list[str] = []
    monkeypatch.setattr(
        ft,
        "save_png",
        lambda fig, _out: shown.extend(t.get_text() for a in fig.axes for t in a.texts),
    )
    df = _grid(2).assign(effect_seeds_agree="2/3")
    ft.transfer_matrix_png(df, "unused.png")
    assert sum("2/3 seeds agree" in t for t in shown) == 4
