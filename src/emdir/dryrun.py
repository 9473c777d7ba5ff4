"""The jobs Snakemake would run for a config: its own dry-run, read back as records.

Used by the benchmarks that price a run (benchmarks/paper_estimate.py from measured
throughputs, benchmarks/run_cost.py from a finished run's own job timings), so that every
rule, fine-tune and seed is counted as the workflow would run it, not as a script imagines it.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from emdir.errors import EmdirError

# The key of dry_run's counts that holds how many answer files the judge jobs judge.
JUDGED_FILES = "judged files"


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of the workflow's dry-run; `benchmark` is its rule's benchmark file, if any."""

    rule: str
    wildcards: dict[str, str]
    outputs: list[str]
    benchmark: str | None = None


def dry_run(
    snakefile: Path,
    configs: Sequence[Path],
    targets: Sequence[str] = (),
    directory: Path | None = None,
) -> tuple[list[Job], dict[str, int]]:
    """The jobs of a run of `configs` (one file and its overlays, in order) for `targets`
    (default: the complete run) and the job count per rule, from Snakemake's own dry-run of
    `snakefile`: in `directory` (what is left to do there), by default in a scratch working
    directory (a run from nothing).

    Jobs of rules with a `message:` (the judge rules) print only their message, so they are
    in the counts but not in the job list; the files their messages name (a judge job judges
    every answer file of one generating job) are counted under JUDGED_FILES. A run with
    nothing left to do returns no jobs and empty counts.
    """
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
        cmd += ["--directory", str(directory or scratch), "--dry-run", *targets]
        cmd += ["--configfile", *(str(c.resolve()) for c in configs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    if proc.returncode == 0 and "Nothing to be done" in out:
        return [], {}
    if proc.returncode != 0 or "Job stats:" not in out:
        named = " ".join(str(c) for c in configs)
        raise EmdirError(f"snakemake --dry-run of {named} failed:\n{out[-2000:]}")
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    counts[JUDGED_FILES] = sum(
        len(m[1].split()) for m in re.finditer(r"^Job \d+: judge (.+?) with the ", out, re.M)
    )
    jobs = []
    for block in re.split(r"^\[[^\]\n]*\]\n", out, flags=re.M)[1:]:
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head is None:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        wildcards = dict(
            kv.split("=", 1) for kv in fields.get("wildcards", "").split(", ") if "=" in kv
        )
        outputs = [p for p in fields.get("output", "").split(", ") if p]
        jobs.append(Job(head[1], wildcards, outputs, fields.get("benchmark")))
    return jobs, counts
