"""A real OpenAI-compatible HTTP server on 127.0.0.1 for testing the LLM judge end to end.

The judge is exercised through the real `openai` client over real sockets, so this server
speaks the actual wire format of POST /v1/chat/completions (including
`choices[0].logprobs.content[0].top_logprobs`) and the actual failure modes: status codes with
OpenAI-style error bodies, Retry-After headers, replies slower than the client's timeout,
bodies that are not JSON or lack fields.

What each request gets is decided by a behaviour function `(prompt, n) -> FakeReply`, where
`n` is how many requests for that exact prompt the server has received so far (1 for the first),
so "fail the first k times, then answer" is a one-liner. `by_marker` builds a behaviour that
keys on marker strings embedded in the prompt.

Not a test module: imported by tests and by benchmarks/judge_throughput.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class FakeReply:
    """What the server does with one request.

    `top` is the first token's distribution as (token, probability), sent as logprobs when the
    request asked for them. `content` is the message text (default: the most likely token).
    `body` replaces the whole response body verbatim (for malformed replies).
    """

    status: int = 200
    top: Sequence[tuple[str, float]] = ()
    content: str | None = None
    include_logprobs: bool = True
    include_choices: bool = True
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    error_message: str = ""


Behaviour = Callable[[str, int], FakeReply]


def numbers(dist: Mapping[str | int, float]) -> FakeReply:
    """A 200 reply whose first-token distribution is `dist` (token -> probability)."""
    return FakeReply(top=[(str(tok), float(p)) for tok, p in dist.items()])


def text(content: str) -> FakeReply:
    """A 200 reply with this message text (and it as the sole top token, p=1)."""
    return FakeReply(top=[(content, 1.0)], content=content)


def error(status: int, retry_after: float | None = None, message: str = "") -> FakeReply:
    """An error status with an OpenAI-style error body and optional Retry-After seconds."""
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return FakeReply(status=status, headers=headers, error_message=message or f"fake {status}")


def default_distribution(prompt: str) -> dict[str, float]:
    """A deterministic, prompt-dependent number distribution (with some non-numeric mass)."""
    k = int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16) % 91
    return {str(k): 0.7, str(k + 10): 0.2, "The": 0.1}


def default_score(prompt: str) -> float:
    """The weighted score a correct judge computes from `default_distribution(prompt)`."""
    numeric = {int(t): p for t, p in default_distribution(prompt).items() if t.isdigit()}
    return sum(k * p for k, p in numeric.items()) / sum(numeric.values())


def default_behaviour(prompt: str, n: int) -> FakeReply:
    return numbers(default_distribution(prompt))


def by_marker(rules: Mapping[str, Behaviour], fallback: Behaviour = default_behaviour) -> Behaviour:
    """A behaviour applying the rule of the first marker found in the prompt."""

    def behaviour(prompt: str, n: int) -> FakeReply:
        for marker, rule in rules.items():
            if marker in prompt:
                return rule(prompt, n)
        return fallback(prompt, n)

    return behaviour


def fake_prompt_tokens(prompt: str) -> int:
    """The prompt token count the server reports in `usage` (a rough chars/4 estimate)."""
    return len(prompt) // 4 + 1


class _Server(ThreadingHTTPServer):
    # A judge opens dozens of connections at once; the default listen backlog of 5 would drop
    # SYNs and add ~1 s retransmit stalls.
    request_queue_size = 256
    daemon_threads = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out and hang up are expected here; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; Nagle plus delayed ACKs would add ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logs."""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> bool:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            return True
        except OSError:
            self.close_connection = True
            return False

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> bool:
        kind = {401: "invalid_request_error", 404: "invalid_request_error", 429: "requests"}
        body = {
            "error": {
                "message": message,
                "type": kind.get(status, "server_error" if status >= 500 else "invalid_request"),
                "param": None,
                "code": None,
            }
        }
        return self._send(status, json.dumps(body).encode(), headers)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        try:
            payload = json.loads(raw)
            prompt = str(payload["messages"][-1]["content"])
            model = str(payload["model"])
        except (ValueError, KeyError, IndexError, TypeError):
            self._error(400, "request body is not a chat completion request")
            return
        auth = self.headers.get("Authorization", "")
        n = fake._arrive(prompt, auth, payload)
        if n is None:  # held by the gate and then released: hang up without a reply
            self.close_connection = True
            return
        if fake.api_key is not None and auth != f"Bearer {fake.api_key}":
            sent = auth.removeprefix("Bearer ")
            # Like real providers, echo the rejected key (a judge must never show this).
            self._error(401, f"Incorrect API key provided: {sent}")
            return
        if fake.models is not None and model not in fake.models:
            self._error(404, f"The model `{model}` does not exist or you do not have access to it.")
            return
        if fake.latency_s:
            time.sleep(fake.latency_s)
        reply = fake.behaviour(prompt, n)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status != 200:
            self._error(reply.status, reply.error_message, reply.headers)
            return
        body = reply.body if reply.body is not None else _completion(reply, payload, prompt, n)
        if self._send(200, body, reply.headers):
            fake._answered(prompt)


def _completion(reply: FakeReply, payload: Mapping[str, Any], prompt: str, n: int) -> bytes:
    """An OpenAI chat.completion JSON body for a 200 reply."""
    top = sorted(((t, p) for t, p in reply.top if p > 0), key=lambda tp: -tp[1])
    wanted = int(payload.get("top_logprobs") or 0)
    shown = top[: max(wanted, 1)]
    content = reply.content if reply.content is not None else (top[0][0] if top else "")
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "logprobs": None,
        "finish_reason": "length",
    }
    if payload.get("logprobs") and reply.include_logprobs and top:
        first, p_first = top[0]
        choice["logprobs"] = {
            "content": [
                {
                    "token": first,
                    "logprob": math.log(p_first),
                    "bytes": list(first.encode()),
                    "top_logprobs": [
                        {"token": t, "logprob": math.log(p), "bytes": list(t.encode())}
                        for t, p in shown
                    ],
                }
            ],
            "refusal": None,
        }
    prompt_tokens = fake_prompt_tokens(prompt)
    body: dict[str, Any] = {
        "id": f"chatcmpl-fake-{n}-{abs(hash(prompt)) % 10**8}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("model", "fake"),
        "system_fingerprint": "fp_fake",
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
        },
    }
    if reply.include_choices:
        body["choices"] = [choice]
    return json.dumps(body).encode()


class FakeOpenAI:
    """The server; use as a context manager. Counters are safe to read from the test thread.

    - `requests`: all requests received on the completions route;
    - `per_prompt[prompt]`: requests received per exact prompt;
    - `answered[prompt]`: 200 replies fully written per prompt;
    - `auth_headers`: every Authorization header seen;
    - `hold_after(k)`: admit k more requests, then hold every later one until `release()`,
      which hangs those up unanswered (to freeze a client mid-run deterministically).
    """

    def __init__(
        self,
        behaviour: Behaviour = default_behaviour,
        latency_s: float = 0.0,
        api_key: str | None = None,
        models: set[str] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.latency_s = latency_s
        self.api_key = api_key
        self.models = models
        self.requests = 0
        self.per_prompt: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.payloads: list[dict[str, Any]] = []
        self.held = 0
        self._lock = threading.Lock()
        self._admit_left: int | None = None
        self._gate = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _arrive(self, prompt: str, auth: str, payload: dict[str, Any]) -> int | None:
        with self._lock:
            self.requests += 1
            self.per_prompt[prompt] += 1
            self.auth_headers.append(auth)
            self.payloads.append(payload)
            n = self.per_prompt[prompt]
            if self._admit_left is None:
                return n
            if self._admit_left > 0:
                self._admit_left -= 1
                return n
            self.held += 1
            gate = self._gate
        gate.wait()
        return None

    def _answered(self, prompt: str) -> None:
        with self._lock:
            self.answered[prompt] += 1

    def hold_after(self, admit: int) -> None:
        with self._lock:
            self._admit_left = admit
            self._gate = threading.Event()

    def release(self) -> None:
        with self._lock:
            self._admit_left = None
            self._gate.set()

    def count(self, marker: str) -> int:
        """Requests received for prompts containing `marker`."""
        with self._lock:
            return sum(c for p, c in self.per_prompt.items() if marker in p)

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
