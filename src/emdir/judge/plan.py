"""The judge plan: what judging the current outputs would send and cost, before paying.

Reads the generation files the judge rules will read, builds the same requests the judge
would send (duplicates once), looks each up in the cache, and prices the rest from the
configured per-token prices, per file and per stage (the `results/<stage>/` folder). A backend
that sends requests prices both of its request modes, the config's and the other one, so
that the paper-faithful bill is always beside the economical one (`emdir.judge.llm_plan`).
Nothing is sent and no API key is needed. Prompt tokens are estimated as characters / 4 (the
judge's tokenizer is not available offline), so the cost is an estimate; the judged files
record the tokens actually used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emdir.io import atomic_path, read_jsonl


def judge_plan(
    files: Mapping[str, str | Path],
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None,
    out_txt: str | Path,
    question_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Write the plan to `out_txt`; returns its totals. A backend that sends requests plans
    them itself (its `plan`); one without judges locally: 0 requests, $0."""
    from emdir.judge.backends import backend_for

    backend = judge_cfg["backend"]
    lines = [f"judge plan: backend {backend}, {len(files)} generation files"]
    plan = backend_for(judge_cfg).plan
    if plan is None:
        total = sum(len(read_jsonl(p)) for p in files.values())
        lines.append(f"{total} answers, judged locally by the {backend} backend: 0 requests, $0")
        totals = {"requests": 0, "cached": 0, "to_send": 0, "cost_usd": 0.0, "answers": total}
        _write(out_txt, lines)
        return totals
    more, totals = plan(files, judge_cfg, cache_path, question_files)
    _write(out_txt, lines + more)
    return totals


def _write(out_txt: str | Path, lines: list[str]) -> None:
    with atomic_path(out_txt) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
