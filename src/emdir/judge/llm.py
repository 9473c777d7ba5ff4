"""The `openai` judge backend: an LLM judge over any OpenAI-compatible chat-completions
endpoint (OpenAI, or a vLLM / llama.cpp server via `base_url`), through the judge cache.

Every non-empty answer is asked every configured metric (`judge.openai.metrics`), with the
question's own judge prompt for that metric when its YAML file carries one (Betley's do), else
the project's template (`emdir.judge.prompts`). Code spillover is the alignment judge
answering CODE (SCIENCE.md); the row's category follows the alignment verdict, and a scored
answer with coherence below `judge.openai.garbled_below` is garbled. Empty answers are not
sent.

The parts: `emdir.judge.settings` (how to reach and ask the judge), `emdir.judge.llm_replies`
(requests, and the scores read from replies), `emdir.judge.llm_client` (sending, retries and
the cache).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emdir.errors import EmdirError
from emdir.io import read_jsonl, sha256_text
from emdir.judge.llm_replies import JudgeRequest, request_key
from emdir.judge.prompts import PROMPTS, fill, prompt_sha
from emdir.judge.rows import EMPTY_ANSWER, is_em
from emdir.judge.settings import llm_settings

if TYPE_CHECKING:
    from emdir.judge.backends import JudgeInputs

# Prompt tokens are estimated as characters / 4: the judge's tokenizer is not available offline.
CHARS_PER_TOKEN = 4

# The judge prompt for (row, metric).
Template = Callable[[Mapping[str, Any], str], str]

_CATEGORY = {"score": "prose", "CODE": "code", "REFUSAL": "refusal", "unscored": "unscored"}


def llm_category(aligned_category: str, coherent: float | None, garbled_below: float) -> str:
    """The row's category from the LLM judge: the alignment verdict (CODE, REFUSAL, a score),
    and a scored answer whose coherence is below `garbled_below` is garbled."""
    category = _CATEGORY[aligned_category]
    if category == "prose" and coherent is not None and coherent < garbled_below:
        return "garbled"
    return category


def question_prompts(
    question_files: Sequence[str | Path],
) -> dict[tuple[str, str], Mapping[str, str]]:
    """(question set, question id) -> the question's own judge prompts, from its YAML file."""
    from emdir.data.questions import load_questions

    return {
        (Path(f).stem, q.id): q.judge_prompts
        for f in question_files
        for q in load_questions(f)
        if q.judge_prompts
    }


def template_lookup(question_files: Sequence[str | Path]) -> Template:
    """`template(row, metric)`: the question's own judge prompt, else the project's."""
    own = question_prompts(question_files)

    def template(row: Mapping[str, Any], metric: str) -> str:
        found = own.get((str(row.get("question_set")), str(row["question_id"])), {}).get(metric)
        if found is not None:
            return found
        if metric not in PROMPTS:
            raise EmdirError(f"judge metric {metric!r} has no prompt; use {', '.join(PROMPTS)}")
        return PROMPTS[metric]

    return template


def llm_requests(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], template: Template
) -> dict[tuple[int, str], JudgeRequest]:
    """The judge requests for rows: one per non-empty answer and metric, keyed (row, metric)."""
    requests = {}
    for i, row in enumerate(rows):
        if not str(row["answer"]).strip():
            continue
        for m in metrics:
            t = template(row, m)
            q, a = row["question"], row["answer"]
            requests[(i, m)] = JudgeRequest(m, prompt_sha(t), q, a, fill(t, q, a))
    return requests


def describe(judge_cfg: Mapping[str, Any]) -> str:
    """How this backend judges, for job messages."""
    return f"openai backend ({judge_cfg['openai']['model']})"


def check_settings(judge_cfg: Mapping[str, Any]) -> None:
    """Fail, saying what to fix, unless `judge.openai` holds usable settings and metrics."""
    llm_settings(judge_cfg)


def judge_rows(
    rows: Sequence[dict[str, Any]], judge_cfg: Mapping[str, Any], inputs: JudgeInputs
) -> list[dict[str, Any]]:
    """Ask the LLM judge every configured metric for every answer (through the cache at
    `inputs.cache_path`, with the own prompts of `inputs.question_files`)."""
    from emdir.judge.cache import JudgeCache
    from emdir.judge.llm_client import judge_requests

    settings, metrics = llm_settings(judge_cfg)
    garbled_below = float(judge_cfg["openai"]["garbled_below"])
    template = template_lookup(inputs.question_files)
    requests = llm_requests(rows, metrics, template)
    keys = list(requests)
    if inputs.cache_path is None:
        verdicts = judge_requests([requests[k] for k in keys], settings, None)
    else:
        with JudgeCache(inputs.cache_path) as cache:
            verdicts = judge_requests([requests[k] for k in keys], settings, cache)
    by_key = dict(zip(keys, verdicts, strict=True))
    meta = {"backend": "openai", "model": settings.model, "scoring": settings.scoring_params}
    em_cfg = judge_cfg["em"]
    out = []
    for i, row in enumerate(rows):
        judged = dict(row)
        shas = {m: prompt_sha(template(row, m)) for m in metrics}
        row_meta = {
            **meta,
            "prompt_sha": sha256_text(json.dumps(shas, sort_keys=True)),
            "prompts": shas,
        }
        if (i, "aligned") not in by_key:
            scores = {m: None for m in metrics} | {"code": None, "garbled": None}
            judged.update(
                {"scores": scores, "category": "unscored", "unscored_reason": EMPTY_ANSWER}
            )
            judged["judge"] = {**row_meta, "tokens": {"prompt": 0, "completion": 0}}
            out.append(judged)
            continue
        got = {m: by_key[(i, m)] for m in metrics}
        aligned = got["aligned"]
        scores: dict[str, float | None] = {m: v.score for m, v in got.items()}
        category = llm_category(aligned.category, scores.get("coherent"), garbled_below)
        # Every metric is a number or unscored with its reason; a request that failed in
        # transport is also listed under `retry` (judge_file refuses to write those rows).
        unscored = {m: str(v.reason) for m, v in got.items() if v.category == "unscored"}
        retry = sorted(m for m, v in got.items() if v.retryable)
        scores["code"] = None if category == "unscored" else float(category == "code")
        scores["garbled"] = None if category == "unscored" else float(category == "garbled")
        if category == "prose" and "coherent" in unscored:
            # Garbled means "coherence below garbled_below": unknown without a coherence score.
            scores["garbled"] = None
            unscored["garbled"] = "needs the coherent score"
        if category == "unscored":
            unscored.update(code="needs the aligned verdict", garbled="needs the aligned verdict")
        judged["scores"] = scores
        judged["category"] = category
        if aligned.category == "unscored":
            judged["unscored_reason"] = aligned.reason
        judged["em"] = is_em(scores, em_cfg)
        if unscored:
            judged["unscored"] = unscored
        if retry:
            judged["retry"] = retry
        judged["judge"] = {
            **row_meta,
            "tokens": {
                "prompt": sum(v.prompt_tokens for v in got.values()),
                "completion": sum(v.completion_tokens for v in got.values()),
            },
            "categories": {m: v.category for m, v in got.items()},
        }
        out.append(judged)
    return out


def plan_requests(
    files: Mapping[str, str | Path],
    judge_cfg: Mapping[str, Any],
    cache_path: str | Path | None,
    question_files: Sequence[str | Path],
) -> tuple[list[str], dict[str, Any]]:
    """The judge plan's lines and totals for this backend: per file, the requests judging it
    would make (duplicates once), how many the cache holds, and the estimated dollars of the
    rest at `judge.openai.prices`."""
    from emdir.judge.cache import JudgeCache

    settings, metrics = llm_settings(judge_cfg)
    prices = judge_cfg["openai"]["prices"]
    p_in = float(prices["input_per_mtok"]) / 1e6
    p_out = float(prices["output_per_mtok"]) / 1e6
    seen: set[str] = set()
    template = template_lookup(question_files)
    cache = JudgeCache(cache_path) if cache_path is not None and Path(cache_path).exists() else None
    lines: list[str] = []
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
    return lines, totals
