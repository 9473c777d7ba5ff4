"""Ridge maps between activation spaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emdir.errors import EmdirError
from emdir.provenance import stamp
from emdir.ridge import (
    _decompose,
    _held_out_sse,
    fit_ridge,
    linear_cka,
    map_class_means,
    map_vector,
    read_map,
    write_map,
)

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


def _brute_force_r2(X: np.ndarray, Y: np.ndarray, alpha: float) -> float:
    train, test = _split()
    xm, ym = X[train].mean(0), Y[train].mean(0)
    xc = X[train] - xm
    W = np.linalg.solve(xc.T @ xc + alpha * np.eye(DX), xc.T @ (Y[train] - ym))
    pred = (X[test] - xm) @ W + ym
    yt = Y[test]
    return 1.0 - np.sum((yt - pred) ** 2) / np.sum((yt - yt.mean(0)) ** 2)


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


def test_chosen_alpha_matches_brute_force() -> None:
    X, Y, _ = _planted(noise=20.0)
    m = fit_ridge(X, Y, ALPHAS, *_split())
    brute = np.array([_brute_force_r2(X, Y, a) for a in ALPHAS])
    np.testing.assert_allclose(m.r2_per_alpha, brute, rtol=1e-8, atol=1e-10)
    assert m.alpha == ALPHAS[int(np.argmax(brute))]
    assert m.alpha not in (ALPHAS[0], ALPHAS[-1])


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
    for name in ("W", "x_mean", "y_mean", "x_scale", "alphas", "r2_per_alpha"):
        np.testing.assert_array_equal(getattr(r, name), getattr(m, name))
    for name in ("alpha", "r2_test", "r2_train", "cka_test", "n_train", "n_test"):
        assert getattr(r, name) == getattr(m, name)
    assert r.attrs == {**stamp(), "donor": "gemma", "receiver": "llama", "layer_donor": 25}
    with pytest.raises(EmdirError, match="reserved"):
        write_map(tmp_path / "bad.h5", m, {"alpha": 3})


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


def test_per_alpha_r2_matches_direct_prediction_in_the_basis() -> None:
    # The same check on a real fit: fit_ridge's R^2 per alpha against predicting the test
    # rows with each alpha's full [n_test, q] map.
    X, Y, _ = _planted(noise=5.0)
    train, test = _split()
    m = fit_ridge(X, Y, ALPHAS, train, test)
    xm, ym = X[train].mean(0), Y[train].mean(0)
    s, V, M = _decompose(X[train] - xm, Y[train] - ym)
    T, R = (X[test] - xm) @ V, Y[test] - ym
    sst = np.sum((Y[test] - Y[test].mean(0)) ** 2)
    direct = [1 - _direct_sse(T, R, M, s / (s**2 + a)) / sst for a in ALPHAS]
    np.testing.assert_allclose(m.r2_per_alpha, direct, rtol=1e-10, atol=1e-12)
    assert m.r2_test == m.r2_per_alpha[ALPHAS.index(m.alpha)]


def _all_paths_agree(X: np.ndarray, Y: np.ndarray, alphas: list[float]) -> None:
    n = len(X)
    test = np.arange(n) % 5 == 0
    svd = fit_ridge(X, Y, alphas, ~test, test, decomposition="svd")
    scale = np.abs(svd.W).max()
    for how in ("gram", "kernel", "auto"):
        other = fit_ridge(X, Y, alphas, ~test, test, decomposition=how)  # type: ignore[arg-type]
        np.testing.assert_allclose(other.W, svd.W, rtol=0, atol=1e-8 * scale)
        np.testing.assert_allclose(other.r2_per_alpha, svd.r2_per_alpha, rtol=0, atol=1e-9)
        assert other.alpha == svd.alpha
        for name in ("r2_test", "r2_train", "cka_test"):
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
    np.testing.assert_array_equal(m.r2_per_alpha, ref.r2_per_alpha)


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
    m = fit_ridge(X, Y, ALPHAS, train, test)
    ref = []
    for a in ALPHAS:
        model = sk.Ridge(alpha=a, fit_intercept=True).fit(X[train], Y[train])
        ref.append(
            metrics.r2_score(Y[test], model.predict(X[test]), multioutput="variance_weighted")
        )
        if a == m.alpha:
            np.testing.assert_allclose(m.W, model.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.r2_per_alpha, ref, rtol=1e-8, atol=1e-10)
