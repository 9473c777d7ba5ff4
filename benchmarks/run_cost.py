"""What a run costs on this machine, priced from a run's own job timings: core-hours per rule,
what dominates, and a bound on the wall clock at --cores.

Every model-loading rule writes Snakemake's benchmark file (benchmarks/out/{seed}<stage>/...tsv:
wall seconds, CPU seconds, memory). This script takes the jobs that Snakemake's own dry-run
plans for a config, its overlays and --target (`emdir.dryrun`), and prices each from the
benchmark files of a run that has already gone (--run, its working directory):

- measured: the job's own benchmark file is there (the run did this job);
- another seed: the same job of another fine-tuning seed was measured (the path without its
  seed<n>/ segment): seeds 1 and 2 priced from seed 0, the median where several are;
- same rule and model: another job of the same rule on the same model in the plan was
  measured (another fine-tune's answers, another fine-tune's ablation): the median of those;
- unmeasured: nothing of the rule on this model was measured (another model, a rule the run
  never reached); listed, and left out of the total, which is then a lower bound.

The judge's rules have a `message:`, so the dry-run names their jobs but not their files: each
is priced at the median of the rule's measured files (benchmarks/out/{seed}<rule>/, any
model), "rule's median". Rules without a benchmark file load no model (data, directions,
maps, tables, figures): seconds each, counted as jobs and not priced.

Seconds are each job's CPU seconds (`cpu_time`): every rule runs one thread, so a job's CPU
seconds are what it takes on an idle core, however busy the machine was when it ran (its wall
seconds, also printed, grow with whatever shared the core). Core-hours / --cores is then a
lower bound on the wall clock with --cores jobs at a time; the dependencies (a fine-tune
before its answers) can make it longer.

    python benchmarks/run_cost.py --run /path/to/run --config config/real.yaml config/regime.yaml
    python benchmarks/run_cost.py --run RUN --config ... --remaining   # what is left in RUN
    python benchmarks/run_cost.py --run RUN --config ... config/one_seed.yaml --json cost.json
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emdir.dryrun import JUDGED_FILES, Job, dry_run
from emdir.errors import EmdirError

REPO = Path(__file__).resolve().parents[1]
SEED_SEGMENT = re.compile(r"^(benchmarks/out/)seed\d+/")
# How a job was priced, in the order they are tried.
MEASURED, OTHER_SEED, SAME_RULE, BY_COUNT, UNMEASURED = (
    "measured",
    "another seed",
    "same rule and model",
    "rule's median",
    "unmeasured",
)
SOURCES = (MEASURED, OTHER_SEED, SAME_RULE, BY_COUNT, UNMEASURED)
# Keys of the dry-run's counts that are not rules with work of their own.
NOT_RULES = {"total", JUDGED_FILES, "all"}


def read_benchmark(path: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a Snakemake benchmark file: the mean over its repeats."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    try:
        walls = [float(r["s"]) for r in rows]
        cpus = [float(r["cpu_time"]) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise EmdirError(
            f"{path}: not a Snakemake benchmark file (no numeric `s` and `cpu_time`: {exc}); "
            "delete it, or rerun its job"
        ) from exc
    if not rows:
        raise EmdirError(f"{path}: an empty benchmark file; delete it, or rerun its job")
    return statistics.fmean(walls), statistics.fmean(cpus)


def measured_runs(run: Path) -> dict[str, tuple[float, float]]:
    """Every benchmark file of the run directory `run`, by its path relative to `run`."""
    root = run / "benchmarks" / "out"
    if not root.is_dir():
        raise EmdirError(
            f"{run}: no benchmarks/out/ (--run is the working directory of a run that has "
            "trained or sampled something)"
        )
    return {
        path.relative_to(run).as_posix(): read_benchmark(path)
        for path in sorted(root.rglob("*.tsv"))
    }


def seedless(path: str) -> str:
    """A benchmark path without its seed<n>/ segment (seed 0 has none)."""
    return SEED_SEGMENT.sub(r"\1", path)


def medians(secs: Sequence[tuple[float, float]]) -> tuple[float | None, float | None]:
    """(wall, CPU) medians of measured (wall, CPU) seconds; (None, None) for none."""
    if not secs:
        return None, None
    return statistics.median(s[0] for s in secs), statistics.median(s[1] for s in secs)


def price(jobs: Sequence[Job], measured: Mapping[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """One row per benchmarked job of `jobs`: rule, model, benchmark path, how it was priced
    (SOURCES) and its wall and CPU seconds (None where unmeasured)."""
    by_seedless: dict[str, list[str]] = collections.defaultdict(list)
    for path in measured:
        by_seedless[seedless(path)].append(path)

    def own(job: Job) -> tuple[str, list[str]]:
        """How the job prices itself, and from which measured files."""
        assert job.benchmark is not None
        if job.benchmark in measured:
            return MEASURED, [job.benchmark]
        return OTHER_SEED, by_seedless.get(seedless(job.benchmark), [])

    def model_of(job: Job) -> str:
        return job.wildcards.get("model") or job.wildcards.get("receiver", "")

    benched = [j for j in jobs if j.benchmark]
    owns = {id(j): own(j) for j in benched}
    rows = []
    for job in benched:
        source, files = owns[id(job)]
        if not files:
            source = SAME_RULE
            files = sorted(
                {
                    f
                    for other in benched
                    if other.rule == job.rule and model_of(other) == model_of(job)
                    for f in owns[id(other)][1]
                }
            )
        secs = [measured[f] for f in files]
        wall, cpu = medians(secs)
        rows.append(
            {
                "rule": job.rule,
                "model": model_of(job),
                "benchmark": job.benchmark,
                "source": source if secs else UNMEASURED,
                "wall_s": wall,
                "cpu_s": cpu,
            }
        )
    return rows


def by_count(
    counts: Mapping[str, int], jobs: Sequence[Job], measured: Mapping[str, tuple[float, float]]
) -> list[dict[str, Any]]:
    """Rows for the jobs that the dry-run counts but does not list (rules with a message):
    each at the median of its rule's measured files; none for a rule with no measured file."""
    listed = {j.rule for j in jobs}
    rows = []
    for rule, n in counts.items():
        if rule in NOT_RULES or rule in listed:
            continue
        secs = [s for path, s in measured.items() if seedless(path).split("/")[2] == rule]
        if not secs:
            continue
        wall, cpu = medians(secs)
        row = {"rule": rule, "model": "", "benchmark": None, "source": BY_COUNT}
        rows += [{**row, "wall_s": wall, "cpu_s": cpu} for _ in range(n)]
    return rows


def by_rule(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per rule: jobs by how they were priced, and their CPU and wall hours; dearest first."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(
            row["rule"],
            {"rule": row["rule"], **dict.fromkeys(SOURCES, 0), "cpu_h": 0.0, "wall_h": 0.0},
        )
        entry[row["source"]] += 1
        if row["cpu_s"] is not None:
            entry["cpu_h"] += row["cpu_s"] / 3600
            entry["wall_h"] += row["wall_s"] / 3600
    return sorted(table.values(), key=lambda e: -e["cpu_h"])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run's working directory")
    ap.add_argument(
        "--config",
        type=Path,
        nargs="+",
        required=True,
        help="the config to price and its overlays, in order (as snakemake --configfile)",
    )
    ap.add_argument("--target", nargs="*", default=[], help="price only these targets' jobs")
    ap.add_argument(
        "--remaining",
        action="store_true",
        help="price what is left to do in --run (its own dry-run), not a run from nothing",
    )
    ap.add_argument("--cores", type=int, default=2, help="for the wall-clock bound (default 2)")
    ap.add_argument("--json", type=Path, help="also write the priced jobs here")
    args = ap.parse_args(argv)
    if args.cores < 1:
        ap.error("--cores must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        measured = measured_runs(args.run)
        where = args.run if args.remaining else None
        jobs, counts = dry_run(REPO / "Snakefile", args.config, args.target, where)
    except EmdirError as exc:
        print(f"run_cost: {exc}", file=sys.stderr)
        return 2
    rows = price(jobs, measured) + by_count(counts, jobs, measured)
    rules = by_rule(rows)
    total = sum(r["cpu_h"] for r in rules)
    priced = {e["rule"] for e in rules}
    light = {r: n for r, n in counts.items() if r not in priced | NOT_RULES}
    plan = " ".join(str(c) for c in args.config) + (
        f" -> {' '.join(args.target)}" if args.target else ""
    )
    print(
        f"{'what is left in ' + str(args.run) if args.remaining else 'a run from nothing'}: {plan}"
    )
    print(f"priced from {len(measured)} benchmark files of {args.run}\n")
    labels = ("measured", "other seed", "same rule", "by count", "unmeasured")
    print(f"{'rule':<22}{'jobs':>5}" + "".join(f"{v:>12}" for v in labels), end="")
    print(f"{'CPU-h':>8}{'share':>7}{'wall-h':>8}")
    for e in rules:
        jobs_n = sum(e[s] for s in SOURCES)
        share = e["cpu_h"] / total if total else 0.0
        print(f"{e['rule']:<22}{jobs_n:>5}" + "".join(f"{e[s]:>12}" for s in SOURCES), end="")
        print(f"{e['cpu_h']:>8.2f}{share:>7.0%}{e['wall_h']:>8.2f}")
    print(f"{'priced, all rules':<22}{len(rows):>5}{'':>{12 * len(SOURCES)}}{total:>8.2f}")
    named = ", ".join(f"{r} {n}" for r, n in sorted(light.items()))
    print(f"\nnot priced (no benchmark file measured): {sum(light.values())} jobs ({named})")
    unmeasured = [r for r in rows if r["source"] == UNMEASURED]
    if unmeasured:
        print(f"UNMEASURED (left out, so the total is a lower bound): {len(unmeasured)} jobs")
        for r in unmeasured:
            print(f"  {r['rule']} {r['benchmark']}")
    if rules and total:
        top = rules[0]
        print(f"\ndominated by {top['rule']}: {top['cpu_h'] / total:.0%} of the priced CPU-hours")
    print(
        f"at least {total / args.cores:.2f} h of wall clock on {args.cores} idle cores "
        f"({total:.2f} CPU-h / {args.cores}; one thread a job)"
    )
    if args.json:
        args.json.write_text(json.dumps({"rules": rules, "jobs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
