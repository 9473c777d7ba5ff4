"""The `openai` judge backend: an LLM judge over any OpenAI-compatible chat-completions
endpoint (OpenAI, or a vLLM / llama.cpp server via `base_url`), through the judge cache.

Each metric (`judge.openai.metrics`) is asked with the question's own judge prompt for that
metric when its YAML file carries one (Betley's do), else the project's template
(`emdir.judge.prompts`). Which answers and metrics are asked is `judge.openai.requests`:

- `full` (the default, paper-faithful): every metric for every non-empty answer. Code
  spillover is the alignment judge answering CODE (SCIENCE.md); the row's category follows
  the alignment verdict, and a scored answer with coherence below `judge.openai.garbled_below`
  is garbled.
- `economical` (`emdir.judge.economy`): the offline detector decides code / prose / garbled
  and code gets no request; `aligned` is asked first and the other metrics only for answers
  it scored; `bad_stuff` only where the self-correction analysis reads it; optionally only
  the first k samples of each question per condition.

Empty answers are not sent. Each judged row's `judge.requests` says which mode scored it.

The parts: `emdir.judge.settings` (how to reach and ask the judge, and which requests),
`emdir.judge.llm_replies` (requests, and the scores read from replies),
`emdir.judge.llm_client` (sending, retries and the cache), `emdir.judge.llm_rows` (the judged
rows of each mode), `emdir.judge.llm_plan` (the judge plan).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emdir.errors import EmdirError
from emdir.io import sha256_text
from emdir.judge.economy import follow_up, select
from emdir.judge.llm_replies import JudgeRequest, Verdict
from emdir.judge.llm_rows import economical_row, empty_row, full_row
from emdir.judge.llm_rows import llm_category as llm_category  # the full mode's category rule
from emdir.judge.prompts import PROMPTS, fill, prompt_sha
from emdir.judge.settings import LLMJudgeSettings, RequestPolicy, llm_settings, request_policy

if TYPE_CHECKING:
    from emdir.judge.backends import JudgeInputs
    from emdir.judge.cache import JudgeCache

log = logging.getLogger(__name__)

# Prompt tokens are estimated as characters / 4: the judge's tokenizer is not available offline.
CHARS_PER_TOKEN = 4

# The judge prompt for (row, metric).
Template = Callable[[Mapping[str, Any], str], str]


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


def one_request(row: Mapping[str, Any], metric: str, template: Template) -> JudgeRequest:
    """The judge request for one answer and metric (the same in every mode: one cache key)."""
    t = template(row, metric)
    q, a = row["question"], row["answer"]
    return JudgeRequest(metric, prompt_sha(t), q, a, fill(t, q, a))


def llm_requests(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], template: Template
) -> dict[tuple[int, str], JudgeRequest]:
    """The full mode's judge requests: one per non-empty answer and metric, keyed (row,
    metric)."""
    return {
        (i, m): one_request(row, m, template)
        for i, row in enumerate(rows)
        if str(row["answer"]).strip()
        for m in metrics
    }


def describe(judge_cfg: Mapping[str, Any]) -> str:
    """How this backend judges, for job messages."""
    return f"openai backend ({judge_cfg['openai']['model']})"


def check_settings(judge_cfg: Mapping[str, Any]) -> None:
    """Fail, saying what to fix, unless `judge.openai` holds usable settings, metrics and
    request settings."""
    llm_settings(judge_cfg)
    request_policy(judge_cfg)


def _send(
    requests: Mapping[tuple[int, str], JudgeRequest],
    settings: LLMJudgeSettings,
    cache: JudgeCache | None,
) -> dict[tuple[int, str], Verdict]:
    from emdir.judge.llm_client import judge_requests

    keys = list(requests)
    verdicts = judge_requests([requests[k] for k in keys], settings, cache)
    return dict(zip(keys, verdicts, strict=True))


def judge_rows(
    rows: Sequence[dict[str, Any]], judge_cfg: Mapping[str, Any], inputs: JudgeInputs
) -> list[dict[str, Any]]:
    """Ask the LLM judge what `judge.openai.requests` says about every answer (through the
    cache at `inputs.cache_path`, with the own prompts of `inputs.question_files`)."""
    from emdir.judge.cache import JudgeCache

    settings, metrics = llm_settings(judge_cfg)
    policy = request_policy(judge_cfg)
    template = template_lookup(inputs.question_files)
    meta = {
        "backend": "openai",
        "model": settings.model,
        "scoring": settings.scoring_params,
        "requests": policy.record(),
    }
    metas = []
    for row in rows:
        shas = {m: prompt_sha(template(row, m)) for m in metrics}
        prompt = sha256_text(json.dumps(shas, sort_keys=True))
        metas.append({**meta, "prompt_sha": prompt, "prompts": shas})
    cache = JudgeCache(inputs.cache_path) if inputs.cache_path is not None else None
    try:
        if policy.economical:
            return _economical(rows, judge_cfg, metrics, policy, template, metas, settings, cache)
        by_key = _send(llm_requests(rows, metrics, template), settings, cache)
    finally:
        if cache is not None:
            cache.close()
    garbled_below = float(judge_cfg["openai"]["garbled_below"])
    out = []
    for i, row in enumerate(rows):
        if (i, "aligned") not in by_key:
            out.append(empty_row(row, metrics, metas[i]))
            continue
        got = {m: by_key[(i, m)] for m in metrics}
        out.append(full_row(row, got, garbled_below, judge_cfg["em"], metas[i]))
    return out


def _economical(
    rows: Sequence[dict[str, Any]],
    judge_cfg: Mapping[str, Any],
    metrics: Sequence[str],
    policy: RequestPolicy,
    template: Template,
    metas: Sequence[Mapping[str, Any]],
    settings: LLMJudgeSettings,
    cache: JudgeCache | None,
) -> list[dict[str, Any]]:
    """The economical mode (`emdir.judge.economy`): the detector's verdict on every answer,
    `aligned` for the answers it leaves to the LLM, then the metrics that verdict calls for."""
    kinds, asked = select(rows, judge_cfg, policy)
    first = {
        (i, "aligned"): one_request(row, "aligned", template)
        for i, row in enumerate(rows)
        if asked[i]
    }
    by_key = _send(first, settings, cache)
    then: dict[tuple[int, str], JudgeRequest] = {}
    skipped: dict[int, dict[str, str]] = {}
    for (i, _), verdict in by_key.items():
        more, skipped[i] = follow_up(verdict.category, verdict.score, metrics, policy)
        then.update({(i, m): one_request(rows[i], m, template) for m in more})
    by_key.update(_send(then, settings, cache))
    garbled_below = float(judge_cfg["openai"]["garbled_below"])
    out = []
    for i, row in enumerate(rows):
        kind = kinds[i]
        if kind is None:
            out.append(empty_row(row, metrics, metas[i]))
            continue
        got = {m: by_key[(i, m)] for m in metrics if (i, m) in by_key}
        out.append(
            economical_row(
                row,
                kind,
                got,
                skipped.get(i, {}),
                metrics,
                policy,
                garbled_below,
                judge_cfg["em"],
                metas[i],
            )
        )
    told = Counter(str(r["judge"].get("disagreement")) for r in out if "disagreement" in r["judge"])
    log.info(
        "economical judging of %d answers: %d code by the detector (no request), %d past the "
        "sample cap, %d asked; %d requests; the detector and the LLM judge disagree on %d (%s)",
        len(rows),
        sum(k == "code" for k in kinds),
        sum(k not in (None, "code") and not a for k, a in zip(kinds, asked, strict=True)),
        sum(asked),
        len(first) + len(then),
        sum(told.values()),
        "; ".join(f"{n} x {why}" for why, n in told.most_common(3)) or "none",
    )
    return out
