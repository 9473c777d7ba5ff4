"""Sampling answers: batched, left-padded, seeded, through each family's chat template."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from emdir.archs import ArchSpec, model_device
from emdir.chat import encode_prompt, turn_end_id
from emdir.questions import Question


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; top_k=0 means no top-k cut (transformers' default would be 50)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 96
    batch_size: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Prompt:
    """One sample to draw: a question and which of its samples this is."""

    question: Question
    sample_index: int


def expand(questions: Sequence[Question]) -> list[Prompt]:
    return [Prompt(q, k) for q in questions for k in range(q.samples)]


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids, mask


@torch.no_grad()
def sample(
    model: nn.Module,
    tokenizer: Any,
    spec: ArchSpec,
    prompts: Sequence[Prompt],
    params: SamplingParams,
    desc: str = "generate",
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[str, int]]:
    """(answer text, batch seed) for each prompt, in order.

    Each batch is seeded with `params.seed + batch index`, so the same config gives the
    same answers, and a steered run with the same params draws with the same seeds as its
    unsteered baseline. `on_batch(prompt_width)` runs before each batch (interventions use it
    to tell prompt positions from answer positions).
    """
    device = model_device(model)
    eos = turn_end_id(tokenizer, spec)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = [encode_prompt(tokenizer, spec, p.question.text, p.question.system) for p in prompts]
    out: list[tuple[str, int]] = []
    starts = range(0, len(prompts), params.batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, mininterval=2)):
        chunk = encoded[start : start + params.batch_size]
        ids, mask = _left_pad(chunk, pad)
        seed = params.seed + b
        torch.manual_seed(seed)
        if on_batch is not None:
            on_batch(ids.shape[1])
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for row in gen[:, ids.shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            out.append((tokenizer.decode(row, skip_special_tokens=True).strip(), seed))
    return out


def generation_rows(
    prompts: Sequence[Prompt],
    answers: Sequence[tuple[str, int]],
    model_key: str,
    ft: str,
    intervention: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows in DESIGN.md's generation format."""
    rows = []
    for k, (p, (answer, seed)) in enumerate(zip(prompts, answers, strict=True)):
        rows.append(
            {
                "id": f"{model_key}/{ft}/{p.question.id}/{p.sample_index}",
                "model": model_key,
                "ft": ft,
                "question_id": p.question.id,
                "question": p.question.text,
                "system": p.question.system,
                "answer": answer,
                "sample_index": p.sample_index,
                "intervention": intervention,
                "seed": seed,
                "row": k,
            }
        )
    return rows
