"""Chat rows as token batches: the prompt in the model's chat format followed by the answer,
right-padded, with masks that say which positions are prompt and which answer.

Every reader of (question, answer) rows uses this: activation capture, the KL cost of a
steering vector, the rank-1 adapter reading and the coherence score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emdir.errors import EmdirError
from emdir.models.chat import encode_answer, encode_prompt


@dataclass(frozen=True)
class Encoded:
    """One row as token ids: the prompt in the model's chat format, then the answer."""

    ids: list[int]
    prompt_len: int


@dataclass
class Batch:
    """One right-padded batch and the masks that the layer hooks pool with."""

    ids: torch.Tensor
    attention: torch.Tensor
    answer: torch.Tensor  # [B, T] 1.0 on answer tokens
    prompt: torch.Tensor  # [B, T] 1.0 on prompt tokens
    last_prompt: torch.Tensor  # [B] index of the last prompt token
    empty: torch.Tensor  # [B] bool, the answer has no tokens


def encode_rows(tokenizer: Any, rows: Sequence[Mapping[str, Any]]) -> list[Encoded]:
    """Rows with `question`, `answer`, `id`, `question_id` (and optional `system`) as token
    ids; the answer's turn is left open, as when the model is still writing it."""
    out = []
    for k, row in enumerate(rows):
        missing = [key for key in ("question", "answer", "id", "question_id") if key not in row]
        if missing:
            raise EmdirError(f"row {k} (id {row.get('id')!r}) lacks key(s) {', '.join(missing)}")
        prompt = encode_prompt(tokenizer, row["question"], row.get("system"))
        answer = encode_answer(tokenizer, row["answer"] or "", close_turn=False)
        if not prompt:
            raise EmdirError(f"row {row['id']!r}: the prompt encodes to no tokens")
        out.append(Encoded(prompt + answer, len(prompt)))
    return out


def make_batch(batch: Sequence[Encoded], pad_id: int, device: torch.device) -> Batch:
    """Right-padded tensors of encoded rows, with the masks of their prompt and answer tokens."""
    # Right padding keeps every real token at its own position, and under a causal mask
    # real tokens never attend to the padding after them.
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    pos = torch.arange(width)
    lengths = torch.tensor([len(e.ids) for e in batch])
    prompt_lens = torch.tensor([e.prompt_len for e in batch])
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
    attention = (pos < lengths[:, None]).long()
    answer = ((pos >= prompt_lens[:, None]) & (pos < lengths[:, None])).float()
    prompt = (pos < prompt_lens[:, None]).float()
    return Batch(
        ids=ids.to(device),
        attention=attention.to(device),
        answer=answer.to(device),
        prompt=prompt.to(device),
        last_prompt=(prompt_lens - 1).to(device),
        empty=(lengths == prompt_lens).to(device),
    )
