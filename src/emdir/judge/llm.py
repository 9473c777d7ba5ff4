"""An LLM judge over any OpenAI-compatible chat-completions endpoint, with a persistent cache.

The judge is asked for one number 0-100 (or CODE / REFUSAL). In `logprobs` mode the score is
the probability-weighted mean over the number tokens in the first token's top-20 distribution,
which is smoother and more reproducible than a single sampled number (SCIENCE.md section 4).
`text` mode reads the reply text instead, for judges whose tokenizer splits "85" into digits so
that no single token carries the number.

Judge calls cost money and rate-limit budget, so every reply that came back is committed to the
cache (`JudgeCache`) the moment it arrives, duplicates are sent once, transient failures are
retried with backoff, and configuration failures (bad key, unknown model) stop the run at once
with a message that says what to fix. The API key is read from the environment only and is
never logged, cached or put into a message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

import openai

from emdir.errors import EmdirError
from emdir.judge.cache import JudgeCache, key_for
from emdir.judge.prompts import PROMPTS, fill, prompt_sha

log = logging.getLogger(__name__)

BACKEND = "openai"
MODES = ("logprobs", "text")
CATEGORIES = ("score", "CODE", "REFUSAL", "unscored")
NON_SCORE_ANSWERS = ("CODE", "REFUSAL")
# Enough room for "100" plus a leading space or newline under any tokenizer that splits digits,
# yet too little for the judge to start explaining itself.
TEXT_MODE_MAX_TOKENS = 8
# The OpenAI API accepts at most 20 alternatives per position.
MAX_TOP_LOGPROBS = 20
# Version of the record layout stored in the cache; records of another version are re-requested.
RECORD_VERSION = 1
# HTTP statuses worth retrying besides 5xx: rate limiting, plus the two the OpenAI SDK itself
# treats as transient (request timeout, conflicting concurrent request).
RETRY_STATUSES = frozenset({408, 409, 429})
# The longest server-requested wait honoured: rate-limit windows are seconds to a minute, so a
# larger Retry-After is a misconfigured server and should not stall a run for hours.
RETRY_AFTER_MAX_S = 600.0

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCORE_TOKEN = re.compile(r"[0-9]{1,3}")
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_*.\-]{4,})|(Bearer\s+\S+)")


@dataclass(frozen=True)
class LLMJudgeSettings:
    """How to reach the judge and how to ask it (config `judge.openai`, whose defaults
    config/schema.yaml holds); validated on construction.

    `max_tokens` None becomes 1 in logprobs mode (the verdict is the first token) and
    TEXT_MODE_MAX_TOKENS in text mode.
    """

    model: str
    base_url: str | None
    api_key_env: str
    mode: Literal["logprobs", "text"]
    top_logprobs: int
    max_tokens: int | None
    temperature: float
    seed: int
    min_numeric_mass: float
    concurrency: int
    max_retries: int
    timeout_s: float
    backoff_base_s: float
    backoff_max_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            _bad("model", self.model, "a non-empty judge model id, e.g. gpt-4o-2024-08-06")
        if self.base_url is not None and (
            not isinstance(self.base_url, str)
            or not self.base_url.startswith(("http://", "https://"))
        ):
            _bad("base_url", self.base_url, "an http(s) URL such as http://localhost:8000/v1")
        if not isinstance(self.api_key_env, str) or not _ENV_NAME.fullmatch(self.api_key_env):
            _bad("api_key_env", self.api_key_env, "the name of an environment variable")
        if self.mode not in MODES:
            _bad("mode", self.mode, f"one of {', '.join(MODES)}")
        _check_int("top_logprobs", self.top_logprobs, 1, MAX_TOP_LOGPROBS)
        if self.max_tokens is None:
            default = 1 if self.mode == "logprobs" else TEXT_MODE_MAX_TOKENS
            object.__setattr__(self, "max_tokens", default)
        _check_int("max_tokens", self.max_tokens, 1, None)
        _check_float("temperature", self.temperature, 0.0, 2.0)
        _check_int("seed", self.seed, None, None)
        _check_float("min_numeric_mass", self.min_numeric_mass, 0.0, 1.0)
        if self.min_numeric_mass <= 0.0:
            _bad("min_numeric_mass", self.min_numeric_mass, "a number in (0, 1]")
        _check_int("concurrency", self.concurrency, 1, None)
        _check_int("max_retries", self.max_retries, 0, None)
        _check_float("timeout_s", self.timeout_s, 0.0, None)
        if self.timeout_s <= 0.0:
            _bad("timeout_s", self.timeout_s, "a positive number of seconds")
        _check_float("backoff_base_s", self.backoff_base_s, 0.0, None)
        _check_float("backoff_max_s", self.backoff_max_s, self.backoff_base_s, None)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> LLMJudgeSettings:
        """Settings from a config section; unknown keys fail so that typos are not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise EmdirError(
                f"judge settings: unknown key(s) {', '.join(unknown)}; "
                f"known keys are {', '.join(sorted(known))}"
            )
        if "model" not in cfg:
            raise EmdirError("judge settings: `model` is required (the judge model id to call)")
        missing = sorted(known - set(cfg))
        if missing:
            raise EmdirError(
                f"judge settings: missing key(s) {', '.join(missing)}; pass the whole "
                "judge.openai section of a validated config (emdir.schema_defaults has its "
                "defaults)"
            )
        return cls(**dict(cfg))

    @property
    def scoring_params(self) -> dict[str, Any]:
        """Everything besides the model that shapes the judge's reply: part of the cache key.

        `min_numeric_mass` is left out on purpose: it is applied when a stored reply is read,
        so changing the threshold rescores from the cache instead of paying for new calls.
        """
        params: dict[str, Any] = {
            "mode": self.mode,
            "max_tokens": self.max_tokens,
            "temperature": float(self.temperature),
            "seed": self.seed,
        }
        if self.mode == "logprobs":
            params["top_logprobs"] = self.top_logprobs
        return params

    def request_kwargs(self, prompt: str) -> dict[str, Any]:
        """Keyword arguments for `chat.completions.create` for one filled judge prompt."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }
        if self.mode == "logprobs":
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = self.top_logprobs
        return kwargs

    @property
    def endpoint(self) -> str:
        """The base URL for messages (the SDK default when none is set)."""
        return self.base_url or "the OpenAI API (default base_url)"


def _bad(name: str, value: object, expected: str) -> NoReturn:
    raise EmdirError(f"judge setting `{name}` = {value!r} is invalid: expected {expected}")


def _check_int(name: str, value: object, lo: int | None, hi: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _bad(name, value, "an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        _bad(name, value, f"an integer in {rng}")


def _check_float(name: str, value: object, lo: float | None, hi: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _bad(name, value, "a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        _bad(name, value, f"a number in {rng}")


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


def read_api_key(settings: LLMJudgeSettings) -> str:
    """The API key from the configured environment variable; never from config files."""
    key = os.environ.get(settings.api_key_env, "")
    if not key.strip():
        raise EmdirError(
            f"the LLM judge needs an API key in the environment variable {settings.api_key_env}, "
            f"which is {'empty' if settings.api_key_env in os.environ else 'not set'}; "
            f"set it with `export {settings.api_key_env}=...` (or point judge api_key_env at "
            "the variable that holds the key)"
        )
    return key.strip()


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, or `retry-after` as seconds or an
    HTTP date), or None when it gave no usable hint."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - datetime.now(UTC)).total_seconds()
        return max(0.0, value)
    return value if math.isfinite(value) and value >= 0 else None


def backoff_delay(
    failed_attempt: int,
    settings: LLMJudgeSettings,
    headers: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `failed_attempt`-th attempt (1-based) failed.

    A server's Retry-After wins, since the server knows when its rate window reopens (capped at
    RETRY_AFTER_MAX_S); otherwise exponential backoff with jitter, so that many concurrent
    requests rejected together do not all come back at the same instant.
    """
    hinted = retry_after_s(headers)
    if hinted is not None:
        return min(hinted, RETRY_AFTER_MAX_S)
    exp = min(settings.backoff_max_s, settings.backoff_base_s * 2.0 ** (failed_attempt - 1))
    return exp * (rng or random).uniform(0.5, 1.5)


def _redact(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


def _server_message(exc: openai.APIStatusError, api_key: str | None) -> str:
    body = exc.body
    message: object = None
    if isinstance(body, dict):
        message = body.get("message")
        inner = body.get("error")
        if message is None and isinstance(inner, dict):
            message = inner.get("message")
    if not isinstance(message, str) or not message:
        return ""
    return _redact(" ".join(message.split())[:200], api_key)


def _describe(exc: openai.APIError, settings: LLMJudgeSettings, api_key: str | None) -> str:
    """A short, key-free description of a transient failure for reasons and logs."""
    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {settings.timeout_s:g} s (judge.openai.timeout_s)"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__})" if cause is not None else ""
        return f"connection error{detail}"
    if isinstance(exc, openai.APIStatusError):
        message = _server_message(exc, api_key)
        return f"HTTP {exc.status_code}" + (f": {message[:120]}" if message else "")
    return type(exc).__name__


def _config_error(
    exc: openai.APIStatusError, settings: LLMJudgeSettings, api_key: str | None
) -> EmdirError:
    """The user-facing error for a non-transient HTTP status: what failed and what to check."""
    status = exc.status_code
    env = settings.api_key_env
    if status == 401:
        fix = f"the API key was rejected; check the key in ${env}"
    elif status == 403:
        fix = (
            f"the key in ${env} may not use model {settings.model!r}; check the key's "
            "permissions or choose another judge model"
        )
    elif status == 404:
        fix = f"not found; check the judge model {settings.model!r} and base_url"
    elif status == 400:
        fix = (
            f"the request was rejected; check the judge settings (model {settings.model!r}, "
            f"mode {settings.mode!r}: a model without logprobs support needs mode 'text')"
        )
    else:
        fix = "the request was refused; check the judge model, base_url and key"
    # 401/403 bodies can echo (part of) the key, so their text is never shown.
    message = "" if status in (401, 403) else _server_message(exc, api_key)
    said = f" (server said: {message})" if message else ""
    return EmdirError(f"LLM judge at {settings.endpoint} answered HTTP {status}: {fix}{said}")


class _Malformed(Exception):
    """A 200 reply without the fields a verdict needs."""


def _record_from_response(response: object, settings: LLMJudgeSettings) -> dict[str, Any]:
    """The cacheable essentials of a reply: the raw judge output, not the derived score, so a
    changed `min_numeric_mass` can rescore from the cache."""
    try:
        choices = response.choices  # type: ignore[attr-defined]
        if not choices:
            raise _Malformed("no choices")
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
                raise _Malformed(
                    "no logprobs in the reply (if this judge backend cannot return logprobs, "
                    "use mode 'text')"
                )
            top = getattr(positions[0], "top_logprobs", None)
            if not top:
                raise _Malformed("empty top_logprobs")
            record["top_logprobs"] = [[str(t.token), float(t.logprob)] for t in top]
        elif record["text"] is None:
            raise _Malformed("no message content")
    except _Malformed:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise _Malformed(f"unexpected reply layout ({type(exc).__name__})") from None
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


@dataclass
class _Stats:
    """Counters for the one summary log line per call."""

    sent: int = 0
    attempts: int = 0
    retries: int = 0
    malformed: int = 0
    gave_up: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _failed(reason: str, attempts: int) -> Verdict:
    """A request that got no usable reply: unscored, not cached, retryable."""
    return Verdict(None, "unscored", reason, 0, 0, False, attempts, retryable=True)


async def _judge_one(
    client: openai.AsyncOpenAI,
    request: JudgeRequest,
    settings: LLMJudgeSettings,
    semaphore: asyncio.Semaphore,
    stats: _Stats,
    api_key: str,
) -> tuple[Verdict, dict[str, Any] | None]:
    """One request with retries -> (verdict, record to cache or None when not cacheable).

    Transport failures, timeouts, retryable statuses and malformed 200 bodies (not JSON, no
    choices, no logprobs) are all retried with backoff; what still fails after the last
    attempt comes back retryable and uncached. The semaphore is held through backoff sleeps as well, so a rate-limited endpoint sees the
    whole run slow down instead of the freed slots immediately sending more requests.
    """
    kwargs = settings.request_kwargs(request.prompt)
    max_attempts = settings.max_retries + 1
    last_failure = ""
    async with semaphore:
        stats.sent += 1
        for attempt in range(1, max_attempts + 1):
            stats.attempts += 1
            fatal: EmdirError | None = None
            hint: Mapping[str, str] | None = None
            try:
                response = await client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                if exc.status_code in RETRY_STATUSES or exc.status_code >= 500:
                    last_failure = _describe(exc, settings, api_key)
                    hint = exc.response.headers
                else:
                    fatal = _config_error(exc, settings, api_key)
            except openai.APIConnectionError as exc:
                last_failure = _describe(exc, settings, api_key)
            except (openai.APIResponseValidationError, ValueError) as exc:
                # The SDK raises on a body that is not valid JSON (json.JSONDecodeError).
                stats.malformed += 1
                last_failure = (
                    f"malformed reply: not a valid chat completion ({type(exc).__name__})"
                )
            else:
                try:
                    record = _record_from_response(response, settings)
                except _Malformed as exc:
                    stats.malformed += 1
                    last_failure = f"malformed reply: {exc}"
                else:
                    reading = reading_from_record(record, settings)
                    assert reading is not None  # a fresh record always matches its settings
                    stats.prompt_tokens += record["prompt_tokens"]
                    stats.completion_tokens += record["completion_tokens"]
                    verdict = Verdict(
                        reading.score,
                        reading.category,
                        reading.reason,
                        record["prompt_tokens"],
                        record["completion_tokens"],
                        False,
                        attempt,
                    )
                    return verdict, record
            if fatal is not None:
                # Raised outside the except block so the SDK error (whose body may echo the
                # key) is not chained onto it.
                raise fatal
            if attempt < max_attempts:
                stats.retries += 1
                delay = backoff_delay(attempt, settings, hint)
                log.debug(
                    "judge request failed (%s), attempt %d/%d; retrying in %.2f s",
                    last_failure,
                    attempt,
                    max_attempts,
                    delay,
                )
                await asyncio.sleep(delay)
    stats.gave_up += 1
    return _failed(f"gave up after {max_attempts} attempts: {last_failure}", max_attempts), None


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to surface from a task group: a user-facing EmdirError if there is one."""
    flat: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            flat.append(exc)
    for exc in flat:
        if isinstance(exc, EmdirError):
            return exc
    return flat[0] if len(flat) == 1 else group


async def judge_requests_async(
    requests: Sequence[JudgeRequest],
    settings: LLMJudgeSettings,
    cache: JudgeCache | None = None,
) -> list[Verdict]:
    """Verdicts for `requests`, in order; see `judge_requests`. For callers inside a loop."""
    started = time.monotonic()
    keys = [request_key(r, settings) for r in requests]
    verdicts: dict[str, Verdict] = {}
    to_send: dict[str, JudgeRequest] = {}
    cached = 0
    for key, request in zip(keys, requests, strict=True):
        if key in verdicts or key in to_send:
            continue
        record = cache.get(key) if cache is not None else None
        reading = reading_from_record(record, settings) if record is not None else None
        if reading is not None:
            verdicts[key] = Verdict(reading.score, reading.category, reading.reason, 0, 0, True, 0)
            cached += 1
        else:
            to_send[key] = request

    stats = _Stats()
    if to_send:
        api_key = read_api_key(settings)
        client = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=api_key,
            max_retries=0,
            timeout=settings.timeout_s,
        )
        semaphore = asyncio.Semaphore(settings.concurrency)

        async def run(key: str, request: JudgeRequest) -> None:
            verdict, record = await _judge_one(client, request, settings, semaphore, stats, api_key)
            if record is not None and cache is not None:
                cache.put(key, record)
            verdicts[key] = verdict

        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                for key, request in to_send.items():
                    group.create_task(run(key, request))
        except BaseExceptionGroup as errors:
            failure = _first_error(errors)
            if failure is errors:
                raise
        finally:
            await client.close()
        if failure is not None:
            # Outside the except block: surface the one user-facing error, not a group.
            raise failure

    unscored = sum(1 for v in verdicts.values() if v.category == "unscored")
    log.info(
        "LLM judge %s (%s mode): %d requests, %d cached, %d duplicates, %d sent "
        "(%d HTTP attempts, %d retried), %d unscored (%d malformed replies, %d gave up), "
        "tokens %d in / %d out, %.1f s",
        settings.model,
        settings.mode,
        len(requests),
        cached,
        len(requests) - len(verdicts),
        stats.sent,
        stats.attempts,
        stats.retries,
        unscored,
        stats.malformed,
        stats.gave_up,
        stats.prompt_tokens,
        stats.completion_tokens,
        time.monotonic() - started,
    )
    return [verdicts[key] for key in keys]


def judge_requests(
    requests: Sequence[JudgeRequest],
    settings: LLMJudgeSettings,
    cache: JudgeCache | None = None,
) -> list[Verdict]:
    """Judge every request: cache hits cost nothing, duplicates are sent once, each fresh reply
    is cached as it arrives. Transport failures and malformed 200 bodies are retried; those
    that outlast the retries come back "unscored" with `retryable` set and are not cached, so a
    rerun sends exactly them again; replies the judge really gave but that hold no score (low
    numeric mass, unparseable text) are cached and not retryable.
    A configuration error (bad key, unknown model) raises EmdirError at once.
    """
    return asyncio.run(judge_requests_async(requests, settings, cache))
