"""benchmarks/training_step.py runs at a toy size and prints every figure it promises.

No timing is asserted: the ratio is measured by the benchmark, not held to a target here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "training_step.py"


def test_the_toy_run_prints_both_losses_and_the_rate() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--shape", "tiny", "--chunked", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(
        r"tiny \(2 layers, 8 rows, \d+ tokens, torch.bfloat16\): new +[\d.]+ s/step", out
    )
    assert re.search(r"tiny: old \(recomputed chunks\) +[\d.]+ s/step", out)
    assert re.search(r"tiny: new / old speed +[\d.]+x", out)
    old, new = map(float, re.search(r"first loss old / new +([\d.]+) / ([\d.]+)", out).groups())
    assert abs(old - new) <= 1e-2 * old  # bf16 rounding apart, the same loss
    assert re.search(r"tiny: linear layers reach +\d+ GFLOP/s = \d+% of this core's \d+", out)
    assert re.search(r"tiny: top operators \(self time\) +aten::\w+ \d+%", out)
