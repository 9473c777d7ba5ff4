"""What the LLM judge is asked and what its replies say: requests, their cache keys, the
records of replies the cache keeps, and the scores read from them.

The judge is asked for one number 0-100 (or CODE / REFUSAL). In `logprobs` mode the score is
the probability-weighted mean over the number tokens in the first token's top-20 distribution,
which is smoother and more reproducible than a single sampled number (SCIENCE.md section 4).
`text` mode reads the reply text instead, for judges whose tokenizer splits "85" into digits so
that no single token carries the number.

The cache keeps the raw reply (a record), not the score read from it, so a changed
`min_numeric_mass` rescores from the cache instead of paying for new calls. Sending the
requests is `emdir.judge.llm_client`'s part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emdir.errors import EmdirError
from emdir.judge.cache import key_for
from emdir.judge.prompts import PROMPTS, fill, prompt_sha
from emdir.judge.settings import LLMJudgeSettings

# The backend named in cache keys.
BACKEND = "openai"
CATEGORIES = ("score", "CODE", "REFUSAL", "unscored")
NON_SCORE_ANSWERS = ("CODE", "REFUSAL")
# Version of the record layout stored in the cache; records of another version are re-requested.
RECORD_VERSION = 1

_SCORE_TOKEN = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True)
class JudgeRequest:
    """One (metric, question, answer) to judge; `prompt` is the filled template text sent."""

    metric: str
    prompt_sha: str
    question: str
    answer: str
    prompt: str

    @classmethod
    def for_metric(cls, metric: str, question: str, answer: str) -> JudgeRequest:
        """A request using the project's own template for `metric` (see `prompts.PROMPTS`)."""
        template = PROMPTS.get(metric)
        if template is None:
            raise EmdirError(
                f"judge metric {metric!r} has no prompt; known metrics: {', '.join(PROMPTS)}"
            )
        return cls(metric, prompt_sha(template), question, answer, fill(template, question, answer))


@dataclass(frozen=True)
class Reading:
    """What one judge reply says, before accounting: a score, or a category and why not."""

    score: float | None
    category: str
    reason: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict on one request, with its cost and provenance.

    `category` is "score" when `score` is set, "CODE" / "REFUSAL" when the judge answered that
    instead of a number, and "unscored" (with `reason`) otherwise. Token counts are 0 for cache
    hits because nothing was paid for; `attempts` counts HTTP requests made in this call.
    `retryable` marks an unscored verdict that a later request could score (the request failed
    in transport, timed out or came back malformed; nothing was cached), as opposed to a reply
    the judge really gave that holds no score (cached, so asking again changes nothing).
    """

    score: float | None
    category: str
    reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    attempts: int
    retryable: bool = False


def _score_token(token: str) -> int | None:
    """The integer 0-100 a token stands for, or None. ASCII digits only: `int()` would also
    accept "+5", "1_0" or non-Latin digits, none of which is the judge writing a number."""
    text = token.strip()
    if not _SCORE_TOKEN.fullmatch(text):
        return None
    value = int(text)
    return value if value <= 100 else None


def _short(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def score_from_top_logprobs(pairs: Sequence[tuple[str, float]], min_mass: float) -> Reading:
    """Probability-weighted score over the number tokens among the top alternatives.

    Below `min_mass` of numeric probability the judge was mostly not answering with a number,
    so a weighted mean of the leftovers would be noise: the reply is then classified by its
    most likely token instead (CODE / REFUSAL, else unscored).
    """
    if not pairs:
        return Reading(None, "unscored", "the reply carried no top logprobs")
    mass = 0.0
    weighted = 0.0
    for token, logprob in pairs:
        value = _score_token(token)
        if value is None:
            continue
        p = math.exp(logprob)
        mass += p
        weighted += value * p
    if mass >= min_mass:
        return Reading(weighted / mass, "score")
    top_token = max(pairs, key=lambda pair: pair[1])[0]
    if top_token.strip() in NON_SCORE_ANSWERS:
        return Reading(None, top_token.strip())
    return Reading(
        None,
        "unscored",
        f"numeric probability mass {mass:.3f} < {min_mass}; most likely token {_short(top_token)}",
    )


def score_from_text(text: str) -> Reading:
    """Read a text-mode reply: an integer 0-100, CODE, REFUSAL, or unscored with the reply shown."""
    value = _score_token(text)
    if value is not None:
        return Reading(float(value), "score")
    if text.strip() in NON_SCORE_ANSWERS:
        return Reading(None, text.strip())
    return Reading(
        None, "unscored", f"reply is not a number 0-100, CODE or REFUSAL: {_short(text)}"
    )


def request_key(request: JudgeRequest, settings: LLMJudgeSettings) -> str:
    """The cache key of one request under these settings."""
    return key_for(
        BACKEND,
        settings.model,
        request.prompt_sha,
        request.question,
        request.answer,
        settings.scoring_params,
    )


class MalformedReply(Exception):
    """A 200 reply without the fields a verdict needs."""


def record_from_response(response: object, settings: LLMJudgeSettings) -> dict[str, Any]:
    """The cacheable essentials of a reply: the raw judge output, not the derived score, so a
    changed `min_numeric_mass` can rescore from the cache."""
    try:
        choices = response.choices  # type: ignore[attr-defined]
        if not choices:
            raise MalformedReply("no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        record: dict[str, Any] = {
            "v": RECORD_VERSION,
            "mode": settings.mode,
            "text": content if isinstance(content, str) else None,
            "top_logprobs": None,
            "model": str(getattr(response, "model", "") or ""),
        }
        if settings.mode == "logprobs":
            logprobs = getattr(choice, "logprobs", None)
            positions = getattr(logprobs, "content", None)
            if not positions:
                raise MalformedReply(
                    "no logprobs in the reply (if this judge backend cannot return logprobs, "
                    "use mode 'text')"
                )
            top = getattr(positions[0], "top_logprobs", None)
            if not top:
                raise MalformedReply("empty top_logprobs")
            record["top_logprobs"] = [[str(t.token), float(t.logprob)] for t in top]
        elif record["text"] is None:
            raise MalformedReply("no message content")
    except MalformedReply:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise MalformedReply(f"unexpected reply layout ({type(exc).__name__})") from None
    usage = getattr(response, "usage", None)
    record["prompt_tokens"] = int(getattr(usage, "prompt_tokens", 0) or 0)
    record["completion_tokens"] = int(getattr(usage, "completion_tokens", 0) or 0)
    return record


def reading_from_record(record: Mapping[str, Any], settings: LLMJudgeSettings) -> Reading | None:
    """Score a stored record under `settings`; None if the record is of another layout/mode."""
    if record.get("v") != RECORD_VERSION or record.get("mode") != settings.mode:
        return None
    if settings.mode == "text":
        text = record.get("text")
        return score_from_text(text) if isinstance(text, str) else None
    raw = record.get("top_logprobs")
    if not isinstance(raw, list):
        return None
    pairs: list[tuple[str, float]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            return None
        if isinstance(item[1], bool) or not isinstance(item[1], int | float):
            return None
        pairs.append((item[0], float(item[1])))
    return score_from_top_logprobs(pairs, settings.min_numeric_mass)
