"""glibc's allocator as a job uses it: freed blocks handed back to the kernel (its default)
against kept for reuse (`emdir.models.load.keep_freed_memory`, which every inference job
now calls in `load_for_inference`), on a steering batch and on training steps at a real
shape (training keeps glibc's default: a whole fine-tune fragments the kept heap; see
benchmarks/README.md).

Why: by default glibc maps every block over 32 MB (a batch's logits, its attention scores,
a layer's activations) with mmap and unmaps it when it is freed; the next decoding step asks
again and the kernel zeroes fresh pages for it. On this 2-core Xeon a quarter of the real
regime study's CPU time was system time (README, "What it costs").

Each side runs in a fresh process (the setting lasts a process's life), one after the
other, on one thread:

- steer: `sample_conditions` as the steering rule runs it, `--vectors` random vectors x
  `--coefficients` coefficients subtracted at the last block over `--prompts` prompts, in
  one shared batch, `--new-tokens` each (the turn-end logit held at -inf), then the batch's
  KL pass; random-init at a real shape (`batched_sampling.SHAPES`), bfloat16 with a float32
  rank-8 LoRA adapter, as a fine-tune loads for steering;
- train: `--steps` training steps (`emdir.models.train.causal_loss`, backward, AdamW) at
  the same shape, 8 rows of 150 to 256 tokens, as `training_step.py` times one.

Printed per workload and side: wall seconds, user and system CPU seconds, peak resident
memory; then default / kept wall time (the speed-up) and whether the two sides computed the
same bytes (answers and KL values; losses and the adapter's weights), which they must: the
setting moves where memory comes from, never a value.

    python benchmarks/allocator.py                 # Qwen2.5-Coder-0.5B's shape: ~12 min
    python benchmarks/allocator.py --quick         # 4 layers, fewer rows: ~1 min
    python benchmarks/allocator.py --shape qwen2.5-1.5b --prompts 40

Exits 1 if the two sides' outputs differ, or with --check if kept is not faster.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIDES = ("default", "kept")
WORKLOADS = ("steer", "train")


def child(args: argparse.Namespace) -> dict[str, object]:
    """One workload on one side, in this process: its times, peak memory and output digest."""
    import torch

    if args.side == "kept":
        from emdir.models.load import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("this C library has no mallopt (not glibc): nothing to compare")
    torch.set_num_threads(1)
    from batched_sampling import SHAPES, conditions_for
    from paper_estimate import build
    from peft import LoraConfig, get_peft_model

    from emdir.data import synthetic as data
    from emdir.models import zoo

    arch, shape = SHAPES[args.shape]
    depth = args.depth or shape.layers
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        corpus = data.chat_corpus(200, 200, 0.1, 0)
        zoo.train_tokenizer([m["content"] for r in corpus for m in r["messages"]], tok_dir, 1000)
        torch.manual_seed(0)
        model, tok, spec = build(arch, shape, depth, tok_dir, torch.device("cpu"), torch.bfloat16)
        model = get_peft_model(
            model.float(),
            LoraConfig(
                r=8, lora_alpha=16, target_modules=spec.lora_target_regex, init_lora_weights=False
            ),
        )
        for name, p in model.named_parameters():  # bf16 base, float32 adapters
            if "lora_" not in name:
                p.data = p.data.to(torch.bfloat16)
        start, t0 = os.times(), time.perf_counter()
        if args.workload == "steer":
            digest.update(steer(model, tok, depth, args, conditions_for).encode())
        else:
            digest.update(train(model, shape.vocab, args).encode())
        seconds, end = time.perf_counter() - t0, os.times()
    return {
        "seconds": seconds,
        "user": end.user - start.user,
        "system": end.system - start.system,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "digest": digest.hexdigest(),
    }


def steer(model, tok, depth: int, args: argparse.Namespace, conditions_for) -> str:  # type: ignore[no-untyped-def]
    import torch
    from sampler_throughput import make_prompts

    from emdir.analysis.steering import sample_conditions
    from emdir.models.chat import turn_end_id
    from emdir.models.generate import SamplingParams

    model.eval()
    eos = turn_end_id(tok)
    model.get_output_embeddings().register_forward_hook(
        lambda _m, _a, out: out.index_fill_(-1, torch.tensor([eos]), float("-inf"))
    )
    prompts = make_prompts(args.prompts, 0)
    conditions = conditions_for(
        model, args.vectors, [0.05, 0.1, 0.25, 0.5][: args.coefficients], depth - 1
    )
    rows = len(conditions) * len(prompts)
    params = SamplingParams(
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=args.new_tokens,
        batch_size=rows,
        seed=0,
        max_memory_gb=64.0,
    )
    drawn = sample_conditions(model, tok, prompts, conditions, params, "m", "ft", "allocator")
    return json.dumps({k: [(r["answer"], r["kl"]) for r in v] for k, v in drawn.items()})


def train(model, vocab: int, args: argparse.Namespace) -> str:  # type: ignore[no-untyped-def]
    import torch
    from training_step import make_rows, step

    from emdir.models.train import causal_loss

    model.train()
    batch = make_rows(8, 256, vocab)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(args.steps):
        with torch.no_grad():
            losses.append(float(causal_loss(model, batch)))
        step(model, opt, batch, causal_loss)
    weights = hashlib.sha256()
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            weights.update(p.detach().float().numpy().tobytes())
    return json.dumps({"losses": losses, "weights": weights.hexdigest()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="qwen25coder", help="a batched_sampling.SHAPES key")
    ap.add_argument("--depth", type=int, default=0, help="decoder layers (default: the real depth)")
    ap.add_argument("--prompts", type=int, default=80)
    ap.add_argument("--vectors", type=int, default=6)
    ap.add_argument("--coefficients", type=int, default=1, choices=[1, 2, 3, 4])
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3, help="training steps")
    ap.add_argument("--workload", choices=WORKLOADS, action="append")
    ap.add_argument("--quick", action="store_true", help="4 layers, 20 prompts, 2 steps")
    ap.add_argument("--check", action="store_true", help="exit 1 unless kept is faster")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.depth, args.prompts, args.steps = args.depth or 4, 20, 2
    if args.side:
        print(json.dumps(child(args)))
        return 0
    here = [sys.executable, str(Path(__file__).resolve())]
    passed = [
        f"--shape={args.shape}",
        f"--depth={args.depth}",
        f"--prompts={args.prompts}",
        f"--vectors={args.vectors}",
        f"--coefficients={args.coefficients}",
        f"--new-tokens={args.new_tokens}",
        f"--steps={args.steps}",
    ]
    failed = False
    for workload in args.workload or WORKLOADS:
        got = {}
        for side in SIDES:
            out = subprocess.run(
                [*here, *passed, f"--workload={workload}", f"--side={side}"],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            got[side] = json.loads(out.stdout.strip().splitlines()[-1])
            r = got[side]
            print(
                f"{workload} {side:<8} {r['seconds']:8.1f} s wall  {r['user']:8.1f} s user  "
                f"{r['system']:7.1f} s system  peak {r['peak_gb']:.2f} GB"
            )
        speed = got["default"]["seconds"] / got["kept"]["seconds"]
        same = got["default"]["digest"] == got["kept"]["digest"]
        print(f"{workload} default / kept wall time  {speed:.2f}x")
        print(f"{workload} same outputs              {'yes' if same else 'NO'}")
        failed |= not same or (args.check and speed <= 1.0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
