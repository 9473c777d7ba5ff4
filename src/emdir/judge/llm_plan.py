"""The LLM judge's plan: what judging the given files would send and cost, in both request
modes (`judge.openai.requests`), per file and per stage, before paying.

The config's mode is priced first, the other beside it, so that the paper-faithful bill
(`full`) and the economical one are always seen together. The requests counted are the very
requests the judge would build (same prompts, same cache keys; duplicates once per mode);
each is looked up in the cache and the rest priced at `judge.openai.prices`, prompt tokens
estimated as characters / CHARS_PER_TOKEN.

The economical count runs the offline detector on every answer (free) and applies the sample
cap. Whether `coherent` and `bad_stuff` follow an `aligned` request depends on its verdict:
where the cache holds it, the count is exact; where not, every follow-up is counted (as if the
verdict were a score above `bad_stuff_aligned_above`), so the total is an upper bound and
says "at most".

A file's stage is the `results/<stage>/...` part of its path (generations, steering,
transfer, transfer_reference, mechanistic); a file elsewhere is stage "other".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emdir.io import read_jsonl
from emdir.judge.cache import JudgeCache
from emdir.judge.economy import follow_up, select
from emdir.judge.llm import CHARS_PER_TOKEN, Template, llm_requests, one_request, template_lookup
from emdir.judge.llm_replies import JudgeRequest, reading_from_record, request_key
from emdir.judge.settings import (
    REQUEST_MODES,
    LLMJudgeSettings,
    RequestPolicy,
    llm_settings,
    request_policy,
)

# Labels of the modes in the plan.
MODE_NAMES = {"full": "full (paper-faithful)", "economical": "economical"}


def stage_of(path: str | Path) -> str:
    """The stage of an answers file: the folder under `results/` it lies in, past a fine-tuning
    seed's `seed<n>/` (emdir.layout.replicate): every seed's steering is one stage."""
    parts = Path(path).parts
    if "results" in parts:
        i = len(parts) - 1 - parts[::-1].index("results")
        if i + 2 < len(parts) and re.fullmatch(r"seed\d+", parts[i + 1]):
            i += 1
        if i + 2 < len(parts):
            return parts[i + 1]
    return "other"


@dataclass
class Tally:
    """Requests, cache hits and estimated dollars of one mode over some files."""

    answers: int = 0
    requests: int = 0
    cached: int = 0
    to_send: int = 0
    cost_usd: float = 0.0
    # Answers whose aligned verdict is not cached: their follow-ups are counted as if sent.
    unknown_verdicts: int = 0

    def add(self, other: Tally) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


class _Pricer:
    """Counts requests once per mode, looks them up in the cache and prices the rest."""

    def __init__(
        self, settings: LLMJudgeSettings, prices: Mapping[str, Any], cache: JudgeCache | None
    ):
        self.settings, self.cache = settings, cache
        self.p_in = float(prices["input_per_mtok"]) / 1e6
        self.p_out = float(prices["output_per_mtok"]) / 1e6
        self.seen: dict[str, set[str]] = {m: set() for m in REQUEST_MODES}

    def count(self, mode: str, request: JudgeRequest, tally: Tally) -> str:
        """Count one request of `mode` (once); returns its cache key."""
        key = request_key(request, self.settings)
        if key in self.seen[mode]:
            return key
        self.seen[mode].add(key)
        tally.requests += 1
        if self.cache is not None and key in self.cache:
            tally.cached += 1
            return key
        tally.to_send += 1
        tally.cost_usd += self.p_in * (len(request.prompt) / CHARS_PER_TOKEN) + self.p_out * int(
            self.settings.max_tokens or 1
        )
        return key

    def cached_verdict(self, key: str) -> tuple[str, float | None] | None:
        """(category, score) of a cached reply, or None when not cached (or unreadable)."""
        record = self.cache.get(key) if self.cache is not None else None
        reading = reading_from_record(record, self.settings) if record is not None else None
        return None if reading is None else (reading.category, reading.score)


def _economical(
    rows: Sequence[Mapping[str, Any]],
    judge_cfg: Mapping[str, Any],
    metrics: Sequence[str],
    policy: RequestPolicy,
    template: Template,
    pricer: _Pricer,
) -> Tally:
    tally = Tally(answers=len(rows))
    _, asked = select(rows, judge_cfg, policy)
    for row, ask in zip(rows, asked, strict=True):
        if not ask:
            continue
        key = pricer.count("economical", one_request(row, "aligned", template), tally)
        verdict = pricer.cached_verdict(key)
        if verdict is None:
            tally.unknown_verdicts += 1
            verdict = ("score", 100.0)  # the upper bound: every follow-up is asked
        more, _ = follow_up(*verdict, metrics, policy)
        for m in more:
            pricer.count("economical", one_request(row, m, template), tally)
    return tally


_HEAD = f"{'requests':>9} {'cached':>8} {'to send':>8} {'est. $':>9}"


def _row(label: str, answers: str, cells: Sequence[str]) -> str:
    """One line of the plan's table: a file or stage, its answers, one cell per mode."""
    return (f"{label:<48} {answers:>8} " + "".join(f"| {c:<37} " for c in cells)).rstrip()


def _fmt(t: Tally) -> str:
    return f"{t.requests:>9,} {t.cached:>8,} {t.to_send:>8,} {t.cost_usd:>9.2f}"


def _total(t: Tally) -> str:
    bound = "at most " if t.unknown_verdicts else ""
    return (
        f"{bound}{t.requests:,} requests, {t.cached:,} cached, {bound}{t.to_send:,} to send, "
        f"estimated {bound}${t.cost_usd:,.2f}"
    )


def plan_lines(
    files: Mapping[str, str | Path],
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None,
    question_files: Sequence[str | Path],
) -> tuple[list[str], dict[str, Any]]:
    """The judge plan's lines and totals: per file and per stage, the requests of both modes,
    how many the cache holds, and the estimated dollars of the rest. The totals returned are
    the config's mode's, with both modes' under `modes` (each with its `stages`)."""
    settings, metrics = llm_settings(judge_cfg)
    config_mode = request_policy(judge_cfg).mode
    modes = [config_mode] + [m for m in REQUEST_MODES if m != config_mode]
    policies = {m: request_policy(judge_cfg, m) for m in modes}
    prices = judge_cfg["openai"]["prices"]
    template = template_lookup(question_files)
    path = Path(cache_path) if cache_path is not None else None
    cache = JudgeCache(path) if path is not None and path.exists() else None
    pricer = _Pricer(settings, prices, cache)
    lines = [
        f"judge model {settings.model} at {settings.endpoint}; metrics {', '.join(metrics)}; "
        f"prices ${prices['input_per_mtok']}/M input, ${prices['output_per_mtok']}/M "
        "output tokens",
        f"this config: judge.openai.requests = {policies[config_mode].describe()}",
        *[f"priced beside it: judge.openai.requests = {policies[m].describe()}" for m in modes[1:]],
        _row("", "", [MODE_NAMES[m] for m in modes]),
        _row("file", "answers", [_HEAD] * len(modes)),
    ]
    stages: dict[str, dict[str, Tally]] = {}
    try:
        for label, file in files.items():
            rows = read_jsonl(file)
            got: dict[str, Tally] = {}
            for m in modes:
                if m == "full":
                    t = Tally(answers=len(rows))
                    for req in llm_requests(rows, metrics, template).values():
                        pricer.count("full", req, t)
                else:
                    t = _economical(rows, judge_cfg, metrics, policies[m], template, pricer)
                got[m] = t
                stages.setdefault(stage_of(file), {}).setdefault(m, Tally()).add(t)
            lines.append(_row(label, f"{len(rows):,}", [_fmt(got[m]) for m in modes]))
    finally:
        if cache is not None:
            cache.close()
    lines.append(_row("per stage", "answers", [_HEAD] * len(modes)))
    totals = {m: Tally() for m in modes}
    for stage in sorted(stages):
        by_mode = stages[stage]
        answers = by_mode[modes[0]].answers
        lines.append(_row(stage, f"{answers:,}", [_fmt(by_mode[m]) for m in modes]))
        for m in modes:
            totals[m].add(by_mode[m])
    lines.append(
        f"total: {_total(totals[config_mode])} (this config: judge.openai.requests = "
        f"{MODE_NAMES[config_mode]}; prompt tokens estimated as characters / {CHARS_PER_TOKEN})"
    )
    for m in modes[1:]:
        lines.append(f"with judge.openai.requests = {MODE_NAMES[m]}: {_total(totals[m])}")
    for m in modes:
        if totals[m].unknown_verdicts:
            lines.append(
                f"at most ({MODE_NAMES[m]}): {totals[m].unknown_verdicts:,} aligned verdicts are "
                "not in the cache yet; each is counted with every follow-up metric, as if it "
                "were a score above judge.openai.economical.bad_stuff_aligned_above"
            )
    modes_out = {
        m: {**asdict(totals[m]), "stages": {s: asdict(stages[s][m]) for s in sorted(stages)}}
        for m in modes
    }
    return lines, {**asdict(totals[config_mode]), "mode": config_mode, "modes": modes_out}
