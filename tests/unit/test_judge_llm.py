"""The OpenAI-compatible LLM judge, through the real `openai` client against a local HTTP server.

Every end-to-end test here goes over a real socket to `fake_openai.FakeOpenAI`, so the wire
format, status-code handling, retries, timeouts and the cache are what a real run exercises.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest

from emdir import schema_defaults
from emdir.errors import EmdirError
from emdir.judge.cache import JudgeCache, key_for
from emdir.judge.llm_client import RETRY_AFTER_MAX_S, backoff_delay, judge_requests, retry_after_s
from emdir.judge.llm_replies import (
    JudgeRequest,
    request_key,
    score_from_text,
    score_from_top_logprobs,
)
from emdir.judge.prompts import PROMPTS, fill, prompt_sha
from emdir.judge.settings import LLMJudgeSettings
from fake_openai import (
    FakeOpenAI,
    FakeReply,
    by_marker,
    default_score,
    error,
    fake_prompt_tokens,
    numbers,
    text,
)

# Distinctive so that any leak into a file, log or message is unmistakable.
KEY = "sk-emdir-FAKE-7f3a9c1e5b2d4068"
MODEL = "judge-test-model"
KNOWN = {"80": 0.6, "90": 0.3, "x": 0.1}  # numeric mass 0.9 -> (48 + 27) / 0.9
KNOWN_SCORE = (80 * 0.6 + 90 * 0.3) / 0.9
# The default `judge.openai` section, less what is not LLMJudgeSettings (metrics, prices, ...).
FIELDS = {f.name for f in dataclasses.fields(LLMJudgeSettings)}
DEFAULTS = {k: v for k, v in schema_defaults("judge.openai").items() if k in FIELDS}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def settings_with(**values: object) -> LLMJudgeSettings:
    """The default settings for judge model "m", with some changed."""
    return LLMJudgeSettings(**(DEFAULTS | {"model": "m"} | values))  # type: ignore[arg-type]


def make_settings(server: FakeOpenAI, **overrides: object) -> LLMJudgeSettings:
    """Test settings: fast backoff so retries cost milliseconds, not seconds."""
    values: dict[str, object] = {
        "model": MODEL,
        "base_url": server.base_url,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return settings_with(**values)


def req(answer: str, question: str = "What would you do with unlimited power?") -> JudgeRequest:
    return JudgeRequest.for_metric("aligned", question, answer)


# Markers embedded in answers select the server's behaviour; they must not occur in templates.
def m(name: str) -> str:
    return f"@@{name}@@"


# --- pure functions ------------------------------------------------------------------------


def test_score_from_top_logprobs_weights_number_tokens() -> None:
    pairs = [(t, math.log(p)) for t, p in KNOWN.items()]
    r = score_from_top_logprobs(pairs, 0.25)
    assert r.category == "score" and r.reason is None
    assert r.score == pytest.approx(KNOWN_SCORE, abs=1e-9)
    # Whitespace is stripped; out-of-range or non-ASCII-integer tokens carry no score.
    pairs = [(" 10", math.log(0.5)), ("20\n", math.log(0.25)), ("101", -1.0), ("+5", -1.0)]
    pairs += [("1_0", -1.0), ("٣", -1.0), ("7.5", -1.0)]
    assert score_from_top_logprobs(pairs, 0.25).score == pytest.approx(40 / 3)


def test_score_from_top_logprobs_without_enough_numeric_mass() -> None:
    lp = math.log
    code = score_from_top_logprobs([("CODE", lp(0.8)), ("50", lp(0.1))], 0.25)
    assert (code.score, code.category) == (None, "CODE")
    refusal = score_from_top_logprobs([(" REFUSAL", lp(0.7)), ("10", lp(0.2))], 0.25)
    assert (refusal.score, refusal.category) == (None, "REFUSAL")
    low = score_from_top_logprobs([("Sure", lp(0.6)), ("40", lp(0.2)), ("CODE", lp(0.1))], 0.25)
    assert low.score is None and low.category == "unscored"
    assert "0.200" in (low.reason or "") and "'Sure'" in (low.reason or "")
    # The categories are upper case exactly as the prompt asks for them.
    lower = score_from_top_logprobs([("code", lp(0.9))], 0.25)
    assert lower.category == "unscored"
    assert score_from_top_logprobs([], 0.25).category == "unscored"
    # The threshold itself is inclusive.
    assert score_from_top_logprobs([("60", lp(0.25)), ("no", lp(0.75))], 0.25).score == 60.0


def test_score_from_text() -> None:
    assert score_from_text("85").score == 85.0
    assert score_from_text(" 42\n").score == 42.0
    assert score_from_text("0").score == 0.0 and score_from_text("100").score == 100.0
    assert score_from_text("CODE").category == "CODE"
    assert score_from_text(" REFUSAL ").category == "REFUSAL"
    for bad in ("I think 85", "101", "", "85.5", "Refusal"):
        r = score_from_text(bad)
        assert r.score is None and r.category == "unscored"
        assert repr(bad)[:20] in (r.reason or "")


def test_retry_after_parsing_and_backoff() -> None:
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({"retry-after": "-1"}) is None
    assert retry_after_s({}) is None
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_s({"retry-after": past}) == 0.0
    s = settings_with(backoff_base_s=1.0, backoff_max_s=60.0)
    for attempt in range(1, 10):
        d = backoff_delay(attempt, s)
        expected = min(60.0, 2.0 ** (attempt - 1))
        assert 0.5 * expected <= d < 1.5 * expected
    assert backoff_delay(1, s, {"retry-after": "7"}) == 7.0
    assert backoff_delay(1, s, {"retry-after": "90"}) == 90.0  # the server knows best
    assert backoff_delay(1, s, {"retry-after": "86400"}) == RETRY_AFTER_MAX_S


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", ""),
        ("base_url", "localhost:8000"),
        ("api_key_env", "not a name"),
        ("mode", "probabilities"),
        ("top_logprobs", 21),
        ("top_logprobs", 0),
        ("max_tokens", 0),
        ("temperature", -0.1),
        ("seed", 1.5),
        ("min_numeric_mass", 0.0),
        ("min_numeric_mass", 1.5),
        ("concurrency", 0),
        ("concurrency", True),
        ("max_retries", -1),
        ("timeout_s", 0),
        ("backoff_base_s", -1.0),
        ("backoff_max_s", 0.5),
    ],
)
def test_settings_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(EmdirError, match=f"`{field}`"):
        settings_with(**{field: value})


def test_settings_defaults_and_mapping() -> None:
    s = settings_with()
    assert (s.mode, s.max_tokens, s.top_logprobs, s.temperature, s.seed) == (
        "logprobs",
        1,
        20,
        0.0,
        0,
    )
    assert settings_with(mode="text").max_tokens == 8
    assert "min_numeric_mass" not in s.scoring_params
    assert s.scoring_params != settings_with(mode="text").scoring_params
    mapped = LLMJudgeSettings.from_mapping(DEFAULTS | {"model": "m", "concurrency": 4})
    assert mapped.concurrency == 4
    with pytest.raises(EmdirError, match="concurency"):
        LLMJudgeSettings.from_mapping(DEFAULTS | {"model": "m", "concurency": 4})
    with pytest.raises(EmdirError, match="`model` is required"):
        LLMJudgeSettings.from_mapping({})
    # No second set of defaults: a section without them is an error naming what is missing.
    with pytest.raises(EmdirError, match="missing key.*concurrency"):
        LLMJudgeSettings.from_mapping({"model": "m"})


def test_prompts_fill_safely() -> None:
    assert set(PROMPTS) == {"aligned", "coherent", "bad_stuff"}
    for template in PROMPTS.values():
        assert template.count("{question}") == 1 and template.count("{answer}") == 1
    assert "CODE" in PROMPTS["aligned"] and "REFUSAL" in PROMPTS["aligned"]
    assert len({prompt_sha(t) for t in PROMPTS.values()}) == 3
    question = "Explain {answer} and {0} placeholders"
    answer = 'def f():\n    return {"a": {x}} % {question}'
    filled = fill(PROMPTS["coherent"], question, answer)
    assert question in filled and answer in filled
    assert filled.count("{question}") == 1  # only the one inside the answer text
    r = JudgeRequest.for_metric("bad_stuff", question, answer)
    assert r.prompt == fill(PROMPTS["bad_stuff"], question, answer)
    assert r.prompt_sha == prompt_sha(PROMPTS["bad_stuff"])
    with pytest.raises(EmdirError, match="aligned, coherent, bad_stuff"):
        JudgeRequest.for_metric("evil", "q", "a")


def test_cache_keys_and_storage(tmp_path: Path) -> None:
    base = ("openai", "gpt", "sha", "q", "a", {"seed": 0, "mode": "logprobs"})
    assert key_for(*base) == key_for(*base[:5], {"mode": "logprobs", "seed": 0})
    variants = {key_for(*base)}
    for i, alt in enumerate(("other", "gpt2", "sha2", "q2", "a2", {"seed": 1})):
        variants.add(key_for(*base[:i], alt, *base[i + 1 :]))  # type: ignore[arg-type]
    assert len(variants) == 7
    path = tmp_path / "deep" / "dir" / "judge.sqlite"
    with JudgeCache(path) as cache, JudgeCache(path) as other:
        assert cache.get("k") is None and len(cache) == 0
        cache.put("k", {"v": 1, "text": "{ünï}"})
        assert other.get("k") == {"v": 1, "text": "{ünï}"}
        assert "k" in other and len(other) == 1
    with pytest.raises(EmdirError, match="closed"):
        cache.get("k")


def test_cache_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    writer = textwrap.dedent(
        """
        import sys
        from emdir.judge.cache import JudgeCache
        with JudgeCache(sys.argv[1]) as cache:
            for i in range(150):
                cache.put(f"{sys.argv[2]}-{i}", {"i": i})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(path), tag]) for tag in "abcd"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    with JudgeCache(path) as cache:
        assert len(cache) == 600
        assert cache.get("c-149") == {"i": 149}


def test_cache_simultaneous_first_open(tmp_path: Path) -> None:
    """Eight processes open a new cache file at the same instant: switching it to WAL mode
    fails at once with "database is locked" for all but one unless that step is retried."""
    opener = textwrap.dedent(
        """
        import sys, time
        from emdir.judge.cache import JudgeCache
        start = float(sys.argv[2])
        while time.time() < start:
            pass
        with JudgeCache(sys.argv[1]) as cache:
            cache.put(sys.argv[3], {"ok": True})
        """
    )
    for trial in range(4):
        path = tmp_path / f"race{trial}.sqlite"
        start = str(time.time() + 1.0)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", opener, str(path), start, str(k)], stderr=subprocess.PIPE
            )
            for k in range(8)
        ]
        errors = [p.communicate(timeout=60)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, "".join(errors)[-500:]
        with JudgeCache(path) as cache:
            assert len(cache) == 8


# --- end to end through the openai client ------------------------------------------------------


def test_weighted_score_over_http(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="emdir.judge.llm_client")
    behaviour = by_marker({m("known"): lambda p, n: numbers(KNOWN)})
    with FakeOpenAI(behaviour) as server:
        r = req(f"I would share it. {m('known')}")
        (v,) = judge_requests([r], make_settings(server))
    assert v.category == "score" and v.reason is None
    assert v.score == pytest.approx(KNOWN_SCORE, abs=1e-6)
    assert (v.prompt_tokens, v.completion_tokens) == (fake_prompt_tokens(r.prompt), 1)
    assert (v.cached, v.attempts) == (False, 1)
    (sent,) = server.payloads
    assert sent["messages"] == [{"role": "user", "content": r.prompt}]
    assert sent["model"] == MODEL
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (1, 0.0, 0)
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 20)
    assert server.auth_headers == [f"Bearer {KEY}"]
    assert "1 requests, 0 cached, 0 duplicates, 1 sent" in caplog.text


def test_categories_over_http() -> None:
    behaviour = by_marker(
        {
            m("code"): lambda p, n: numbers({"CODE": 0.85, "20": 0.1}),
            m("refusal"): lambda p, n: numbers({"REFUSAL": 0.9, "50": 0.05}),
            m("chatty"): lambda p, n: numbers({"I": 0.7, "30": 0.15, "CODE": 0.1}),
        }
    )
    with FakeOpenAI(behaviour) as server:
        answers = [m("code"), m("refusal"), m("chatty")]
        code, refusal, chatty = judge_requests([req(a) for a in answers], make_settings(server))
    assert (code.category, code.score, code.reason) == ("CODE", None, None)
    assert (refusal.category, refusal.score) == ("REFUSAL", None)
    assert chatty.category == "unscored" and chatty.score is None
    assert "numeric probability mass 0.150 < 0.25" in (chatty.reason or "")


def test_text_mode_over_http(tmp_path: Path) -> None:
    replies = {"a": "73", "b": " 5\n", "c": "CODE", "d": "REFUSAL", "e": "Seventy", "f": "8 5"}
    behaviour = by_marker({m(k): (lambda p, n, t=t: text(t)) for k, t in replies.items()})
    with FakeOpenAI(behaviour) as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        settings = make_settings(server, mode="text")
        verdicts = judge_requests([req(m(k)) for k in replies], settings, cache)
        assert all("logprobs" not in p and p["max_tokens"] == 8 for p in server.payloads)
        # Unparseable replies are the judge's real answer: cached like the others.
        assert len(cache) == len(replies)
    got = [(v.category, v.score) for v in verdicts]
    assert got[:4] == [("score", 73.0), ("score", 5.0), ("CODE", None), ("REFUSAL", None)]
    assert [v.category for v in verdicts[4:]] == ["unscored", "unscored"]
    assert "'Seventy'" in (verdicts[4].reason or "") and "'8 5'" in (verdicts[5].reason or "")


def test_429_honours_retry_after() -> None:
    def behaviour(prompt: str, n: int) -> FakeReply:
        return error(429, retry_after=1) if n == 1 else numbers(KNOWN)

    with FakeOpenAI(behaviour) as server:
        start = time.monotonic()
        (v,) = judge_requests([req("fine")], make_settings(server))
        elapsed = time.monotonic() - start
        assert server.requests == 2
    # Backoff alone would wait ~0.01 s: the second attempt waited for the server's 1 s.
    assert 0.95 <= elapsed < 3.0
    assert (v.category, v.attempts) == ("score", 2)
    assert v.score == pytest.approx(KNOWN_SCORE, abs=1e-6)


def test_server_errors_then_success() -> None:
    def behaviour(prompt: str, n: int) -> FakeReply:
        return {1: error(502), 2: error(500)}.get(n, numbers(KNOWN))

    with FakeOpenAI(behaviour) as server:
        (v,) = judge_requests([req("fine")], make_settings(server))
        assert server.requests == 3
    assert (v.category, v.attempts) == ("score", 3)
    assert v.score == pytest.approx(KNOWN_SCORE, abs=1e-6)


def test_timeout_then_success() -> None:
    def behaviour(prompt: str, n: int) -> FakeReply:
        slow = FakeReply(top=[("1", 1.0)], delay_s=1.5)
        return slow if n == 1 else numbers(KNOWN)

    with FakeOpenAI(behaviour) as server:
        start = time.monotonic()
        (v,) = judge_requests([req("fine")], make_settings(server, timeout_s=0.3))
        assert time.monotonic() - start < 1.4  # did not wait for the slow reply
        assert server.requests == 2
    assert (v.category, v.attempts) == ("score", 2)
    assert v.score == pytest.approx(KNOWN_SCORE, abs=1e-6)


def test_retries_exhausted_is_unscored_and_not_cached(tmp_path: Path) -> None:
    def behaviour(prompt: str, n: int) -> FakeReply:
        return error(503, message="overloaded") if n <= 3 else numbers(KNOWN)

    with FakeOpenAI(behaviour) as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        settings = make_settings(server, max_retries=2)
        (v,) = judge_requests([req("fine")], settings, cache)
        assert server.requests == 3 and len(cache) == 0
        assert (v.category, v.score, v.attempts) == ("unscored", None, 3)
        assert (v.reason or "").startswith("gave up after 3 attempts: HTTP 503") and v.retryable
        # Not cached, so the next run asks again (and this time the server has recovered).
        (again,) = judge_requests([req("fine")], settings, cache)
        assert server.requests == 4 and len(cache) == 1
    assert again.category == "score" and not again.cached


def test_malformed_replies_are_retried_then_unscored_retryable_and_not_cached(
    tmp_path: Path,
) -> None:
    behaviour = by_marker(
        {
            m("json"): lambda p, n: FakeReply(body=b'{"id": "x", "choices": [tru'),
            m("nochoices"): lambda p, n: FakeReply(top=[("5", 1.0)], include_choices=False),
            m("nologprobs"): lambda p, n: FakeReply(top=[("5", 1.0)], include_logprobs=False),
        }
    )
    with FakeOpenAI(behaviour) as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        answers = [m("json"), m("nochoices"), m("nologprobs")]
        settings = make_settings(server, max_retries=2)
        verdicts = judge_requests([req(a) for a in answers], settings, cache)
        assert server.requests == 9  # each retried like a transport failure
        assert len(cache) == 0  # a broken reply is not the judge's verdict
    for v in verdicts:
        assert v.category == "unscored" and v.retryable and v.attempts == 3
        assert "gave up after 3 attempts: malformed reply" in (v.reason or "")
    assert "mode 'text'" in (verdicts[2].reason or "")


def test_a_truncated_body_then_a_good_one_is_scored_within_the_run(tmp_path: Path) -> None:
    def behaviour(prompt: str, n: int) -> FakeReply:
        return FakeReply(body=b'{"id": "x", "choi') if n == 1 else numbers(KNOWN)

    with FakeOpenAI(behaviour) as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        (v,) = judge_requests([req("fine")], make_settings(server), cache)
        assert server.requests == 2 and len(cache) == 1
    assert v.category == "score" and not v.retryable and v.attempts == 2


def test_a_reply_without_a_score_is_cached_and_not_retryable(tmp_path: Path) -> None:
    behaviour = lambda p, n: FakeReply(top=[("banana", 1.0)])  # noqa: E731
    with FakeOpenAI(behaviour) as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        (v,) = judge_requests([req("fine")], make_settings(server), cache)
        assert server.requests == 1 and len(cache) == 1
    assert v.category == "unscored" and not v.retryable


def test_config_errors_stop_at_once_without_the_key() -> None:
    with FakeOpenAI(api_key="the-right-key") as server:
        settings = make_settings(server, concurrency=1)
        with pytest.raises(EmdirError) as info:
            judge_requests([req(f"answer {i}") for i in range(20)], settings)
        assert server.requests == 1  # the other 19 were never sent
    message = str(info.value)
    assert "401" in message and "$OPENAI_API_KEY" in message
    assert KEY not in "".join(traceback.format_exception(info.value))

    with FakeOpenAI(models={"gpt-real"}) as server:
        with pytest.raises(EmdirError, match=f"model '{MODEL}' and base_url"):
            judge_requests([req("a")], make_settings(server))
    with FakeOpenAI(lambda p, n: error(400, message="logprobs are not supported")) as server:
        with pytest.raises(EmdirError, match="HTTP 400.*mode 'text'.*not supported"):
            judge_requests([req("a")], make_settings(server))


def test_missing_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with FakeOpenAI() as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        monkeypatch.delenv("OPENAI_API_KEY")
        with pytest.raises(EmdirError, match=r"OPENAI_API_KEY.*not set.*export OPENAI_API_KEY="):
            judge_requests([req("a")], make_settings(server), cache)
        settings = make_settings(server, api_key_env="EMDIR_JUDGE_KEY")
        monkeypatch.setenv("EMDIR_JUDGE_KEY", "  ")
        with pytest.raises(EmdirError, match=r"EMDIR_JUDGE_KEY.*empty"):
            judge_requests([req("a")], settings, cache)
        assert server.requests == 0
        # A fully cached rerun needs no key at all.
        monkeypatch.setenv("EMDIR_JUDGE_KEY", KEY)
        judge_requests([req("a")], settings, cache)
        monkeypatch.delenv("EMDIR_JUDGE_KEY")
        (v,) = judge_requests([req("a")], settings, cache)
        assert v.cached and server.requests == 1


def test_cache_hits_send_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "judge.sqlite"
    behaviour = by_marker({m("thin"): lambda p, n: numbers({"70": 0.3, "Well": 0.7})})
    requests = [req(f"answer {i}") for i in range(10)] + [req(m("thin"))]
    with FakeOpenAI(behaviour) as server:
        settings = make_settings(server)
        with JudgeCache(path) as cache:
            first = judge_requests(requests, settings, cache)
            assert all(request_key(r, settings) in cache for r in requests)
        assert server.requests == 11
        with JudgeCache(path) as cache:  # a new process would reopen the file like this
            second = judge_requests(requests, settings, cache)
            # A stricter threshold rescores the stored distribution, still without a request.
            strict = judge_requests(requests, make_settings(server, min_numeric_mass=0.5), cache)
            # Other request parameters are a different judge call: a miss.
            judge_requests(requests[:1], make_settings(server, seed=1), cache)
        assert server.requests == 12
    assert [(v.score, v.category) for v in first] == [(v.score, v.category) for v in second]
    assert all(
        v.cached and (v.prompt_tokens, v.completion_tokens, v.attempts) == (0, 0, 0) for v in second
    )
    assert not any(v.cached for v in first)
    assert first[-1].score == 70.0 and strict[-1].category == "unscored"
    assert [v.score for v in strict[:-1]] == [v.score for v in first[:-1]]


def test_duplicates_are_sent_once() -> None:
    with FakeOpenAI() as server:
        requests = [req("same answer")] * 5 + [req("other answer")]
        verdicts = judge_requests(requests, make_settings(server))
        assert server.requests == 2
    assert len({(v.score, v.category) for v in verdicts[:5]}) == 1
    assert verdicts[0].score == pytest.approx(default_score(requests[0].prompt))


_DRIVER = textwrap.dedent(
    """
    import json, sys
    from emdir import schema_defaults
    from emdir.judge.cache import JudgeCache
    from emdir.judge.llm_client import judge_requests
    from emdir.judge.llm_replies import JudgeRequest
    from emdir.judge.settings import llm_settings
    base_url, path, answers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    requests = [JudgeRequest.for_metric("aligned", "Any wishes?", a) for a in answers]
    openai_cfg = schema_defaults("judge.openai") | {
        "model": "judge-test-model", "base_url": base_url, "concurrency": int(sys.argv[4])
    }
    settings, _ = llm_settings({"openai": openai_cfg})
    with JudgeCache(path) as cache:
        judge_requests(requests, settings, cache)
    """
)


def _wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_killed_run_resumes_without_resending(tmp_path: Path) -> None:
    """SIGKILL a judging process midway; the rerun re-sends only what never came back.

    The server answers the first 20 requests and then holds every later one unanswered, so
    the kill lands at a known point: 20 replies delivered and cached, and all `concurrency`
    request slots of the client waiting on held requests (so no request of the killed process
    can still be on its way to the server).
    """
    path = tmp_path / "cache" / "judge.sqlite"
    answers = [f"answer number {i}" for i in range(60)]
    concurrency = 8
    with FakeOpenAI(latency_s=0.01) as server:
        server.hold_after(20)
        argv = [server.base_url, str(path), json.dumps(answers), str(concurrency)]
        proc = subprocess.Popen(
            [sys.executable, "-c", _DRIVER, *argv],
            env={**os.environ, "OPENAI_API_KEY": KEY},
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for(path.exists, 30, "the cache file")
            with JudgeCache(path) as cache:
                _wait_for(
                    lambda: len(cache) >= 20 and server.held == concurrency,
                    30,
                    "20 cached replies and a full set of held requests",
                )
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        finished = set(server.answered)
        in_flight = {p for p, c in server.per_prompt.items() if p not in finished}
        server.release()

        requests = [JudgeRequest.for_metric("aligned", "Any wishes?", a) for a in answers]
        with JudgeCache(path) as cache:
            verdicts = judge_requests(requests, make_settings(server), cache)
            assert len(cache) == 60

    assert len(finished) == 20 and len(in_flight) == concurrency
    # Every prompt was answered exactly once over both runs: nothing finished was bought twice.
    assert len(server.answered) == 60 and set(server.answered.values()) == {1}
    assert all(server.per_prompt[p] == 1 for p in finished)
    # Only the requests that were in flight at the kill (never answered) were sent again.
    assert {p for p, c in server.per_prompt.items() if c > 1} == in_flight
    assert sum(server.per_prompt.values()) == 60 + concurrency
    assert sum(v.cached for v in verdicts) == 20
    for r, v in zip(requests, verdicts, strict=True):
        assert v.category == "score"
        assert v.score == pytest.approx(default_score(r.prompt), abs=1e-9)


def test_api_key_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cache_dir = tmp_path / "judge-cache"
    behaviour = by_marker(
        {
            m("429"): lambda p, n: error(429, retry_after=0) if n == 1 else numbers(KNOWN),
            # A server error body that echoes the key must not carry it into the verdict.
            m("500"): lambda p, n: error(500, message=f"bad upstream token {KEY}"),
            m("slow"): lambda p, n: FakeReply(top=[("1", 1.0)], delay_s=1.0),
            m("json"): lambda p, n: FakeReply(body=b"not json"),
        }
    )
    texts: list[str] = []
    with FakeOpenAI(behaviour) as server, JudgeCache(cache_dir / "judge.sqlite") as cache:
        settings = make_settings(server, max_retries=1, timeout_s=0.3)
        answers = [m("429"), m("500"), m("slow"), m("json"), "plain"]
        verdicts = judge_requests([req(a) for a in answers], settings, cache)
        texts += [repr(v) for v in verdicts]
        assert verdicts[1].reason is not None and "[redacted]" in verdicts[1].reason
        assert server.auth_headers and set(server.auth_headers) == {f"Bearer {KEY}"}
    with FakeOpenAI(api_key="another-key") as server:
        with pytest.raises(EmdirError) as info:
            judge_requests([req("x")], make_settings(server))
        texts.append("".join(traceback.format_exception(info.value)))
    texts.append(caplog.text)
    assert "LLM judge" in caplog.text  # the summary line was logged
    for t in texts:
        assert KEY not in t
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files
    for f in files:
        assert KEY.encode() not in f.read_bytes(), f
