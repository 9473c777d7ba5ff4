"""benchmarks/batched_sampling.py runs at a toy size and prints every figure it promises.

No timing is asserted: the ratios are measured by the benchmark, not held to targets here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "batched_sampling.py"


def test_the_toy_run_prints_both_paths_and_their_ratio() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--shape", "tiny", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(
        r"tiny \(2 layers, 6 conditions x 16 prompts x 16 tokens\): old path +[\d.]+ tokens/s", out
    )
    assert re.search(r"new path +[\d.]+ tokens/s", out)
    assert re.search(r"tiny: new / old tokens/s +[\d.]+x +ok", out)  # no target for a toy shape
    assert re.search(r"tiny: peak memory old / new +[\d.]+ / [\d.]+ GB", out)
    assert re.search(
        r"tiny: bf16 matmul limit.*16 rows \d+ / 128 rows \d+ / 512 rows \d+ GFLOP/s", out
    )
    # The toy model samples in float rounding that batches do not change here: every answer
    # of the shared batches is the one drawn condition by condition.
    assert re.search(r"tiny: answers identical old / new +96 of 96", out)
