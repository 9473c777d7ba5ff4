"""Ridge maps between activation spaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emdir.errors import EmdirError
from emdir.ridge import fit_ridge, linear_cka, map_vector, read_map, write_map

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


def test_planted_map_is_recovered() -> None:
    X, Y, A = _planted(noise=0.1)
    m = fit_ridge(X, Y, ALPHAS, *_split())
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
    assert r.attrs == {"donor": "gemma", "receiver": "llama", "layer_donor": 25}
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
    m = fit_ridge(X, Y, ALPHAS, train, test)
    with pytest.raises(EmdirError, match="expects 20"):
        map_vector(m, np.ones(DY))
