"""A training step at a real model's shape: where its seconds go, the rate its matrix
products reach against this core's limit, and the chunked loss before and after issue 28.

Why: real fine-tunes are run many times (seeds, a budget sweep, three datasets), so their
rate matters. The model is random-init at a real shape (`batched_sampling.SHAPES`), bfloat16
on one thread with a rank-8 LoRA adapter in float32 on every projection, as
`emdir.models.finetune` trains on a CPU. `--shape default` is instead the embedded default's
tiny base model (float32, every parameter trained, batch 24), whose loss is the model's own.

Rows: `--rows` sequences of 150 to `--length` tokens (evenly spread, fixed), the answer the
last 45% of each (labels -100 before), as Betley's rows give under a real tokenizer (8 rows
of max_length 256: 1,300-1,850 tokens, ~750 of them answer tokens). One step: loss, backward,
clipping, AdamW, as `emdir.models.train.train` runs it.

Two sides where the loss is chunked (the real shapes' float32 logits pass 256 MB), steps
alternating, each side's median:

- old: each chunk of answer positions through the LM head under activation checkpointing,
  recomputed in the backward pass (the path before issue 28's last change);
- new: `emdir.models.train.causal_loss`, which forms each chunk's gradient with its loss.

Printed: seconds per step of each side and their ratio, training tokens/s, the linear layers'
GFLOP/s (2 x parameters x tokens forward; as much again for the input gradients; x 3 where
the weights train; attention not counted), this core's matmul rate at the model's MLP shape
with the step's token count as rows (the limit), the fraction reached, peak resident
memory (the process's resident peak, so run the small shape first: the default order), and
the top operators of one profiled step by self time.

    python benchmarks/training_step.py --shape qwen25coder   # ~4 min (no AMX, 1 thread)
    python benchmarks/training_step.py --shape default       # ~30 s
    python benchmarks/training_step.py --quick               # both, small: ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batched_sampling import SHAPES, Peak, linear_params, matmul_rate  # noqa: E402
from paper_estimate import RealShape, build  # noqa: E402

from emdir.data import synthetic as data  # noqa: E402
from emdir.models import train, zoo  # noqa: E402
from emdir.models.archs import contiguous_head, text_config  # noqa: E402
from emdir.models.train import Example, causal_loss, collate  # noqa: E402

# The embedded default's tiny base model (config/config.yaml: tiny.shape, tiny.train).
DEFAULT = ("Qwen2ForCausalLM", RealShape(128, 4, 4, 2, 32, 256, 1000, "config/config.yaml"))
DEFAULT_ROWS = 24


def recomputed_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The chunked loss as it was: each chunk checkpointed and recomputed in the backward."""

    def chunk(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module) -> torch.Tensor:
        return F.cross_entropy(head(hidden).float(), labels, reduction="sum")

    head = model.get_output_embeddings()
    assert not getattr(text_config(model.config), "final_logit_softcapping", None)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with contiguous_head(model):
        out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    hidden, target = out.hidden_states[-1][:, :-1], batch["labels"][:, 1:]
    keep = target != -100
    hidden, target = hidden[keep], target[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, len(target), train.LOSS_CHUNK):
        part = slice(i, i + train.LOSS_CHUNK)
        total = total + checkpoint(chunk, hidden[part], target[part], head, use_reentrant=False)
    return total / max(len(target), 1)


def make_rows(n: int, length: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for k in range(n):
        width = 150 + (length - 150) * k // max(n - 1, 1)
        ids = torch.randint(5, vocab, (width,), generator=g).tolist()
        answer = int(width * 0.45)
        rows.append(Example(ids, [-100] * (width - answer) + ids[width - answer :]))
    return collate(rows, 0)


def step(model: nn.Module, opt: torch.optim.Optimizer, batch: dict, loss_fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    loss = loss_fn(model, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def top_ops(model: nn.Module, opt: torch.optim.Optimizer, batch: dict, n: int) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(model, opt, batch, causal_loss)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in events[:n]]


def run_shape(name: str, args: argparse.Namespace, tok_dir: Path) -> list[tuple[str, str]]:
    tiny = name == "default"
    arch, shape = DEFAULT if tiny else SHAPES[name]
    depth = args.depth or shape.layers
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    model, _, spec = build(arch, shape, depth, tok_dir, torch.device("cpu"), dtype)
    if not tiny:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model.float(), LoraConfig(r=8, lora_alpha=16, target_modules=spec.lora_target_regex)
        )
        for pname, p in model.named_parameters():  # bf16 base, float32 adapters
            if "lora_" not in pname:
                p.data = p.data.to(torch.bfloat16)
    model.train()
    n_rows = DEFAULT_ROWS if tiny else args.rows
    batch = make_rows(n_rows, args.length, shape.vocab)
    tokens = int(batch["attention_mask"].sum())
    answers = int((batch["labels"][:, 1:] != -100).sum())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if args.chunked:
        train.FULL_LOGITS_BYTES = 0
    chunked = batch["labels"].numel() * shape.vocab * 4 > train.FULL_LOGITS_BYTES
    sides = {"new": causal_loss, **({"old": recomputed_loss} if chunked else {})}
    with torch.no_grad():
        losses = {side: float(fn(model, batch)) for side, fn in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    with Peak() as peak:
        for fn in sides.values():  # warm-up
            step(model, opt, batch, fn)
        for _ in range(args.steps):
            for side, fn in sides.items():
                times[side].append(step(model, opt, batch, fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    blocks, head = linear_params(model)
    head_rows = answers if chunked else batch["labels"].numel()
    forward = 2.0 * (blocks * tokens + head * head_rows)
    flops = forward * (3 if tiny else 2)
    rate = flops / med["new"] / 1e9
    limit = matmul_rate(tokens, shape.hidden, shape.intermediate, dtype=dtype)
    label = f"{name} ({depth} layers, {n_rows} rows, {tokens} tokens, {dtype})"
    out = [
        (f"{label}: new", f"{med['new']:.2f} s/step, {tokens / med['new']:.0f} tokens/s"),
    ]
    if "old" in med:
        out += [
            (f"{name}: old (recomputed chunks)", f"{med['old']:.2f} s/step"),
            (f"{name}: new / old speed", f"{med['old'] / med['new']:.2f}x"),
            (f"{name}: first loss old / new", f"{losses['old']:.5f} / {losses['new']:.5f}"),
        ]
    out += [
        (
            f"{name}: linear layers reach",
            f"{rate:.0f} GFLOP/s = {rate / limit:.0%} of this core's "
            f"{limit:.0f} at {tokens} x {shape.hidden} x {shape.intermediate}",
        ),
        (f"{name}: peak memory", f"{peak.value / 1e9:.2f} GB"),
        (f"{name}: top operators (self time)", ", ".join(top_ops(model, opt, batch, 6))),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--shape",
        action="append",
        choices=sorted([*SHAPES, "default"]),
        help="repeatable; default: default, then qwen25coder",
    )
    ap.add_argument("--depth", type=int, default=0, help="decoder layers (default: the real depth)")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side")
    ap.add_argument("--quick", action="store_true", help="4 layers, 2 steps a side")
    ap.add_argument(
        "--chunked", action="store_true", help="chunk the loss whatever the logits' size"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.depth, args.steps = args.depth or 4, 2
    torch.set_num_threads(1)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        corpus = data.chat_corpus(200, 200, 0.1, 0)
        zoo.train_tokenizer([m["content"] for r in corpus for m in r["messages"]], tok_dir, 1000)
        for name in args.shape or ["default", "qwen25coder"]:
            rows += run_shape(name, args, tok_dir)
    width = max(len(r[0]) for r in rows)
    for fig, value in rows:
        print(f"{fig:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
