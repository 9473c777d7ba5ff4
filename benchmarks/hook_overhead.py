"""Overhead of emdir's forward hooks: activation capture and steering, against hook-free runs.

Why: the activations rule captures every layer of every answer, and the steering rule
samples whole coefficient sweeps, so the hooks must cost next to nothing on top of the
forward passes that have to happen anyway. On a mid-size random-init LlamaForCausalLM
(hidden 512, 8 layers, 8 heads / 4 kv heads, MLP 1024, ~1000-token BPE vocab):

- capture/bare forward: `activations.capture_store` (all layers; answer_mean, last_prompt
  and prompt_mean; float32; HDF5 file in a temp dir) against the same rows encoded and
  right-padded by the same helpers and run through `model(...)` with no hook.
  Target <= 1.10. (The capture stops after the deepest captured block, so it skips the
  final norm and LM head: about 3% of this model's forward.)
- steered/plain sample: `generate.sample` inside `interventions.intervene` (one
  subtract intervention, positions "all", `on_batch=ctx.start` as the steering rule does)
  against the same `sample` call without a hook. Target <= 1.05. The turn-end token that
  `sample` stops on is a token the model cannot emit, so every run decodes exactly
  `--new-tokens` tokens per prompt (checked in the warm-up).

Each side is warmed up once, then timed `--repeats` times, interleaved, alternating which
side goes first; the ratio is of the medians. `--threads` (default 1) sets
torch.set_num_threads: one thread is the least noisy on a shared machine and the ratio is
what matters; raise it to match a workflow job's threads.

    python benchmarks/hook_overhead.py            # ~1-2 minutes on a 2-core CPU
    python benchmarks/hook_overhead.py --check    # exit 1 if a target is missed

Exits 0 unless something errors, or with --check a target is missed.
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

# tqdm reads its environment when imported: keep capture_store's and sample's progress bars
# out of the table (set TQDM_DISABLE=0 to see them).
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from emdir import schema_defaults  # noqa: E402
from emdir.analysis.activations import capture_store, read_store  # noqa: E402
from emdir.analysis.interventions import Intervention, intervene  # noqa: E402
from emdir.data import synthetic as data  # noqa: E402
from emdir.data.questions import Question  # noqa: E402
from emdir.models import zoo  # noqa: E402
from emdir.models.archs import ARCHS, ArchSpec, decoder_layers, model_device  # noqa: E402
from emdir.models.chat import chat_format, split_conversation  # noqa: E402
from emdir.models.encode import encode_rows, make_batch  # noqa: E402
from emdir.models.generate import Prompt, SamplingParams, sample  # noqa: E402

ARCH = "LlamaForCausalLM"
SHAPE = zoo.TinyShape(
    hidden_size=512,
    num_layers=8,
    num_heads=8,
    num_kv_heads=4,
    intermediate_size=1024,
    max_positions=512,
)
POOLINGS = ("answer_mean", "last_prompt", "prompt_mean")
CAPTURE_TARGET = 1.10
STEER_TARGET = 1.05
# Added to the tokenizer after the model is built, so its id is past the model's vocabulary:
# `sample` stops on it, and the model can never produce it.
NEVER_TOKEN = "<|bench_never_emitted|>"


def build(tmp: Path, vocab: int, seed: int) -> tuple[nn.Module, Any, ArchSpec]:
    rows = data.chat_corpus(300, 300, 0.1, seed)
    texts = [m["content"] for row in rows for m in row["messages"]]
    zoo.train_tokenizer(texts, tmp / "tokenizer", vocab_size=vocab)
    model, tok = zoo.build_tiny(ARCH, tmp / "tokenizer", SHAPE, seed=seed)
    model.eval()
    return model, tok, ARCHS[ARCH]


def capture_rows(n: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for k, row in enumerate(data.chat_corpus(n - n // 2, n // 2, 0.1, seed + 1)):
        question, system, answer = split_conversation(row["messages"])
        out.append(
            {
                "id": f"r{k}",
                "question_id": f"q{k}",
                "question": question,
                "system": system,
                "answer": answer,
            }
        )
    return out


@dataclasses.dataclass
class Times:
    """Wall-clock and process CPU seconds of each timed run of one side."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    def median(self, clock: str = "wall") -> float:
        return statistics.median(getattr(self, clock))


def time_pair(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[Times, Times]:
    """Times of `repeats` calls of each, interleaved, alternating which goes first."""
    times = (Times(), Times())
    for r in range(repeats):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            wall, cpu = time.perf_counter(), time.process_time()
            (a, b)[k]()
            times[k].wall.append(time.perf_counter() - wall)
            times[k].cpu.append(time.process_time() - cpu)
    return times


def report(labels: tuple[str, str], times: tuple[Times, Times]) -> float:
    """Print both sides' times; returns the ratio of wall-clock medians (first / second)."""
    for label, t in zip(labels, times, strict=True):
        print(
            f"  {label:<20} wall median {t.median():7.3f} s "
            f"(min-max {min(t.wall):.3f}-{max(t.wall):.3f}), cpu median {t.median('cpu'):7.3f} s"
        )
    # Process CPU time is less disturbed by other jobs on the machine than wall time.
    cpu_ratio = times[0].median("cpu") / times[1].median("cpu")
    min_ratio = min(times[0].wall) / min(times[1].wall)
    print(f"  (ratio of cpu-time medians {cpu_ratio:.3f}, of wall-time minima {min_ratio:.3f})")
    return times[0].median() / times[1].median()


def bench_capture(
    model: nn.Module, tok: Any, spec: ArchSpec, args: argparse.Namespace, tmp: Path
) -> tuple[float, Path]:
    rows = capture_rows(args.rows, args.seed)
    labels = np.array([k % 2 for k in range(len(rows))])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = model_device(model)
    out = tmp / "capture.h5"

    def capture() -> None:
        capture_store(
            model,
            tok,
            spec,
            rows,
            labels,
            out,
            poolings=POOLINGS,
            batch_size=args.batch_size,
            dtype="float32",
        )

    @torch.no_grad()
    def bare() -> None:
        # What any forward over these rows costs: the same encoding and batching helpers.
        encoded = encode_rows(tok, rows)
        for start in range(0, len(encoded), args.batch_size):
            batch = make_batch(encoded[start : start + args.batch_size], pad, device)
            model(input_ids=batch.ids, attention_mask=batch.attention, use_cache=False)

    encoded = encode_rows(tok, rows)
    lengths = [len(e.ids) for e in encoded]
    print(
        f"capture: {len(rows)} rows, batch {args.batch_size}, tokens/row "
        f"{min(lengths)}-{max(lengths)} (mean {statistics.mean(lengths):.0f}), "
        f"{len(decoder_layers(model))} layers, poolings {', '.join(POOLINGS)}"
    )
    capture()
    bare()
    ratio = report(("capture_store", "bare forward"), time_pair(capture, bare, args.repeats))
    return ratio, out


def bench_steer(
    model: nn.Module, tok: Any, spec: ArchSpec, args: argparse.Namespace, store: Path
) -> float:
    tok.add_special_tokens({"additional_special_tokens": [NEVER_TOKEN]})
    never = tok.convert_tokens_to_ids(NEVER_TOKEN)
    vocab = model.get_output_embeddings().weight.shape[0]
    if never < vocab:
        raise RuntimeError(f"{NEVER_TOKEN} got id {never}, inside the model's vocab {vocab}")
    # Turns now end with a token the model cannot emit, so every answer runs the full budget.
    tok.chat_template = tok.chat_template.replace(chat_format(tok).turn_end, NEVER_TOKEN)
    questions = data.general_questions(args.prompts, args.seed)
    questions += data.coding_questions(args.prompts - len(questions), args.seed)
    prompts = [
        Prompt(Question(id=q["id"], text=q["question"], system=None, samples=1), 0)
        for q in questions[: args.prompts]
    ]
    overrides = {
        "temperature": 1.0,
        "max_new_tokens": args.new_tokens,
        "batch_size": args.gen_batch_size,
        "seed": args.seed,
    }
    params = SamplingParams(**(schema_defaults("sampling") | overrides))
    layer = len(decoder_layers(model)) // 2
    gen = torch.Generator().manual_seed(args.seed)
    vector = torch.randn(SHAPE.hidden_size, generator=gen)
    iv = Intervention(
        layer=layer,
        vector=vector,
        op="subtract",
        coefficient=0.5,
        scale=read_store(store).resid_norm(layer),
        positions="all",
    )

    def plain() -> Any:
        return sample(model, tok, prompts, params, desc="plain")

    def steered() -> Any:
        with intervene(model, [iv]) as ctx:
            return sample(model, tok, prompts, params, desc="steer", on_batch=ctx.start)

    # Warm-up, counting forward calls to check that both decode the full token budget.
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    n_batches = -(-len(prompts) // params.batch_size)
    answers = []
    handle = model.register_forward_pre_hook(count)
    try:
        for label, fn in (("plain", plain), ("steered", steered)):
            calls[0] = 0
            answers.append(fn())
            if calls[0] != n_batches * params.max_new_tokens:
                raise RuntimeError(
                    f"{label} sampling ran {calls[0]} forwards, expected "
                    f"{n_batches * params.max_new_tokens}: generation stopped early"
                )
    finally:
        handle.remove()
    if answers[0] == answers[1]:
        raise RuntimeError("the steering hook did not change any answer")

    print(
        f"steering: {len(prompts)} prompts, batch {params.batch_size}, {params.max_new_tokens} "
        f"new tokens each, subtract at layer {layer}, coefficient {iv.coefficient}, "
        f"scale {iv.scale:.2f}"
    )
    times = time_pair(steered, plain, args.repeats)
    ratio = report(("sample + intervene", "sample, no hook"), times)
    tokens = len(prompts) * params.max_new_tokens
    per_tok = 1000 * times[1].median() / tokens
    print(f"  ({tokens} tokens per run; {per_tok:.2f} ms per generated token without hook)")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each side")
    parser.add_argument("--rows", type=int, default=48, help="rows captured per run")
    parser.add_argument("--batch-size", type=int, default=16, help="capture batch size")
    parser.add_argument("--prompts", type=int, default=16, help="prompts sampled per run")
    parser.add_argument("--gen-batch-size", type=int, default=16, help="sampling batch size")
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens generated per prompt")
    parser.add_argument("--vocab", type=int, default=1000, help="tokenizer vocabulary size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model, tok, spec = build(tmp, args.vocab, args.seed)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{ARCH}: hidden {SHAPE.hidden_size}, {SHAPE.num_layers} layers, vocab {len(tok)}, "
            f"{n_params / 1e6:.1f}M params; {torch.get_num_threads()} thread(s), "
            f"{args.repeats} repeats"
        )
        capture_ratio, store = bench_capture(model, tok, spec, args, tmp)
        steer_ratio = bench_steer(model, tok, spec, args, store)

    ok = True
    for label, ratio, target in (
        ("capture/bare forward", capture_ratio, CAPTURE_TARGET),
        ("steered/plain sample", steer_ratio, STEER_TARGET),
    ):
        missed = ratio > target
        ok &= not missed
        print(f"{label}: {ratio:.2f} (target <= {target:.2f}){'  MISSED' if missed else ''}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
