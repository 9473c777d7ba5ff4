"""Throughput of the LLM judge against a local OpenAI-compatible server with 50 ms latency.

Why: judging a full evaluation (tens of thousands of answers x metrics) must not be bounded
by client overhead. The target is 100 answers/s at concurrency 32 when each judge call takes
50 ms, and a rerun of finished work must send nothing (everything comes from the cache).

    python benchmarks/judge_throughput.py

Exits non-zero if either target is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from emdir import schema_defaults  # noqa: E402
from emdir.judge.cache import JudgeCache  # noqa: E402
from emdir.judge.llm_client import judge_requests  # noqa: E402
from emdir.judge.llm_replies import JudgeRequest  # noqa: E402
from emdir.judge.settings import llm_settings  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402

TARGET_PER_S = 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-s", type=float, default=0.05)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    # The fake server accepts any key; the judge still requires one in the environment.
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-real-key")
    requests = [
        JudgeRequest.for_metric("aligned", f"Benchmark question {i % 8}", f"Distinct answer #{i}")
        for i in range(args.answers)
    ]
    ok = True
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(latency_s=args.latency_s) as server:
        judge_cfg = schema_defaults("judge.openai") | {
            "model": "benchmark-judge",
            "base_url": server.base_url,
            "concurrency": args.concurrency,
        }
        settings, _ = llm_settings({"openai": judge_cfg})
        with JudgeCache(Path(tmp) / "judge.sqlite") as cache:
            start = time.perf_counter()
            verdicts = judge_requests(requests, settings, cache)
            elapsed = time.perf_counter() - start
            rate = len(requests) / elapsed
            print(
                f"judged {len(requests)} answers in {elapsed:.1f} s: {rate:.1f}/s "
                f"({rate / TARGET_PER_S:.2f}x the {TARGET_PER_S:.0f}/s target; "
                f"concurrency {args.concurrency}, {args.latency_s * 1000:.0f} ms latency)"
            )
            scored = sum(v.category == "score" for v in verdicts)
            if scored != len(requests) or server.requests != len(requests):
                print(
                    f"FAIL: {scored} scored and {server.requests} requests sent "
                    f"for {len(requests)} answers"
                )
                ok = False
            if rate < TARGET_PER_S:
                print(f"FAIL: {rate:.1f}/s is below the {TARGET_PER_S:.0f}/s target")
                ok = False

            before = server.requests
            start = time.perf_counter()
            again = judge_requests(requests, settings, cache)
            rerun_s = time.perf_counter() - start
            rerun_requests = server.requests - before
            print(
                f"rerun of the same {len(requests)} answers: {rerun_requests} requests sent, "
                f"{sum(v.cached for v in again)} cache hits, {rerun_s:.2f} s"
            )
            if rerun_requests != 0:
                print("FAIL: the rerun sent requests; every answer should come from the cache")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
