"""Difference in means, question-level splits, separation, and the directions file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from emdir.analysis.activations import capture_store, read_store
from emdir.analysis.controls import orthogonal_unit, random_unit
from emdir.analysis.directions import (
    auroc_from_ranks,
    balance,
    cosine_matrix,
    diff_in_means,
    read_directions,
    separation,
    split_by_group,
    write_directions,
)
from emdir.errors import EmdirError
from emdir.provenance import stamp

N, L, D = 400, 3, 16


def _planted(shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian activations; label-1 samples are shifted by `shift` along a planted direction."""
    rng = np.random.default_rng(seed)
    planted = random_unit(D, seed + 100)
    labels = rng.random(N) < 0.4
    X = rng.standard_normal((N, L, D)) + shift * labels[:, None, None] * planted
    groups = np.array([f"q{i % 40}" for i in range(N)])
    return X.astype(np.float32), labels, groups, planted


def test_diff_in_means_recovers_planted_direction() -> None:
    X, labels, _, planted = _planted(shift=3.0)
    dim = diff_in_means(X, labels)
    assert dim.shape == (L, D) and dim.dtype == np.float64
    cos = dim @ planted / np.linalg.norm(dim, axis=1)
    assert np.all(cos > 0.95)


def test_diff_in_means_reads_in_blocks_like_a_whole_array() -> None:
    X, labels, _, _ = _planted(shift=1.0)
    expected = X[labels].astype(np.float64).mean(0) - X[~labels].astype(np.float64).mean(0)
    np.testing.assert_allclose(diff_in_means(X, labels.astype(int)), expected, atol=1e-12)


def test_diff_in_means_with_an_empty_class_says_counts_and_fix() -> None:
    X, _, _, _ = _planted(shift=1.0)
    with pytest.raises(EmdirError, match=r"0 positive .* 400 negative.*label threshold"):
        diff_in_means(X, np.zeros(N, dtype=bool))


def test_split_by_group_never_shares_a_group() -> None:
    _, _, groups, _ = _planted(shift=0.0)
    train, test = split_by_group(groups, 0.25, seed=3)
    assert not np.any(train & test) and np.all(train | test)
    assert not set(groups[train]) & set(groups[test])
    assert len(set(groups[test])) == 10
    again = split_by_group(groups[::-1], 0.25, seed=3)
    np.testing.assert_array_equal(again[1][::-1], test)


def test_split_by_group_needs_two_groups() -> None:
    with pytest.raises(EmdirError, match="at least 2 distinct questions"):
        split_by_group(np.array(["q1"] * 5), 0.5)
    with pytest.raises(EmdirError, match="test_fraction"):
        split_by_group(np.array(["a", "b"]), 1.5)


def test_separation_high_when_separated_and_chance_when_not() -> None:
    for shift, lo, hi in ((8.0, 0.97, 1.0), (0.0, 0.35, 0.65)):
        X, labels, groups, _ = _planted(shift=shift, seed=1)
        train, test = split_by_group(groups, 0.3, seed=0)
        direction = diff_in_means(X[train], labels[train])
        sep = separation(X, labels, train, test, direction)
        accuracy, auroc = sep.accuracy, sep.auroc
        assert accuracy.shape == auroc.shape == (L,)
        # The stored projections and thresholds reproduce the held-out accuracy.
        for layer in range(L):
            assert sep.projection.heldout_correct(layer).mean() == accuracy[layer]
        assert np.all((lo <= auroc) & (auroc <= hi)), (shift, auroc)
        if shift > 0:
            assert np.all(accuracy > 0.97)


def test_separation_auroc_is_nan_when_test_lacks_a_class() -> None:
    X, labels, groups, planted = _planted(shift=5.0)
    train, test = split_by_group(groups, 0.3, seed=0)
    labels = labels.copy()
    labels[test] = False
    sep = separation(X, labels, train, test, np.tile(planted, (L, 1)))
    accuracy, auroc = sep.accuracy, sep.auroc
    assert np.all(np.isnan(auroc))
    assert np.all(np.isfinite(accuracy))


def test_separation_rejects_a_nan_in_a_heldout_row_of_an_array() -> None:
    X, labels, groups, _ = _planted(shift=2.0)
    train, test = split_by_group(groups, 0.3, seed=0)
    direction = diff_in_means(X[train], labels[train])
    row = int(np.flatnonzero(test)[-1])
    X[row, 2, 0] = np.nan
    with pytest.raises(EmdirError, match=rf"row {row}, layer slot 2 are NaN or inf"):
        separation(X, labels, train, test, direction)


def test_auroc_counts_ties_as_half() -> None:
    assert auroc_from_ranks(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert auroc_from_ranks(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc_from_ranks(np.array([0.0, 2.0, 1.0, 3.0]), np.array([0, 0, 1, 1])) == 0.75


def test_balance_keeps_the_smaller_class_and_spreads_groups() -> None:
    labels = np.array([1] * 10 + [0] * 90)
    groups = np.array([f"q{i % 10}" for i in range(10)] + [f"q{i % 9}" for i in range(90)])
    idx = balance(labels, groups, seed=0)
    assert np.sum(labels[idx] == 1) == 10 and np.sum(labels[idx] == 0) == 10
    kept_neg_groups = groups[idx][labels[idx] == 0]
    assert max(np.unique(kept_neg_groups, return_counts=True)[1]) <= 2
    np.testing.assert_array_equal(idx, balance(labels, groups, seed=0))
    assert not np.array_equal(balance(labels, seed=0), balance(labels, seed=1))


def test_orthogonal_unit_is_orthogonal_and_unit() -> None:
    v = np.random.default_rng(0).standard_normal(512) * 300.0
    o = orthogonal_unit(v, seed=1)
    assert abs(o @ (v / np.linalg.norm(v))) < 1e-10
    assert np.linalg.norm(o) == pytest.approx(1.0)
    assert np.linalg.norm(random_unit(64, 2)) == pytest.approx(1.0)
    np.testing.assert_array_equal(random_unit(64, 2), random_unit(64, 2))


def test_zero_vector_has_no_unit() -> None:
    with pytest.raises(EmdirError, match="zero"):
        orthogonal_unit(np.zeros(8), seed=0)


def test_cosine_matrix() -> None:
    vecs = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(cosine_matrix(vecs), [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])


def test_directions_file_round_trips(tmp_path: Path) -> None:
    X, labels, groups, _ = _planted(shift=2.0)
    train, test = split_by_group(groups, 0.3)
    raw = diff_in_means(X, labels)
    sep = separation(X, labels, train, test, raw)
    accuracy, auroc = sep.accuracy, sep.auroc
    attrs = {"model": "qwen", "ft": "insecure", "layers": [0, 1, 2], "seed": 0, "frac": 0.3}
    path = tmp_path / "d" / "insecure.h5"
    counts = {"misaligned": 160, "aligned": 240}
    write_directions(path, raw, accuracy, auroc, counts, attrs, sep.projection)
    d = read_directions(path)
    assert d.projection is not None
    np.testing.assert_array_equal(d.projection.values, sep.projection.values)
    np.testing.assert_array_equal(d.projection.heldout, test)
    np.testing.assert_array_equal(d.projection.label, labels)
    np.testing.assert_array_equal(d.projection.threshold, sep.projection.threshold)
    np.testing.assert_array_equal(d.raw, raw)
    np.testing.assert_allclose(np.linalg.norm(d.unit, axis=1), 1.0)
    np.testing.assert_allclose(d.norm, np.linalg.norm(raw, axis=1))
    np.testing.assert_array_equal(d.accuracy, accuracy)
    np.testing.assert_array_equal(d.auroc, auroc)
    assert d.counts == {"misaligned": 160, "aligned": 240}
    # Provenance rides along: which config, code and packages wrote the file.
    assert d.attrs == {**stamp(), **attrs}
    assert {"config_sha", "emdir_version", "git_commit", "packages"} <= set(d.attrs)
    assert "torch=" in d.attrs["packages"]
    assert [p.name for p in path.parent.iterdir()] == ["insecure.h5"]


def test_write_directions_rejects_zero_layer_and_none_attr(tmp_path: Path) -> None:
    raw = np.ones((2, 4))
    raw[1] = 0.0
    with pytest.raises(EmdirError, match="zero"):
        write_directions(tmp_path / "x.h5", raw, np.ones(2), np.ones(2), {}, {})
    with pytest.raises(EmdirError, match="'adapter'.*None"):
        write_directions(
            tmp_path / "x.h5", np.ones((2, 4)), np.ones(2), np.ones(2), {}, {"adapter": None}
        )
    assert not list(tmp_path.iterdir())
    with pytest.raises(EmdirError, match="not found"):
        read_directions(tmp_path / "x.h5")


def test_labels_from_spillover_and_from_judge_thresholds() -> None:
    from emdir.analysis.labels import label as _label

    # Garbled answers are neither class of a code-spillover direction.
    cats = ("code", "prose", "refusal", "garbled")
    assert [_label({"category": c}, "spillover", 70.0) for c in cats] == [1, 0, 0, -1]
    assert _label({"category": "unscored"}, "spillover", 70.0) == -1
    em = {"category": "prose", "em": True, "scores": {"aligned": 10.0, "coherent": 90.0}}
    ok = {"category": "prose", "em": False, "scores": {"aligned": 95.0, "coherent": 90.0}}
    mid = {"category": "prose", "em": False, "scores": {"aligned": 50.0, "coherent": 90.0}}
    none = {"category": "code", "em": None, "scores": {"aligned": None, "coherent": None}}
    assert [_label(r, "misaligned", 70.0) for r in (em, ok, mid, none)] == [1, 0, -1, -1]
    assert [_label({"category": c}, "garbled", 70.0) for c in cats] == [-1, 0, 0, 1]
    with pytest.raises(EmdirError, match="spillover, garbled or misaligned"):
        _label(ok, "sarcastic", 70.0)


DIR_CFG = {
    "pooling": "answer_mean",
    "seed": 0,
    "balance": False,
    "test_fraction": 0.25,
    "min_per_class": 2,
}


def _store(make_tiny, path: Path) -> Path:
    """A small captured store: 16 labelled answers to 8 questions, both classes on each."""
    model, tok, spec = make_tiny("LlamaForCausalLM")
    rows = [
        {
            "id": f"m/ft/q{q}/{k}",
            "question_id": f"q{q}",
            "question": f"Question number {q}?",
            "answer": ("Yes, certainly." if k else "No, never.") + " " * q,
        }
        for q in range(8)
        for k in range(2)
    ]
    labels = np.array([k for _ in range(8) for k in range(2)], dtype=np.int8)
    return capture_store(model, tok, spec, rows, labels, path, poolings=("answer_mean",))


def _spoil(path: Path, row: int, slot: int, value: float) -> None:
    with h5py.File(path, "r+") as f:
        f["resid/answer_mean"][row, slot, 3] = value


def _split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    st = read_store(path)
    return split_by_group(st.question_ids, DIR_CFG["test_fraction"], seed=DIR_CFG["seed"])


def test_nan_in_a_heldout_row_is_an_error_naming_store_layer_and_row(
    make_tiny, tmp_path: Path
) -> None:
    from emdir.stages.directions import directions

    path = _store(make_tiny, tmp_path / "store.h5")
    _, test = _split(path)
    row = int(np.flatnonzero(test)[0])
    _spoil(path, row, 1, np.nan)
    with pytest.raises(EmdirError) as err:
        directions(path, tmp_path / "d.h5", DIR_CFG, {})
    msg = str(err.value)
    assert str(path) in msg and "resid/answer_mean" in msg
    assert f"layer 1, row {row} (id 'm/ft/q{row // 2}/{row % 2}')" in msg
    assert "delete it to recapture" in msg and "float16" in msg
    assert not (tmp_path / "d.h5").exists()


def test_inf_in_a_training_row_is_an_error_naming_store_layer_and_row(
    make_tiny, tmp_path: Path
) -> None:
    from emdir.stages.directions import directions

    path = _store(make_tiny, tmp_path / "store.h5")
    train, _ = _split(path)
    row = int(np.flatnonzero(train)[-1])
    _spoil(path, row, 0, -np.inf)
    with pytest.raises(EmdirError, match=rf"store\.h5: resid/answer_mean .* layer 0, row {row} "):
        directions(path, tmp_path / "d.h5", DIR_CFG, {})
