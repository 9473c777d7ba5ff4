"""Coherence without a judge: how predictable the base model finds an answer, token by token.

    coherence = 100 x max(0, 1 - NLL / ln V)

NLL is the mean negative log-probability of the answer's tokens given the question (in the
model's own chat format) and the answer's earlier tokens, under the *base* model (before
any fine-tune or intervention); ln V is the NLL of a uniformly random token from its
vocabulary of V. So 0 is "no more predictable than random tokens" and 100 "every token
certain": the share of a random text's surprise that the base model does not feel. One
function for every answer, code or prose. It sees what a surface check of sentences cannot:
real words in a scrambled order, word salad, soup. It is comparable between conditions of
one model (each condition scored by the same model), not between models: a stronger model
or a narrower training corpus moves the whole scale.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def mean_logprobs(
    model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], batch_size: int
) -> tuple[list[float | None], int]:
    """Mean log-probability of each row's answer tokens given its prompt (None: no tokens),
    and the vocabulary size V (the width of the model's output).

    Rows are scored in file order in fixed batches, so a file always gets the same scores.
    """
    import torch

    from emdir.models.archs import head_at, model_device
    from emdir.models.encode import encode_rows, make_batch

    encoded = encode_rows(tokenizer, rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    out: list[float | None] = []
    vocab = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                enc = encoded[start : start + batch_size]
                batch = make_batch(enc, pad, device)
                # Position t predicts token t + 1: answer tokens are predicted from
                # prompt_len - 1 to len - 2. The LM head runs only there (no logits at
                # prompt or padding positions: a third of a real model's head work).
                spans = [range(e.prompt_len - 1, len(e.ids) - 1) for e in enc]
                rows_at = [i for i, span in enumerate(spans) for _ in span]
                if not rows_at:
                    out.extend([None] * len(enc))
                    continue
                with head_at(model, rows_at, [t for span in spans for t in span]):
                    logits = model(input_ids=batch.ids, attention_mask=batch.attention).logits[0]
                vocab = int(logits.shape[-1])
                at = 0
                for i, e in enumerate(enc):
                    n = len(spans[i])
                    if n <= 0:
                        out.append(None)
                        continue
                    pred = logits[at : at + n].float()
                    at += n
                    target = batch.ids[i, e.prompt_len : len(e.ids)]
                    lp = torch.log_softmax(pred, dim=-1).gather(1, target[:, None])
                    out.append(float(lp.mean()))
    finally:
        model.train(was_training)
    return out, vocab


def score(mean_logprob: float | None, vocab: int) -> float | None:
    """0-100 from a mean log-probability: 100 x max(0, 1 - NLL / ln V)."""
    if mean_logprob is None:
        return None
    return 100.0 * max(0.0, 1.0 + mean_logprob / math.log(vocab))


@functools.lru_cache(maxsize=1)
def _base_model(base_dir: str, threads: int, stamp: int) -> tuple[Any, Any]:
    """The base model and tokenizer, loaded once per process: a judge job that judges several
    files (`emdir.judge.judge_files`) scores them all under one load. Scoring leaves the
    model as it found it (eval mode, no gradients), so reuse cannot change a score; `stamp`
    (the folder's modification time) loads it afresh when the folder was rewritten."""
    from emdir.models.load import load_for_inference

    model, tok, _ = load_for_inference(base_dir, None, threads)
    return model, tok


def coherence_scores(
    base_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    batch_size: int,
    threads: int = 1,
) -> list[float | None]:
    """Coherence (0-100) of every row's answer under the base model in `base_dir`, scored
    `batch_size` answers at a time (`judge.offline.coherence_batch_size`)."""
    if not rows:
        return []
    model, tok = _base_model(str(base_dir), threads, Path(base_dir).stat().st_mtime_ns)
    means, vocab = mean_logprobs(model, tok, rows, batch_size)
    values = [score(v, vocab) for v in means]
    log.info("coherence of %d answers under %s", len(rows), base_dir)
    return values
