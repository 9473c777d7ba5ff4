"""Calibrated steering magnitudes: the functional cost of an intervention on the model's output.

The cost of a steering vector is how far it moves the next-token distribution. For each
(prompt, answer) pair the conversation is teacher-forced through the model twice, without
and with the interventions, and the cost is the mean over the answer's token predictions
of KL(p_unsteered || p_steered), in nats.

Only model rules use this module; it imports torch at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from emdir.analysis.interventions import Intervention, intervene
from emdir.errors import EmdirError
from emdir.models.archs import model_device
from emdir.models.encode import Encoded, encode_rows, make_batch
from emdir.models.generate import Prompt


def _rows(prompts: Sequence[Prompt], answers: Sequence[str]) -> list[dict[str, Any]]:
    """The rows `activations.encode_rows` reads, one per (prompt, answer) pair."""
    return [
        {
            "id": f"{p.question.id}/{p.sample_index}",
            "question_id": p.question.id,
            "question": p.question.text,
            "system": p.question.system,
            "answer": a,
        }
        for p, a in zip(prompts, answers, strict=True)
    ]


def _batches(encoded: Sequence[Encoded], batch_size: int) -> list[list[int]]:
    """Row indices in batches whose rows share one prompt length, so one `ctx.start` call
    splits prompt from answer positions for the whole batch, as in generation."""
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        groups.setdefault(e.prompt_len, []).append(i)
    return [
        rows[k : k + batch_size]
        for _, rows in sorted(groups.items())
        for k in range(0, len(rows), batch_size)
    ]


def _kl_rows(clean: torch.Tensor, steered: torch.Tensor, counts: Sequence[int]) -> list[float]:
    """Mean KL(clean || steered) over the first `counts[i]` predictions of row i (float32
    softmaxes, float64 mean); logits are [B, K, V]."""
    out = []
    for i, n in enumerate(counts):
        lp = torch.log_softmax(clean[i, :n].float(), dim=-1)
        lq = torch.log_softmax(steered[i, :n].float(), dim=-1)
        kl = (lp.exp() * (lp - lq)).sum(-1).clamp(min=0.0)
        out.append(float(kl.double().mean()))
    return out


def kl_to_unsteered(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    interventions: Sequence[Intervention],
    batch_size: int = 16,
) -> np.ndarray:
    """Mean KL(unsteered || steered) in nats over each answer's token predictions, one value
    per (prompt, answer) pair (float64).

    Conversations are tokenised as activation capture does (prompt through the chat
    template, answer without the turn-end token). The predictions averaged are those of
    every answer token, from the last prompt position to the one before the final answer
    token; an empty answer uses the prediction of its first token alone. During the steered
    pass the prompt length is passed to `ctx.start`, so positions 'prompt' and 'answer'
    select the same tokens as during generation. Batches hold rows of one prompt length with
    the answers right-padded, so a row's value does not depend on which rows share its batch;
    logits are kept from the last prompt position on only.
    """
    if len(prompts) != len(answers):
        raise EmdirError(
            f"{len(prompts)} prompts but {len(answers)} answers; give one answer per prompt"
        )
    if batch_size < 1:
        raise EmdirError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return np.zeros(0, dtype=np.float64)
    encoded = encode_rows(tokenizer, _rows(prompts, answers))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    out = np.zeros(len(encoded), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in _batches(encoded, batch_size):
                enc = [encoded[i] for i in idx]
                batch = make_batch(enc, pad, device)
                prompt_len = enc[0].prompt_len
                kw = {
                    "input_ids": batch.ids,
                    "attention_mask": batch.attention,
                    "use_cache": False,
                    # Only the logits from the last prompt position on predict the answer.
                    "logits_to_keep": batch.ids.shape[1] - prompt_len + 1,
                }
                with intervene(model, interventions) as ctx:
                    ctx.start(prompt_len)
                    steered = model(**kw).logits
                clean = model(**kw).logits
                counts = [max(len(e.ids) - prompt_len, 1) for e in enc]
                out[idx] = _kl_rows(clean, steered, counts)
    finally:
        model.train(was_training)
    return out
