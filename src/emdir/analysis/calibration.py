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

from emdir.analysis.interventions import Intervention, intervene_rows
from emdir.errors import EmdirError
from emdir.models.archs import head_at, model_device
from emdir.models.encode import encode_rows, make_batch
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


def _kl(clean: torch.Tensor, steered: torch.Tensor) -> float:
    """Mean KL(clean || steered) over the predictions of one row (float32 softmaxes, float64
    mean); logits are [K, V]."""
    lp = torch.log_softmax(clean.float(), dim=-1)
    lq = torch.log_softmax(steered.float(), dim=-1)
    kl = (lp.exp() * (lp - lq)).sum(-1).clamp(min=0.0)
    return float(kl.double().mean())


def kl_to_unsteered(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    interventions: Sequence[Intervention],
    batch_size: int = 16,
) -> np.ndarray:
    """Mean KL(unsteered || steered) in nats over each answer's token predictions, one value
    per (prompt, answer) pair (float64), every pair steered by the same interventions: see
    `kl_per_row`."""
    return kl_per_row(
        model, tokenizer, prompts, answers, [interventions] * len(prompts), batch_size
    )


def kl_per_row(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    rows: Sequence[Sequence[Intervention]],
    batch_size: int = 16,
) -> np.ndarray:
    """Mean KL(unsteered || steered) in nats over each answer's token predictions, one value
    per (prompt, answer, interventions) row (float64).

    Conversations are tokenised as activation capture does (prompt through the chat
    template, answer without the turn-end token). The predictions averaged are those of
    every answer token, from the last prompt position to the one before the final answer
    token; an empty answer uses the prediction of its first token alone. Each batch holds
    `batch_size` answers twice, steered by the row's interventions and unsteered, in one
    forward (`intervene_rows`), right-padded, each row's prompt length passed to
    `ctx.start` so that positions 'prompt' and 'answer' select the same tokens as during
    generation; rows are ordered by length so that a batch pads little, and a row's value
    does not depend on which rows share its batch beyond float rounding. The LM head runs
    only at the answers' predictions (`head_at`), and they are reduced one row at a time.
    A row whose interventions are all no-ops costs exactly 0.
    """
    if len(prompts) != len(answers):
        raise EmdirError(
            f"{len(prompts)} prompts but {len(answers)} answers; give one answer per prompt"
        )
    if len(prompts) != len(rows):
        raise EmdirError(
            f"{len(prompts)} prompts but {len(rows)} intervention lists; give one per prompt"
        )
    if batch_size < 1:
        raise EmdirError(f"batch_size must be >= 1, got {batch_size}")
    out = np.zeros(len(prompts), dtype=np.float64)
    steered = [i for i, r in enumerate(rows) if any(not iv.is_noop() for iv in r)]
    if not steered:
        return out
    encoded = encode_rows(
        tokenizer, _rows([prompts[i] for i in steered], [answers[i] for i in steered])
    )
    order = sorted(range(len(steered)), key=lambda k: (encoded[k].prompt_len, len(encoded[k].ids)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = [encoded[k] for k in idx]
                # Rows 0..n-1 steered, n..2n-1 their unsteered twins.
                twins = [list(rows[steered[k]]) for k in idx] + [[] for _ in idx]
                batch = make_batch(enc + enc, pad, device)
                plens = [e.prompt_len for e in enc + enc]
                counts = [max(len(e.ids) - e.prompt_len, 1) for e in enc + enc]
                keep = batch.ids.shape[1] - min(plens) + 1
                # The answer's predictions of each row, as (row, position in the kept slice).
                offset = batch.ids.shape[1] - keep
                where_r = [r for r, c in enumerate(counts) for _ in range(c)]
                where_t = [
                    plens[r] - 1 - offset + t for r, c in enumerate(counts) for t in range(c)
                ]
                with intervene_rows(model, twins) as ctx, head_at(model, where_r, where_t):
                    ctx.start(plens, range(len(twins)))
                    logits = model(
                        input_ids=batch.ids,
                        attention_mask=batch.attention,
                        use_cache=False,
                        logits_to_keep=keep,
                    ).logits[0]
                ends = np.cumsum([0, *counts])
                n = len(idx)
                for j, k in enumerate(idx):
                    steer = logits[ends[j] : ends[j + 1]]
                    clean = logits[ends[n + j] : ends[n + j + 1]]
                    out[steered[k]] = _kl(clean, steer)
    finally:
        model.train(was_training)
    return out
