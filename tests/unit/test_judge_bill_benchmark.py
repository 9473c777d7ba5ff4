"""run_all.py's rows for issue 19's two whole-workflow targets: config/paper.yaml's judge bill
(read from paper_estimate.py --judge-only, in both request modes) and the whole default run
(skipped under --quick). No timing is asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PAPER = BENCHMARKS.parent / "config" / "paper.yaml"


def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module
    spec.loader.exec_module(module)
    return module


def test_the_judge_bill_rows_price_both_modes_and_hold_the_configs_to_the_target() -> None:
    ra = run_all()
    rows = ra.judge_bill(True, 300.0, False)
    mode = yaml.safe_load(PAPER.read_text(encoding="utf-8"))["judge"]["openai"]["requests"]
    assert [r.figure.split("requests: ")[1].split()[0] for r in rows] == [
        mode,
        {"economical": "full", "full": "economical"}[mode],
    ]
    config_row, beside = rows
    dollars = [float(r.value.split()[0].lstrip("$").replace(",", "")) for r in rows]
    # Only the config's own mode is held to the target; the paper-faithful one costs more.
    assert config_row.status == ("ok" if dollars[0] <= ra.JUDGE_BILL_TARGET else "MISSED")
    assert beside.status == "info" and dollars[1] > dollars[0] > 0


def test_the_whole_default_run_is_not_part_of_quick() -> None:
    (row,) = run_all().default_run(True, 300.0, False)
    assert row.status == "skipped" and row.target == "<= 10 min"
