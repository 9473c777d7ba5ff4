"""Sampling throughput at a real model's width: emdir's `sample`, plain and steered, against
transformers' own `generate`.

Why: generate and steering jobs spend nearly all their time decoding answers in batches of
sampling.batch_size (32) up to max_new_tokens (600), so emdir's sampler (a per-row seeded
logits processor inside `generate`, emdir/models/generate.py) must be no slower than plain
`generate`, and a steering hook must add next to nothing to it.

The model is random-init and of a real model's width (hidden size, heads, kv heads, head
dim, MLP and vocabulary as its hub config gives them: `REAL_SHAPES` of
benchmarks/paper_estimate.py; `--shape tiny` is a toy size for tests), built from a
transformers config by `emdir.models.zoo.tiny_config` but only `--depth` decoder layers deep
(default 2), uniform weights in [-0.05, 0.05]. CPU: float32 and `--threads` torch threads
(default 1); `--device cuda`: bfloat16 on the first GPU.

Three sides are timed, each on the same `--batch` prompts (32 questions from
`emdir.data.synthetic`, through the family's chat template, left-padded by `sample`'s own
helper), `--new-tokens` new tokens per prompt:

- emdir plain: the whole `emdir.models.generate.sample` call (chat template and tokenizing,
  padding, `generate` with the per-row sampler at temperature 1, top_p 1, top_k 0, and
  decoding the answers to text).
- emdir steered: the same call inside `emdir.analysis.interventions.intervene` with one
  subtract intervention at decoder layer depth // 2 (positions "all", coefficient 0.5 of the
  layer's mean residual norm, `on_batch=ctx.start`), as `emdir.analysis.steering` samples.
- HF generate: `model.generate(do_sample=True, temperature=1, top_p=1, top_k=0)` on the
  same already-tokenized, left-padded tensors, seeded by `torch.manual_seed` (one global
  RNG): the same sampling distribution; tokenizing and decoding are not timed on this side,
  so everything emdir adds counts against it.

Every side decodes exactly `--new-tokens` tokens per row: a forward hook on the LM head sets
the logit of the turn-end token (the one both sides stop on) to -inf, on all three sides
alike, and a forward pre-hook counts the model's forward passes in every timed run (one
prefill + new_tokens - 1 decode steps); a run that stopped early is an error. tokens/s =
batch x new_tokens / wall-clock seconds of the run, prefill included.

Each side is warmed up once (4 new tokens), then timed `--repeats` times, interleaved,
the order reversed on every other repeat; the figures are the medians. Printed: each side's
tokens/s, steered/plain (ratio of emdir's median times; target <= 1.05) and emdir/HF
(ratio of plain tokens/s; target >= 1.00); on CPU also both ratios of the process's median
CPU seconds, which other jobs on a shared machine disturb less than wall-clock time.

    python benchmarks/sampler_throughput.py --quick   # 16 new tokens, 2 repeats: ~1-1.5 min
    python benchmarks/sampler_throughput.py           # 600 new tokens, 3 repeats: ~35 min
    python benchmarks/sampler_throughput.py --device cuda --depth 8   # where a GPU is present

Exits 0 unless something errors, or with --check a target is missed; 2 when --device cuda
is asked for and torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# tqdm reads its environment when imported: keep `sample`'s progress bars out of the output.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from paper_estimate import REAL_SHAPES, RealShape, build, clock  # noqa: E402
from torch import nn  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

from emdir import schema_defaults  # noqa: E402
from emdir.analysis.interventions import Intervention, intervene  # noqa: E402
from emdir.data import synthetic as data  # noqa: E402
from emdir.data.questions import Question  # noqa: E402
from emdir.models import zoo  # noqa: E402
from emdir.models.chat import encode_prompt, turn_end_id  # noqa: E402
from emdir.models.generate import Prompt, SamplingParams, _left_pad, sample  # noqa: E402

STEER_TARGET = 1.05  # steered / plain time, at most
HF_TARGET = 1.00  # emdir / HF tokens per second, at least
SHAPES: dict[str, tuple[str, RealShape]] = {
    "qwen2": ("Qwen2ForCausalLM", REAL_SHAPES["Qwen/Qwen2.5-1.5B-Instruct"]),
    "llama": ("LlamaForCausalLM", REAL_SHAPES["meta-llama/Llama-3.2-1B-Instruct"]),
    "tiny": ("Qwen2ForCausalLM", RealShape(64, 2, 4, 2, 16, 128, 1000, "a toy size for tests")),
}
SIDES = ("emdir plain", "emdir steered", "HF generate")


def make_prompts(n: int, seed: int) -> list[Prompt]:
    questions = data.general_questions(n, seed)
    questions += data.coding_questions(max(n - len(questions), 0), seed)
    return [
        Prompt(Question(id=q["id"], text=q["question"], system=None, samples=1), 0)
        for q in questions[:n]
    ]


class Decoding:
    """Forward hooks, the same on every side: the turn-end token gets a -inf logit (so no row
    ends early) and every forward pass is counted."""

    def __init__(self, model: nn.Module, eos: int) -> None:
        self.forwards = 0

        def suppress(_module: nn.Module, _args: Any, logits: torch.Tensor) -> None:
            logits[..., eos] = float("-inf")

        def count(*_: Any) -> None:
            self.forwards += 1

        self.handles = [
            model.get_output_embeddings().register_forward_hook(suppress),
            model.register_forward_pre_hook(count),
        ]


@dataclasses.dataclass
class Side:
    name: str
    run: Callable[[int], Any]  # new tokens -> output (answers or token ids)
    times: list[float] = dataclasses.field(default_factory=list)  # wall-clock seconds
    cpu: list[float] = dataclasses.field(default_factory=list)  # this process's CPU seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2", help="model width")
    parser.add_argument("--depth", type=int, default=2, help="decoder layers built (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="prompts per batch (default 32)")
    parser.add_argument("--new-tokens", type=int, help="tokens per row (600; --quick 16)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (3; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="16 new tokens, 2 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    new_tokens = args.new_tokens or (16 if args.quick else 600)
    repeats = args.repeats or (2 if args.quick else 3)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
        return 2
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arch, shape = SHAPES[args.shape]

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        rows = data.chat_corpus(200, 200, 0.1, args.seed)
        texts = [m["content"] for r in rows for m in r["messages"]]
        zoo.train_tokenizer(texts, tok_dir, 1000)
        torch.manual_seed(args.seed)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model, tok, _ = build(arch, shape, args.depth, tok_dir, device, dtype)
    eos = turn_end_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    prompts = make_prompts(args.batch, args.seed)
    ids, mask = _left_pad([encode_prompt(tok, p.question.text, None) for p in prompts], pad)
    ids, mask = ids.to(device), mask.to(device)
    width = ids.shape[1]

    layer = args.depth // 2
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    resid = hidden.hidden_states[layer + 1].float().norm(dim=-1)[mask.bool()].mean().item()
    vector = torch.randn(shape.hidden, generator=torch.Generator().manual_seed(args.seed))
    iv = Intervention(layer=layer, vector=vector, op="subtract", coefficient=0.5, scale=resid)
    sampling = schema_defaults("sampling") | {"temperature": 1.0, "top_p": 1.0, "top_k": 0}

    def params(n: int) -> SamplingParams:
        return SamplingParams(
            **(sampling | {"max_new_tokens": n, "batch_size": args.batch, "seed": args.seed})
        )

    def emdir_plain(n: int) -> Any:
        return sample(model, tok, prompts, params(n), desc="plain")

    def emdir_steered(n: int) -> Any:
        with intervene(model, [iv]) as ctx:
            return sample(model, tok, prompts, params(n), desc="steer", on_batch=ctx.start)

    @torch.no_grad()
    def hf_generate(n: int) -> Any:
        torch.manual_seed(args.seed)
        config = GenerationConfig(
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=n,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        if out.shape[1] != width + n:
            raise RuntimeError(f"HF generate returned {out.shape[1] - width} tokens, not {n}")
        return out

    sides = [
        Side(SIDES[0], emdir_plain),
        Side(SIDES[1], emdir_steered),
        Side(SIDES[2], hf_generate),
    ]
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{arch} at {args.shape} width ({shape.source}): hidden {shape.hidden}, "
        f"{shape.heads}/{shape.kv_heads} heads of {shape.head_dim}, MLP {shape.intermediate}, "
        f"vocab {shape.vocab}, {args.depth} decoder layer(s), {n_params / 1e6:.0f}M params; "
        f"{args.device} {next(model.parameters()).dtype}, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"batch {args.batch} x {new_tokens} new tokens (prompts {width} tokens wide), "
        f"{repeats} repeats; steering: subtract at layer {layer}, 0.5 x resid norm {resid:.2f}"
    )

    hooks = Decoding(model, eos)
    try:
        warm = [side.run(4) for side in sides]
        if warm[0] == warm[1]:
            raise RuntimeError("the steering hook changed no answer")
        for r in range(repeats):
            for side in sides if r % 2 == 0 else sides[::-1]:
                hooks.forwards = 0
                t0, c0 = clock(device), time.process_time()
                side.run(new_tokens)
                side.times.append(clock(device) - t0)
                side.cpu.append(time.process_time() - c0)
                if hooks.forwards != new_tokens:
                    raise RuntimeError(
                        f"{side.name} ran {hooks.forwards} forwards, not {new_tokens}: "
                        "generation stopped early"
                    )
    finally:
        for handle in hooks.handles:
            handle.remove()

    tokens = args.batch * new_tokens
    median = {side.name: statistics.median(side.times) for side in sides}
    for side in sides:
        t = median[side.name]
        print(
            f"{side.name + ':':<15} {tokens / t:8.1f} tokens/s (median {t:.2f} s, "
            f"min-max {min(side.times):.2f}-{max(side.times):.2f} s, {tokens} tokens per run)"
        )
    steer = median["emdir steered"] / median["emdir plain"]
    vs_hf = median["HF generate"] / median["emdir plain"]  # = emdir tokens/s / HF tokens/s
    if device.type == "cpu":
        # CPU seconds are less disturbed by other jobs on a shared machine than wall-clock.
        cpu = {side.name: statistics.median(side.cpu) for side in sides}
        print(
            f"(medians of CPU seconds: steered/plain {cpu['emdir steered'] / cpu['emdir plain']:.3f}"
            f", emdir/HF tokens per CPU second {cpu['HF generate'] / cpu['emdir plain']:.3f})"
        )
    ok = True
    for label, ratio, target, missed in (
        ("steered/plain sample (time)", steer, f"<= {STEER_TARGET:.2f}", steer > STEER_TARGET),
        ("emdir/HF generate (tokens/s)", vs_hf, f">= {HF_TARGET:.2f}", vs_hf < HF_TARGET),
    ):
        ok &= not missed
        print(f"{label}: {ratio:.3f} (target {target}){'  MISSED' if missed else ''}")
    print(f"{time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
