"""The judge's settings: the part of the `judge` config that shapes scores, and how to reach
and ask the LLM judge (`judge.openai`).

`scoring_config` is what a judge job takes as its settings: the `judge` section less where
the cache lives and what tokens cost, so that changing either reruns no judge job.
`LLMJudgeSettings` validates the `judge.openai` settings of the client on construction, and
`llm_settings` reads them, with the metrics to ask, from a `judge` section. `RequestPolicy`
(`request_policy`) says which requests the judge sends: every metric for every answer
(`judge.openai.requests: full`, the paper-faithful setting) or the economical selection of
`emdir.judge.economy`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, NoReturn

from emdir.errors import EmdirError

MODES = ("logprobs", "text")
# Enough room for "100" plus a leading space or newline under any tokenizer that splits digits,
# yet too little for the judge to start explaining itself.
TEXT_MODE_MAX_TOKENS = 8
# The OpenAI API accepts at most 20 alternatives per position.
MAX_TOP_LOGPROBS = 20
# Keys of `judge.openai` that shape scores but are not how to reach and ask the judge.
NOT_CLIENT_SETTINGS = ("metrics", "garbled_below", "requests", "economical")
# judge.openai.requests: `full` asks every metric for every non-empty answer (paper-faithful);
# `economical` asks only what the analyses can read (emdir.judge.economy).
REQUEST_MODES = ("full", "economical")
# The keys of judge.openai.economical.
ECONOMICAL_KEYS = ("samples_per_condition", "bad_stuff_aligned_above")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def scoring_config(judge_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `judge` config that shapes scores: all of it but `cache` (where the cache lives)
    and `openai.prices` (what tokens cost, for the judge plan), so that changing those reruns
    no judge job."""
    cfg = {k: v for k, v in judge_cfg.items() if k != "cache"}
    if "openai" in cfg:
        cfg["openai"] = {k: v for k, v in cfg["openai"].items() if k != "prices"}
    return cfg


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


def llm_settings(judge_cfg: Mapping[str, Any]) -> tuple[LLMJudgeSettings, list[str]]:
    """(LLMJudgeSettings, metrics) from the `judge.openai` config section."""
    openai_cfg = scoring_config(judge_cfg)["openai"]
    llm_cfg = {k: v for k, v in openai_cfg.items() if k not in NOT_CLIENT_SETTINGS}
    metrics = list(openai_cfg["metrics"])
    missing = [m for m in ("aligned", "coherent") if m not in metrics]
    if missing:
        raise EmdirError(
            f"judge.openai.metrics must include {' and '.join(missing)} (code spillover is the "
            "alignment judge's CODE; garble and coherence come from the coherence judge)"
        )
    return LLMJudgeSettings.from_mapping(llm_cfg), metrics


@dataclass(frozen=True)
class RequestPolicy:
    """Which requests the LLM judge sends (config `judge.openai.requests` and
    `judge.openai.economical`, whose defaults config/schema.yaml holds); validated on
    construction, every error naming the key and what to set.

    `full` (paper-faithful): every metric for every non-empty answer; the economical settings
    are ignored. `economical` (`emdir.judge.economy`): the offline detector decides code /
    prose / garbled and code gets no request; `aligned` first, the other metrics only for the
    answers it scored; `bad_stuff` only above `bad_stuff_aligned_above` (None: every scored
    answer); only the first `samples_per_condition` samples of each question in each
    condition (None: every sample).
    """

    mode: str
    samples_per_condition: int | None = None
    bad_stuff_aligned_above: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in REQUEST_MODES:
            raise EmdirError(
                f"judge.openai.requests = {self.mode!r} is invalid: use full (every metric for "
                "every non-empty answer, paper-faithful) or economical (the detector decides "
                "code, aligned first; see judge.openai.economical)"
            )
        k = self.samples_per_condition
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise EmdirError(
                f"judge.openai.economical.samples_per_condition = {k!r} is invalid: use an "
                "integer >= 1 (the LLM judges that many samples of each question per "
                "condition) or null (every sample)"
            )
        t = self.bad_stuff_aligned_above
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 100
        ):
            raise EmdirError(
                f"judge.openai.economical.bad_stuff_aligned_above = {t!r} is invalid: use a "
                "number 0-100 no higher than mechanistic.self_correction.aligned_above (the "
                "only reader of bad_stuff), or null (bad_stuff for every scored answer)"
            )

    @property
    def economical(self) -> bool:
        return self.mode == "economical"

    def record(self) -> dict[str, Any]:
        """The policy as a judged row's `judge.requests` records it."""
        if not self.economical:
            return {"mode": self.mode}
        return {
            "mode": self.mode,
            "samples_per_condition": self.samples_per_condition,
            "bad_stuff_aligned_above": self.bad_stuff_aligned_above,
        }

    def describe(self) -> str:
        """One line for the judge plan and the estimate."""
        if not self.economical:
            return "full (paper-faithful): every metric for every non-empty answer"
        k = self.samples_per_condition
        t = self.bad_stuff_aligned_above
        return (
            "economical: the offline detector decides code / prose / garbled and code gets no "
            "request; aligned first, the other metrics only for answers it scored"
            + ("" if t is None else f"; bad_stuff only for aligned > {t:g}")
            + (
                ""
                if k is None
                else f"; the LLM judges the first {k} samples of each question per condition"
            )
        )


def request_policy(judge_cfg: Mapping[str, Any], mode: str | None = None) -> RequestPolicy:
    """The RequestPolicy of a `judge` section; `mode` overrides `judge.openai.requests` (the
    judge plan prices both modes)."""
    openai_cfg = judge_cfg["openai"]
    if "requests" not in openai_cfg or "economical" not in openai_cfg:
        raise EmdirError(
            "judge.openai: `requests` and `economical` are required; pass the whole "
            "judge.openai section of a validated config (emdir.schema_defaults has its defaults)"
        )
    econ = openai_cfg["economical"]
    unknown = sorted(set(econ) - set(ECONOMICAL_KEYS))
    missing = sorted(set(ECONOMICAL_KEYS) - set(econ))
    if unknown or missing:
        raise EmdirError(
            f"judge.openai.economical: unknown key(s) {', '.join(unknown) or 'none'}, missing "
            f"key(s) {', '.join(missing) or 'none'}; its keys are {', '.join(ECONOMICAL_KEYS)}"
        )
    return RequestPolicy(
        mode if mode is not None else openai_cfg["requests"],
        econ["samples_per_condition"],
        econ["bad_stuff_aligned_above"],
    )
