"""benchmarks/sampler_throughput.py runs at a toy size and run_all.py reads its figures.

No timing is asserted: the ratios are measured by the benchmark, not held to targets here.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "sampler_throughput.py"
TOY = ["--shape", "tiny", "--quick", "--new-tokens", "6", "--batch", "4", "--repeats", "1"]


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def toy_output() -> str:
    proc = run_script(*TOY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def load_run_all(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", module)  # where dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_the_script_prints_every_side_and_both_ratios(toy_output: str) -> None:
    assert "batch 4 x 6 new tokens" in toy_output
    for side in ("emdir plain", "emdir steered", "HF generate"):
        assert re.search(rf"^{side}:\s+[\d.]+ tokens/s .*24 tokens per run", toy_output, re.M)
    assert re.search(
        r"^steered/plain sample \(time\): [\d.]+ \(target <= 1\.05\)", toy_output, re.M
    )
    assert re.search(
        r"^emdir/HF generate \(tokens/s\): [\d.]+ \(target >= 1\.00\)", toy_output, re.M
    )


def test_run_all_turns_the_output_into_rows(
    toy_output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_all = load_run_all(monkeypatch)
    monkeypatch.setattr(run_all, "script", lambda *a, **k: toy_output)
    rows = run_all.sampler_throughput(True, 60.0, False)
    assert [r.status for r in rows[:3]] == ["info"] * 3
    assert all(r.value.endswith("tokens/s") for r in rows[:3])
    assert "tiny width, 2 layers, batch 4 x 6 tokens" in rows[0].figure
    assert [r.target for r in rows[3:]] == ["<= 1.05", ">= 1.00"]
    assert all(r.status in ("ok", "MISSED") for r in rows[3:])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_a_clear_error() -> None:
    proc = run_script("--device", "cuda", *TOY)
    assert proc.returncode == 2
    assert "torch sees no CUDA device" in proc.stdout
