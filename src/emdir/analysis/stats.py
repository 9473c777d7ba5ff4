"""Percentile-bootstrap confidence intervals for rates, their differences, and specificity.

Two families: the plain functions (`bootstrap_mean_ci`, ...) resample answers independently;
`QuestionBootstrap` resamples *questions* (answers are clustered by question) and uses the
same resampled questions for every condition, so an effect (unsteered minus steered) is a
paired difference
(`emdir.analysis.replicates.SeedBootstrap` adds a level above it: fine-tuning seeds). The workflow's tables use the latter; `holm` corrects a family of
bootstrap p-values and `verdict` turns a specificity interval into words."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    check_bootstrap_params(n_boot, level)
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
    check_bootstrap_params(n_boot, level)
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
    check_bootstrap_params(n_boot, level)
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
    check_bootstrap_params(n_boot, level)
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


def check_bootstrap_params(n_boot: int, level: float) -> None:
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


# ---------------------------------------------------------------- clustered, paired


@dataclass(frozen=True)
class Clustered:
    """Per-answer values and the question each answer belongs to."""

    values: np.ndarray
    questions: np.ndarray

    @property
    def n_answers(self) -> int:
        return int(self.values.size)

    @property
    def n_questions(self) -> int:
        return int(np.unique(self.questions).size)


def clustered(values: ArrayLike, questions: Sequence[Any], name: str = "x") -> Clustered:
    """Check and pair per-answer values with their question ids."""
    xs = _sample(values, name)
    qs = np.asarray([str(q) for q in questions], dtype=object)
    if qs.shape != xs.shape:
        raise EmdirError(
            f"{name}: {xs.size} values but {qs.size} question ids; every answer needs its question"
        )
    return Clustered(xs, qs)


class Intervals(ABC):
    """Percentile intervals from a bootstrap's replicates: what `QuestionBootstrap` and
    `emdir.analysis.replicates.SeedBootstrap` share."""

    @abstractmethod
    def mean(self, name: str) -> float: ...

    @abstractmethod
    def reps(self, name: str) -> np.ndarray: ...

    @abstractmethod
    def estimate(self, value: float, reps: np.ndarray) -> Estimate: ...

    def mean_ci(self, name: str) -> Estimate:
        return self.estimate(self.mean(name), self.reps(name))

    def diff_ci(self, a: str, b: str) -> Estimate:
        """mean(a) - mean(b), the same resampled questions (and seeds) for both."""
        return self.estimate(self.mean(a) - self.mean(b), self.reps(a) - self.reps(b))


class QuestionBootstrap(Intervals):
    """A percentile bootstrap over questions shared by every condition given to it.

    Each replicate draws the question set with replacement (as many questions as there are
    distinct ones across all conditions) and computes every condition's mean over the
    answers to the drawn questions, so conditions answered on the same questions are
    resampled together (paired) and the interval reflects how answers cluster by question.
    Point estimates are plain means over answers.
    """

    def __init__(
        self,
        conditions: Mapping[str, Clustered],
        n_boot: int = 2000,
        seed: int = 0,
        level: float = 0.95,
        rng: np.random.Generator | None = None,
    ) -> None:
        """`rng`, when given, draws the questions instead of a generator seeded by `seed`
        (a `SeedBootstrap` draws every seed's questions from one generator)."""
        if not conditions:
            raise EmdirError("a question bootstrap needs at least one condition")
        check_bootstrap_params(n_boot, level)
        self.level = level
        self.n_boot = n_boot
        self.conditions = dict(conditions)
        self.questions = np.array(
            sorted({str(q) for c in self.conditions.values() for q in c.questions}), dtype=object
        )
        index = {q: i for i, q in enumerate(self.questions)}
        rng = np.random.default_rng(seed) if rng is None else rng
        nq = self.questions.size
        draws = rng.integers(0, nq, size=(n_boot, nq))
        # weights[b, q]: how often question q was drawn in replicate b
        self._weights = np.zeros((n_boot, nq))
        np.add.at(self._weights, (np.arange(n_boot)[:, None], draws), 1.0)
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, np.ndarray] = {}
        for name, c in self.conditions.items():
            q = np.array([index[str(x)] for x in c.questions], dtype=np.int64)
            self._sums[name] = np.bincount(q, weights=c.values, minlength=nq)
            self._counts[name] = np.bincount(q, minlength=nq).astype(np.float64)
        self._reps: dict[str, np.ndarray] = {}

    def mean(self, name: str) -> float:
        return float(self._get(name).values.mean())

    def reps(self, name: str) -> np.ndarray:
        """The condition's mean in every replicate (NaN where no drawn question has answers)."""
        if name not in self._reps:
            self._get(name)
            with np.errstate(invalid="ignore", divide="ignore"):
                self._reps[name] = (self._weights @ self._sums[name]) / (
                    self._weights @ self._counts[name]
                )
        return self._reps[name]

    def estimate(self, value: float, reps: np.ndarray) -> Estimate:
        """A percentile interval from replicates (NaN replicates are left out)."""
        ok = reps[np.isfinite(reps)]
        if ok.size == 0:
            return Estimate(value=value, lo=float("nan"), hi=float("nan"))
        return _estimate(value, ok, self.level)

    def size(self, name: str) -> tuple[int, int]:
        """(n_questions, n_answers) of a condition."""
        c = self._get(name)
        return c.n_questions, c.n_answers

    def _get(self, name: str) -> Clustered:
        if name not in self.conditions:
            raise EmdirError(f"no condition {name!r} in this bootstrap")
        return self.conditions[name]


@dataclass(frozen=True)
class Tested:
    """Specificity from a question bootstrap: the estimate, its two-sided bootstrap p-value
    (for specificity = 0) and the control it was measured against."""

    value: float
    lo: float
    hi: float
    p: float
    strongest_control: str

    def passes(self) -> bool:
        return self.lo > 0.0


def paired_specificity(
    boot: QuestionBootstrap,
    baseline: str,
    target: str,
    controls: Mapping[str, str],
) -> Tested:
    """effect(target) - max over controls of effect(control), effect(v) = mean(baseline) -
    mean(v), all on the same resampled questions.

    `controls` maps a control's label to its condition name. In each replicate the strongest
    control is taken afresh, so the interval accounts for not knowing which control is
    strongest; the reported `strongest_control` is the one with the largest point effect.
    """
    if not controls:
        raise EmdirError(
            "specificity needs at least one control vector; none was given "
            "(configure controls such as random or orthogonal)"
        )
    base = boot.reps(baseline)
    tgt = base - boot.reps(target)
    ctl = np.stack([base - boot.reps(c) for c in controls.values()])
    with np.errstate(invalid="ignore"):
        reps = tgt - np.max(ctl, axis=0)
    effects = {k: boot.mean(baseline) - boot.mean(c) for k, c in controls.items()}
    strongest = max(effects, key=lambda k: effects[k])
    value = boot.mean(baseline) - boot.mean(target) - effects[strongest]
    est = boot.estimate(value, reps)
    return Tested(est.value, est.lo, est.hi, bootstrap_p(reps), strongest)


def bootstrap_p(reps: np.ndarray) -> float:
    """Two-sided bootstrap p-value for "the quantity is zero": twice the smaller tail share
    of replicates at or beyond zero, with the usual +1 so it is never 0."""
    ok = reps[np.isfinite(reps)]
    if ok.size == 0:
        return float("nan")
    below = (1 + np.sum(ok <= 0.0)) / (ok.size + 1)
    above = (1 + np.sum(ok >= 0.0)) / (ok.size + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    NaN entries are left NaN and do not count towards the family size.
    """
    ps = np.asarray(p, dtype=np.float64)
    out = np.full(ps.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(ps))
    m = idx.size
    order = idx[np.argsort(ps[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


PASSES = "passes"
BEATEN = "beaten by a control"
INCONCLUSIVE = "inconclusive"


def verdict(value: float, p: float, alpha: float) -> str:
    """`passes` (significantly above zero), `beaten by a control` (significantly below) or
    `inconclusive`, for a specificity with point `value` and (adjusted) p-value `p`."""
    if not np.isfinite(p) or p >= alpha:
        return INCONCLUSIVE
    return PASSES if value > 0 else BEATEN
