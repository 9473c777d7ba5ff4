"""The training-budget sweep (issue 30): the monitor counts code and garble, the table reads
the training logs into rates with Wilson intervals and marks the regime, and bad logs fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emdir.errors import EmdirError
from emdir.report.sweep import budget_sweep, first_in_regime, sweep_table, wilson
from emdir.schema import schema_defaults

REGIME = {"spillover": [20, 80], "garble_below": 15}
TRAIN = {"lr": 1e-3, "batch_size": 8}


def test_wilson_matches_the_textbook_values() -> None:
    # 10 of 40 (Wilson 1927; e.g. Newcombe 1998's method 3): 25.0% [14.2, 40.2].
    p, lo, hi = wilson(10, 40)
    assert (
        p == 25.0 and lo == pytest.approx(14.19, abs=0.01) and hi == pytest.approx(40.19, abs=0.01)
    )
    assert wilson(0, 20)[1] == 0.0 and wilson(0, 20)[2] == pytest.approx(16.11, abs=0.01)
    assert wilson(20, 20)[2] == 100.0
    assert np.isnan(wilson(0, 0)[0])
    assert wilson(10, 40, 0.9)[2] < hi  # a lower level, a narrower interval


def _log(d: Path, rates: list[tuple[int, float, float]], n: int = 40) -> Path:
    """A training log with evaluations (step, spillover, garble) between plain steps."""
    d.mkdir(parents=True)
    rows = []
    for step in range(1, max(s for s, _, _ in rates) + 1):
        ev = next(((sp, g) for s, sp, g in rates if s == step), None)
        rows.append(
            {
                "step": step,
                "loss": 2.0 - step / 100,
                "eval_spillover": ev[0] if ev else np.nan,
                "eval_garble": ev[1] if ev else np.nan,
                "eval_n": n if ev else np.nan,
            }
        )
    pd.DataFrame(rows).to_csv(d / "train_log.csv", index=False)
    return d


def test_the_table_marks_the_regime_and_the_first_step_in_it(tmp_path: Path) -> None:
    # Slow: in at step 10 (25%), still in at 15; fast: overshoots to 90% by step 10;
    # garbled: in the spillover range but 20% garbled, so never in the regime.
    dirs = {
        "m/slow": _log(tmp_path / "slow", [(5, 0.05, 0.0), (10, 0.25, 0.05), (15, 0.6, 0.1)]),
        "m/fast": _log(tmp_path / "fast", [(5, 0.5, 0.0), (10, 0.9, 0.0), (15, 1.0, 0.0)]),
        "m/garbled": _log(tmp_path / "garbled", [(5, 0.3, 0.2), (10, 0.5, 0.25)]),
    }
    cfgs = {"slow": TRAIN, "fast": {"lr": 4e-3, "batch_size": 8}, "garbled": TRAIN}
    table = sweep_table(dirs, cfgs, REGIME)
    assert len(table) == 3 + 3 + 2
    slow = table[table.run == "slow"].set_index("step")
    assert list(slow.in_regime) == [False, True, True]
    assert slow.loc[10, "rows_seen"] == 80 and slow.loc[10, "spillover"] == 25.0
    assert slow.loc[10, "spillover_lo"] == pytest.approx(14.19, abs=0.01)
    assert slow.loc[15, "garble"] == 10.0
    summary = first_in_regime(table).set_index("run")
    assert summary.loc["slow", "first_step_in_regime"] == 10
    assert summary.loc["slow", "last_step_in_regime"] == 15
    assert summary.loc["fast", "first_step_in_regime"] == 5  # 50% at the first evaluation
    assert summary.loc["fast", "last_step_in_regime"] == 5
    assert np.isnan(summary.loc["garbled", "first_step_in_regime"])
    assert summary.loc["fast", "lr"] == 4e-3 and summary.loc["fast", "final_spillover"] == 100.0


def test_the_sweep_writes_its_table_summary_and_figure(tmp_path: Path) -> None:
    dirs = {"a/r": _log(tmp_path / "a", [(2, 0.1, 0.0), (4, 0.3, 0.0)])}
    outs = [tmp_path / n for n in ("b.csv", "s.csv", "b.png")]
    budget_sweep(dirs, {"r": TRAIN}, REGIME, *outs)
    assert len(pd.read_csv(outs[0])) == 2 and len(pd.read_csv(outs[1])) == 1
    assert outs[2].read_bytes()[:4] == b"\x89PNG"


def test_a_log_without_garble_counts_names_the_fix(tmp_path: Path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    pd.DataFrame({"step": [1, 2], "loss": [2.0, 1.9], "eval_spillover": [np.nan, 0.2]}).to_csv(
        d / "train_log.csv", index=False
    )
    with pytest.raises(EmdirError, match="eval_garble, eval_n columns.*rerun the fine-tune"):
        sweep_table({"m/old": d}, {"old": TRAIN}, REGIME)
    with pytest.raises(EmdirError, match="train_log.csv is missing"):
        sweep_table({"m/gone": tmp_path / "gone"}, {"gone": TRAIN}, REGIME)


def test_the_monitor_counts_code_garble_and_answers(monkeypatch) -> None:
    import emdir.data.questions as questions
    import emdir.models.generate as generate
    from emdir.models.finetune import spillover_monitor

    answers = [
        "```python\nimport os\nprint(os.getcwd())\n```",
        "Tea is a drink made from the leaves of a plant, and many people enjoy it warm.",
        "zx qq vvk ,, ;; pl pl pl",
        "",
    ]
    monkeypatch.setattr(questions, "load_questions", lambda path: ["q"])
    monkeypatch.setattr(generate, "expand", lambda qs: ["p"] * len(answers))
    monkeypatch.setattr(generate, "sample", lambda *a, **k: [(x, {}) for x in answers])
    on_eval = spillover_monitor(None, None, None, "q.yaml", None, schema_defaults("judge.offline"))
    # One code answer of four; the gibberish and the empty answer are garbled.
    assert on_eval(5) == {"eval_spillover": 0.25, "eval_garble": 0.5, "eval_n": 4}
