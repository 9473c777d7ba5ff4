"""Sending LLM-judge requests to any OpenAI-compatible chat-completions endpoint, through
the cache, with retries.

Judge calls cost money and rate-limit budget, so every reply that came back is committed to the
cache (`JudgeCache`) the moment it arrives, duplicates are sent once, transient failures are
retried with backoff, and configuration failures (bad key, unknown model) stop the run at once
with a message that says what to fix. The API key is read from the environment only and is
never logged, cached or put into a message. What a reply says is read by
`emdir.judge.llm_replies`.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai

from emdir.errors import EmdirError
from emdir.judge.cache import JudgeCache
from emdir.judge.llm_replies import (
    JudgeRequest,
    MalformedReply,
    Verdict,
    reading_from_record,
    record_from_response,
    request_key,
)
from emdir.judge.settings import LLMJudgeSettings

log = logging.getLogger(__name__)

# HTTP statuses worth retrying besides 5xx: rate limiting, plus the two the OpenAI SDK itself
# treats as transient (request timeout, conflicting concurrent request).
RETRY_STATUSES = frozenset({408, 409, 429})
# The longest server-requested wait honoured: rate-limit windows are seconds to a minute, so a
# larger Retry-After is a misconfigured server and should not stall a run for hours.
RETRY_AFTER_MAX_S = 600.0

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_*.\-]{4,})|(Bearer\s+\S+)")


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
    attempt comes back retryable and uncached. The semaphore is held through backoff sleeps as
    well, so a rate-limited endpoint sees the whole run slow down instead of the freed slots
    immediately sending more requests.
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
                    record = record_from_response(response, settings)
                except MalformedReply as exc:
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
