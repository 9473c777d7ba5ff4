"""Ridge-regression maps between two models' activation spaces, chosen by held-out R^2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import ArrayLike

from emdir.directions import get_attrs, set_attrs
from emdir.errors import EmdirError
from emdir.io import atomic_path

_ARRAYS = ("W", "x_mean", "y_mean", "x_scale", "alphas", "r2_per_alpha")
_SCALARS = ("alpha", "r2_test", "r2_train", "cka_test", "n_train", "n_test")


@dataclass(frozen=True, eq=False)
class RidgeMap:
    """A linear map donor -> receiver: y = ((x - x_mean) / x_scale) @ W + y_mean.

    `cka_test` is the linear CKA between the map's predictions on the test rows and the true
    test Y (how much of Y's geometry the map reproduces), not the CKA between X and Y.
    """

    W: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    x_scale: np.ndarray
    alpha: float
    alphas: np.ndarray
    r2_per_alpha: np.ndarray
    r2_test: float
    r2_train: float
    cka_test: float
    n_train: int
    n_test: int
    attrs: dict[str, Any] = field(default_factory=dict)


def fit_ridge(
    X: ArrayLike,
    Y: ArrayLike,
    alphas: Sequence[float],
    train_mask: ArrayLike,
    test_mask: ArrayLike,
    center: bool = True,
    standardize: bool = False,
) -> RidgeMap:
    """Fit ridge maps X -> Y for every alpha from one SVD of the train X; keep the best on test.

    R^2 = 1 - SSE / SST summed over all output dimensions, on the test rows (SST about the
    test mean). Alphas are absolute, in the units of the (standardised) X squared singular
    values, so a grid should span them (e.g. a log grid).
    """
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(Y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise EmdirError(
            f"ridge needs paired rows: X is {x.shape}, Y is {y.shape}; the anchor texts must be "
            "the same, in the same order, in both models' anchor files"
        )
    grid = np.asarray(alphas, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 0):
        raise EmdirError(f"ridge alphas must be a non-empty list of positive numbers, got {alphas}")
    train = np.asarray(train_mask, dtype=bool)
    test = np.asarray(test_mask, dtype=bool)
    if train.shape != (x.shape[0],) or test.shape != (x.shape[0],):
        raise EmdirError(f"train/test masks must have shape ({x.shape[0]},)")
    if train.sum() < 2 or test.sum() < 2:
        raise EmdirError(
            f"ridge needs at least 2 train and 2 test rows, got {int(train.sum())} and "
            f"{int(test.sum())}; add anchor texts"
        )
    if np.any(train & test):
        raise EmdirError("train and test rows overlap; the held-out R^2 would be optimistic")

    x_tr, y_tr, x_te, y_te = x[train], y[train], x[test], y[test]
    x_mean = x_tr.mean(axis=0) if center else np.zeros(x.shape[1])
    y_mean = y_tr.mean(axis=0) if center else np.zeros(y.shape[1])
    x_scale = x_tr.std(axis=0) if standardize else np.ones(x.shape[1])
    # A constant feature carries no information; scale 1 keeps it at zero instead of NaN.
    x_scale = np.where(x_scale > 0, x_scale, 1.0)
    xc = (x_tr - x_mean) / x_scale
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ (y_tr - y_mean)
    test_in_basis = ((x_te - x_mean) / x_scale) @ vt.T

    sst_test = float(np.sum((y_te - y_te.mean(axis=0)) ** 2))
    if sst_test == 0.0:
        raise EmdirError("the test rows of Y are all identical; R^2 is undefined (add anchors)")
    r2 = np.empty(grid.size)
    for i, alpha in enumerate(grid):
        pred = test_in_basis @ ((s / (s**2 + alpha))[:, None] * uty) + y_mean
        r2[i] = 1.0 - float(np.sum((y_te - pred) ** 2)) / sst_test
    best = int(np.argmax(r2))
    coef = (s / (s**2 + grid[best]))[:, None] * uty
    W = vt.T @ coef
    pred_test = test_in_basis @ coef + y_mean
    pred_train = xc @ W + y_mean
    return RidgeMap(
        W=W,
        x_mean=x_mean,
        y_mean=y_mean,
        x_scale=x_scale,
        alpha=float(grid[best]),
        alphas=grid,
        r2_per_alpha=r2,
        r2_test=float(r2[best]),
        r2_train=_r2(y_tr, pred_train),
        cka_test=linear_cka(pred_test, y_te),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
    )


def map_vector(m: RidgeMap, v: ArrayLike) -> np.ndarray:
    """Carry a difference vector (or a stack of them) through the map: no means, no intercept."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape[-1:] != m.W.shape[:1]:
        raise EmdirError(
            f"vector has dimension {arr.shape[-1:]} but the map expects {m.W.shape[0]}; "
            "was the map fitted for this donor model?"
        )
    return (arr / m.x_scale) @ m.W


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA between two row-paired matrices [n, p] and [n, q] (columns centred here)."""
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    # With fewer rows than features the n x n Gram form is cheaper and gives the same value.
    if ac.shape[0] < max(ac.shape[1], bc.shape[1]):
        ka, kb = ac @ ac.T, bc @ bc.T
        num, den = np.sum(ka * kb), np.linalg.norm(ka) * np.linalg.norm(kb)
    else:
        num = np.linalg.norm(ac.T @ bc) ** 2
        den = np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc)
    return float(num / den) if den > 0 else float("nan")


def write_map(path: str | Path, m: RidgeMap, attrs: Mapping[str, Any]) -> None:
    """Write a map file atomically: the arrays as datasets, fit summaries and `attrs` as attrs."""
    clash = sorted(set(attrs) & set(_SCALARS))
    if clash:
        raise EmdirError(f"map attrs {clash} are reserved for the fit summary; rename them")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in _ARRAYS:
            f[name] = getattr(m, name)
        set_attrs(f, {name: getattr(m, name) for name in _SCALARS})
        set_attrs(f, {**m.attrs, **attrs})


def read_map(path: str | Path) -> RidgeMap:
    """Read a file written by `write_map`; extra attrs land in `RidgeMap.attrs`."""
    p = Path(path)
    if not p.exists():
        raise EmdirError(f"{p}: map file not found; run the maps rule first")
    with h5py.File(p, "r") as f:
        attrs = get_attrs(f)
        missing = [n for n in _ARRAYS if n not in f] + [n for n in _SCALARS if n not in attrs]
        if missing:
            raise EmdirError(f"{p}: not a complete map file (missing {missing}); delete and rerun")
        arrays = {name: f[name][()] for name in _ARRAYS}
    scalars = {name: attrs.pop(name) for name in _SCALARS}
    return RidgeMap(**arrays, **scalars, attrs=attrs)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    sst = float(np.sum((y - y.mean(axis=0)) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst if sst > 0 else float("nan")
