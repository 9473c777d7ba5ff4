"""The two-level bootstrap over fine-tuning seeds and questions (emdir.analysis.replicates)."""

from __future__ import annotations

import numpy as np
import pytest

from emdir.analysis.replicates import SeedBootstrap
from emdir.analysis.stats import QuestionBootstrap, clustered, paired_specificity
from emdir.errors import EmdirError

QUESTIONS = [f"q{i}" for i in range(20)]


def _seed(rate_base: float, rate_steered: float, rng: np.random.Generator) -> dict:
    """One seed's unsteered (`base`) and steered answers: 4 per question, 0/1 outcomes."""
    qs = [q for q in QUESTIONS for _ in range(4)]
    # Questions differ in how likely they are answered with code (the clustering).
    lean = np.repeat(rng.uniform(-0.2, 0.2, len(QUESTIONS)), 4)
    base = (rng.random(len(qs)) < np.clip(rate_base + lean, 0, 1)).astype(float)
    steered = (rng.random(len(qs)) < np.clip(rate_steered + lean, 0, 1)).astype(float)
    return {"base": clustered(base, qs), "steered": clustered(steered, qs)}


def test_one_seed_gives_exactly_the_question_bootstrap() -> None:
    conds = _seed(0.6, 0.3, np.random.default_rng(1))
    one = SeedBootstrap([conds], n_boot=500, seed=7)
    plain = QuestionBootstrap(conds, n_boot=500, seed=7)
    assert one.mean_ci("base") == plain.mean_ci("base")
    assert one.diff_ci("base", "steered") == plain.diff_ci("base", "steered")
    assert np.array_equal(one.reps("steered"), plain.reps("steered"))
    assert one.size("base") == plain.size("base")


def test_seeds_that_disagree_widen_the_interval() -> None:
    rng = np.random.default_rng(2)
    agree = [_seed(0.6, 0.3, rng), _seed(0.6, 0.3, rng), _seed(0.6, 0.3, rng)]
    # The same steering, but one seed's fine-tune spills far more and is barely moved.
    disagree = [_seed(0.6, 0.3, rng), _seed(0.6, 0.3, rng), _seed(0.9, 0.85, rng)]

    def width(seeds: list[dict]) -> tuple[float, float]:
        pooled = SeedBootstrap(seeds, n_boot=1000, seed=0).diff_ci("base", "steered")
        # Treating the seeds' answers as one sample of the same questions (no seed level).
        naive = QuestionBootstrap(
            {
                name: clustered(
                    np.concatenate([s[name].values for s in seeds]),
                    list(np.concatenate([s[name].questions for s in seeds])),
                )
                for name in ("base", "steered")
            },
            n_boot=1000,
            seed=0,
        ).diff_ci("base", "steered")
        return pooled.hi - pooled.lo, naive.hi - naive.lo

    agreed, agreed_naive = width(agree)
    split, split_naive = width(disagree)
    assert agreed < 1.5 * agreed_naive  # agreeing seeds: about the question interval
    assert split > 2.0 * split_naive  # disagreeing seeds: much wider than questions alone
    assert split > 1.5 * agreed


def test_pairing_holds_within_each_seed() -> None:
    """A vector that moves every answer by the same amount has (almost) no interval, however
    different the seeds' levels: steered and unsteered answers are resampled together."""
    seeds = []
    for level in (0.2, 0.7):
        qs = [q for q in QUESTIONS for _ in range(3)]
        base = np.random.default_rng(int(level * 10)).random(len(qs)) * 0.1 + level
        seeds.append({"base": clustered(base, qs), "steered": clustered(base - 0.05, qs)})
    boot = SeedBootstrap(seeds, n_boot=300, seed=0)
    effect = boot.diff_ci("base", "steered")
    assert effect.value == pytest.approx(0.05) and effect.hi - effect.lo < 1e-9
    level = boot.mean_ci("base")
    assert level.hi - level.lo > 0.2  # the levels themselves differ by seed
    assert boot.seed_means("base") == pytest.approx([0.25, 0.75], abs=0.02)


def test_specificity_reads_a_seed_bootstrap() -> None:
    rng = np.random.default_rng(3)
    seeds = []
    for _ in range(2):
        conds = _seed(0.7, 0.2, rng)
        conds["control"] = _seed(0.7, 0.65, rng)["steered"]
        seeds.append(conds)
    t = paired_specificity(
        SeedBootstrap(seeds, n_boot=500, seed=0), "base", "steered", {"random": "control"}
    )
    assert t.strongest_control == "random" and t.lo > 0 and t.p < 0.05


def test_seeds_must_share_their_conditions() -> None:
    rng = np.random.default_rng(4)
    a, b = _seed(0.5, 0.5, rng), _seed(0.5, 0.5, rng)
    del b["steered"]
    with pytest.raises(EmdirError, match="seed 1 has different conditions.*steered"):
        SeedBootstrap([a, b])
    with pytest.raises(EmdirError, match="at least one seed"):
        SeedBootstrap([])
