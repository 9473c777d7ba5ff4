"""Ridge maps between activation spaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emdir.analysis.ridge import (
    _decompose,
    _held_out_sse,
    fit_ridge,
    fold_ids,
    linear_cka,
    map_class_means,
    map_summary,
    map_vector,
    read_map,
    write_map,
)
from emdir.errors import EmdirError
from emdir.provenance import stamp

DX, DY, N = 20, 30, 300
ALPHAS = [1e-3, 1e-1, 1.0, 10.0, 100.0, 1e4]


def _planted(noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((DX, DY))
    X = rng.standard_normal((N, DX)) * 3.0 + 5.0
    Y = X @ A + 2.0 + noise * rng.standard_normal((N, DY))
    return X, Y, A


def _split() -> tuple[np.ndarray, np.ndarray]:
    test = np.arange(N) % 4 == 0
    return ~test, test


def _normal_equations(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    W = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return W, xm, ym


def _sse_sst(x: np.ndarray, y: np.ndarray, fit: tuple[np.ndarray, ...]) -> tuple[float, float]:
    W, xm, ym = fit
    pred = (x - xm) @ W + ym
    return float(np.sum((y - pred) ** 2)), float(np.sum((y - y.mean(0)) ** 2))


def _brute_force_cv_r2(X: np.ndarray, Y: np.ndarray, alpha: float, folds: int = 5) -> float:
    """Pooled k-fold R^2 on the train rows of `_split`, one normal-equation fit per fold."""
    train, _ = _split()
    x, y = X[train], Y[train]
    ids = fold_ids(len(x), folds, 0)
    sse = sst = 0.0
    for k in range(folds):
        held = ids == k
        a, b = _sse_sst(x[held], y[held], _normal_equations(x[~held], y[~held], alpha))
        sse, sst = sse + a, sst + b
    return 1.0 - sse / sst


def _brute_force_test_r2(X: np.ndarray, Y: np.ndarray, alpha: float) -> float:
    train, test = _split()
    sse, sst = _sse_sst(X[test], Y[test], _normal_equations(X[train], Y[train], alpha))
    return 1.0 - sse / sst


@pytest.mark.parametrize("decomposition", ["auto", "gram", "kernel", "svd"])
def test_planted_map_is_recovered(decomposition: str) -> None:
    X, Y, A = _planted(noise=0.1)
    m = fit_ridge(X, Y, ALPHAS, *_split(), decomposition=decomposition)
    assert m.r2_test > 0.99 and m.r2_train > 0.99
    assert m.cka_test > 0.99
    v = np.random.default_rng(1).standard_normal(DX)
    mapped, truth = map_vector(m, v), v @ A
    assert mapped @ truth / (np.linalg.norm(mapped) * np.linalg.norm(truth)) > 0.99
    assert m.n_train + m.n_test == N


def test_chosen_alpha_matches_brute_force_cross_validation() -> None:
    X, Y, _ = _planted(noise=20.0)
    m = fit_ridge(X, Y, ALPHAS, *_split())
    brute = np.array([_brute_force_cv_r2(X, Y, a) for a in ALPHAS])
    np.testing.assert_array_equal(m.alphas, ALPHAS)  # interior optimum: nothing widened
    np.testing.assert_allclose(m.r2_cv_per_alpha, brute, rtol=1e-8, atol=1e-10)
    assert m.alpha == ALPHAS[int(np.argmax(brute))]
    assert m.alpha not in (ALPHAS[0], ALPHAS[-1]) and not m.alpha_at_edge
    assert m.r2_cv == pytest.approx(brute.max(), rel=1e-10)
    # The reported R^2 is the refit on all train rows, scored once on the test rows.
    assert m.r2_test == pytest.approx(_brute_force_test_r2(X, Y, m.alpha), rel=1e-10)
    assert m.cv_folds == 5 and m.alpha_widen == 3


def test_test_rows_never_influence_the_choice() -> None:
    X, Y, _ = _planted(noise=20.0)
    train, test = _split()
    m = fit_ridge(X, Y, ALPHAS, train, test)
    Y2, X2 = Y.copy(), X.copy()
    rng = np.random.default_rng(9)
    Y2[test] = 1e3 * rng.standard_normal((int(test.sum()), DY))
    X2[test] = -X2[test] + 7.0
    wild = fit_ridge(X2, Y2, ALPHAS, train, test)
    assert wild.alpha == m.alpha
    for name in ("alphas", "r2_cv_per_alpha", "W", "x_mean", "y_mean", "x_scale"):
        np.testing.assert_array_equal(getattr(wild, name), getattr(m, name))
    assert wild.r2_cv == m.r2_cv and wild.r2_train == m.r2_train
    assert wild.r2_test != m.r2_test and wild.cka_test != m.cka_test
    # Choosing on those test rows would have picked another alpha.
    on_test = [_brute_force_test_r2(X2, Y2, a) for a in ALPHAS]
    assert ALPHAS[int(np.argmax(on_test))] != wild.alpha


def test_fit_is_deterministic_and_folds_follow_the_seed() -> None:
    X, Y, _ = _planted(noise=20.0)
    a, b = fit_ridge(X, Y, ALPHAS, *_split()), fit_ridge(X, Y, ALPHAS, *_split())
    for name in ("W", "r2_cv_per_alpha", "alphas"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.alpha, a.r2_cv, a.r2_test, a.cka_test) == (b.alpha, b.r2_cv, b.r2_test, b.cka_test)
    other = fit_ridge(X, Y, ALPHAS, *_split(), seed=1)
    assert not np.array_equal(other.r2_cv_per_alpha, a.r2_cv_per_alpha)
    ids = fold_ids(23, 5, 0)
    np.testing.assert_array_equal(ids, fold_ids(23, 5, 0))
    assert not np.array_equal(ids, fold_ids(23, 5, 1))
    assert sorted(np.bincount(ids).tolist()) == [4, 4, 5, 5, 5]


def _shrinkage_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Weak map, unit noise, few rows per feature: the CV optimum is an interior alpha near 100.
    rng = np.random.default_rng(7)
    n, d, q = 160, 40, 30
    X = rng.standard_normal((n, d)) + 2.0
    Y = X @ (0.1 * rng.standard_normal((d, q))) + rng.standard_normal((n, q))
    test = np.arange(n) % 4 == 0
    return X, Y, ~test, test


def test_grid_is_widened_below_its_smallest_alpha() -> None:
    X, Y, train, test = _shrinkage_data()
    grid = [1e4, 1e5, 1e6]
    m = fit_ridge(X, Y, grid, train, test, widen=3)
    assert m.alpha < min(grid) and m.alpha == 100.0
    assert not m.alpha_at_edge
    np.testing.assert_array_equal(m.alphas, [10.0, 100.0, 1e3, 1e4, 1e5, 1e6])
    assert m.r2_cv == m.r2_cv_per_alpha[1] == m.r2_cv_per_alpha.max()
    # The widened scores are the scores a grid holding those alphas gets.
    full = fit_ridge(X, Y, m.alphas, train, test, widen=0)
    np.testing.assert_array_equal(full.r2_cv_per_alpha, m.r2_cv_per_alpha)
    np.testing.assert_array_equal(full.W, m.W)

    edge = fit_ridge(X, Y, grid, train, test, widen=0)
    assert edge.alpha == min(grid) and edge.alpha_at_edge
    np.testing.assert_array_equal(edge.alphas, grid)
    short = fit_ridge(X, Y, grid, train, test, widen=1)  # one step is not enough
    assert short.alpha == 1e3 and short.alpha_at_edge and len(short.alphas) == 4


def test_grid_is_widened_above_its_largest_alpha() -> None:
    X, Y, train, test = _shrinkage_data()
    grid = [1e-4, 1e-3, 1e-2]
    m = fit_ridge(X, Y, grid, train, test, widen=6)
    assert m.alpha == 100.0 and not m.alpha_at_edge
    np.testing.assert_array_equal(m.alphas, [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3])
    capped = fit_ridge(X, Y, grid, train, test, widen=3)
    assert capped.alpha == max(capped.alphas) == 10.0 and capped.alpha_at_edge
    assert len(capped.alphas) == len(grid) + 3


def test_standardized_map_maps_difference_vectors() -> None:
    X, Y, A = _planted(noise=0.1)
    X = X * np.linspace(0.1, 50.0, DX)
    A = A / np.linspace(0.1, 50.0, DX)[:, None]
    m = fit_ridge(X, Y, ALPHAS, *_split(), standardize=True)
    assert m.r2_test > 0.99
    v = X[1] - X[2]
    mapped = map_vector(m, v)
    np.testing.assert_allclose(mapped, Y[1] - Y[2], atol=1.0)
    assert mapped @ (v @ A) / (np.linalg.norm(mapped) * np.linalg.norm(v @ A)) > 0.99


def test_linear_cka_forms_agree() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((10, 40)), rng.standard_normal((10, 30))
    gram = linear_cka(a, b)
    feature = linear_cka(np.vstack([a, a]), np.vstack([b, b]))
    assert gram == pytest.approx(feature)
    assert linear_cka(a, a @ rng.standard_normal((40, 40))) < 1.0
    assert linear_cka(a, 3.0 * a) == pytest.approx(1.0)


def test_map_file_round_trips(tmp_path: Path) -> None:
    X, Y, _ = _planted(noise=1.0)
    m = fit_ridge(X, Y, ALPHAS, *_split())
    path = tmp_path / "maps" / "gemma__llama.h5"
    write_map(path, m, {"donor": "gemma", "receiver": "llama", "layer_donor": 25})
    r = read_map(path)
    for name in ("W", "x_mean", "y_mean", "x_scale", "alphas", "r2_cv_per_alpha"):
        np.testing.assert_array_equal(getattr(r, name), getattr(m, name))
    scalars = ("alpha", "alpha_at_edge", "r2_cv", "r2_test", "r2_train", "cka_test")
    for name in (*scalars, "n_train", "n_test", "cv_folds", "alpha_widen"):
        assert getattr(r, name) == getattr(m, name)
        assert type(getattr(r, name)) is type(getattr(m, name))
    assert r.attrs == {**stamp(), "donor": "gemma", "receiver": "llama", "layer_donor": 25}
    with pytest.raises(EmdirError, match="reserved"):
        write_map(tmp_path / "bad.h5", m, {"alpha": 3})
    with pytest.raises(EmdirError, match="reserved"):
        write_map(tmp_path / "bad.h5", m, {"alpha_at_edge": False})


@pytest.mark.parametrize("widen", [0, 3])
def test_map_summary_round_trips(tmp_path: Path, widen: int) -> None:
    X, Y, train, test = _shrinkage_data()
    m = fit_ridge(X, Y, [1e4, 1e5, 1e6], train, test, widen=widen)
    path = tmp_path / "a__b.h5"
    write_map(path, m, {"donor": "a", "receiver": "b"})
    summary = map_summary(path)
    assert summary == {
        "alpha": m.alpha,
        "alpha_at_edge": m.alpha_at_edge,
        "r2_cv": m.r2_cv,
        "r2_test": m.r2_test,
        "cka_test": m.cka_test,
        "n_train": m.n_train,
        "n_test": m.n_test,
    }
    assert summary["alpha_at_edge"] is (widen == 0)
    assert [type(v) for v in summary.values()] == [float, bool, float, float, float, int, int]
    with pytest.raises(EmdirError, match="run the maps rule"):
        map_summary(tmp_path / "missing.h5")


def test_user_errors_are_explained() -> None:
    X, Y, _ = _planted(noise=1.0)
    train, test = _split()
    with pytest.raises(EmdirError, match="positive"):
        fit_ridge(X, Y, [0.0, 1.0], train, test)
    with pytest.raises(EmdirError, match="paired rows"):
        fit_ridge(X, Y[:-1], ALPHAS, train, test)
    with pytest.raises(EmdirError, match="overlap"):
        fit_ridge(X, Y, ALPHAS, train | test, test)
    with pytest.raises(EmdirError, match="gram, kernel or svd"):
        fit_ridge(X, Y, ALPHAS, train, test, decomposition="qr")  # type: ignore[arg-type]
    with pytest.raises(EmdirError, match="transfer.alpha_widen"):
        fit_ridge(X, Y, ALPHAS, train, test, widen=-1)
    with pytest.raises(EmdirError, match="transfer.cv_folds"):
        fit_ridge(X, Y, ALPHAS, train, test, folds=1)
    with pytest.raises(EmdirError, match="lower transfer.cv_folds"):
        fit_ridge(X, Y, ALPHAS, train, test, folds=200)
    with pytest.raises(EmdirError, match="transfer.seed"):
        fit_ridge(X, Y, ALPHAS, train, test, seed=-1)
    m = fit_ridge(X, Y, ALPHAS, train, test)
    with pytest.raises(EmdirError, match="expects 20"):
        map_vector(m, np.ones(DY))


def _direct_sse(T: np.ndarray, R: np.ndarray, M: np.ndarray, f: np.ndarray) -> float:
    return float(np.sum((R - T @ (f[:, None] * M)) ** 2))


def test_held_out_sse_identity_matches_direct_prediction() -> None:
    rng = np.random.default_rng(3)
    k, n_te, q = 12, 9, 17
    T, R, M = (rng.standard_normal(shape) for shape in ((n_te, k), (n_te, q), (k, q)))
    s = np.sort(rng.uniform(0.1, 10.0, k))[::-1]
    grid = np.array([1e-3, 0.5, 3.0, 1e3])
    F = s / (s**2 + grid[:, None])
    direct = [_direct_sse(T, R, M, f) for f in F]
    np.testing.assert_allclose(_held_out_sse(T, R, M, F), direct, rtol=1e-12)


def test_per_alpha_cv_r2_matches_direct_prediction_in_the_basis() -> None:
    # The same check on a real fit: fit_ridge's CV R^2 per alpha against predicting each
    # fold's held-out rows with each alpha's full [n_held, q] map.
    X, Y, _ = _planted(noise=5.0)
    train, test = _split()
    m = fit_ridge(X, Y, ALPHAS, train, test, widen=0)
    x, y = X[train], Y[train]
    ids = fold_ids(len(x), 5, 0)
    sse, sst = np.zeros(len(ALPHAS)), 0.0
    for k in range(5):
        held = ids == k
        xm, ym = x[~held].mean(0), y[~held].mean(0)
        s, V, M = _decompose(x[~held] - xm, y[~held] - ym)
        T, R = (x[held] - xm) @ V, y[held] - ym
        sse += [_direct_sse(T, R, M, s / (s**2 + a)) for a in ALPHAS]
        sst += np.sum((y[held] - y[held].mean(0)) ** 2)
    np.testing.assert_allclose(m.r2_cv_per_alpha, 1 - sse / sst, rtol=1e-10, atol=1e-12)
    assert m.r2_cv == m.r2_cv_per_alpha[ALPHAS.index(m.alpha)]
    np.testing.assert_array_equal(m.r2_per_alpha, m.r2_cv_per_alpha)  # the old name


def _all_paths_agree(X: np.ndarray, Y: np.ndarray, alphas: list[float]) -> None:
    n = len(X)
    test = np.arange(n) % 5 == 0
    # widen=0: on rank-deficient X the CV optimum is the flat alpha -> 0 end, where the
    # normal equations below lose the digits they are compared at.
    svd = fit_ridge(X, Y, alphas, ~test, test, decomposition="svd", widen=0)
    scale = np.abs(svd.W).max()
    for how in ("gram", "kernel", "auto"):
        other = fit_ridge(X, Y, alphas, ~test, test, decomposition=how, widen=0)  # type: ignore[arg-type]
        np.testing.assert_allclose(other.W, svd.W, rtol=0, atol=1e-8 * scale)
        np.testing.assert_allclose(other.r2_cv_per_alpha, svd.r2_cv_per_alpha, rtol=0, atol=1e-9)
        assert other.alpha == svd.alpha
        np.testing.assert_array_equal(other.alphas, svd.alphas)
        for name in ("r2_cv", "r2_test", "r2_train", "cka_test"):
            assert getattr(other, name) == pytest.approx(getattr(svd, name), abs=1e-9)
    # Both agree with the textbook normal equations at the chosen alpha.
    xc = X[~test] - X[~test].mean(0)
    yc = Y[~test] - Y[~test].mean(0)
    W = np.linalg.solve(xc.T @ xc + svd.alpha * np.eye(X.shape[1]), xc.T @ yc)
    np.testing.assert_allclose(svd.W, W, rtol=0, atol=1e-8 * scale)


@pytest.mark.parametrize(("n", "d"), [(200, 30), (60, 90)])
def test_gram_kernel_and_svd_paths_give_the_same_map(n: int, d: int) -> None:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n, d)) * np.linspace(0.2, 4.0, d) + 1.0
    Y = X @ rng.standard_normal((d, 25)) + rng.standard_normal((n, 25))
    _all_paths_agree(X, Y, [1e-2, 1.0, 30.0, 1e3])


@pytest.mark.parametrize("n", [200, 40])
def test_gram_kernel_and_svd_paths_agree_on_rank_deficient_x(n: int) -> None:
    # X has 40 columns but rank 8: the Grams have (numerically) zero eigenvalues, some of them
    # slightly negative, which must be dropped rather than inverted.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n, 8)) @ rng.standard_normal((8, 40)) + 3.0
    Y = X @ rng.standard_normal((40, 15)) + 0.5 * rng.standard_normal((n, 15))
    _all_paths_agree(X, Y, [1e-3, 0.1, 10.0, 1e3])
    test = np.arange(n) % 5 == 0
    xc = X[~test] - X[~test].mean(0)
    for how in ("gram", "kernel", "svd"):
        s, V, M = _decompose(xc, Y[~test] - Y[~test].mean(0), how)
        assert len(s) == 8 and V.shape == (40, 8) and M.shape == (8, 15)
        assert np.all(np.isfinite(V)) and np.all(np.isfinite(M))


def test_low_precision_inputs_are_fitted_in_float64() -> None:
    X, Y, _ = _planted(noise=1.0)
    X32, Y16 = X.astype(np.float32), Y.astype(np.float16)
    m = fit_ridge(X32, Y16, ALPHAS, *_split())
    ref = fit_ridge(X32.astype(np.float64), Y16.astype(np.float64), ALPHAS, *_split())
    assert m.W.dtype == np.float64 and m.x_mean.dtype == np.float64
    np.testing.assert_array_equal(m.W, ref.W)
    np.testing.assert_array_equal(m.r2_cv_per_alpha, ref.r2_cv_per_alpha)
    assert m.r2_test == ref.r2_test


@pytest.mark.parametrize("standardize", [False, True])
def test_mapping_class_means_equals_mapping_their_difference(standardize: bool) -> None:
    X, Y, _ = _planted(noise=1.0)
    m = fit_ridge(X, Y, ALPHAS, *_split(), standardize=standardize)
    labels = np.arange(N) % 3 == 0
    pos, neg = X[labels].mean(0), X[~labels].mean(0)
    via_means = map_class_means(m, pos, neg)
    via_difference = map_vector(m, pos - neg)
    scale = np.abs(via_difference).max()
    np.testing.assert_allclose(via_means, via_difference, rtol=0, atol=1e-12 * scale)

    # It is the difference of the full affine predictions, intercept included.
    def predict(x: np.ndarray) -> np.ndarray:
        return ((x - m.x_mean) / m.x_scale) @ m.W + m.y_mean

    np.testing.assert_allclose(via_means, predict(pos) - predict(neg), rtol=1e-12)
    with pytest.raises(EmdirError, match="expects 20"):
        map_class_means(m, np.ones(DY), np.ones(DY))


def test_matches_sklearn_ridge_per_alpha() -> None:
    sk = pytest.importorskip("sklearn.linear_model")
    metrics = pytest.importorskip("sklearn.metrics")
    X, Y, _ = _planted(noise=20.0)
    train, test = _split()
    m = fit_ridge(X, Y, ALPHAS, train, test, widen=0)
    x, y = X[train], Y[train]
    ids = fold_ids(len(x), 5, 0)
    ref = []
    for a in ALPHAS:
        sse = sst = 0.0
        for k in range(5):
            held = ids == k
            pred = sk.Ridge(alpha=a).fit(x[~held], y[~held]).predict(x[held])
            sse += np.sum((y[held] - pred) ** 2)
            sst += np.sum((y[held] - y[held].mean(0)) ** 2)
        ref.append(1 - sse / sst)
    np.testing.assert_allclose(m.r2_cv_per_alpha, ref, rtol=1e-8, atol=1e-10)
    model = sk.Ridge(alpha=m.alpha, fit_intercept=True).fit(x, y)
    np.testing.assert_allclose(m.W, model.coef_.T, rtol=1e-8, atol=1e-10)
    r2 = metrics.r2_score(Y[test], model.predict(X[test]), multioutput="variance_weighted")
    assert m.r2_test == pytest.approx(r2, rel=1e-8)
