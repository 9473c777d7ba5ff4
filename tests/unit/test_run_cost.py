"""benchmarks/run_cost.py prices a config's planned jobs from a run's own benchmark files
(issue 30: what the regime study costs on this machine and what dominates it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from emdir.dryrun import Job
from emdir.errors import EmdirError

REPO = Path(__file__).resolve().parents[2]
HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_cost", REPO / "benchmarks" / "run_cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_cost"] = module
    spec.loader.exec_module(module)
    return module


def bench(run: Path, rel: str, wall: float, cpu: float) -> None:
    path = run / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + f"{wall}\t0:00:00\t1\t1\t1\t1\t0\t0\t99\t{cpu}\n")


def job(rule: str, model: str, bench_path: str | None) -> Job:
    return Job(rule, {"model": model}, [], bench_path)


def test_each_job_is_priced_by_its_own_file_then_another_seed_then_its_rule(
    cost: ModuleType,
) -> None:
    measured = {
        "benchmarks/out/finetune/q/insecure.tsv": (120.0, 100.0),
        "benchmarks/out/seed1/finetune/q/insecure.tsv": (90.0, 80.0),
        "benchmarks/out/generate/q/base.tsv": (10.0, 9.0),
        "benchmarks/out/generate/q/insecure.tsv": (30.0, 20.0),
    }
    jobs = [
        job("finetune", "q", "benchmarks/out/finetune/q/insecure.tsv"),
        job("finetune", "q", "benchmarks/out/seed2/finetune/q/insecure.tsv"),
        job("finetune", "q", "benchmarks/out/seed2/finetune/q/secure.tsv"),
        job("generate", "q", "benchmarks/out/seed1/generate/q/secure.tsv"),
        job("generate", "q", "benchmarks/out/generate/q/insecure.tsv"),
        job("generate", "q", "benchmarks/out/generate/q/base.tsv"),
        job("finetune", "big", "benchmarks/out/finetune/big/insecure.tsv"),
        job("directions", "q", None),
    ]
    rows = cost.price(jobs, measured)
    got = [(r["source"], r["cpu_s"], r["wall_s"]) for r in rows]
    assert got == [
        (cost.MEASURED, 100.0, 120.0),
        # seed 2 from seeds 0 and 1 of the same job: their median
        (cost.OTHER_SEED, 90.0, 105.0),
        # another fine-tune of the same model: the median of the rule's measured files on it
        (cost.SAME_RULE, 90.0, 105.0),
        (cost.SAME_RULE, 14.5, 20.0),
        (cost.MEASURED, 20.0, 30.0),
        (cost.MEASURED, 9.0, 10.0),
        # nothing of the rule on this model: not priced at all
        (cost.UNMEASURED, None, None),
    ]
    table = cost.by_rule(rows)
    assert [e["rule"] for e in table] == ["finetune", "generate"]
    assert table[0][cost.UNMEASURED] == 1 and table[0][cost.OTHER_SEED] == 1
    assert table[0]["cpu_h"] == pytest.approx((100 + 90 + 90) / 3600)


def test_seedless_drops_only_the_seed_segment(cost: ModuleType) -> None:
    assert (
        cost.seedless("benchmarks/out/seed12/steering/q/x.tsv") == "benchmarks/out/steering/q/x.tsv"
    )
    assert (
        cost.seedless("benchmarks/out/steering/seed1/x.tsv")
        == "benchmarks/out/steering/seed1/x.tsv"
    )


def test_a_malformed_benchmark_file_is_named(cost: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "benchmarks" / "out" / "finetune" / "q" / "x.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("s\th:m:s\nnot a number\t0\n")
    with pytest.raises(EmdirError, match=r"x\.tsv: not a Snakemake benchmark file"):
        cost.measured_runs(tmp_path)
    with pytest.raises(EmdirError, match="no benchmarks/out/"):
        cost.measured_runs(tmp_path / "elsewhere")


def test_the_default_config_is_priced_from_a_runs_files(
    cost: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    bench(run, "benchmarks/out/finetune/gemma2/insecure.tsv", 70.0, 60.0)
    bench(run, "benchmarks/out/finetune/gemma2/secure.tsv", 50.0, 40.0)
    bench(run, "benchmarks/out/generate/qwen2/base.tsv", 12.0, 6.0)
    out_json = tmp_path / "cost.json"
    code = cost.main(
        [
            "--run",
            str(run),
            "--config",
            str(REPO / "config" / "config.yaml"),
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    rows = json.loads(out_json.read_text())["jobs"]
    gemma_ft = {
        r["benchmark"]: r for r in rows if r["rule"] == "finetune" and r["model"] == "gemma2"
    }
    assert gemma_ft["benchmarks/out/finetune/gemma2/insecure.tsv"]["source"] == cost.MEASURED
    # the default's other gemma2 fine-tunes (educational, rank1): the median of the two measured
    others = [
        r for b, r in gemma_ft.items() if b.rsplit("/", 1)[1] not in {"insecure.tsv", "secure.tsv"}
    ]
    assert len(others) == 2
    assert all(r["source"] == cost.SAME_RULE and r["cpu_s"] == 50.0 for r in others)
    llama_ft = [r for r in rows if r["rule"] == "finetune" and r["model"] == "llama"]
    assert llama_ft and all(r["source"] == cost.UNMEASURED for r in llama_ft)
    total = sum(r["cpu_s"] for r in rows if r["cpu_s"] is not None) / 3600
    assert "dominated by finetune" in printed
    assert f"at least {total / 2:.2f} h of wall clock on 2 idle cores" in printed
    assert "UNMEASURED (left out, so the total is a lower bound)" in printed


def test_remaining_prices_nothing_when_the_run_is_done(
    cost: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--remaining dry-runs the run directory itself; an empty plan is priced at zero."""
    run = tmp_path / "run"
    bench(run, "benchmarks/out/finetune/qwen2/insecure.tsv", 70.0, 60.0)
    done = run / "resources" / "questions" / "general.yaml"
    done.parent.mkdir(parents=True)
    done.write_text("built\n")
    args = ["--run", str(run), "--remaining", "--target", "resources/questions/general.yaml"]
    code = cost.main([*args, "--config", str(REPO / "config" / "config.yaml")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "what is left in" in printed.out and "at least 0.00 h" in printed.out
    # from nothing, the same target is one job of a rule that loads no model
    code = cost.main([*args[:2], *args[3:], "--config", str(REPO / "config" / "config.yaml")])
    printed = capsys.readouterr()
    assert "a run from nothing" in printed.out
    assert "not priced (no benchmark file measured): 1 jobs (questions 1)" in printed.out


def test_jobs_the_dry_run_only_counts_are_priced_at_their_rules_median(cost: ModuleType) -> None:
    """The judge's rules print a message instead of their files: their jobs are counted, and
    priced at the median of the rule's measured files over any seed and model."""
    measured = {
        "benchmarks/out/judge/q/insecure.tsv": (30.0, 20.0),
        "benchmarks/out/seed1/judge/q/secure.tsv": (50.0, 40.0),
        "benchmarks/out/judge_steering/q/insecure.tsv": (400.0, 300.0),
    }
    counts = {"judge": 3, "judge_steering": 2, "judge_transfer": 1, "generate": 1, "total": 7}
    listed = [job("generate", "q", "benchmarks/out/generate/q/base.tsv")]
    rows = cost.by_count(counts, listed, measured)
    got = [(r["rule"], r["source"], r["cpu_s"]) for r in rows]
    assert (
        got == [("judge", cost.BY_COUNT, 30.0)] * 3 + [("judge_steering", cost.BY_COUNT, 300.0)] * 2
    )
