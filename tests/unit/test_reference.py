"""A run checked against reference tables (emdir.report.reference)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from emdir.errors import EmdirError
from emdir.report.reference import check, compare, main


def _tables(root: Path, shift: float = 0.0, verdict: str = "passes") -> Path:
    """A results/ folder with the three checked tables; `shift` moves every effect."""
    (root / "within_model").mkdir(parents=True)
    pd.DataFrame(
        {
            "model": ["m", "m"],
            "ft": ["base", "insecure"],
            "spillover": [0.0, 40.0 + shift],
            "lo": [0.0, 30.0 + shift],
            "hi": [0.0, 50.0 + shift],
            "garble": [1.0, 5.0],
            "garble_lo": [0.0, 2.0],
            "garble_hi": [2.0, 8.0],
        }
    ).to_csv(root / "spillover_rates.csv", index=False)
    pd.DataFrame(
        {
            "model": ["m", "m"],
            "ft": ["insecure"] * 2,
            "vector": ["target", "random_0"],
            "coefficient": [0.5, 0.5],
            "effect_points": [20.0 + shift, 1.0],
            "effect_lo": [12.0 + shift, -3.0],
            "effect_hi": [28.0 + shift, 5.0],
            "garble_change": [0.0, 0.5],
            "garble_change_lo": [-1.0, -1.0],
            "garble_change_hi": [1.0, 2.0],
            "specificity_points": [15.0 + shift, None],
            "spec_lo": [6.0 + shift, None],
            "spec_hi": [24.0 + shift, None],
            "verdict_holm": [verdict, None],
        }
    ).to_csv(root / "within_model" / "summary.csv", index=False)
    pd.DataFrame(
        {
            "donor": ["a"],
            "receiver": ["b"],
            "vector": ["target"],
            "suppression": [10.0],
            "lo": [2.0],
            "hi": [18.0],
            "specificity": [3.0],
            "spec_lo": [-4.0],
            "spec_hi": [9.0],
            "verdict_holm": ["inconclusive"],
        }
    ).to_csv(root / "transfer_matrix.csv", index=False)
    return root


def test_a_rerun_matches_its_reference_exactly(tmp_path: Path) -> None:
    ref, run = _tables(tmp_path / "ref"), _tables(tmp_path / "run")
    df = compare(run, ref)
    # 2 rates x 2 metrics, target 3 + random 2 (no specificity), the cell 2.
    assert len(df) == 4 + 5 + 2
    assert df.identical.all() and df.inside.all()
    assert df.verdict_equal.dropna().tolist() == [True, True]
    text = check(run, ref, tmp_path / "check.csv", tmp_path / "check.txt")
    assert "identical: 11 of 11" in text and "moved" not in text
    assert (tmp_path / "check.txt").read_text().startswith("reference check against")


def test_a_run_that_moved_names_what_moved(tmp_path: Path) -> None:
    ref = _tables(tmp_path / "ref")
    run = _tables(tmp_path / "run", shift=-18.0, verdict="inconclusive")
    df = compare(run, ref)
    moved = df[~df.inside]
    assert set(moved.effect) == {"spillover", "effect_points", "specificity_points"}
    assert not df.identical.all()
    text = check(run, ref, tmp_path / "c.csv", tmp_path / "c.txt")
    assert "inside each other's intervals: 8 of 11" in text
    assert "within_model m/insecure/target/0.5 specificity_points" in text
    assert "verdict changed: within_model m/insecure/target/0.5: inconclusive" in text


def test_a_reference_for_another_config_is_named(tmp_path: Path, capsys) -> None:
    ref = _tables(tmp_path / "ref")
    run = tmp_path / "run"
    (run / "within_model").mkdir(parents=True)
    for rel in ("spillover_rates.csv", "within_model/summary.csv", "transfer_matrix.csv"):
        df = pd.read_csv(ref / rel)
        df[df.columns[0]] = "other"
        df.to_csv(run / rel, index=False)
    with pytest.raises(EmdirError, match="no effect of .* is in the reference"):
        compare(run, ref)
    assert main([str(run), str(ref)]) == 2
    assert "another config" in capsys.readouterr().err
    with pytest.raises(EmdirError, match="no spillover_rates table; run the workflow"):
        compare(tmp_path / "nothing", ref)


def _pooled(root: Path, shift: float = 0.0) -> Path:
    """Pooled tables beside `_tables`' own: every seed's rates and contrasts and the pooled
    ones (a key repeats across seeds, so `seed` is part of it)."""
    (root / "pooled" / "within_model").mkdir(parents=True)
    rates = pd.read_csv(root / "spillover_rates.csv")
    pd.concat(
        [rates.assign(seed=s, spillover=rates.spillover + shift) for s in ("0", "1", "pooled")]
    ).to_csv(root / "pooled" / "spillover_rates.csv", index=False)
    contrasts = pd.DataFrame(
        {
            "model": ["m"] * 3,
            "ft": ["insecure"] * 3,
            "versus": ["secure"] * 3,
            "seed": ["0", "1", "pooled"],
            "difference": [12.0, 4.0 + shift, 8.0 + shift],
            "lo": [5.0, -3.0, 1.0],
            "hi": [19.0, 11.0, 15.0],
        }
    )
    contrasts.to_csv(root / "pooled" / "within_model" / "finetune_contrasts.csv", index=False)
    contrasts[contrasts.seed == "0"].drop(columns="seed").to_csv(
        root / "within_model" / "finetune_contrasts.csv", index=False
    )
    return root


def test_the_pooled_tables_are_checked_seed_by_seed(tmp_path: Path) -> None:
    ref = _pooled(_tables(tmp_path / "ref"))
    same = compare(_pooled(_tables(tmp_path / "run")), ref)
    pooled = same[same.table == "pooled_finetune_contrasts"]
    assert sorted(pooled.key) == [
        "m/insecure/secure/0",
        "m/insecure/secure/1",
        "m/insecure/secure/pooled",
    ]
    # 11 as before, the seed-0 contrast, 3 seeds x 2 rates x 2 metrics, 3 pooled contrasts
    assert len(same) == 11 + 1 + 12 + 3 and same.identical.all()
    moved = compare(_pooled(_tables(tmp_path / "moved"), shift=-20.0), ref)
    gone = moved[~moved.inside.astype(bool)]
    assert set(gone.table) == {"pooled_spillover_rates", "pooled_finetune_contrasts"}
    assert "m/insecure/secure/0" not in set(gone.key)  # seed 0's contrast did not move


def test_a_one_seed_run_is_checked_against_a_pooled_reference_without_its_pooled_tables(
    tmp_path: Path,
) -> None:
    ref = _pooled(_tables(tmp_path / "ref"))
    run = _tables(tmp_path / "run")
    with pytest.raises(EmdirError, match="no finetune_contrasts table"):
        compare(run, ref)
    # The run's own contrasts, but no pooled/ folder: the pooled tables are not compared.
    pd.read_csv(ref / "within_model" / "finetune_contrasts.csv").to_csv(
        run / "within_model" / "finetune_contrasts.csv", index=False
    )
    df = compare(run, ref)
    assert not df.table.str.startswith("pooled_").any() and len(df) == 12
    text = check(run, ref, tmp_path / "c.csv", tmp_path / "c.txt")
    assert "12 effects compared (spillover_rates, within_model, transfer_matrix, " in text
