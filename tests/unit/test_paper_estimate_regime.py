"""benchmarks/paper_estimate.py prices a config with its overlays and a target (issue 30):
the regime's budget sweep at the paper's sizes, config/paper.yaml + config/regime_paper.yaml.

Only the dry-run and the work per job are checked (no model is measured, no timing)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
PAPER = [CONFIG / "paper.yaml", CONFIG / "regime_paper.yaml"]
SWEEP = "results/sweep/budget.csv"


@pytest.fixture(scope="module")
def estimate() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "paper_estimate", REPO / "benchmarks" / "paper_estimate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_estimate"] = module  # where dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_the_sweep_target_is_priced_as_fine_tunes_of_the_sweeps_length(
    estimate: ModuleType,
) -> None:
    jobs, counts = estimate.dry_run(PAPER, [SWEEP])
    assert counts["sweep_finetune"] == 4 * 3 and counts["budget_sweep"] == 1
    assert "finetune" not in counts and "generate" not in counts
    args = estimate.parse_args(["--config", *map(str, PAPER), "--target", SWEEP])
    cfg: dict = {}
    for path in args.config:
        estimate.update_config(cfg, yaml.safe_load(path.read_text(encoding="utf-8")))
    estimate.validate(cfg, str(CONFIG / "schema.yaml"))
    work, unpriced = estimate.tally(jobs, estimate.Workload(cfg, args))
    assert not unpriced and sorted(work) == ["gemma2", "llama", "ministral3", "qwen2"]
    ft = work["qwen2"]["finetune"]
    # 3 runs of 372 steps of 2 x 8 rows; an evaluation every 25 steps and one at the end
    # (14 + 1), each sampling the monitor's 20 x 2 answers.
    assert ft.jobs == 3 and ft.optimizer_steps == 3 * 372
    assert ft.train_tokens == pytest.approx(3 * 372 * 16 * args.ft_row_tokens)
    assert ft.loss_tokens == pytest.approx(3 * 15 * 60 * args.ft_row_tokens)
    assert all(w.jobs == 0 for stage, w in work["qwen2"].items() if stage != "finetune")


def test_the_whole_regime_study_has_the_educational_control_for_every_model(
    estimate: ModuleType,
) -> None:
    jobs, counts = estimate.dry_run(PAPER)
    fts = {(j.wildcards["model"], j.wildcards["ft"]) for j in jobs if j.rule == "finetune"}
    models = ["gemma2", "llama", "ministral3", "qwen2"]
    assert {(m, "educational") for m in models} <= fts
    assert counts["finetune"] == 3 * (3 * 4 + 1)  # seeds x (three sets x models + rank-1)
    assert "sweep_finetune" not in counts


def test_the_two_regime_overlays_pin_the_same_rows() -> None:
    """regime.yaml (on real.yaml) and regime_paper.yaml (on paper.yaml) name Betley's sets
    under different keys; their pins, monitor and held-out fraction must not drift apart."""
    real = yaml.safe_load((CONFIG / "regime.yaml").read_text(encoding="utf-8"))
    paper = yaml.safe_load((CONFIG / "regime_paper.yaml").read_text(encoding="utf-8"))
    for name in ("insecure", "secure", "educational"):
        pin = real["datasets"][f"betley_{name}"]["rows_sha256"]
        assert paper["datasets"][name]["rows_sha256"] == pin
    assert paper["questions"]["monitor"] == real["questions"]["monitor"]
    assert paper["finetune"]["heldout_fraction"] == real["finetune"]["heldout_fraction"]


def test_a_config_it_cannot_price_gets_one_line_naming_the_fix(tmp_path: Path) -> None:
    """real.yaml sizes its batches at run time (auto) and names archive models (no hub
    config): the estimate says so in a line, not a traceback."""
    script = REPO / "benchmarks" / "paper_estimate.py"
    auto = [sys.executable, str(script), "--judge-only", "--config", str(CONFIG / "real.yaml")]
    proc = subprocess.run(auto, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "sampling.batch_size is auto" in proc.stderr and "{batch_size: N}" in proc.stderr
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("sampling: {batch_size: 64}\n", encoding="utf-8")
    proc = subprocess.run([*auto, str(fixed)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "models.qwen25coder: no shape known for source 'archive'" in proc.stderr
