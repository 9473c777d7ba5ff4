"""Sampling answers: batched, left-padded, seeded, through each family's chat template."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from emdir.data.questions import Question
from emdir.models.archs import contiguous_head, model_device
from emdir.models.chat import encode_prompt, turn_end_id


@dataclass(frozen=True)
class SamplingParams:
    """The `sampling` config section; top_k=0 means no top-k cut (transformers' default would
    be 50); `batch_size` is rows per batch or `auto` (as many as `max_memory_gb` holds,
    `emdir.models.memory`). No field has a default: config/schema.yaml holds them
    (`emdir.schema_defaults`)."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    batch_size: int | str
    seed: int
    max_memory_gb: float


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


def sample_seed(base: int, prompt: Prompt) -> int:
    """The seed of one sample: fixed by the config seed, the question id and the sample index,
    so an answer does not depend on batch size or on which other prompts share its batch."""
    text = f"{base}/{prompt.question.id}/{prompt.sample_index}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


class _PerRowSampler(LogitsProcessor):
    """Draws each row's next token with that row's own generator (temperature, top-k, top-p
    applied here) and returns scores that are -inf everywhere else, so greedy decoding picks
    the drawn token. transformers' own sampling uses one global RNG for the whole batch."""

    def __init__(self, seeds: Sequence[int], params: SamplingParams, device: torch.device):
        self.params = params
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()
        if self.params.temperature == 0:
            choice = logits.argmax(dim=-1)
        else:
            logits = logits / self.params.temperature
            if self.params.top_k > 0:
                kth = torch.topk(logits, min(self.params.top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if self.params.top_p < 1.0:
                sorted_p, order = probs.sort(dim=-1, descending=True)
                # Keep the smallest prefix whose mass reaches top_p (always the top token).
                drop = (sorted_p.cumsum(-1) - sorted_p) >= self.params.top_p
                sorted_p = sorted_p.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
                probs = probs / probs.sum(-1, keepdim=True)
            u = torch.stack(
                [torch.rand((), generator=g, device=probs.device) for g in self.generators]
            )
            cdf = probs.cumsum(-1)
            choice = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
            choice = choice.clamp(max=probs.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, choice.unsqueeze(-1), 0.0)


@torch.no_grad()
def sample(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    params: SamplingParams,
    desc: str = "generate",
    on_batch: Callable[[int, range], None] | None = None,
    batch_size: int | None = None,
) -> list[tuple[str, int]]:
    """(answer text, sample seed) for each prompt, in order, in batches of `batch_size`
    prompts (default `params.batch_size`).

    Every sample has its own seed (`sample_seed`): the same config gives the same answers
    whatever the batch size, one sample can be redrawn alone, and a steered run draws with
    the same seeds as its unsteered baseline. `on_batch(prompt_width, rows)` runs before each
    batch with the indices of its prompts (interventions use it to tell prompt positions from
    answer positions, and per-row interventions to know the batch's rows).
    """
    device = model_device(model)
    eos = turn_end_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = [encode_prompt(tokenizer, p.question.text, p.question.system) for p in prompts]
    out: list[tuple[str, int]] = []
    if batch_size is None:
        from emdir.models.memory import sampling_batch

        batch_size = sampling_batch(model, tokenizer, prompts, params)[0]
    size = int(batch_size)
    starts = range(0, len(prompts), size)
    for start in tqdm(starts, desc=desc, mininterval=2):
        chunk = encoded[start : start + size]
        seeds = [sample_seed(params.seed, p) for p in prompts[start : start + size]]
        ids, mask = _left_pad(chunk, pad)
        if on_batch is not None:
            on_batch(ids.shape[1], range(start, start + len(chunk)))
        with contiguous_head(model):
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                # A config of our own, so a hub model's generation_config.json (its temperature,
                # top_p, repetition penalty) never alters the configured sampling. Sampling happens
                # in _PerRowSampler; greedy decoding then takes its draw.
                generation_config=GenerationConfig(
                    do_sample=False,
                    max_new_tokens=params.max_new_tokens,
                    eos_token_id=eos,
                    pad_token_id=pad,
                ),
                logits_processor=LogitsProcessorList([_PerRowSampler(seeds, params, device)]),
            )
        for row, seed in zip(gen[:, ids.shape[1] :].tolist(), seeds, strict=True):
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
