"""A steering job's whole set of passes at a real model's shape: every condition in shared
batches (emdir's path) against one condition after another in batches of 16 (the path before
issue 28), side by side in one run.

Why: on this CPU (AMX-BF16) a bfloat16 matrix multiply runs several times faster with 512
rows than with 16, and a steering job samples 6 vectors x 4 coefficients over the same
prompts. Sampling them one after another multiplies 16-row matrices at every decoding step;
`emdir.analysis.steering.sample_conditions` puts every (condition, prompt) row in shared
batches sized by `sampling.max_memory_gb`, each row with its own intervention.

The model is random-init at a real model's shape (`SHAPES`: Qwen2.5-Coder-0.5B-Instruct,
SmolLM2-135M-Instruct, Qwen2.5-1.5B-Instruct, the hub configs' width, depth, heads, MLP and
vocabulary; `--shape tiny` is a toy size for tests), built by `paper_estimate.build` at the
full depth (`--depth` to cut it), bfloat16 on one thread, with a rank-8 LoRA adapter on
every projection in float32 as a fine-tune loads (`--no-adapter` to leave it out).
Conditions: `--vectors` random unit vectors x `--coefficients` coefficients subtracted at
the last block (as the steering rule does, at 0.05-0.5 of a unit scale). Prompts:
`--prompts` general questions from `emdir.data.synthetic` through the family's template.

Two sides, each sampling every condition's answers (`--new-tokens` each: the turn-end logit
is held at -inf, so both sides decode exactly the same number of tokens) and then their KL
cost against the unsteered model, as a steering job does:

- old: for each condition, `sample` inside `intervene` in batches of `--old-batch` (16, the
  batch of config/real.yaml before), then `kl_per_row` over its answers in batches of 8
  answers (16 rows: 8 steered, 8 unsteered twins, the old pass's forward size).
- new: `sample_conditions` over all conditions, batches from `--memory-gb` (`auto`); its KL
  pass takes 8 answers (16 rows) a forward too (`emdir.models.memory.KL_ANSWERS`), so the
  KL rows compare only its per-batch overhead and the LM head kept at answer predictions.

Printed: new tokens per second of each side (sampled tokens / seconds of the whole job, the
KL included) and their ratio (targets: >= 3x for Qwen2.5-Coder-0.5B, >= 2x for SmolLM2), the
sampling and KL seconds apart, each side's peak resident memory (target <= 8 GB), the
matrix-multiply rate the new path's sampling reaches (2 x the linear layers' parameters x the
tokens they process / its seconds) against this core's bf16 rate at the model's MLP shape
with 16, 128 and 512 rows (the limit), and the fraction. The two sides' answers differ only by
bfloat16 rounding (batch composition); the script prints how many are identical.

    python benchmarks/batched_sampling.py --shape qwen25coder    # ~14 min (no AMX, 1 thread)
    python benchmarks/batched_sampling.py --shape smollm2 --prompts 40   # ~10 min
    python benchmarks/batched_sampling.py --quick                # both, small: a few minutes

Exits 0 unless something errors, or with --check a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_estimate import RealShape, build  # noqa: E402
from sampler_throughput import make_prompts  # noqa: E402

from emdir.analysis.calibration import kl_per_row  # noqa: E402
from emdir.analysis.interventions import Intervention, intervene  # noqa: E402
from emdir.analysis.steering import sample_conditions  # noqa: E402
from emdir.data import synthetic as data  # noqa: E402
from emdir.models import zoo  # noqa: E402
from emdir.models.chat import turn_end_id  # noqa: E402
from emdir.models.generate import Prompt, SamplingParams, sample  # noqa: E402
from emdir.models.memory import prompt_widths  # noqa: E402

HUB = "the hub config"
# (arch, shape): hidden, layers, heads, kv heads, head dim, MLP, vocabulary.
SHAPES: dict[str, tuple[str, RealShape]] = {
    "qwen25coder": ("Qwen2ForCausalLM", RealShape(896, 24, 14, 2, 64, 4864, 151936, HUB)),
    "smollm2": ("LlamaForCausalLM", RealShape(576, 30, 9, 3, 64, 1536, 49152, HUB)),
    "qwen2.5-1.5b": ("Qwen2ForCausalLM", RealShape(1536, 28, 12, 2, 128, 8960, 151936, HUB)),
    "tiny": ("LlamaForCausalLM", RealShape(64, 2, 4, 2, 16, 128, 1000, "a toy size")),
}
TARGETS = {"qwen25coder": 3.0, "smollm2": 2.0}
PEAK_TARGET_GB = 8.0


class Peak:
    """The process's peak resident memory while a block runs (polled every 20 ms)."""

    def __init__(self) -> None:
        self.value = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> Peak:
        self.value = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.value = max(self.value, self.rss())
            time.sleep(0.02)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.value = max(self.value, self.rss())


def matmul_rate(
    rows: int, d: int, inner: int, repeats: int = 5, dtype: torch.dtype = torch.bfloat16
) -> float:
    """This core's GFLOP/s for [rows, d] x [d, inner] in `dtype` (the fastest of `repeats`)."""
    a = torch.randn(rows, d, dtype=dtype)
    b = torch.randn(d, inner, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * rows * d * inner / best / 1e9


def linear_params(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters of the decoder blocks' linear layers, of the LM head)."""
    head = model.get_output_embeddings()
    blocks = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head and "lora_" not in name
    )
    return blocks, head.weight.numel()


def conditions_for(model: torch.nn.Module, vectors: int, coefs: list[float], layer: int) -> dict:
    d = model.get_input_embeddings().weight.shape[1]
    rng = np.random.default_rng(0)
    out = {}
    for v in range(vectors):
        vec = rng.standard_normal(d)
        for c in coefs:
            out[f"v{v} x{c}"] = [
                Intervention(layer=layer, vector=vec, op="subtract", coefficient=c, scale=4.0)
            ]
    return out


def old_path(
    model: Any,
    tok: Any,
    prompts: list[Prompt],
    conditions: dict,
    params: SamplingParams,
    batch: int,
) -> tuple[dict[str, list[str]], float, float]:
    answers: dict[str, list[str]] = {}
    t_sample = t_kl = 0.0
    for name, ivs in conditions.items():
        t = time.perf_counter()
        with intervene(model, ivs) as ctx:
            drawn = sample(
                model, tok, prompts, params, desc=name, on_batch=ctx.start, batch_size=batch
            )
        t_sample += time.perf_counter() - t
        t = time.perf_counter()
        kl_per_row(model, tok, prompts, [a for a, _ in drawn], [ivs] * len(prompts), batch // 2)
        t_kl += time.perf_counter() - t
        answers[name] = [a for a, _ in drawn]
    return answers, t_sample, t_kl


def timed_new(
    model: Any, tok: Any, prompts: list[Prompt], conditions: dict, params: SamplingParams
) -> tuple[dict[str, list[str]], float, float]:
    """sample_conditions, with its sampling and KL seconds told apart by timing the KL calls."""
    import emdir.analysis.calibration as calibration

    spent = [0.0]
    real = calibration.kl_per_row

    def kl(*args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(*args, **kw)
        finally:
            spent[0] += time.perf_counter() - t

    calibration.kl_per_row = kl
    try:
        t = time.perf_counter()
        rows = sample_conditions(model, tok, prompts, conditions, params, "m", "ft", "new")
        total = time.perf_counter() - t
    finally:
        calibration.kl_per_row = real
    return {k: [r["answer"] for r in v] for k, v in rows.items()}, total - spent[0], spent[0]


def run_shape(name: str, args: argparse.Namespace, tok_dir: Path) -> list[tuple[str, str, str]]:
    arch, shape = SHAPES[name]
    depth = args.depth or shape.layers
    torch.manual_seed(0)
    model, tok, spec = build(arch, shape, depth, tok_dir, torch.device("cpu"), torch.bfloat16)
    if not args.no_adapter:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model.float(),
            LoraConfig(
                r=8, lora_alpha=16, target_modules=spec.lora_target_regex, init_lora_weights=False
            ),
        )
        # bf16 base, float32 adapters: what loading a fine-tune for inference gives.
        for pname, p in model.named_parameters():
            if "lora_" not in pname:
                p.data = p.data.to(torch.bfloat16)
    model.eval()
    eos = turn_end_id(tok)
    head = model.get_output_embeddings()
    head.register_forward_hook(
        lambda _m, _a, out: out.index_fill_(-1, torch.tensor([eos]), float("-inf"))
    )
    prompts = make_prompts(args.prompts, 0)
    coefs = [0.05, 0.1, 0.25, 0.5][: args.coefficients]
    conditions = conditions_for(model, args.vectors, coefs, depth - 1)
    params = SamplingParams(
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=args.new_tokens,
        batch_size="auto",
        seed=0,
        max_memory_gb=args.memory_gb,
    )
    tokens = len(conditions) * len(prompts) * args.new_tokens
    with Peak() as peak_old:
        old, s_old, k_old = old_path(model, tok, prompts, conditions, params, args.old_batch)
    with Peak() as peak_new:
        new, s_new, k_new = timed_new(model, tok, prompts, conditions, params)
    same = sum(a == b for k in conditions for a, b in zip(old[k], new[k], strict=True))
    blocks, head_params = linear_params(model)
    widths = prompt_widths(tok, prompts)
    rows = len(conditions) * len(prompts)
    flops = 2.0 * (
        blocks * (sum(widths) * len(conditions) + rows * args.new_tokens)
        + head_params * rows * args.new_tokens
    )
    reached = flops / s_new / 1e9
    limits = {r: matmul_rate(r, shape.hidden, shape.intermediate) for r in (16, 128, 512)}
    ratio = (s_old + k_old) / (s_new + k_new)
    label = f"{name} ({depth} layers, {len(conditions)} conditions x {len(prompts)} prompts x {args.new_tokens} tokens)"
    target = TARGETS.get(name)
    out = [
        (
            f"{label}: old path",
            f"{tokens / (s_old + k_old):.1f} tokens/s (sampling {s_old:.1f} s, KL {k_old:.1f} s, batch {args.old_batch})",
            "info",
        ),
        (
            f"{label}: new path",
            f"{tokens / (s_new + k_new):.1f} tokens/s (sampling {s_new:.1f} s, KL {k_new:.1f} s)",
            "info",
        ),
        (
            f"{name}: new / old tokens/s",
            f"{ratio:.2f}x",
            "ok" if target is None or ratio >= target else f"MISSED (>= {target}x)",
        ),
        (f"{name}: sampling alone, new / old", f"{s_old / s_new:.2f}x", "info"),
        (f"{name}: KL alone, new / old", f"{k_old / k_new:.2f}x", "info"),
        (
            f"{name}: peak memory old / new",
            f"{peak_old.value / 1e9:.2f} / {peak_new.value / 1e9:.2f} GB",
            "ok"
            if max(peak_old.value, peak_new.value) / 1e9 <= PEAK_TARGET_GB
            else f"MISSED (<= {PEAK_TARGET_GB} GB)",
        ),
        (
            f"{name}: bf16 matmul limit, {shape.hidden} x {shape.intermediate}",
            " / ".join(f"{r} rows {g:.0f}" for r, g in limits.items()) + " GFLOP/s",
            "info",
        ),
        (
            f"{name}: new path's sampling reaches",
            f"{reached:.0f} GFLOP/s = {reached / limits[512]:.0%} of the 512-row rate",
            "info",
        ),
        (f"{name}: answers identical old / new", f"{same} of {rows}", "info"),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--shape",
        action="append",
        choices=sorted(SHAPES),
        help="repeatable; default qwen25coder and smollm2",
    )
    ap.add_argument("--depth", type=int, default=0, help="decoder layers (default: the real depth)")
    ap.add_argument("--vectors", type=int, default=6)
    ap.add_argument("--coefficients", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--old-batch", type=int, default=16)
    ap.add_argument("--memory-gb", type=float, default=6.0)
    ap.add_argument("--no-adapter", action="store_true")
    ap.add_argument(
        "--quick", action="store_true", help="3 vectors x 2 coefficients x 16 prompts x 16 tokens"
    )
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.vectors, args.coefficients, args.prompts, args.new_tokens = 3, 2, 16, 16
    torch.set_num_threads(1)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        rows_ = data.chat_corpus(200, 200, 0.1, 0)
        texts = [m["content"] for r in rows_ for m in r["messages"]]
        zoo.train_tokenizer(texts, tok_dir, 1000)
        for name in args.shape or ["qwen25coder", "smollm2"]:
            rows += run_shape(name, args, tok_dir)
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for fig, value, status in rows:
        print(f"{fig:<{width}}  {value:<{vwidth}}  {status}")
    missed = [r for r in rows if r[2].startswith("MISSED")]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
