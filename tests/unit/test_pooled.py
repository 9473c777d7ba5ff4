"""Within-model tables pooled over fine-tuning seeds (emdir.report.pooled), on synthetic
judged files of two seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from test_aggregate import STATS, STEER, _directions, _outs, _rows, _write, summarise

from emdir.report.pooled import pooled_finetunes, pooled_within_model

KEY = ["model", "ft", "vector", "coefficient"]


def _seed(tmp_path: Path, seed: int, target_code: float, base: Path | None = None) -> dict:
    """One seed's judged files and its own within-model tables. The base model's answers
    are shared (`base`); the target leaves `target_code` of the answers code."""
    gens = {"m/insecure": _rows(0.45, None, 10 * seed + 2), "m/secure": _rows(0.15, None, 3)}
    steer = {}
    for vector, p_code in (("target", target_code), ("random_0", 0.44), ("orthogonal", 0.43)):
        steer[f"m/insecure/{vector}"] = _rows(p_code, None, 10 * seed + 4, 0.5) + _rows(
            p_code, None, 10 * seed + 5, 1.0
        )
    steer["m/secure/target"] = _rows(0.12, None, 6, 0.5) + _rows(0.1, None, 7, 1.0)
    root = tmp_path / f"seed{seed}"
    paths = _write(root, gens, steer)
    paths["g"]["m/base"] = base or _write(root, {"m/base": _rows(0.05, None, 1)}, {})["g"]["m/base"]
    dirs = {"m/insecure": root / "insecure.h5", "m/secure": root / "secure.h5"}
    for p in dirs.values():
        _directions(p)
    outs = _outs(root)
    summarise(paths["g"], paths["s"], dirs, outs)
    return {**paths, "d": dirs, "outs": outs}


def _pool(tmp_path: Path, seeds: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    def per_seed(kind: str) -> dict:
        return {k: [s[kind][k] for s in seeds] for k in seeds[0][kind]}

    outs = {
        "summary": tmp_path / "pooled.csv",
        "spillover": tmp_path / "rates.csv",
        "contrasts": tmp_path / "contrasts.csv",
        "steering": tmp_path / "steering.png",
        "comparison": tmp_path / "comparison.csv",
        "comparison_png": tmp_path / "comparison.png",
    }
    pooled_finetunes(
        list(range(len(seeds))),
        per_seed("g"),
        [s["outs"]["spillover"] for s in seeds],
        outs,
        STEER["question_set"],
        STATS,
        "insecure",
    )
    pooled_within_model(
        list(range(len(seeds))),
        per_seed("g"),
        per_seed("s"),
        per_seed("d"),
        [s["outs"]["summary"] for s in seeds],
        outs["spillover"],
        outs,
        STEER,
        STATS,
        "insecure",
    )
    return pd.read_csv(outs["summary"]), pd.read_csv(outs["spillover"])


def test_seeds_that_disagree_pool_into_a_wider_interval(tmp_path: Path) -> None:
    # Seed 0's target suppresses spillover (45% -> 10%), seed 1's barely (45% -> 42%).
    a = _seed(tmp_path, 0, 0.10)
    b = _seed(tmp_path, 1, 0.42, base=a["g"]["m/base"])
    df, rates = _pool(tmp_path, [a, b])
    assert set(df["seed"].astype(str)) == {"0", "1", "pooled"}
    pooled = df[df.seed.astype(str) == "pooled"].set_index(KEY).sort_index()
    seeds = {s: df[df.seed.astype(str) == s].set_index(KEY) for s in ("0", "1")}
    assert len(pooled) == len(seeds["0"]) == len(seeds["1"]) == 2 * 3 + 2
    row = ("m", "insecure", "target", 1.0)
    # The pooled effect is the mean of the seeds' (each seed weighs the same) ...
    mean = (seeds["0"].loc[row, "effect_points"] + seeds["1"].loc[row, "effect_points"]) / 2
    assert np.isclose(pooled.loc[row, "effect_points"], mean, atol=0.01)  # 4 digits
    # ... and its interval carries their disagreement: wider than either seed's own.
    width = pooled.loc[row, "effect_hi"] - pooled.loc[row, "effect_lo"]
    own = max(s.loc[row, "effect_hi"] - s.loc[row, "effect_lo"] for s in seeds.values())
    assert width > 1.5 * own
    assert pooled.loc[row, "n_seeds"] == 2
    assert pooled.loc[row, "effect_seed_min"] < 5 < 25 < pooled.loc[row, "effect_seed_max"]
    assert pooled.loc[row, "effect_seeds_agree"] in ("0/2", "1/2")
    assert pooled.loc[row, "verdict_seeds_agree"].endswith("/2")
    # Holm across models at the pooled read strength, as each seed's table does.
    assert pooled["verdict_holm"].notna().sum() == 1
    # Rates: the shared base answers are one draw; the fine-tunes are pooled over both seeds.
    r = rates[rates.seed.astype(str) == "pooled"].set_index(["model", "ft"])
    assert r.loc[("m", "base"), "n_seeds"] == 1 and r.loc[("m", "insecure"), "n_seeds"] == 2
    assert len(rates) == 3 * 3
    # The paper comparison reads the pooled rows: suppression at the pooled read strength,
    # and the held-out separation averaged over the seeds' directions.
    cmp = pd.read_csv(tmp_path / "comparison.csv").set_index("metric")
    read = pooled[pooled["read"].astype(bool)].loc[("m", "insecure", "target")]
    suppression = cmp.loc["spillover suppression (points)"]
    assert suppression.ours == read.effect_points.iloc[0]
    assert (suppression.ours_lo, suppression.ours_hi) == (
        read.effect_lo.iloc[0],
        read.effect_hi.iloc[0],
    )
    own = pd.read_csv(a["outs"]["comparison"]).set_index("metric")
    sep = "separation accuracy (%)"
    assert np.isclose(cmp.loc[sep, "ours"], own.loc[sep, "ours"])  # the same directions
    assert (cmp.seed == "pooled").all() and (cmp.n_seeds == 2).all()


def test_the_pooled_dose_response_shows_every_seed_beside_the_pooled_line(
    tmp_path: Path, monkeypatch
) -> None:
    import emdir.report.figures_steering as fs

    drawn: dict[str, list] = {}

    def keep(fig, out) -> None:
        ax = fig.axes[0]  # spillover of model m
        drawn["lines"] = {ln.get_label(): ln.get_xydata() for ln in ax.lines}
        drawn["seeds"] = [c.get_offsets() for c in ax.collections if c.get_label() != ""]
        drawn["labels"] = [c.get_label() for c in ax.collections]

    a = _seed(tmp_path, 0, 0.10)
    b = _seed(tmp_path, 1, 0.42, base=a["g"]["m/base"])
    monkeypatch.setattr(fs, "save_png", keep)
    df, rates = _pool(tmp_path, [a, b])
    per_seed = {s: df[df.seed.astype(str) == s].set_index(KEY) for s in ("0", "1")}
    # The pooled target line ends at the pooled spillover at coefficient 1 ...
    pooled = df[df.seed.astype(str) == "pooled"].set_index(KEY).sort_index()
    row = ("m", "insecure", "target", 1.0)
    assert np.isclose(drawn["lines"]["target"][-1][1], pooled.loc[row, "spillover"], atol=0.01)
    # ... and beside it, hollow markers at each seed's own values, unsteered ones at 0.
    target = next(
        o for o, lab in zip(drawn["seeds"], drawn["labels"], strict=True) if "seed" in lab
    )
    ys = {round(float(y), 6) for x, y in target if x == 1.0}
    assert ys == {round(float(per_seed[s].loc[row, "spillover"]), 6) for s in ("0", "1")}
    own = rates[(rates.ft == "insecure") & (rates.seed.astype(str) != "pooled")]
    assert {round(float(y), 6) for x, y in target if x == 0.0} == {
        round(float(v), 6) for v in own["spillover"]
    }
    assert len(target) == 2 * 3  # two seeds x (unsteered + two coefficients)


def test_one_seed_pools_to_its_own_table(tmp_path: Path) -> None:
    a = _seed(tmp_path, 0, 0.10)
    df, _ = _pool(tmp_path, [a])
    pooled = df[df.seed.astype(str) == "pooled"].reset_index(drop=True)
    own = pd.read_csv(a["outs"]["summary"])
    for column in ("effect_points", "effect_lo", "effect_hi", "specificity_points", "spec_lo"):
        assert np.allclose(pooled[column], own[column], equal_nan=True), column
    assert (pooled["effect_seeds_agree"] == "1/1").all()


def test_the_fine_tune_contrasts_pool_over_seeds(tmp_path: Path) -> None:
    """Each seed's contrasts beside the pooled ones: the pooled difference is the mean of the
    seeds' (the base answers shared), and one seed pools to its own table."""
    a = _seed(tmp_path, 0, 0.10)
    b = _seed(tmp_path, 1, 0.42, base=a["g"]["m/base"])
    _pool(tmp_path, [a, b])
    df = pd.read_csv(tmp_path / "contrasts.csv")
    df["seed"] = df["seed"].astype(str)
    key = ["model", "ft", "versus"]
    pooled = df[df.seed == "pooled"].set_index(key)
    seeds = [df[df.seed == s].set_index(key) for s in ("0", "1")]
    assert len(pooled) == len(seeds[0]) == 3  # insecure - base, secure - base, insecure - secure
    mean = (seeds[0]["difference"] + seeds[1]["difference"]) / 2
    # (the tables are written to 4 significant digits)
    assert np.allclose(pooled["difference"], mean.loc[pooled.index], atol=0.01)
    assert (pooled["n_seeds"] == 2).all()
    assert set(pooled["seeds_agree"]) <= {"0/2", "1/2", "2/2"}
    assert pooled.loc[("m", "insecure", "base"), "seeds_agree"] == "2/2"
    own = pd.read_csv(a["outs"]["contrasts"]).set_index(key)
    assert np.allclose(seeds[0]["difference"], own.loc[seeds[0].index, "difference"], atol=0.01)
    (tmp_path / "one").mkdir()
    _pool(tmp_path / "one", [a])
    one = pd.read_csv(tmp_path / "one" / "contrasts.csv")
    one = one[one.seed.astype(str) == "pooled"].set_index(key)
    for column in ("difference", "lo", "hi"):
        assert np.allclose(one[column], own.loc[one.index, column], atol=0.01), column


def _grid_seed(tmp_path: Path, seed: int, p_target: float) -> dict:
    """One seed's 2 x 2 grid files and its own grid table: donor a's mapped direction
    leaves `p_target` of b's answers code (b's unsteered: 50%)."""
    from emdir.io import write_jsonl
    from emdir.report.transfer import transfer_matrix

    root = tmp_path / f"grid{seed}"
    models, files = ["a", "b"], {"baselines": {}, "cells": {}}
    for k, r in enumerate(models):
        files["baselines"][r] = root / f"base_{r}.jsonl"
        write_jsonl(files["baselines"][r], _rows(0.5, None, 100 * seed + k))
        for j, d in enumerate(models):
            for vector, p in (("target", p_target if d != r else 0.45), ("random_0", 0.48)):
                key = f"{d}__{r}/{vector}"
                files["cells"][key] = root / f"{d}_{r}_{vector}.jsonl"
                write_jsonl(files["cells"][key], _rows(p, None, 100 * seed + 10 * k + j, 0.5))
    files["csv"] = root / "grid.csv"
    transfer_matrix(
        files["baselines"],
        files["cells"],
        files["csv"],
        root / "grid.png",
        {"coefficient": 0.5, "behaviour": "spillover"},
        STATS,
    )
    return files


def test_the_grid_pools_over_seeds_with_agreement_per_cell(tmp_path: Path) -> None:
    from emdir.report.pooled import pooled_transfer_matrix

    seeds = [_grid_seed(tmp_path, 0, 0.1), _grid_seed(tmp_path, 1, 0.45)]

    def per_seed(kind: str) -> dict:
        return {k: [s[kind][k] for s in seeds] for k in seeds[0][kind]}

    out = tmp_path / "pooled.csv"
    pooled_transfer_matrix(
        [0, 1],
        per_seed("baselines"),
        per_seed("cells"),
        {},
        {},
        [s["csv"] for s in seeds],
        out,
        tmp_path / "pooled.png",
        {"coefficient": 0.5, "behaviour": "spillover"},
        STATS,
        tmp_path / "topology.csv",
    )
    df = pd.read_csv(out)
    assert set(df.seed.astype(str)) == {"0", "1", "pooled"} and len(df) == 3 * 4 * 2
    key = ["donor", "receiver", "vector"]
    cell = ("a", "b", "target")
    rows = {s: df[df.seed.astype(str) == s].set_index(key).loc[cell] for s in ("0", "1", "pooled")}
    assert np.isclose(
        rows["pooled"].suppression, (rows["0"].suppression + rows["1"].suppression) / 2, atol=0.01
    )
    widest = max(rows[s].hi - rows[s].lo for s in ("0", "1"))
    assert rows["pooled"].hi - rows["pooled"].lo > 1.5 * widest
    assert rows["pooled"].effect_seeds_agree in ("0/2", "1/2")
    assert rows["pooled"].family == "transfer" and rows["pooled"].family_size == 2
    assert (tmp_path / "pooled.png").read_bytes()[:4] == b"\x89PNG"
    # Donor strength and receiver susceptibility over the pooled off-diagonal cells: donor a's
    # one off-diagonal cell (a -> b) is the pooled target suppression of that cell.
    topo = pd.read_csv(tmp_path / "topology.csv").set_index(["role", "model"])
    donor = topo.loc[("donor", "a")]
    assert donor.cells == 1 and donor.n_seeds == 2 and (topo.seed == "pooled").all()
    assert np.isclose(donor.mean_suppression, rows["pooled"].suppression, atol=0.01)
