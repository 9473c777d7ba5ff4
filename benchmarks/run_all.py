"""Every benchmark in one command: a table of their ratios and figures, each against its target.

Rows of the table:

- capture overhead, steering overhead: benchmarks/hook_overhead.py (capture_store against a
  bare forward, target <= 1.10; sampling inside `intervene` against plain sampling, target
  <= 1.05; ratios of wall-clock medians).
- judge throughput, judge rerun: benchmarks/judge_throughput.py (answers/s through a local
  OpenAI-compatible server with 50 ms latency, target >= 100/s; a rerun of the same answers
  must send no request).
- SVD ridge vs RidgeCV: benchmarks/ridge_svd.py (speed-up, target >= 2.5x, both choosing
  alpha by 5-fold CV on the same folds, and the same alpha chosen; each side's best of 3
  alternating runs, --quick: of 2 at n=2000, 1024 -> 1536);
  "skipped" when scikit-learn is missing (pip install -e '.[bench]').
- sampler throughput: benchmarks/sampler_throughput.py (emdir's `sample`, plain and inside
  `intervene`, against transformers' `generate` on a random-init model of Qwen2.5-1.5B's
  width, 2 layers deep, batch 32; --quick: 16 new tokens, 2 repeats; full: 600 and 3): each
  side's tokens/s, steered/plain time (target <= 1.05) and emdir/HF tokens/s (>= 1.00).
- no-op rerun: in a scratch working directory, a complete *fake* run of the default config
  (every output that `snakemake --summary` lists is created empty, then `--touch
  --forceall` records each job as built with its params, as tests/workflow/test_workflow_dag.py
  does), after which `snakemake --dry-run` and `snakemake --cores 1` must both say "Nothing
  to be done" within NOOP_TARGET_S seconds (median). Their seconds are printed, with the
  ratio to a dry-run of the same workflow with nothing built (the cost of parsing the
  Snakefile and building the DAG at all).
- edits that change no output: the same finished workflow's config with a comment added,
  re-saved with every mapping's keys sorted (`yaml.safe_dump(sort_keys=True)`), and re-saved
  with every mapping's keys in reverse order; each dry-run must say "Nothing to be done".
- coefficient change: one entry of steering.coefficients edited in that finished workflow's
  config; the dry-run's jobs are counted per rule, and none may belong to tokenizer,
  base_model, finetune, generate, activations, directions, anchors or fit_map.
- paper config's judge bill: benchmarks/paper_estimate.py --judge-only (config/paper.yaml's
  requests and dollars at GPT-4o list prices in its judge.openai.requests mode, target
  <= $150, and the other mode beside it).
- whole default run: `snakemake --cores 2` on the default config from nothing in a scratch
  directory, wall time (target <= 10 min); full sizes only (--quick skips it).

Each benchmark script runs in its own subprocess and each workflow command in its own
Snakemake process (the repository's Snakefile with --directory, so the checkout stays
clean); one that fails or times out becomes a FAILED row, not the end of the run.

    python benchmarks/run_all.py            # ~70 minutes on a 2-core CPU (35 sampling, ~25 the default run)
    python benchmarks/run_all.py --quick    # ~3 minutes: fewer repeats, smaller sizes
    python benchmarks/run_all.py --check    # exit 1 if a target is missed or anything failed
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
NOTHING_TO_DO = "Nothing to be done"
NOOP_TARGET_S = 5.0  # a no-op dry-run or rerun of the finished default workflow, at most
# Rules upstream of steering: a steering coefficient must not rerun any of them.
UPSTREAM_OF_STEERING = (
    "tokenizer",
    "base_model",
    "finetune",
    "generate",
    "activations",
    "directions",
    "anchors",
    "fit_map",
)


@dataclasses.dataclass(frozen=True)
class Row:
    benchmark: str
    figure: str
    value: str
    target: str
    status: str  # ok, MISSED, FAILED, skipped or info
    detail: str = ""  # printed under the table


class BenchmarkFailed(Exception):
    """A benchmark could not produce its figures."""


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(cmd: Sequence[str], timeout: float) -> tuple[str, float]:
    """stdout + stderr and seconds of a command that must succeed."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise BenchmarkFailed(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BenchmarkFailed(f"exit {proc.returncode}: {' '.join(cmd)}\n{tail(out)}")
    return out, seconds


def script(name: str, args: Sequence[str], timeout: float, verbose: bool) -> str:
    out, seconds = run([sys.executable, str(HERE / name), *args], timeout)
    print(f"  {name}: {seconds:.0f} s")
    if verbose:
        print(out)
    return out


def find(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    if match is None:
        raise BenchmarkFailed(f"output has no line matching {pattern!r}:\n{tail(text)}")
    return match


def status(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def hook_overhead(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    args = ["--repeats", "3", "--rows", "32", "--prompts", "8", "--new-tokens", "24"]
    out = script("hook_overhead.py", args if quick else [], timeout, verbose)
    rows = []
    for label, figure in (
        ("capture/bare forward", "capture overhead (capture / bare forward)"),
        ("steered/plain sample", "steering overhead (steered / plain sample)"),
    ):
        m = find(rf"{re.escape(label)}: ([\d.]+) \(target <= ([\d.]+)\)", out)
        ratio, target = float(m[1]), float(m[2])
        rows.append(
            Row(
                "hook_overhead",
                figure,
                f"{ratio:.2f}x",
                f"<= {target:.2f}",
                status(ratio <= target),
            )
        )
    return rows


def sampler_throughput(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    # Full size decodes 3 x 3 runs of 32 x 600 tokens at a real width: ~35 min on one thread.
    out = script(
        "sampler_throughput.py",
        ["--quick"] if quick else [],
        timeout if quick else max(timeout, 3600.0),
        verbose,
    )
    at = find(r"at (\w+) width .*?, (\d+) decoder layer", out)
    size = find(r"batch (\d+) x (\d+) new tokens", out)
    where = f"{at[1]} width, {at[2]} layers, batch {size[1]} x {size[2]} tokens"
    rows = []
    for side in ("emdir plain", "emdir steered", "HF generate"):
        m = find(rf"^{side}:\s+([\d.]+) tokens/s", out, re.M)
        rows.append(
            Row("sampler_throughput", f"{side} sampling ({where})", f"{m[1]} tokens/s", "", "info")
        )
    for label, figure in (
        ("steered/plain sample (time)", "steered / plain sample time"),
        ("emdir/HF generate (tokens/s)", "emdir sample / HF generate tokens/s"),
    ):
        m = find(rf"{re.escape(label)}: ([\d.]+) \(target ([<>]=) ([\d.]+)\)", out)
        ratio, op, target = float(m[1]), m[2], float(m[3])
        met = ratio <= target if op == "<=" else ratio >= target
        rows.append(
            Row("sampler_throughput", figure, f"{ratio:.2f}x", f"{op} {target:.2f}", status(met))
        )
    return rows


def judge_throughput(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    out = script("judge_throughput.py", ["--answers", "500"] if quick else [], timeout, verbose)
    m = find(r"judged (\d+) answers in ([\d.]+) s: ([\d.]+)/s \([\d.]+x the (\d+)/s target", out)
    rate, target = float(m[3]), float(m[4])
    again = find(r"rerun of the same (\d+) answers: (\d+) requests sent, (\d+) cache hits", out)
    sent = int(again[2])
    return [
        Row(
            "judge_throughput",
            f"judge throughput ({m[1]} answers, 50 ms latency)",
            f"{rate:.0f} answers/s",
            f">= {target:.0f}/s",
            status(rate >= target),
        ),
        Row(
            "judge_throughput",
            "requests sent when rejudging the same answers",
            f"{sent} ({again[3]} cache hits)",
            "0",
            status(sent == 0),
        ),
    ]


def ridge_svd(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    if importlib.util.find_spec("sklearn") is None:
        return [
            Row(
                "ridge_svd",
                "SVD ridge vs RidgeCV",
                "",
                "",
                "skipped: pip install -e '.[bench]'",
            )
        ]
    # Each side's best of a few alternating runs, so that load from other jobs on a shared
    # machine does not decide the ratio.
    small = ["--n", "2000", "--d-in", "1024", "--d-out", "1536", "--repeat", "2"]
    out = script("ridge_svd.py", small if quick else ["--repeat", "3"], timeout, verbose)
    sizes = find(r"n=(\d+) .*?, (\d+) -> (\d+) ", out)
    m = find(r"SVD ridge vs RidgeCV: ([\d.]+)x faster \(target >= ([\d.]+)x\)", out)
    speedup, target = float(m[1]), float(m[2])
    alpha = find(r"chosen alpha: ours (\S+), RidgeCV (\S+) \((agree|DIFFER)\)", out)
    return [
        Row(
            "ridge_svd",
            f"SVD ridge vs RidgeCV speed-up (n={sizes[1]}, {sizes[2]} -> {sizes[3]})",
            f"{speedup:.1f}x",
            f">= {target:g}x",
            status(speedup >= target),
        ),
        Row(
            "ridge_svd",
            "alpha chosen by SVD ridge / RidgeCV",
            f"{alpha[1]} / {alpha[2]}",
            "the same",
            status(alpha[3] == "agree"),
        ),
    ]


# ---------------------------------------------------------------- the workflow


def snakemake(workdir: Path, *args: str, timeout: float) -> tuple[str, float]:
    """The repository's workflow run in `workdir` (so the checkout gets no .snakemake/)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    return run([*cmd, "--directory", str(workdir), *args], timeout)


def job_counts(out: str) -> dict[str, int]:
    """Jobs per rule from a dry-run's job stats table (empty when nothing is to be done)."""
    if NOTHING_TO_DO in out:
        return {}
    table = find(r"Job stats:\n(.*?)\n\n", out + "\n\n", re.S)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def first_reasons(out: str, rules: Sequence[str], width: int = 300) -> str:
    """Why a dry-run plans each of `rules`: the reason of its first job, cut to `width`."""
    found = []
    for rule in rules:
        m = re.search(rf"^rule {re.escape(rule)}:\n(?:    .*\n)*?    reason: (.*)$", out, re.M)
        if m:
            why = m[1].strip()
            found.append(f"{rule}: {why[:width]}{'...' if len(why) > width else ''}")
    return "; ".join(found)


def fake_complete_run(workdir: Path, config: Path, timeout: float) -> None:
    """Every output exists and is recorded as built with `config`, and no job ran."""
    out, _ = snakemake(workdir, "--summary", "--configfile", str(config), timeout=timeout)
    names = [line.split("\t")[0] for line in out.splitlines()[1:] if "\t" in line]
    for name in names:
        path = workdir / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:  # models, adapters, the tokenizer
            path.mkdir(parents=True, exist_ok=True)
    touch = ("--touch", "--forceall", "--cores", "1", "--configfile", str(config))
    snakemake(workdir, *touch, timeout=timeout)


def reverse_keys(obj: Any) -> Any:
    """`obj` with the keys of every mapping in it in reverse order (lists keep theirs)."""
    if isinstance(obj, dict):
        return {k: reverse_keys(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [reverse_keys(v) for v in obj]
    return obj


def workflow(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    repeats = 1 if quick else 3
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / "config.yaml"
        shutil.copyfile(REPO / "config" / "config.yaml", config)
        dry = ("--dry-run", "--configfile", str(config))

        fresh = []
        for _ in range(repeats):
            out, seconds = snakemake(workdir, *dry, timeout=timeout)
            fresh.append(seconds)
        n_jobs = sum(v for k, v in job_counts(out).items() if k != "total")
        start = time.perf_counter()
        fake_complete_run(workdir, config, timeout)
        print(
            f"  fake complete run of the default config ({n_jobs} jobs): "
            f"{time.perf_counter() - start:.0f} s"
        )
        fresh_s = statistics.median(fresh)
        rows.append(
            Row(
                "workflow",
                f"dry-run with nothing built ({n_jobs} jobs; the reference)",
                f"{fresh_s:.1f} s",
                "",
                "info",
            )
        )
        for label, args in (
            ("no-op dry-run of the finished workflow", dry),
            ("no-op rerun (--cores 1) of the finished workflow", ("--cores", "1", *dry[1:])),
        ):
            times, nothing = [], True
            for _ in range(repeats):
                out, seconds = snakemake(workdir, *args, timeout=timeout)
                times.append(seconds)
                nothing &= NOTHING_TO_DO in out
                if verbose:
                    print(tail(out, 5))
            t = statistics.median(times)
            rows.append(
                Row(
                    "workflow",
                    label,
                    f"{t:.1f} s ({t / fresh_s:.2f}x the reference)",
                    f'"{NOTHING_TO_DO}", < {NOOP_TARGET_S:g} s',
                    status(nothing and t < NOOP_TARGET_S)
                    + ("" if nothing else f" ({NOTHING_TO_DO!r} not printed)"),
                )
            )

        # Edits that change no value: the finished workflow must stay finished.
        text = (REPO / "config" / "config.yaml").read_text(encoding="utf-8")
        for label, edit in (
            ("a comment added to the config", f"# a comment\n{text}\n# another comment\n"),
            ("the config re-saved, keys sorted", yaml.safe_dump(default, sort_keys=True)),
            (
                "the config re-saved, keys reversed",
                yaml.safe_dump(reverse_keys(default), sort_keys=False),
            ),
        ):
            if yaml.safe_load(edit) != default:
                raise BenchmarkFailed(f"{label}: the edited config reads as different values")
            config.write_text(edit, encoding="utf-8")
            out, _ = snakemake(workdir, *dry, timeout=timeout)
            jobs = job_counts(out)
            total = jobs.pop("total", 0)
            per_rule = ", ".join(f"{rule} {n}" for rule, n in jobs.items())
            if verbose:
                print(tail(out, 5))
            rows.append(
                Row(
                    "workflow",
                    f"jobs rerun after {label}",
                    f"{total} of {n_jobs}",
                    f'0 ("{NOTHING_TO_DO}")',
                    status(total == 0 and NOTHING_TO_DO in out)
                    + (f" ({per_rule})" if total else ""),
                    f"rerun after {label}: {first_reasons(out, list(jobs))}" if total else "",
                )
            )

        steer = default["steering"]
        changed = [*steer["coefficients"][:-1], steer["coefficients"][-1] + 0.25]
        edited = {**default, "steering": {**steer, "coefficients": changed}}
        # The user edits the file (its key order kept; the rows above show that order does
        # not matter).
        config.write_text(yaml.safe_dump(edited, sort_keys=False), encoding="utf-8")
        out, _ = snakemake(workdir, *dry, timeout=timeout)
        jobs = job_counts(out)
        total = jobs.pop("total", 0)
        upstream = sorted(set(jobs) & set(UPSTREAM_OF_STEERING))
        per_rule = ", ".join(f"{rule} {n}" for rule, n in jobs.items())
        print(f"  steering.coefficients {steer['coefficients']} -> {changed}: {per_rule}")
        rows.append(
            Row(
                "workflow",
                "jobs rerun after one steering coefficient changes",
                f"{total} of {n_jobs}",
                "none upstream of steering",
                status(total > 0 and not upstream)
                + (f" ({', '.join(upstream)} rerun)" if upstream else ""),
                f"rerun after a coefficient change: {per_rule}"
                + (f"\n    why: {first_reasons(out, upstream)}" if upstream else ""),
            )
        )
    return rows


# Issue 19's target for a whole run of the default config on 2 cores (seconds of wall time).
DEFAULT_RUN_TARGET = 600.0


def default_run(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    """The first command a newcomer runs: the whole default config, `snakemake --cores 2`,
    from nothing, in a scratch directory (pip install not included). Full sizes only: it
    is the run itself (~15-25 minutes on a 2-core CPU)."""
    figure = "whole default run, snakemake --cores 2 (wall)"
    target = f"<= {DEFAULT_RUN_TARGET / 60:.0f} min"
    if quick:
        return [Row("default_run", figure, "not in --quick", target, "skipped")]
    with tempfile.TemporaryDirectory() as work:
        out, seconds = snakemake(Path(work), "--cores", "2", timeout=max(timeout, 3600.0))
    done = find(r"(\d+) of \1 steps \(100%\) done", out)
    return [
        Row(
            "default_run",
            figure,
            f"{seconds / 60:.0f} min {seconds % 60:.0f} s for {done[1]} jobs",
            target,
            status(seconds <= DEFAULT_RUN_TARGET),
        )
    ]


# Issue 19's target for config/paper.yaml's judge bill at GPT-4o list prices (USD).
JUDGE_BILL_TARGET = 150.0


def judge_bill(quick: bool, timeout: float, verbose: bool) -> list[Row]:
    """config/paper.yaml's judge bill from paper_estimate.py --judge-only: the config's
    request mode against the target, the other mode (paper-faithful or economical) beside."""
    out = script("paper_estimate.py", ["--judge-only"], timeout, verbose)
    modes = re.findall(r"judge\.openai\.requests = (\w+)", out)
    total = find(r"^\s+total\s+([\d,]+)((?:\s+\|\s+[\d,.]+\s+[\d,.]+\s+[\d,.]+)+)\s*$", out, re.M)
    cells = re.findall(r"\|\s+([\d,.]+)\s+([\d,.]+)\s+([\d,.]+)", total[2])
    if len(modes) != len(cells) or not cells:
        raise BenchmarkFailed(f"cannot read the judge's totals:\n{tail(out)}")
    rows = []
    for k, (mode, (_, requests, dollars)) in enumerate(zip(modes, cells, strict=True)):
        cost = float(dollars.replace(",", ""))
        rows.append(
            Row(
                "judge_bill",
                f"config/paper.yaml judge bill, requests: {mode}"
                + (" (this config)" if k == 0 else " (beside it)"),
                f"${cost:,.2f} ({requests} requests)",
                f"<= ${JUDGE_BILL_TARGET:.0f}" if k == 0 else "",
                status(cost <= JUDGE_BILL_TARGET) if k == 0 else "info",
            )
        )
    return rows


BENCHMARKS: dict[str, Callable[[bool, float, bool], list[Row]]] = {
    "hook_overhead": hook_overhead,
    "sampler_throughput": sampler_throughput,
    "judge_throughput": judge_throughput,
    "ridge_svd": ridge_svd,
    "workflow": workflow,
    "judge_bill": judge_bill,
    "default_run": default_run,
}


def print_table(rows: Sequence[Row]) -> None:
    headers = ("benchmark", "figure", "value", "target", "status")
    cells = [headers, *(dataclasses.astuple(r)[:-1] for r in rows)]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r.detail:
            print(f"  {r.benchmark}: {r.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--verbose", action="store_true", help="print each benchmark's output")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks"
    )
    args = parser.parse_args(argv)
    timeout = 300.0 if args.quick else 900.0
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    for name, bench in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        print(f"{name} ...", flush=True)
        try:
            rows += bench(args.quick, timeout, args.verbose)
        except Exception as exc:  # noqa: BLE001 (one benchmark's failure is a row of the table)
            print(f"  FAILED: {exc}")
            rows.append(Row(name, "-", "", "", f"FAILED: {str(exc).splitlines()[0]}"))
    print()
    print_table(rows)
    elapsed = time.perf_counter() - start
    bad = [r for r in rows if r.status.startswith(("MISSED", "FAILED"))]
    # Ratios taken on a shared machine move with its load: say what it was.
    print(
        f"\n{len(rows)} figures, {len(bad)} missed or failed; {elapsed:.0f} s "
        f"({'--quick' if args.quick else 'full sizes'}); load average "
        f"{load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
