"""Batch sizes from a memory budget: how many rows a model job can sample, or teacher-force,
at once within `sampling.max_memory_gb`, estimated from the model's shape before it starts.

The estimate counts what grows with the rows of a batch: the KV cache, the prefill's
activations (hidden states, MLP, attention scores, the float32 copies that LoRA adapters
make of their inputs) and the logits over the vocabulary with the sampler's float32 copies
of them. The weights and a fixed allowance for Python, torch and the tokenizer come off the
budget first. `benchmarks/batched_sampling.py` prints the measured peak beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emdir.errors import EmdirError

# Python, torch, transformers, the tokenizer and the allocator's slack, measured as the
# resident memory of a job before its model loads (~0.6-0.9 GB here).
OVERHEAD_BYTES = 1.0e9
# The float32 [rows, vocabulary] tensors the per-row sampler holds at once (scores, logits,
# softmax, cumulative sum, the -inf output) besides the model's own logits.
SAMPLER_COPIES = 6
# Answers per teacher-forced KL batch (16 rows with their unsteered twins): a forward over
# whole answers already multiplies rows x tokens (> 1,000) at once, and on the tiny float32
# models larger batches were slower (400 answers: 2.2 CPU-s at 8 a batch, 7.9 s at 400),
# their activations no longer in cache.
KL_ANSWERS = 8
# No batch larger than this: past a few hundred rows a matrix multiply gains nothing more on
# a CPU, and a batch runs until its longest answer ends.
MAX_ROWS = 1024


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model: its text config's sizes and its parameters."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype_bytes: int
    weight_bytes: int
    lora: bool

    @classmethod
    def of(cls, model: Any) -> Shape:
        from emdir.models.archs import text_config

        inner = getattr(model, "base_model", model)
        cfg = text_config(getattr(inner, "model", inner).config)
        heads = int(cfg.num_attention_heads)
        hidden = int(cfg.hidden_size)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        params = list(model.parameters())
        return cls(
            layers=int(cfg.num_hidden_layers),
            hidden=hidden,
            intermediate=int(getattr(cfg, "intermediate_size", None) or 4 * hidden),
            heads=heads,
            kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
            head_dim=head_dim,
            vocab=int(cfg.vocab_size),
            dtype_bytes=model.get_input_embeddings().weight.element_size(),
            weight_bytes=sum(p.numel() * p.element_size() for p in params),
            lora=any("lora_" in name for name, _ in model.named_parameters()),
        )

    def activations(self, tokens: int) -> float:
        """Bytes of one row's transient activations in a forward over `tokens` positions."""
        b = self.dtype_bytes
        per_token = (8 * self.hidden + 3 * self.intermediate) * b
        if self.lora:
            per_token += 4 * max(self.hidden, self.intermediate)
        return tokens * per_token + 4.0 * self.heads * tokens * tokens

    def kv_cache(self, tokens: int) -> float:
        return 2.0 * self.layers * self.kv_heads * self.head_dim * tokens * self.dtype_bytes


def sampling_row_bytes(shape: Shape, prompt_tokens: int, new_tokens: int) -> float:
    """Bytes one row adds to a sampling batch: its KV cache at full length, the prefill's
    activations over its prompt, and its logits with the sampler's float32 copies."""
    logits = shape.vocab * (shape.dtype_bytes + 4 * SAMPLER_COPIES)
    return shape.kv_cache(prompt_tokens + new_tokens) + shape.activations(prompt_tokens) + logits


def forward_row_bytes(shape: Shape, tokens: int, kept: int) -> float:
    """Bytes one row adds to a teacher-forced forward over `tokens` positions that keeps the
    logits of `kept` of them (the KL passes, coherence)."""
    return shape.activations(tokens) + kept * shape.vocab * shape.dtype_bytes


def _rows_fitting(budget_gb: float, shape: Shape, row_bytes: float, what: str) -> int:
    """How many rows of `row_bytes` fit in the budget after the weights and the overhead;
    an error naming the budget when not even one does."""
    free = budget_gb * 1e9 - shape.weight_bytes - OVERHEAD_BYTES
    rows = int(free // row_bytes) if free > 0 else 0
    if rows < 1:
        need = (shape.weight_bytes + OVERHEAD_BYTES + row_bytes) / 1e9
        raise EmdirError(
            f"sampling.max_memory_gb is {budget_gb:g} but {what} needs {need:.2f} GB for one "
            f"row ({shape.weight_bytes / 1e9:.2f} GB of weights, {OVERHEAD_BYTES / 1e9:.1f} GB "
            f"of overhead, {row_bytes / 1e9:.3f} GB a row); raise sampling.max_memory_gb"
        )
    return rows


def rows_within(budget_gb: float, shape: Shape, row_bytes: float, what: str) -> int:
    """The rows of `row_bytes` that fit in the budget (`_rows_fitting`), at most `MAX_ROWS`."""
    return min(_rows_fitting(budget_gb, shape, row_bytes, what), MAX_ROWS)


def batch_rows(
    setting: int | str,
    budget_gb: float,
    shape: Shape,
    row_bytes: float,
    what: str,
) -> int:
    """`sampling.batch_size` resolved: a fixed row count as given (still checked against the
    budget), or with `auto` as many rows as the budget allows (at most `MAX_ROWS`)."""
    fits = _rows_fitting(budget_gb, shape, row_bytes, what)
    if setting == "auto":
        return min(fits, MAX_ROWS)
    rows = int(setting)
    if rows > fits:
        need = (shape.weight_bytes + OVERHEAD_BYTES + rows * row_bytes) / 1e9
        raise EmdirError(
            f"sampling.batch_size {rows} for {what} needs about {need:.1f} GB, over "
            f"sampling.max_memory_gb {budget_gb:g} (it fits {fits} rows); lower the batch size, "
            "set it to auto, or raise the budget"
        )
    return rows


def prompt_widths(tokenizer: Any, prompts: Any) -> list[int]:
    """Each prompt's length in tokens through the chat template."""
    from emdir.models.chat import encode_prompt

    return [len(encode_prompt(tokenizer, p.question.text, p.question.system)) for p in prompts]


def sampling_batch(model: Any, tokenizer: Any, prompts: Any, params: Any) -> tuple[int, list[int]]:
    """(rows per sampling batch, each prompt's width in tokens) for `params`
    (`SamplingParams`): `batch_size` as given or, with `auto`, what `max_memory_gb` holds at
    the longest prompt and `max_new_tokens`."""
    widths = prompt_widths(tokenizer, prompts)
    shape = Shape.of(model)
    row = sampling_row_bytes(shape, max(widths, default=1), int(params.max_new_tokens))
    rows = batch_rows(params.batch_size, float(params.max_memory_gb), shape, row, "sampling")
    return rows, widths


def kl_batch(model: Any, widths: Sequence[int], params: Any) -> int:
    """Answers per teacher-forced KL batch (each answer twice, steered and unsteered):
    `KL_ANSWERS`, or fewer if `max_memory_gb` holds fewer at the longest prompt of `widths`
    (as `sampling_batch` returns them) and an answer of `max_new_tokens` (+ 8 tokens for an
    answer that re-encodes longer than it was sampled)."""
    answer = int(params.max_new_tokens) + 8
    shape = Shape.of(model)
    row = 2 * forward_row_bytes(shape, max(widths, default=1) + answer, answer)
    return min(KL_ANSWERS, rows_within(float(params.max_memory_gb), shape, row, "the KL pass"))
