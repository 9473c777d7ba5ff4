"""Ridge-regression maps between two models' activation spaces.

Alpha is chosen by k-fold cross-validation inside the training rows; the map is then refitted
on all training rows and scored once on the test rows, which never influence the choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from numpy.typing import ArrayLike

from emdir.analysis.hdf5 import get_attrs, set_attrs
from emdir.errors import EmdirError
from emdir.io import atomic_path
from emdir.provenance import stamp

_ARRAYS = ("W", "x_mean", "y_mean", "x_scale", "alphas", "r2_cv_per_alpha")
_SCALARS = (
    "alpha",
    "alpha_at_edge",
    "r2_cv",
    "r2_test",
    "r2_train",
    "cka_test",
    "n_train",
    "n_test",
    "cv_folds",
    "alpha_widen",
)
_SUMMARY = ("alpha", "alpha_at_edge", "r2_cv", "r2_test", "cka_test", "n_train", "n_test")
_EPS = float(np.finfo(np.float64).eps)
_FOLD_STREAM = 0x52494447  # mixed into the seed so the folds do not reuse the split's draws


@dataclass(frozen=True, eq=False)
class RidgeMap:
    """A linear map donor -> receiver: y = ((x - x_mean) / x_scale) @ W + y_mean.

    `alphas` are the alphas actually tried (ascending, widened ones included) and
    `r2_cv_per_alpha` their cross-validated R^2 on the training rows; `alpha` is the best of
    them and `r2_cv` its score. `alpha_at_edge` is True when `alpha` is still the smallest or
    largest tried after widening. `r2_test` and `cka_test` come from the test rows only, with
    the map refitted on all training rows. `cka_test` is the linear CKA between the map's
    predictions on the test rows and the true test Y, not the CKA between X and Y.
    """

    W: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    x_scale: np.ndarray
    alpha: float
    alphas: np.ndarray
    r2_cv_per_alpha: np.ndarray
    r2_cv: float
    alpha_at_edge: bool
    r2_test: float
    r2_train: float
    cka_test: float
    n_train: int
    n_test: int
    cv_folds: int
    alpha_widen: int
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def r2_per_alpha(self) -> np.ndarray:
        """Old name of `r2_cv_per_alpha` (cross-validated, no longer the test rows' R^2)."""
        return self.r2_cv_per_alpha


@dataclass(frozen=True, eq=False)
class _Basis:
    """One ridge fit's decomposition: the centring and scaling, s, V and M = U^T yc."""

    x_mean: np.ndarray
    y_mean: np.ndarray
    x_scale: np.ndarray
    s: np.ndarray
    V: np.ndarray
    M: np.ndarray

    def project(self, x: np.ndarray) -> np.ndarray:
        """Rows of x, centred and scaled like the fit rows, in the V basis."""
        return ((x - self.x_mean) / self.x_scale) @ self.V


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
    folds: int = 5,
    widen: int = 3,
    seed: int = 0,
) -> RidgeMap:
    """Choose alpha by k-fold CV on the train rows, refit on them all, score on the test rows.

    R^2 = 1 - SSE / SST summed over all output dimensions (SST about the scored rows' own
    mean; sklearn's multioutput="variance_weighted"). The CV R^2 pools SSE and SST over the
    folds. Fold membership is a seeded shuffle of the train rows (`fold_ids`). Alphas are
    absolute, in the units of the (standardised) X squared singular values, so a grid should
    span them (e.g. a log grid); duplicates are dropped and the grid is sorted.

    Widening: while the best CV alpha is the smallest (largest) tried, one more alpha 10x
    below (above) it is tried, at most `widen` extra alphas in all; `alpha_at_edge` records
    whether the best is still at an edge after that.

    Each fit is one decomposition of its (centred, scaled) train X ("auto": an eigendecomposition
    of the smaller Gram matrix, "gram" d x d or "kernel" n x n; "svd" a thin SVD, the slower
    reference; see `_decompose`), shared by every alpha: `folds` + 1 decompositions in all.
    A fold's SSE for every alpha comes from `_held_out_sse` without forming predictions.
    Computation is float64 whatever the input dtype.
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
    if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 0) or not np.all(np.isfinite(grid)):
        raise EmdirError(
            f"transfer.alphas must be a non-empty list of positive numbers, got {alphas}"
        )
    if isinstance(widen, bool) or not isinstance(widen, int | np.integer) or widen < 0:
        raise EmdirError(
            f"transfer.alpha_widen must be an integer >= 0 (0 = never widen), got {widen!r}"
        )
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise EmdirError(f"transfer.cv_folds must be an integer >= 2, got {folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise EmdirError(f"transfer.seed must be an integer >= 0, got {seed!r}")
    n = x_in.shape[0]
    train = np.asarray(train_mask, dtype=bool)
    test = np.asarray(test_mask, dtype=bool)
    if train.shape != (n,) or test.shape != (n,):
        raise EmdirError(f"train/test masks must have shape ({n},)")
    n_train, n_test = int(train.sum()), int(test.sum())
    if n_train < 2 or n_test < 2:
        raise EmdirError(
            f"ridge needs at least 2 train and 2 test rows, got {n_train} and {n_test}; "
            "add anchor texts"
        )
    if np.any(train & test):
        raise EmdirError("train and test rows overlap; the held-out R^2 would be optimistic")
    if n_train < 2 * folds:
        raise EmdirError(
            f"transfer.cv_folds = {folds} needs at least {2 * folds} train rows (2 per fold), "
            f"got {n_train}; lower transfer.cv_folds or add anchor texts"
        )

    # Select rows first, then convert: one float64 copy per block, whatever the input dtype.
    x_tr = np.asarray(x_in[train], dtype=np.float64)
    y_tr = np.asarray(y_in[train], dtype=np.float64)
    y_te = np.asarray(y_in[test], dtype=np.float64)
    sst_test = float(np.sum((y_te - y_te.mean(axis=0)) ** 2))
    if sst_test == 0.0:
        raise EmdirError("the test rows of Y are all identical; R^2 is undefined (add anchors)")
    grid = np.unique(grid)  # sorted ascending, duplicates dropped
    steps = 10.0 ** np.arange(1, widen + 1)
    candidates = np.concatenate([grid[0] / steps[::-1], grid, grid[-1] * steps])
    r2_all = _cv_r2(
        x_tr, y_tr, candidates, fold_ids(n_train, folds, seed), center, standardize, decomposition
    )
    lo, hi = widen, widen + grid.size - 1  # the window of candidates tried, inclusive
    for _ in range(widen):
        best = lo + int(np.argmax(r2_all[lo : hi + 1]))
        if best == lo:
            lo -= 1
        elif best == hi:
            hi += 1
        else:
            break
    best = lo + int(np.argmax(r2_all[lo : hi + 1]))
    alpha = float(candidates[best])

    b = _basis(x_tr, y_tr, center, standardize, decomposition)
    del x_tr
    f = b.s / (b.s**2 + alpha)
    coef = f[:, None] * b.M
    pred_test = b.project(np.asarray(x_in[test], dtype=np.float64)) @ coef + b.y_mean
    return RidgeMap(
        W=b.V @ coef,
        x_mean=b.x_mean,
        y_mean=b.y_mean,
        x_scale=b.x_scale,
        alpha=alpha,
        alphas=candidates[lo : hi + 1],
        r2_cv_per_alpha=r2_all[lo : hi + 1],
        r2_cv=float(r2_all[best]),
        alpha_at_edge=best in (lo, hi),
        r2_test=1.0 - float(np.sum((y_te - pred_test) ** 2)) / sst_test,
        r2_train=_train_r2(y_tr, y_tr - b.y_mean, b.s * f, b.M, centred=center),
        cka_test=linear_cka(pred_test, y_te),
        n_train=n_train,
        n_test=n_test,
        cv_folds=int(folds),
        alpha_widen=int(widen),
    )


def anchor_split(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """Which of n anchor texts are held out (True) from a map's fit, each with probability
    `test_fraction` (seeded)."""
    return np.random.default_rng(int(seed)).random(n) < float(test_fraction)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold index (0..folds-1) of each of n rows: a seeded shuffle dealt round-robin.

    Fold sizes differ by at most one; the same (n, folds, seed) always gives the same folds.
    """
    order = np.random.default_rng([int(seed), _FOLD_STREAM]).permutation(n)
    ids = np.empty(n, dtype=np.intp)
    ids[order] = np.arange(n) % folds
    return ids


def _cv_r2(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    alphas: np.ndarray,
    ids: np.ndarray,
    center: bool,
    standardize: bool,
    how: str,
) -> np.ndarray:
    """Cross-validated R^2 per alpha: SSE and SST (about each fold's mean) pooled over folds."""
    sse = np.zeros(alphas.size)
    sst = 0.0
    for k in range(int(ids.max()) + 1):
        held = ids == k
        b = _basis(x_tr[~held], y_tr[~held], center, standardize, how)
        y_h = y_tr[held]
        F = b.s / (b.s**2 + alphas[:, None])
        sse += _held_out_sse(b.project(x_tr[held]), y_h - b.y_mean, b.M, F)
        sst += float(np.sum((y_h - y_h.mean(axis=0)) ** 2))
    if sst == 0.0:
        raise EmdirError("the train rows of Y are all identical; R^2 is undefined (add anchors)")
    return 1.0 - sse / sst


def _basis(x: np.ndarray, y: np.ndarray, center: bool, standardize: bool, how: str) -> _Basis:
    """Centre (and scale) the fit rows and decompose them once for every alpha."""
    d, q = x.shape[1], y.shape[1]
    x_mean = x.mean(axis=0) if center else np.zeros(d)
    y_mean = y.mean(axis=0) if center else np.zeros(q)
    x_scale = x.std(axis=0) if standardize else np.ones(d)
    # A constant feature carries no information; scale 1 keeps it at zero instead of NaN.
    x_scale = np.where(x_scale > 0, x_scale, 1.0)
    xc = x - x_mean
    if standardize:
        xc /= x_scale
    s, V, M = _decompose(xc, y - y_mean, how)
    return _Basis(x_mean=x_mean, y_mean=y_mean, x_scale=x_scale, s=s, V=V, M=M)


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
            raise EmdirError(
                f"{p}: not a complete map file (missing {missing}; maps written before alpha "
                "was cross-validated lack the CV fields); delete it and rerun the maps rule"
            )
        arrays = {name: f[name][()] for name in _ARRAYS}
    scalars = {name: attrs.pop(name) for name in _SCALARS}
    return RidgeMap(**arrays, **scalars, attrs=attrs)


def map_summary(path: str | Path) -> dict[str, Any]:
    """The fit summary of a map file (alpha, alpha_at_edge, r2_cv, r2_test, cka_test, n_train,
    n_test; those the file has), as plain Python values for a CSV row. Reads no arrays."""
    p = Path(path)
    if not p.exists():
        raise EmdirError(f"{p}: map file not found; run the maps rule first")
    with h5py.File(p, "r") as f:
        attrs = get_attrs(f)
    return {name: attrs[name] for name in _SUMMARY if name in attrs}
