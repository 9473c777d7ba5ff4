"""A cross-validated L2-regularised logistic regression (Newton's method, stratified folds):
the probe that says whether the rank-1 adapters' scalars predict an answer's label."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from emdir.analysis.directions import auroc_from_ranks
from emdir.errors import EmdirError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LogisticCV:
    """Cross-validated L2 logistic regression on standardized features."""

    accuracy: float  # held-out, pooled over folds
    auroc: float  # held-out, pooled over folds
    fold_accuracy: list[float]
    coef: np.ndarray  # [n_features], refit on all data, per standard deviation of each feature
    intercept: float
    majority_baseline: float
    folds: int
    feature_mean: np.ndarray  # standardization of the refit
    feature_std: np.ndarray
    heldout_prob: np.ndarray  # [N] P(y=1) from the fold that held each sample out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _objective(design: np.ndarray, y: np.ndarray, theta: np.ndarray, pen: np.ndarray) -> float:
    eta = design @ theta
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(pen * theta**2))


def _fit_newton(
    z: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 100, tol: float = 1e-10
) -> np.ndarray:
    """[intercept, coef...] minimising log-loss + l2/2 |coef|^2 by damped Newton steps."""
    design = np.hstack([np.ones((z.shape[0], 1)), z])
    pen = np.full(design.shape[1], l2)
    pen[0] = 0.0
    theta = np.zeros(design.shape[1])
    f = _objective(design, y, theta, pen)
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - y) + pen * theta
        hess = design.T @ (design * (p * (1.0 - p))[:, None]) + np.diag(pen)
        step = np.linalg.solve(hess + 1e-12 * np.eye(hess.shape[0]), grad)
        t = 1.0
        while (f_new := _objective(design, y, theta - t * step, pen)) > f:
            t *= 0.5
            if t < 1e-8:  # no descent left: theta is the optimum to rounding
                return theta
        theta = theta - t * step
        if f - f_new <= tol * max(1.0, f):
            break
        f = f_new
    return theta


def _standardize_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)  # a constant feature stays 0 after centring


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per sample; each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    offset = 0
    for cls in (False, True):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = (np.arange(idx.size) + offset) % k
        offset = (offset + idx.size) % k  # the second class starts filling the smaller folds
    return fold


def _check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2:
        raise EmdirError(f"features must be a 2-D [samples, features] array, got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise EmdirError(f"{y.size} labels for {x.shape[0]} feature rows; give one label per row")
    if not np.all(np.isfinite(x)):
        raise EmdirError("features contain NaN or inf; drop or fill those samples first")
    if not np.all(np.isin(y, (0, 1))):
        raise EmdirError("labels must be 0/1 (or bool); drop unlabelled samples first")


def logistic_cv(
    X: np.ndarray, y: np.ndarray, folds: int = 5, l2: float = 1.0, seed: int = 0
) -> LogisticCV:
    """Stratified k-fold CV of an L2 logistic regression fitted by Newton's method (numpy only).

    Minimises the summed log-loss + `l2`/2 * |coef|^2 (the intercept is not penalised;
    `l2` = 1/C of scikit-learn) on features standardized with the training fold's mean and
    standard deviation. `folds` is lowered to the minority-class count, with a warning,
    when that class is smaller; a class with fewer than 2 samples is an error. `accuracy`
    and `auroc` pool the held-out predictions of all folds; `coef` and `intercept` come
    from a refit on all samples, in standardized units (coef per standard deviation).
    """
    x = np.asarray(X, dtype=np.float64)
    yy = np.asarray(y)
    _check_xy(x, yy)
    yb = yy.astype(bool)
    if folds < 2:
        raise EmdirError(f"cross-validation needs folds >= 2, got {folds}")
    if not l2 > 0:
        raise EmdirError(f"l2 must be positive (separable data has no unpenalised fit), got {l2}")
    minority = int(min(yb.sum(), (~yb).sum()))
    if minority < 2:
        raise EmdirError(
            f"a class has {minority} sample(s); logistic CV needs at least 2 of each class"
        )
    if minority < folds:
        log.warning(
            "only %d samples in the minority class: %d folds instead of %d",
            minority,
            minority,
            folds,
        )
        folds = minority
    target = yb.astype(np.float64)
    fold = _stratified_folds(yb, folds, seed)
    prob = np.empty(yb.size)
    fold_accuracy = []
    for k in range(folds):
        test = fold == k
        mean, std = _standardize_stats(x[~test])
        theta = _fit_newton((x[~test] - mean) / std, target[~test], l2)
        prob[test] = _sigmoid(theta[0] + ((x[test] - mean) / std) @ theta[1:])
        fold_accuracy.append(float(np.mean((prob[test] >= 0.5) == yb[test])))
    mean, std = _standardize_stats(x)
    theta = _fit_newton((x - mean) / std, target, l2)
    return LogisticCV(
        accuracy=float(np.mean((prob >= 0.5) == yb)),
        auroc=auroc_from_ranks(prob, yb),
        fold_accuracy=fold_accuracy,
        coef=theta[1:],
        intercept=float(theta[0]),
        majority_baseline=float(max(yb.mean(), 1.0 - yb.mean())),
        folds=folds,
        feature_mean=mean,
        feature_std=std,
        heldout_prob=prob,
    )
