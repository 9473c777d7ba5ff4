"""Loading a model for a job: torch's thread count, the C allocator's settings, and the base
model (plus adapter) for inference on CUDA when there is one, in the dtype of its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every block from its heap and keep what is freed there, for
    the next block to reuse; True where it took (glibc), False elsewhere (nothing changed).

    By default glibc maps each block over 32 MB (a batch's logits, a layer's activations)
    with mmap and unmaps it when freed, so the kernel zeroes fresh pages for the next one,
    step after step: a quarter of a steering job's CPU time was system time
    (benchmarks/README.md, "allocator"). Only where memory comes from changes, never a
    value computed; the heap keeps its high-water mark until the job ends. For inference
    only (`load_for_inference`): a training step's blocks of many sizes fragment the heap,
    and real fine-tunes grew past 12 GB with it.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None:
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, 2**31 - 1),
            (_M_TOP_PAD, 2**30),
        )
    )


def set_threads(n: int) -> None:
    """Use `n` CPU threads (the rule's `threads`) and keep transformers' progress bars and
    warnings out of the job's log."""
    import torch
    import transformers

    torch.set_num_threads(max(1, int(n)))
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_for_inference(
    base_dir: str | Path, adapter_dir: str | Path | None, threads: int
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, ArchSpec) of a base model folder and optional adapter, in eval mode,
    on CUDA when there is one, in the dtype of the base model's manifest; freed memory kept
    for reuse (`keep_freed_memory`)."""
    set_threads(threads)
    keep_freed_memory()
    import torch

    from emdir.models.zoo import load_model, read_base_manifest

    ref = read_base_manifest(base_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = ref.torch_dtype(device)
    log.info(
        "loading %s%s on %s (%s)",
        base_dir,
        f" + {adapter_dir}" if adapter_dir else "",
        device,
        dtype,
    )
    return load_model(ref, adapter=adapter_dir, device=device, dtype=dtype)
