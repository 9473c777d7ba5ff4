"""Ridge-regression maps between two models' activation spaces, chosen by held-out R^2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from numpy.typing import ArrayLike

from emdir.directions import get_attrs, set_attrs
from emdir.errors import EmdirError
from emdir.io import atomic_path
from emdir.provenance import stamp

_ARRAYS = ("W", "x_mean", "y_mean", "x_scale", "alphas", "r2_per_alpha")
_SCALARS = ("alpha", "r2_test", "r2_train", "cka_test", "n_train", "n_test")
_EPS = float(np.finfo(np.float64).eps)


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
    *,
    decomposition: Literal["auto", "gram", "kernel", "svd"] = "auto",
) -> RidgeMap:
    """Fit ridge maps X -> Y for every alpha from one decomposition of the train X; keep the best.

    R^2 = 1 - SSE / SST summed over all output dimensions, on the test rows (SST about the
    test mean; sklearn's multioutput="variance_weighted"). Alphas are absolute, in the units of
    the (standardised) X squared singular values, so a grid should span them (e.g. a log grid).

    The one decomposition ("auto") is an eigendecomposition of the smaller Gram matrix: the
    d x d X^T X when there are at least as many train rows as features ("gram"), else the
    n x n X X^T ("kernel"); "svd" forces a thin SVD of X, the slower reference. All give the
    singular values s, right singular vectors V and M = U^T (Y_train - y_mean), and all drop
    components with s^2 <= max(n, d) * eps * max(s^2) (numerically zero: a Gram cannot
    resolve them), so they are one estimator.

    Every alpha is then scored without forming its [n_test, q] prediction: with T = test rows
    in the V basis, R = Y_test - y_mean and f_j = s_j / (s_j^2 + alpha),

        SSE(alpha) = ||R||^2 - 2 f.c + f^T (G * M M^T) f,   c_j = (T^T R)_j . M_j,  G = T^T T,

    which is exact (see `_held_out_sse`). Computation is float64 whatever the input dtype.
    """
    x_in, y_in = np.asarray(X), np.asarray(Y)
    if x_in.ndim != 2 or y_in.ndim != 2 or x_in.shape[0] != y_in.shape[0]:
        raise EmdirError(
            f"ridge needs paired rows: X is {x_in.shape}, Y is {y_in.shape}; the anchor texts "
            "must be the same, in the same order, in both models' anchor files"
        )
    if decomposition not in ("auto", "gram", "kernel", "svd"):
        raise EmdirError(
            f"ridge decomposition must be auto, gram, kernel or svd, got {decomposition!r}"
        )
    grid = np.asarray(alphas, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 0):
        raise EmdirError(f"ridge alphas must be a non-empty list of positive numbers, got {alphas}")
    n, d = x_in.shape
    q = y_in.shape[1]
    train = np.asarray(train_mask, dtype=bool)
    test = np.asarray(test_mask, dtype=bool)
    if train.shape != (n,) or test.shape != (n,):
        raise EmdirError(f"train/test masks must have shape ({n},)")
    if train.sum() < 2 or test.sum() < 2:
        raise EmdirError(
            f"ridge needs at least 2 train and 2 test rows, got {int(train.sum())} and "
            f"{int(test.sum())}; add anchor texts"
        )
    if np.any(train & test):
        raise EmdirError("train and test rows overlap; the held-out R^2 would be optimistic")

    # Select rows first, then convert: one float64 copy per block, whatever the input dtype.
    x_tr = np.asarray(x_in[train], dtype=np.float64)
    y_tr = np.asarray(y_in[train], dtype=np.float64)
    x_te = np.asarray(x_in[test], dtype=np.float64)  # boolean indexing copied: ours to edit
    y_te = np.asarray(y_in[test], dtype=np.float64)
    x_mean = x_tr.mean(axis=0) if center else np.zeros(d)
    y_mean = y_tr.mean(axis=0) if center else np.zeros(q)
    x_scale = x_tr.std(axis=0) if standardize else np.ones(d)
    # A constant feature carries no information; scale 1 keeps it at zero instead of NaN.
    x_scale = np.where(x_scale > 0, x_scale, 1.0)
    xc = x_tr - x_mean
    if standardize:
        xc /= x_scale
    yc = y_tr - y_mean
    del x_tr

    s, V, M = _decompose(xc, yc, decomposition)
    x_te -= x_mean
    if standardize:
        x_te /= x_scale
    T = x_te @ V
    del x_te
    R = y_te - y_mean
    sst_test = float(np.sum((y_te - y_te.mean(axis=0)) ** 2))
    if sst_test == 0.0:
        raise EmdirError("the test rows of Y are all identical; R^2 is undefined (add anchors)")
    F = s / (s**2 + grid[:, None])  # [n_alphas, k]: the shrunk inverse singular values
    r2 = 1.0 - _held_out_sse(T, R, M, F) / sst_test
    best = int(np.argmax(r2))
    coef = F[best][:, None] * M
    W = V @ coef
    pred_test = T @ coef + y_mean
    return RidgeMap(
        W=W,
        x_mean=x_mean,
        y_mean=y_mean,
        x_scale=x_scale,
        alpha=float(grid[best]),
        alphas=grid,
        r2_per_alpha=r2,
        r2_test=float(r2[best]),
        r2_train=_train_r2(y_tr, yc, s * F[best], M, centred=center),
        cka_test=linear_cka(pred_test, y_te),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
    )


def _decompose(
    xc: np.ndarray, yc: np.ndarray, how: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singular values s, right singular vectors V [d, k] and M = U^T yc [k, q] (any order).

    "gram" (auto when n >= d): eigh of xc^T xc [d, d], then M = diag(1/s) V^T (xc^T yc), no U.
    "kernel" (auto when n < d): eigh of xc xc^T [n, n] gives U directly, V = xc^T U diag(1/s).
    "svd": thin SVD of xc (several times the cost of either; kept as the reference).
    Components with s^2 <= max(n, d) * eps * max(s^2) are dropped in every path: a Gram's
    eigenvalues are only accurate to about eps * max, so smaller ones (and negative ones from
    rounding) are noise, and the same rule keeps the paths one estimator. A dropped
    component's coefficient s / (s^2 + alpha) * M_j is below s / alpha * ||M_j||, negligible.
    """
    n, d = xc.shape
    rtol = max(n, d) * _EPS
    if how == "auto":
        how = "gram" if n >= d else "kernel"
    if how == "svd":
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
        keep = s**2 > rtol * float(s[0]) ** 2
        return s[keep], vt[keep].T, u[:, keep].T @ yc
    gram = xc.T @ xc if how == "gram" else xc @ xc.T
    evals, evecs = np.linalg.eigh(gram)  # ascending
    k = int(np.count_nonzero(evals > rtol * max(float(evals[-1]), 0.0)))
    s, vecs = np.sqrt(evals[len(evals) - k :]), evecs[:, len(evals) - k :]
    if how == "gram":
        return s, vecs, (vecs.T @ (xc.T @ yc)) / s[:, None]
    return s, (xc.T @ vecs) / s, vecs.T @ yc


def _held_out_sse(T: np.ndarray, R: np.ndarray, M: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Test SSE for each row f of F (one per alpha) without forming any prediction.

    The prediction minus y_mean is P = T diag(f) M, so
    ||R - P||^2 = ||R||^2 - 2 tr(M^T diag(f) T^T R) + tr(M^T diag(f) T^T T diag(f) M)
                = ||R||^2 - 2 f.c + f^T (G * M M^T) f
    with c_j = sum_q (T^T R)_jq M_jq, G = T^T T and * elementwise. Cost: O(k n_test q + k^2 q)
    once and O(k^2) per alpha, instead of O(n_test k q) per alpha.
    """
    c = np.einsum("jq,jq->j", T.T @ R, M)
    H = (T.T @ T) * (M @ M.T)
    return float(np.vdot(R, R)) - 2.0 * (F @ c) + np.einsum("aj,aj->a", F @ H, F)


def _train_r2(
    y_tr: np.ndarray, yc: np.ndarray, shrink: np.ndarray, M: np.ndarray, centred: bool
) -> float:
    """Train R^2 without the [n_train, q] prediction.

    The prediction minus y_mean is P = U diag(shrink) M with U^T U = I and M = U^T yc, so
    ||yc - P||^2 = ||yc||^2 - sum_j (2 shrink_j - shrink_j^2) ||M_j||^2.
    """
    yc2 = float(np.vdot(yc, yc))
    # yc is y_tr minus its own mean when centred, so SST (about the train mean) is ||yc||^2.
    sst = yc2 if centred else float(np.sum((y_tr - y_tr.mean(axis=0)) ** 2))
    if sst <= 0:
        return float("nan")
    m2 = np.einsum("jq,jq->j", M, M)
    sse = yc2 - float(np.sum((2.0 * shrink - shrink**2) * m2))
    return 1.0 - sse / sst


def map_vector(m: RidgeMap, v: ArrayLike) -> np.ndarray:
    """Carry a difference vector (or a stack of them) through the map: no means, no intercept."""
    arr = _donor_array(m, v)
    return (arr / m.x_scale) @ m.W


def map_class_means(m: RidgeMap, mean_pos: ArrayLike, mean_neg: ArrayLike) -> np.ndarray:
    """Map each donor class mean through the full affine map (means, intercept) and subtract.

    The map is affine, so this equals `map_vector(m, mean_pos - mean_neg)` up to rounding: the
    intercept cancels. It exists so that "map the class means, then take the difference" is an
    explicit option whose equivalence is tested, not an assumption.
    """
    pos, neg = _donor_array(m, mean_pos), _donor_array(m, mean_neg)
    return _affine(m, pos) - _affine(m, neg)


def _affine(m: RidgeMap, x: np.ndarray) -> np.ndarray:
    return ((x - m.x_mean) / m.x_scale) @ m.W + m.y_mean


def _donor_array(m: RidgeMap, v: ArrayLike) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape[-1:] != m.W.shape[:1]:
        raise EmdirError(
            f"vector has dimension {arr.shape[-1:]} but the map expects {m.W.shape[0]}; "
            "was the map fitted for this donor model?"
        )
    return arr


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
        set_attrs(f, {**stamp(), **m.attrs, **attrs})


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
