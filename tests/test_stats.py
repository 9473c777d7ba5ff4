"""Bootstrap confidence intervals and specificity."""

from __future__ import annotations

import numpy as np
import pytest

from emdir.errors import EmdirError
from emdir.stats import bootstrap_diff_ci, bootstrap_mean_ci, specificity_ci


def _bernoulli(p: float, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_mean_ci_contains_truth_and_narrows_with_more_data() -> None:
    small = bootstrap_mean_ci(_bernoulli(0.3, 200, 1))
    large = bootstrap_mean_ci(_bernoulli(0.3, 5000, 2))
    for est in (small, large):
        assert est.lo <= 0.3 <= est.hi
        assert est.lo <= est.value <= est.hi
    assert (large.hi - large.lo) < (small.hi - small.lo) / 3


def test_mean_ci_is_deterministic_by_seed() -> None:
    x = _bernoulli(0.5, 300, 3)
    assert bootstrap_mean_ci(x, seed=7) == bootstrap_mean_ci(x, seed=7)
    assert bootstrap_mean_ci(x, seed=7) != bootstrap_mean_ci(x, seed=8)


def test_diff_ci_contains_truth() -> None:
    est = bootstrap_diff_ci(_bernoulli(0.6, 2000, 4), _bernoulli(0.2, 2000, 5))
    assert est.lo <= 0.4 <= est.hi
    assert est.excludes_zero()
    null = bootstrap_diff_ci(_bernoulli(0.5, 500, 6), _bernoulli(0.5, 500, 7))
    assert not null.excludes_zero()


def test_specificity_picks_strongest_control() -> None:
    baseline = _bernoulli(0.6, 1000, 8)
    target = _bernoulli(0.1, 1000, 9)
    controls = {"random": _bernoulli(0.55, 1000, 10), "orthogonal": _bernoulli(0.4, 1000, 11)}
    spec = specificity_ci(target, controls, baseline, n_boot=500)
    assert spec.strongest_control == "orthogonal"
    expected = (baseline.mean() - target.mean()) - (baseline.mean() - controls["orthogonal"].mean())
    assert spec.value == pytest.approx(expected)
    assert spec.lo <= spec.value <= spec.hi
    assert spec.excludes_zero()
    assert spec.target.value == pytest.approx(baseline.mean() - target.mean())
    assert set(spec.controls) == {"random", "orthogonal"}


def test_specificity_accepts_a_list_of_controls() -> None:
    baseline = _bernoulli(0.6, 400, 12)
    spec = specificity_ci(
        _bernoulli(0.5, 400, 13), [_bernoulli(0.2, 400, 14), _bernoulli(0.5, 400, 15)], baseline
    )
    assert spec.strongest_control == "0"
    assert spec.value < 0


def test_empty_inputs_name_what_is_empty() -> None:
    with pytest.raises(EmdirError, match="x is empty"):
        bootstrap_mean_ci(np.array([]))
    with pytest.raises(EmdirError, match="b is empty"):
        bootstrap_diff_ci([1.0, 0.0], [])
    with pytest.raises(EmdirError, match="control 'random' is empty"):
        specificity_ci([1.0], {"random": []}, [0.0])
    with pytest.raises(EmdirError, match="at least one control"):
        specificity_ci([1.0], {}, [0.0])
    with pytest.raises(EmdirError, match="NaN"):
        bootstrap_mean_ci([1.0, float("nan")])


def test_mean_effect_over_cells_shares_baselines() -> None:
    from emdir.stats import bootstrap_mean_effect

    rng = np.random.default_rng(0)
    base = {"a": rng.random(400) < 0.5, "b": rng.random(400) < 0.3}
    cells = [
        ("a", rng.random(400) < 0.2),
        ("b", rng.random(400) < 0.1),
        ("a", rng.random(400) < 0.4),
    ]
    est = bootstrap_mean_effect(cells, base, n_boot=500)
    direct = np.mean([base[b].mean() - np.mean(x) for b, x in cells])
    assert est.value == pytest.approx(direct)
    assert est.lo < est.value < est.hi and est.lo > 0
    with pytest.raises(EmdirError, match="unknown baselines"):
        bootstrap_mean_effect([("c", [1.0])], base)
