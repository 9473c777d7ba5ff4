"""The judge backends, and judging a generation file with the configured one.

`judge.backend` names an entry of BACKENDS. A backend is one module with two functions:

    judge_rows(rows, judge_cfg, inputs) -> judged rows
        a judged copy of every generation row, in order (`emdir.judge.rows` says what a
        judged row holds); `inputs` is what the job has besides the rows and the config
    check_settings(judge_cfg) -> None
        raise EmdirError, saying what to fix, when the backend's config section is unusable

and its entry says what the workflow needs to know (`Backend`): how to describe it in job
messages, whether its jobs get the base model, whether it sends requests over the network
(then its judge jobs run where Snakemake runs), how to plan and price them, and which
environment variable holds its key (checked before any job runs).

To add one, write its module, add its entry to BACKENDS and its name to the `judge.backend`
enum of config/schema.yaml (tests/unit/test_judge_registry.py holds the two lists
together), with a config section for its settings when it has any. judge_file, the judge
plan and the workflow then run it like any other: the checks before writing
(`check_judged`) are the same for every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emdir.errors import EmdirError
from emdir.io import read_jsonl, write_jsonl
from emdir.judge import llm, llm_plan, offline
from emdir.judge.rows import GENERATION_KEYS, check_judged


@dataclass(frozen=True)
class JudgeInputs:
    """What a judge job has besides the rows and the config; a backend uses what it needs.

    `cache_path`: the judge cache (SQLite) of paid replies, or None for no cache;
    `question_files`: the question sets' YAML files, whose questions may carry their own judge
    prompts; `coherence_model`: the answering model's base model, which scores coherence.
    """

    cache_path: str | Path | None = None
    question_files: Sequence[str | Path] = ()
    coherence_model: str | Path | None = None


Plan = Callable[
    [Mapping[str, str | Path], Mapping[str, Any], str | Path | None, Sequence[str | Path]],
    tuple[list[str], dict[str, Any]],
]


@dataclass(frozen=True)
class Backend:
    """A backend: its two functions (see the module docstring) and what the workflow needs
    to know about it.

    `describe(judge_cfg)`: how judging is done, for job messages; `uses_base_model`: its
    judge jobs get the answering model's base model (`JudgeInputs.coherence_model`);
    `remote`: it sends requests over the network, so its judge jobs run on the machine that
    runs Snakemake (a cluster node may have no network); `plan`: the judge plan's lines and
    totals for files it would judge (None: judged locally, nothing to pay);
    `api_key_env(judge_cfg)`: the environment variable its key must be in, checked before
    any job runs (None: no key).
    """

    judge_rows: Callable[
        [Sequence[dict[str, Any]], Mapping[str, Any], JudgeInputs], list[dict[str, Any]]
    ]
    check_settings: Callable[[Mapping[str, Any]], None]
    describe: Callable[[Mapping[str, Any]], str]
    uses_base_model: bool
    remote: bool
    plan: Plan | None
    api_key_env: Callable[[Mapping[str, Any]], str | None]


BACKENDS: dict[str, Backend] = {
    "offline": Backend(
        offline.judge_rows,
        offline.check_settings,
        offline.describe,
        uses_base_model=True,
        remote=False,
        plan=None,
        api_key_env=lambda judge_cfg: None,
    ),
    "openai": Backend(
        llm.judge_rows,
        llm.check_settings,
        llm.describe,
        uses_base_model=False,
        remote=True,
        plan=llm_plan.plan_lines,
        api_key_env=lambda judge_cfg: str(judge_cfg["openai"]["api_key_env"]),
    ),
}


def backend_for(judge_cfg: Mapping[str, Any]) -> Backend:
    """The backend `judge.backend` names."""
    name = judge_cfg["backend"]
    if name not in BACKENDS:
        raise EmdirError(f"judge.backend {name!r} is unknown; use {' or '.join(BACKENDS)}")
    return BACKENDS[name]


def check_config(judge_cfg: Mapping[str, Any]) -> None:
    """Fail, saying what to fix, unless the `judge` config names a backend and holds usable
    settings for it."""
    backend_for(judge_cfg).check_settings(judge_cfg)


def judge_rows(
    rows: Sequence[dict[str, Any]],
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None = None,
    question_files: Sequence[str | Path] = (),
    coherence_model: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Judged copies of generation rows (adds `scores`, `category`, `judge`).

    The offline backend scores coherence under `coherence_model` (the base model's folder);
    without one its rows carry no coherence."""
    chosen = backend_for(judge_cfg)
    chosen.check_settings(judge_cfg)
    inputs = JudgeInputs(cache_path, tuple(question_files), coherence_model)
    return chosen.judge_rows(rows, judge_cfg, inputs)


def judge_file(
    src: str | Path,
    out: str | Path,
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None = None,
    question_files: Sequence[str | Path] = (),
    coherence_model: str | Path | None = None,
) -> None:
    """Judge every row of a generation JSONL file into a judged JSONL file.

    `question_files` supply questions' own judge prompts; `coherence_model` is the base
    model that scores the offline backend's coherence. A request that failed and could be
    retried, or more than `judge.max_unscored_fraction` unscored for any metric, fails the
    job and writes nothing (`check_judged`).
    """
    rows = read_jsonl(src, required=GENERATION_KEYS)
    judged = judge_rows(rows, judge_cfg, cache_path, question_files, coherence_model)
    check_judged(judged, judge_cfg, str(src))
    write_jsonl(out, judged)


def judge_files(
    pairs: Sequence[tuple[str | Path, str | Path]],
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None = None,
    question_files: Sequence[str | Path] = (),
    coherence_model: str | Path | None = None,
) -> None:
    """`judge_file` for each (generation file, judged file) in `pairs`, in order: one judge
    job per generating job (a steering job's vectors, a transfer cell's), so that a run
    starts one process, and loads the base model that scores coherence once, per job rather
    than per file. Each file is judged and written exactly as `judge_file` alone would; a
    file that fails stops the job, and the files judged before it are written."""
    for src, out in pairs:
        judge_file(src, out, judge_cfg, cache_path, question_files, coherence_model)
