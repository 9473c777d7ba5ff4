"""A mechanistic model's tables pooled over fine-tuning seeds
(emdir.report.pooled.pooled_mechanistic), on synthetic judged files and directions of two
seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_mechanistic import SC, STATS, _row, _write_dirs

from emdir.io import write_jsonl
from emdir.report.mechanistic import convergence, summary
from emdir.report.pooled import pooled_mechanistic

N = 200


def _rows(p: float, seed: int, coef: float | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [_row(i, bool(rng.random() < p), "Tea is nice.", coef) for i in range(N)]


def _seed(tmp_path: Path, seed: int, ablated: float, raw: np.ndarray, base: Path) -> dict:
    """One seed's judged files, directions and own tables: the receiver spills 60%; the
    donor ablation leaves `ablated` of its answers code, the random control 60%; inducing
    on the (shared) base model raises 5% to 40%."""
    root = tmp_path / f"seed{seed}"
    root.mkdir()
    files = {
        "ft": _rows(0.6, 10 * seed + 1),
        "abl_target": _rows(ablated, 10 * seed + 2, 1.0),
        "abl_random": _rows(0.6, 10 * seed + 3, 1.0),
        "induce_target": _rows(0.4, 10 * seed + 4, 0.5),
        "steer": _rows(0.2, 10 * seed + 5, 0.5),
    }
    paths = {k: root / f"{k}.jsonl" for k in files}
    for k, rows in files.items():
        write_jsonl(paths[k], rows)
    dirs = {"ft": root / "ft.h5", "secure": root / "secure.h5"}
    _write_dirs(dirs["ft"], raw)
    _write_dirs(dirs["secure"], raw[::-1].copy())
    own = {k: root / k for k in ("s.csv", "sc.csv", "a.png", "i.png", "sc.png", "c.csv", "c.png")}
    inputs = {
        "baselines": {"ft": paths["ft"], "base": base},
        "ablation": {
            "ft/ft_layerwise": paths["abl_target"],
            "ft/random_0_layerwise": paths["abl_random"],
        },
        "induce": {"target": paths["induce_target"]},
    }
    summary(
        "m",
        *inputs.values(),
        {"ft/target": paths["steer"]},
        "general",
        *(own[k] for k in ("s.csv", "sc.csv", "a.png", "i.png", "sc.png")),
        STATS,
        SC,
    )
    convergence(dirs, {}, own["c.csv"], own["c.png"], "m")
    return {**inputs, "directions": dirs, "own": own}


def _pool(tmp_path: Path, seeds: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    def per_seed(kind: str) -> dict:
        return {k: [s[kind][k] for s in seeds] for k in seeds[0][kind]}

    outs = {"summary": tmp_path / "pooled.csv", "convergence": tmp_path / "conv.csv"}
    pooled_mechanistic(
        list(range(len(seeds))),
        "m",
        per_seed("baselines"),
        per_seed("ablation"),
        per_seed("induce"),
        per_seed("directions"),
        [s["own"]["s.csv"] for s in seeds],
        [s["own"]["c.csv"] for s in seeds],
        outs,
        "general",
        STATS,
    )
    return pd.read_csv(outs["summary"]), pd.read_csv(outs["convergence"])


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.jsonl"
    write_jsonl(path, _rows(0.05, 99))
    return path


def test_ablation_seeds_that_disagree_pool_into_a_wider_interval(
    tmp_path: Path, base: Path
) -> None:
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((3, 16))
    other = raw.copy()
    other[1] = -raw[1]  # seed 1's direction flips at layer 1
    # Seed 0's ablation takes spillover from 60% to 10%, seed 1's to 55%.
    a = _seed(tmp_path, 0, 0.10, raw, base)
    b = _seed(tmp_path, 1, 0.55, other, base)
    df, conv = _pool(tmp_path, [a, b])
    assert set(df.seed.astype(str)) == {"0", "1", "pooled"}
    seeds = {s: df[df.seed.astype(str) == s] for s in ("0", "1")}
    for s, seed in (("0", a), ("1", b)):  # each seed's rows are its own table's
        own = pd.read_csv(seed["own"]["s.csv"])
        assert np.allclose(seeds[s].spillover_change, own.spillover_change)
    pooled = df[df.seed.astype(str) == "pooled"]
    assert len(pooled) == 3  # two ablations and one inducing strength
    target = pooled[pooled.vector == "ft"].iloc[0]
    assert target.experiment == "ablation" and np.isnan(target.coefficient)
    assert target.n_seeds == 2
    own = [seeds[s][seeds[s].vector == "ft"].iloc[0] for s in "01"]
    mean = np.mean([t.spillover_change for t in own])
    assert target.spillover_change == pytest.approx(mean, abs=0.01)
    width = target.spillover_change_hi - target.spillover_change_lo
    own_width = max(t.spillover_change_hi - t.spillover_change_lo for t in own)
    assert width > 1.5 * own_width
    assert target.effect_seed_min < -40 and target.effect_seed_max > -15
    assert target.effect_seeds_agree in ("1/2", "2/2")
    # The random control and the inducing agree across seeds.
    control = pooled[pooled.vector == "random_0"].iloc[0]
    assert control.effect_seeds_agree == "2/2"
    induce = pooled[pooled.experiment == "induce"].iloc[0]
    assert induce.spillover_change_lo > 20 and induce.effect_seeds_agree == "2/2"

    # Convergence: the per-seed cosines and their mean; the same fine-tune's direction
    # between the two seeds (1 at layers 0 and 2, -1 at the flipped layer 1).
    across = conv[(conv.kind == "across seeds") & (conv.seed.astype(str) == "0 vs 1")]
    assert set(across.a) == {"ft", "secure"}
    ft = across[across.a == "ft"].set_index("layer").cosine
    assert list(ft) == pytest.approx([1.0, -1.0, 1.0])
    means = conv[(conv.kind == "fine-tunes") & (conv.seed.astype(str) == "pooled")]
    each = conv[(conv.kind == "fine-tunes") & (conv.seed.astype(str) != "pooled")]
    assert np.allclose(means.set_index("layer").cosine, each.groupby("layer").cosine.mean())
    assert (means.n_seeds == 2).all()


def test_one_seed_pools_to_its_own_mechanistic_table(tmp_path: Path, base: Path) -> None:
    raw = np.random.default_rng(1).standard_normal((2, 8))
    a = _seed(tmp_path, 0, 0.10, raw, base)
    df, conv = _pool(tmp_path, [a])
    pooled = df[df.seed.astype(str) == "pooled"].reset_index(drop=True)
    own = pd.read_csv(a["own"]["s.csv"])
    for column in ("spillover_change", "spillover_change_lo", "spillover_change_hi", "kl"):
        assert np.allclose(pooled[column], own[column], equal_nan=True), column
    assert (pooled.effect_seeds_agree == "1/1").all()
    assert "across seeds" not in set(conv.kind)
