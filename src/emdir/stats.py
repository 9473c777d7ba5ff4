"""Percentile-bootstrap confidence intervals for rates, their differences, and specificity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from emdir.errors import EmdirError

# Resampled index matrices are built in blocks of at most this many entries, so that
# a 2000-replicate bootstrap over tens of thousands of answers stays within a few MB.
_BLOCK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile-bootstrap confidence interval."""

    value: float
    lo: float
    hi: float

    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or entirely below zero."""
        return self.lo > 0.0 or self.hi < 0.0


@dataclass(frozen=True)
class Specificity:
    """Target effect minus the strongest control effect, with the effects it was built from."""

    value: float
    lo: float
    hi: float
    strongest_control: str
    target: Estimate
    controls: dict[str, Estimate] = field(default_factory=dict)

    def excludes_zero(self) -> bool:
        """True when the specificity interval excludes zero (the cell "passes specificity")."""
        return self.lo > 0.0 or self.hi < 0.0


def bootstrap_mean_ci(
    x: ArrayLike, n_boot: int = 2000, seed: int = 0, level: float = 0.95, name: str = "x"
) -> Estimate:
    """Mean of `x` with a percentile-bootstrap CI over its elements."""
    xs = _sample(x, name)
    _check_params(n_boot, level)
    rng = np.random.default_rng(seed)
    return _estimate(float(xs.mean()), _boot_means(xs, n_boot, rng), level)


def bootstrap_diff_ci(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    names: tuple[str, str] = ("a", "b"),
) -> Estimate:
    """mean(a) - mean(b) for independent samples, resampling each one independently."""
    xa, xb = _sample(a, names[0]), _sample(b, names[1])
    _check_params(n_boot, level)
    rng = np.random.default_rng(seed)
    reps = _boot_means(xa, n_boot, rng) - _boot_means(xb, n_boot, rng)
    return _estimate(float(xa.mean() - xb.mean()), reps, level)


def specificity_ci(
    target_steered: ArrayLike,
    control_steered: Mapping[str, ArrayLike] | Sequence[ArrayLike],
    baseline: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Specificity:
    """Specificity = effect(target) - max over controls of effect(control), with a bootstrap CI.

    effect(v) = mean(baseline) - mean(steered with v), in the units of the inputs (pass 0/1
    indicators and multiply by 100 for points). Every array is resampled independently, and
    within each replicate the strongest control is taken afresh, so the interval accounts for
    not knowing in advance which control is strongest. `control_steered` maps control names
    to arrays; a plain sequence is named "0", "1", ... `strongest_control` is the control with
    the largest point-estimate effect.
    """
    if isinstance(control_steered, Mapping):
        named = {str(k): v for k, v in control_steered.items()}
    else:
        named = {str(i): v for i, v in enumerate(control_steered)}
    if not named:
        raise EmdirError(
            "specificity needs at least one control vector; none was given "
            "(configure controls such as random or orthogonal)"
        )
    _check_params(n_boot, level)
    base = _sample(baseline, "baseline")
    tgt = _sample(target_steered, "target")
    ctl = {k: _sample(v, f"control {k!r}") for k, v in named.items()}

    rng = np.random.default_rng(seed)
    base_reps = _boot_means(base, n_boot, rng)
    tgt_reps = base_reps - _boot_means(tgt, n_boot, rng)
    ctl_reps = {k: base_reps - _boot_means(v, n_boot, rng) for k, v in ctl.items()}
    spec_reps = tgt_reps - np.max(np.stack(list(ctl_reps.values())), axis=0)

    tgt_effect = float(base.mean() - tgt.mean())
    ctl_effect = {k: float(base.mean() - v.mean()) for k, v in ctl.items()}
    strongest = max(ctl_effect, key=lambda k: ctl_effect[k])
    spec = _estimate(tgt_effect - ctl_effect[strongest], spec_reps, level)
    return Specificity(
        value=spec.value,
        lo=spec.lo,
        hi=spec.hi,
        strongest_control=strongest,
        target=_estimate(tgt_effect, tgt_reps, level),
        controls={k: _estimate(ctl_effect[k], ctl_reps[k], level) for k in ctl},
    )


def bootstrap_mean_effect(
    cells: Sequence[tuple[str, ArrayLike]],
    baselines: Mapping[str, ArrayLike],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """The mean over cells of effect = mean(baseline) - mean(steered), with a bootstrap CI.

    `cells` pairs a baseline name with a cell's steered values. Each replicate resamples
    every baseline once (cells sharing a baseline share its resample) and every cell's
    answers independently, so a row or column mean of a transfer grid gets an honest interval.
    """
    if not cells:
        raise EmdirError("a mean effect needs at least one cell")
    _check_params(n_boot, level)
    missing = sorted({b for b, _ in cells} - set(baselines))
    if missing:
        raise EmdirError(f"cells refer to unknown baselines {missing}")
    rng = np.random.default_rng(seed)
    base = {k: _sample(baselines[k], f"baseline {k!r}") for k in sorted({b for b, _ in cells})}
    base_reps = {k: _boot_means(v, n_boot, rng) for k, v in base.items()}
    total, reps = 0.0, np.zeros(n_boot)
    for i, (b, steered) in enumerate(cells):
        x = _sample(steered, f"cell {i}")
        total += base[b].mean() - x.mean()
        reps += base_reps[b] - _boot_means(x, n_boot, rng)
    return _estimate(total / len(cells), reps / len(cells), level)


def _sample(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise EmdirError(
            f"{name}: expected a 1-D array of per-answer values, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise EmdirError(
            f"{name} is empty: no scored answers to bootstrap over "
            "(check that generation and judging produced rows for it)"
        )
    if not np.all(np.isfinite(arr)):
        raise EmdirError(
            f"{name}: {int(np.sum(~np.isfinite(arr)))} value(s) are NaN or infinite; "
            "drop unscored answers before computing statistics"
        )
    return arr


def _check_params(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise EmdirError(f"n_boot must be a positive number of replicates, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise EmdirError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level}")


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = x.size
    block = max(1, _BLOCK_ENTRIES // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _estimate(value: float, reps: np.ndarray, level: float) -> Estimate:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [tail, 1.0 - tail])
    return Estimate(value=value, lo=float(lo), hi=float(hi))
