"""The judge plan: what judging the current outputs would send and cost, before paying.

Reads the generation files the judge rules will read, builds the same requests the judge
would send (one per non-empty answer and metric, duplicates once), looks each up in the
cache, and prices the rest from the configured per-token prices. Nothing is sent and no API
key is needed. Prompt tokens are estimated as characters / 4 (the judge's tokenizer is not
available offline), so the cost is an estimate; the judged files record the tokens actually
used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emdir.io import atomic_path, read_jsonl

CHARS_PER_TOKEN = 4


def judge_plan(
    files: Mapping[str, str | Path],
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None,
    out_txt: str | Path,
    question_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Write the plan to `out_txt`; returns its totals."""
    backend = judge_cfg["backend"]
    lines = [f"judge plan: backend {backend}, {len(files)} generation files"]
    if backend != "openai":
        total = sum(len(read_jsonl(p)) for p in files.values())
        lines.append(f"{total} answers, judged locally by the offline detector: 0 requests, $0")
        totals = {"requests": 0, "cached": 0, "to_send": 0, "cost_usd": 0.0, "answers": total}
        _write(out_txt, lines)
        return totals

    from emdir.judge.cache import JudgeCache
    from emdir.judge.llm import llm_requests, template_lookup
    from emdir.judge.llm_replies import request_key
    from emdir.judge.settings import llm_settings

    settings, metrics = llm_settings(judge_cfg)
    prices = judge_cfg["openai"]["prices"]
    p_in = float(prices["input_per_mtok"]) / 1e6
    p_out = float(prices["output_per_mtok"]) / 1e6
    seen: set[str] = set()
    template = template_lookup(question_files)
    cache = JudgeCache(cache_path) if cache_path is not None and Path(cache_path).exists() else None
    totals = {"requests": 0, "cached": 0, "to_send": 0, "cost_usd": 0.0}
    lines.append(
        f"judge model {settings.model} at {settings.endpoint}; metrics {', '.join(metrics)}; "
        f"prices ${prices['input_per_mtok']}/M input, ${prices['output_per_mtok']}/M "
        "output tokens"
    )
    lines.append(
        f"{'file':<48} {'answers':>8} {'requests':>9} {'cached':>8} {'to send':>8} {'est. $':>9}"
    )
    try:
        for label, path in files.items():
            requests = cached = to_send = 0
            cost = 0.0
            rows = read_jsonl(path)
            for req in llm_requests(rows, metrics, template).values():
                key = request_key(req, settings)
                if key in seen:
                    continue
                seen.add(key)
                requests += 1
                if cache is not None and key in cache:
                    cached += 1
                    continue
                to_send += 1
                cost += p_in * (len(req.prompt) / CHARS_PER_TOKEN) + p_out * int(
                    settings.max_tokens or 1
                )
            lines.append(
                f"{label:<48} {len(rows):>8} {requests:>9} {cached:>8} {to_send:>8} {cost:>9.4f}"
            )
            totals["requests"] += requests
            totals["cached"] += cached
            totals["to_send"] += to_send
            totals["cost_usd"] += cost
    finally:
        if cache is not None:
            cache.close()
    lines.append(
        f"total: {totals['requests']} requests, {totals['cached']} cached, "
        f"{totals['to_send']} to send, estimated ${totals['cost_usd']:.2f} "
        f"(prompt tokens estimated as characters / {CHARS_PER_TOKEN})"
    )
    _write(out_txt, lines)
    return totals


def _write(out_txt: str | Path, lines: list[str]) -> None:
    with atomic_path(out_txt) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
