"""Loading a model for a job: torch's thread count, and the base model (plus adapter) for
inference on CUDA when there is one, in the dtype of its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
    on CUDA when there is one, in the dtype of the base model's manifest."""
    set_threads(threads)
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
