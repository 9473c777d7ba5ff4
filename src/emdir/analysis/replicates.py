"""Replicates: conditions drawn under several fine-tuning seeds, in one bootstrap whose
intervals include the seed variance beside the question variance (issue 29)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from emdir.analysis.stats import (
    Clustered,
    Estimate,
    Intervals,
    QuestionBootstrap,
    check_bootstrap_params,
)
from emdir.errors import EmdirError


class SeedBootstrap(Intervals):
    """A two-level percentile bootstrap for conditions drawn under several fine-tuning seeds:
    each replicate draws the seeds with replacement and, for every seed drawn, its questions
    with replacement (a fresh draw for each copy of a seed drawn twice), shared by every
    condition of that seed, so steered and unsteered answers stay paired within a seed and
    the interval carries both the question and the seed variance.

    A condition's value is the mean over seeds of its per-seed mean (each seed weighs the
    same); a replicate's is the mean over the drawn seeds of their resampled means. Every
    seed must have every condition. The interface is `QuestionBootstrap`'s, so anything
    that reads one (`paired_specificity`, the report tables) reads this. With one seed the
    seed draw is skipped and the question draws are `QuestionBootstrap`'s own (same
    generator, same order): the same replicates, the same interval.
    """

    def __init__(
        self,
        seeds: Sequence[Mapping[str, Clustered]],
        n_boot: int = 2000,
        seed: int = 0,
        level: float = 0.95,
    ) -> None:
        if not seeds:
            raise EmdirError("a seed bootstrap needs at least one seed's conditions")
        names = set(seeds[0])
        for k, conds in enumerate(seeds):
            if set(conds) != names:
                odd = sorted(set(conds) ^ names)
                raise EmdirError(
                    f"seed {k} has different conditions from seed 0 ({', '.join(odd)}); every "
                    "seed must be run through the same conditions"
                )
        check_bootstrap_params(n_boot, level)
        self.level = level
        self.n_boot = n_boot
        self.n_seeds = len(seeds)
        self.conditions = dict(seeds[0])
        rng = np.random.default_rng(seed)
        slots = 1 if self.n_seeds == 1 else self.n_seeds
        # Per seed: replicate rows b * slots + j for slot j of replicate b.
        self._per_seed = [
            QuestionBootstrap(conds, n_boot * slots, rng=rng, level=level) for conds in seeds
        ]
        self._pick = (
            np.zeros((n_boot, 1), dtype=np.int64)
            if self.n_seeds == 1
            else rng.integers(0, self.n_seeds, size=(n_boot, self.n_seeds))
        )
        self._rows = np.arange(n_boot)[:, None] * slots + np.arange(slots)[None, :]
        self._reps: dict[str, np.ndarray] = {}

    def seed_means(self, name: str) -> list[float]:
        """The condition's mean under each seed, in the order given."""
        return [b.mean(name) for b in self._per_seed]

    def mean(self, name: str) -> float:
        return float(np.mean(self.seed_means(name)))

    def reps(self, name: str) -> np.ndarray:
        if name not in self._reps:
            self._get(name)
            per = np.stack([b.reps(name) for b in self._per_seed])  # [seed, replicate row]
            drawn = per[self._pick, self._rows]  # [n_boot, slots]
            self._reps[name] = drawn.mean(axis=1)
        return self._reps[name]

    def estimate(self, value: float, reps: np.ndarray) -> Estimate:
        return self._per_seed[0].estimate(value, reps)

    def size(self, name: str) -> tuple[int, int]:
        """(n_questions, n_answers) of a condition, summed over seeds."""
        sizes = [b.size(name) for b in self._per_seed]
        return sum(q for q, _ in sizes), sum(a for _, a in sizes)

    def _get(self, name: str) -> Clustered:
        if name not in self.conditions:
            raise EmdirError(f"no condition {name!r} in this bootstrap")
        return self.conditions[name]
