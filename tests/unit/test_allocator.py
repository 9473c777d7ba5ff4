"""keep_freed_memory: a large block comes from glibc's heap instead of its own mapping and
stays in the heap when freed, for the next block; benchmarks/allocator.py runs at a toy size
and finds both sides computing the same bytes.

No timing is asserted: the speed-up is measured by the benchmark, not held to a target here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "allocator.py"
LIBC = ctypes.util.find_library("c")
MB = 256

# In a fresh process, with glibc's own accounting (mallinfo2, glibc >= 2.33): the bytes in
# mmapped blocks and the free bytes kept in the heap, with a 256 MB tensor held, then freed.
ROUNDS = f"""
import ctypes, json, sys
import torch
from emdir.models.load import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(k, ctypes.c_size_t) for k in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL({LIBC!r})
libc.mallinfo2.restype = Info
if sys.argv[1] == "kept":
    assert keep_freed_memory()
a = torch.ones({MB} * 2**20 // 8, dtype=torch.float64)
held = libc.mallinfo2()
del a
freed = libc.mallinfo2()
print(json.dumps({{"held_mapped": held.hblkhd >> 20, "freed_mapped": freed.hblkhd >> 20,
                  "freed_in_heap": freed.fordblks >> 20}}))
"""


def accounting(side: str) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", ROUNDS, side], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(
    LIBC is None or not hasattr(ctypes.CDLL(LIBC), "mallinfo2"), reason="needs glibc >= 2.33"
)
def test_a_large_block_comes_from_the_heap_and_stays_there_when_freed() -> None:
    # glibc's default: the block is a mapping of its own, unmapped when freed, so the kernel
    # hands out (and zeroes) fresh pages for the next one.
    default = accounting("default")
    assert default["held_mapped"] >= MB
    assert default["freed_mapped"] < MB // 4
    assert default["freed_in_heap"] < MB
    # Kept: the block is heap memory, and freed it stays there for the next block.
    kept = accounting("kept")
    assert kept["held_mapped"] < MB // 4
    assert kept["freed_in_heap"] >= MB


def test_the_toy_run_computes_the_same_bytes_on_both_sides() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--shape=tiny",
            "--prompts=4",
            "--vectors=2",
            "--new-tokens=4",
            "--steps=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for workload in ("steer", "train"):
        for side in ("default", "kept"):
            assert re.search(
                rf"{workload} {side} +[\d.]+ s wall +[\d.]+ s user +[\d.]+ s system +peak [\d.]+ GB",
                out,
            )
        assert re.search(rf"{workload} default / kept wall time +[\d.]+x", out)
        assert re.search(rf"{workload} same outputs +yes", out)
