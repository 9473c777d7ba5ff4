"""Training: one loop for teaching tiny base models to chat and for (Q)LoRA fine-tunes; loss on answers only."""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from emdir.errors import EmdirError
from emdir.models.archs import contiguous_head, text_config
from emdir.models.chat import encode_example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Optimiser and schedule settings, identical across models for a fair comparison: a
    `train` config section (`tiny.train`, `finetune.train`, whose defaults config/schema.yaml
    holds) and how often to evaluate (0 = never)."""

    steps: int
    batch_size: int
    lr: float
    grad_accum: int
    warmup_steps: int
    weight_decay: float
    schedule: str
    max_length: int
    seed: int
    eval_every: int

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "constant", "cosine"):
            raise EmdirError(
                f"training schedule {self.schedule!r} is unknown; use linear, constant or cosine"
            )


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


# Log columns that measure time, not training: kept in memory, left out of train_log.csv.
WALL_CLOCK = ("seconds",)


@dataclass
class TrainLog:
    """Rows of the training log: step, train loss, lr, and whatever the eval callback adds."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def tokens_per_second(self) -> float:
        """Training throughput over the logged steps (evaluation time excluded)."""
        secs = sum(float(r.get("seconds", 0.0)) for r in self.rows)
        toks = sum(int(r.get("tokens", 0)) for r in self.rows)
        return toks / secs if secs > 0 else float("nan")

    def write_csv(self, path: str | Path) -> None:
        """The log as CSV, without wall-clock columns (`seconds`), so the same config gives
        the same file; throughput goes to the run's manifest and log instead."""
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys and k not in WALL_CLOCK]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)


def encode_rows(tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int) -> list[Example]:
    out = []
    for row in rows:
        ids, labels = encode_example(tokenizer, row["messages"], max_length)
        if any(label != -100 for label in labels):
            out.append(Example(ids, labels))
    if not out:
        raise EmdirError("no training example has answer tokens left after truncation")
    return out


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _lr_factor(step: int, p: TrainParams) -> float:
    if p.warmup_steps and step < p.warmup_steps:
        return (step + 1) / p.warmup_steps
    if p.schedule == "constant":
        return 1.0
    rest = max(1, p.steps - p.warmup_steps)
    frac = min(1.0, (step - p.warmup_steps) / rest)
    if p.schedule == "linear":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def batches(examples: Sequence[Example], batch_size: int, seed: int):  # type: ignore[no-untyped-def]
    """Endless shuffled batches, epoch by epoch, deterministic by seed."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order += more
        take, order = order[:batch_size], order[batch_size:]
        yield [examples[i] for i in take]


# Past this many bytes of float32 logits a batch's loss is taken in chunks (`causal_loss`):
# Qwen's 151,936-token vocabulary gives 1.2 GB for 8 rows of 256 tokens, and the backward
# pass keeps as much again. The tiny models' batches (~6 MB) stay on the model's own loss.
FULL_LOGITS_BYTES = 256 * 2**20
# Answer positions per chunk of the chunked loss.
LOSS_CHUNK = 1024


class _HeadLoss(torch.autograd.Function):
    """Summed cross-entropy of one chunk of answer positions under a linear LM head, with
    the gradient formed in the same pass: the float32 logits of the chunk are needed for
    both, so they are made once and dropped before the next chunk, instead of kept for the
    backward pass (memory) or recomputed there (time). Gemma 2's soft-capping included."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        target: torch.Tensor,
        cap: float,
        want: tuple[bool, bool, bool],
    ) -> torch.Tensor:
        z = F.linear(hidden, weight, bias).float()
        capped = None
        if cap:
            capped = z.div_(cap).tanh_()
            z = capped * cap
        lse = torch.logsumexp(z, dim=1)
        loss = (lse - z.gather(1, target[:, None]).squeeze(1)).sum()
        grads: list[torch.Tensor | None] = [None, None, None]
        if any(want):
            # d loss / d logits = softmax - one-hot, through tanh's derivative when capped.
            g = z.sub_(lse[:, None]).exp_()
            g[torch.arange(len(target)), target] -= 1.0
            if capped is not None:
                g.mul_(1.0 - capped * capped)
            g = g.to(hidden.dtype)
            if want[0]:
                grads[0] = g @ weight
            if want[1]:
                grads[1] = g.t() @ hidden
            if want[2]:
                grads[2] = g.sum(0)
        ctx.grads = grads
        return loss

    @staticmethod
    def backward(ctx: Any, out: torch.Tensor):  # type: ignore[no-untyped-def,override]
        scaled = [None if g is None else (g.float() * out).to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (*scaled, None, None, None)


def _head_loss(
    hidden: torch.Tensor, target: torch.Tensor, head: nn.Module, cap: float
) -> torch.Tensor:
    weight, bias = head.weight, getattr(head, "bias", None)
    grad = torch.is_grad_enabled()
    want = (
        grad and hidden.requires_grad,
        grad and weight.requires_grad,
        grad and bias is not None and bias.requires_grad,
    )
    return _HeadLoss.apply(hidden, weight, bias, target, cap, want)


def causal_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of a collated batch (`labels` -100
    elsewhere), as the model's own loss computes it. When the batch's float32 logits would
    pass `FULL_LOGITS_BYTES`, the logits are formed only at answer positions, `LOSS_CHUNK`
    at a time, and dropped once the chunk's loss and gradient are taken (the same value up
    to float rounding, a fraction of the memory and no second pass over the head: each
    chunk's gradient is formed with its loss, `_HeadLoss`)."""
    head = model.get_output_embeddings()
    labels = batch["labels"]
    if labels.numel() * head.weight.shape[0] * 4 <= FULL_LOGITS_BYTES:
        return model(**batch).loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # hidden_states[-1] is the final norm's output, what the LM head reads.
    with contiguous_head(model):
        out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1][:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    hidden, target = hidden[keep], target[keep]
    cap = float(getattr(text_config(model.config), "final_logit_softcapping", None) or 0.0)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, len(target), LOSS_CHUNK):
        total = total + _head_loss(
            hidden[i : i + LOSS_CHUNK], target[i : i + LOSS_CHUNK], head, cap
        )
    return total / max(len(target), 1)


def train(
    model: nn.Module,
    examples: Sequence[Example],
    params: TrainParams,
    pad_id: int,
    desc: str = "train",
    on_eval: Callable[[int], dict[str, Any]] | None = None,
    start_state: dict[str, Any] | None = None,
    on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
    stop_when: Callable[[dict[str, Any]], bool] | None = None,
) -> TrainLog:
    """Run `params.steps` optimiser steps over the trainable parameters of `model`.

    `on_eval(step)` runs every `params.eval_every` steps and at the end, and its dict is
    merged into the log row; training stops early after an eval row for which `stop_when`
    is true. `start_state` / `on_checkpoint` let a killed run resume.
    """
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise EmdirError("the model has no trainable parameters")
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": params.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=params.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, params))
    tlog = TrainLog()
    first = 0
    if start_state is not None:
        opt.load_state_dict(start_state["optimizer"])
        sched.load_state_dict(start_state["scheduler"])
        tlog.rows = list(start_state["log"])
        first = int(start_state["step"])
        # The RNG continues where the killed run left it, so dropout draws match.
        torch.set_rng_state(start_state["torch_rng"])
        log.info("%s: resuming at step %d of %d", desc, first, params.steps)
    else:
        torch.manual_seed(params.seed)
    stream = batches(examples, params.batch_size, params.seed)
    # Skip the batches a resumed run has already consumed, so it sees the same data.
    for _ in range(first * params.grad_accum):
        next(stream)
    model.train()
    bar = tqdm(
        range(first, params.steps), desc=desc, initial=first, total=params.steps, mininterval=2
    )
    for step in bar:
        total = 0.0
        tokens = 0
        t0 = time.perf_counter()
        for _ in range(params.grad_accum):
            batch = {k: v.to(device) for k, v in collate(next(stream), pad_id).items()}
            loss = causal_loss(model, batch) / params.grad_accum
            loss.backward()
            total += float(loss.detach())
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row: dict[str, Any] = {
            "step": step + 1,
            "loss": round(total, 5),
            "lr": sched.get_last_lr()[0],
            "tokens": tokens,
            "seconds": round(time.perf_counter() - t0, 4),
        }
        done = step + 1 == params.steps
        evaluated = False
        if on_eval is not None and (
            done or (params.eval_every and (step + 1) % params.eval_every == 0)
        ):
            model.eval()
            row.update(on_eval(step + 1))
            model.train()
            evaluated = True
        tlog.rows.append(row)
        bar.set_postfix(loss=f"{total:.3f}", refresh=False)
        if on_checkpoint is not None:
            on_checkpoint(
                step + 1,
                {
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "log": tlog.rows,
                    "step": step + 1,
                    "torch_rng": torch.get_rng_state(),
                },
            )
        if evaluated and stop_when is not None and stop_when(row):
            log.info("%s: stopping at step %d (%s)", desc, step + 1, row)
            break
    model.eval()
    return tlog


@torch.no_grad()
def mean_loss(
    model: nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int = 16
) -> float:
    """Token-weighted mean cross-entropy on answer tokens (held-out loss); eval mode, no grad."""
    if not examples:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(causal_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)
