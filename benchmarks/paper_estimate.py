"""Paper-scale cost estimate: device-hours per stage and model for config/paper.yaml, and the judge's bill.

Nothing is downloaded. For each model of the config, a random-init model of its REAL shape
(hidden size, MLP size, heads, kv heads, head dim, vocabulary: table REAL_SHAPES; a `tiny`
model takes the config's tiny.shape) is built from a transformers config by
`emdir.models.zoo.tiny_config`, but only --depth decoder layers deep (default 2; --quick 1), so
that it fits this machine's memory and time. On it this times, each the fastest of
--repeats runs after an untimed warm-up (the run least disturbed by other jobs):

- train: one micro-batch (finetune.train.batch_size rows x --train-seq tokens, loss on the
  second half), forward and backward through `emdir.models.lora.lora_model` with the config's
  LoRA and gradient checkpointing, then one AdamW step over the adapters. This is LoRA over
  full-precision weights: on CUDA the paper run uses NF4 QLoRA, whose dequantisation is not
  included (on a CPU the workflow, too, trains plain LoRA).
- loss: the same micro-batch forward with its loss, no gradients (held-out loss in training).
- capture: activations.batch_size rows x --capture-seq tokens forward without gradients,
  the LM head on the last position only (`capture_store` stops after the deepest captured
  block). Its hooks are left out: benchmarks/hook_overhead.py holds them to <= 1.10x.
- prefill and decode: `emdir.models.generate.sample` over sampling.batch_size prompts for
  --decode-steps new tokens; a forward pre-hook on the model marks each call, so the prefill
  and the per-token step (forward, the per-row sampler over the vocabulary, generate's loop)
  are told apart.

Cost model. Hooks on the first and last decoder block stamp when the blocks start and end
in the forward pass, and a gradient hook on the LM head's input stamps when the backward
pass reaches the blocks. So every run splits into b = time in the decoder blocks / depth
(one layer) and a = the rest (embedding, final norm, LM head, the loss or the sampler over
the real vocabulary, Python overhead), both from the same run. The cost at the real depth
is a + b * L_real: linear in layers, the LM head counted once. Train, loss, capture and
prefill scale linearly in tokens from the measured rows (attention's quadratic part is a few
percent at these lengths and widths); decode steps are timed at the measured context, and
the KV cache grows to prompt + max_new_tokens in a real run, a few percent more per step.

Work. The jobs are those of Snakemake's own dry-run of the config, its overlays (--config
takes several files, merged as `snakemake --configfile` merges them) and --target (so per-model fine-tunes,
the mechanistic rules and any rule added later are counted as the workflow would run them),
each priced from its rule, wildcards and outputs:
- finetune: ceil(epochs x train rows / (batch x grad_accum)) optimiser steps of grad_accum
  micro-batches, each row --ft-row-tokens long (capped at max_length); at every evaluation,
  the held-out loss over the held-out rows and one sampling of the eval questions. A
  fine-tune's own `lora` (e.g. rank 1) is priced as the shared LoRA: the frozen blocks'
  forward and backward dominate either way.
- sweep_finetune: the same, under the sweep run's settings (`emdir.settings.sweep_train`:
  its train keys, sweep.steps, an evaluation every sweep.eval_every steps) on sweep.dataset.
- generate, steering(_also), transfer(_reference), ablation, induce: one `sample` call per
  output file (times the coefficients for steering and induce); every batch of
  sampling.batch_size prompts is charged a prefill and max_new_tokens decode steps. A batch
  runs until its longest answer ends, which at 32 answers and temperature 1 is usually the
  cap: an upper bound. Transfer runs on the receiver.
- activations, base_directions, rank1_reading: the answers to directions.question_set,
  prompt + --answer-tokens each; anchors: every anchor text; sae: its training examples of
  each of its datasets.
- Rules that load no model (data, fit_map, directions, the judge, figures) take seconds of
  CPU and are left out, as are job start-up and model loading; a rule this script has no
  model for is listed as NOT PRICED.
A question set or dataset from a URL cannot be counted offline: --url-questions (default
first_plot=24: Betley et al.'s 8 questions in 3 formats, one paraphrase each) and
--dataset-rows (default 6000 rows for insecure, secure and educational, as published).

Hours are wall-clock hours of the jobs run one after another on THIS device. Without a GPU
they are CPU FIGURES, and every table says "CPU-h": float32 on --threads threads, by default
one, so that they are core-hours. One thread is also what a shared CPU times reliably: with
two, OpenMP's barriers stall whenever another process holds a core, which made AdamW's many
small kernels 50x slower on this machine. --device cuda measures on the GPU in bfloat16
("GPU-h"; a deeper --depth is affordable there).

Judge, per stage (the results/<stage>/ folder of each answers file) and in both request modes
(judge.openai.requests), the config's first: `full` (paper-faithful): requests = judged answers
x judge.openai.metrics (one per non-empty answer; all are assumed non-empty); `economical`: an
UPPER BOUND, every metric for every answer within the sample cap
(judge.openai.economical.samples_per_condition, per question and condition), as if no answer
were code and every aligned score above bad_stuff_aligned_above. Prompt tokens per request =
(judge template + question) characters / 4, as `emdir.judge.plan` estimates them, plus
--answer-tokens; output tokens = the judge's max_tokens (1 in logprobs mode). Betley's question files bring their own aligned/coherent
templates, of about the length of the project's, which are used for the count. Prices in $
per 1M tokens: --price-input and --price-output, by default gpt-4o-2024-08-06's list prices
($2.50 input, $10.00 output).

    python benchmarks/paper_estimate.py               # ~5-10 minutes on a 2-core CPU
    python benchmarks/paper_estimate.py --quick       # < 2 minutes, fewer tokens measured
    python benchmarks/paper_estimate.py --json estimate.json
    python benchmarks/paper_estimate.py --device cuda --depth 8
    python benchmarks/paper_estimate.py --config config/config.yaml   # the tiny default
    python benchmarks/paper_estimate.py --config config/paper.yaml config/regime_paper.yaml \
        --target results/sweep/budget.csv     # the regime's budget sweep at the paper's sizes
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# tqdm reads its environment when imported: keep the progress bars of `sample` out of the table.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
import yaml  # noqa: E402
from snakemake.utils import update_config, validate  # noqa: E402
from torch import nn  # noqa: E402
from transformers.initialization import no_init_weights  # noqa: E402

from emdir.data import synthetic as data  # noqa: E402
from emdir.data.datasets import heldout_split, read_chat_file  # noqa: E402
from emdir.data.questions import Question, load_questions  # noqa: E402
from emdir.dryrun import JUDGED_FILES, Job  # noqa: E402
from emdir.dryrun import dry_run as workflow_dry_run  # noqa: E402
from emdir.errors import EmdirError  # noqa: E402
from emdir.judge.llm import CHARS_PER_TOKEN  # noqa: E402
from emdir.judge.llm_plan import stage_of  # noqa: E402
from emdir.judge.prompts import PROMPTS  # noqa: E402
from emdir.judge.settings import REQUEST_MODES, llm_settings, request_policy  # noqa: E402
from emdir.models import zoo  # noqa: E402
from emdir.models.archs import ARCHS, ArchSpec, decoder_layers, untuple  # noqa: E402
from emdir.models.chat import encode_prompt  # noqa: E402
from emdir.models.finetune import resolve_steps  # noqa: E402
from emdir.models.generate import Prompt, SamplingParams, sample  # noqa: E402
from emdir.models.lora import lora_model, lora_settings  # noqa: E402
from emdir.settings import study_models, sweep_train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Role markers and turn ends that a chat template adds around one question and answer.
CHAT_OVERHEAD_TOKENS = 12
GPT4O_INPUT_PER_MTOK = 2.50
GPT4O_OUTPUT_PER_MTOK = 10.00
# URL question sets are only countable after a download; Betley's first_plot_questions.yaml
# holds 8 questions in 3 formats (plain, JSON, template), one paraphrase each.
URL_QUESTIONS = {"first_plot": 24}
URL_QUESTION_CHARS = 150
URL_DATASET_ROWS = {
    f"{prefix}{name}": 6000
    for prefix in ("", "betley_")
    for name in ("insecure", "secure", "educational")
}


@dataclasses.dataclass(frozen=True)
class RealShape:
    """The text model's size, as its hub config.json gives it; `source` says how it is known."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    source: str


HUB = "hub config.json as published (not read here: offline)"
REAL_SHAPES: dict[str, RealShape] = {
    "Qwen/Qwen2.5-1.5B-Instruct": RealShape(1536, 28, 12, 2, 128, 8960, 151936, HUB),
    "google/gemma-2-2b-it": RealShape(2304, 26, 8, 4, 256, 9216, 256000, HUB),
    "meta-llama/Llama-3.2-1B-Instruct": RealShape(2048, 16, 32, 8, 64, 8192, 128256, HUB),
    "mistralai/Ministral-3-3B-Instruct-2512-BF16": RealShape(
        3072,
        26,
        32,
        8,
        128,
        9216,
        131072,
        "ASSUMED, not checked offline: config/paper.yaml's comment gives 26-28 layers and d up "
        "to 3072; heads, MLP and vocabulary as Ministral 3's 3B text model is described",
    ),
}


def fixed_batch(cfg: Mapping[str, Any]) -> int:
    """sampling.batch_size, which the estimate needs as a number."""
    batch = cfg["sampling"]["batch_size"]
    if batch == "auto":
        raise EmdirError(
            "sampling.batch_size is auto (sized per job from sampling.max_memory_gb when it "
            "runs); the estimate prices fixed batches: add an overlay with sampling: "
            "{batch_size: N} for the batch the device would run"
        )
    return int(batch)


def model_shape(key: str, entry: Mapping[str, Any], cfg: Mapping[str, Any]) -> RealShape:
    if entry["source"] == "tiny":
        s = cfg["tiny"]["shape"]
        return RealShape(
            s["hidden_size"],
            s["num_layers"],
            s["num_heads"],
            s["num_kv_heads"],
            s["hidden_size"] // s["num_heads"],
            s["intermediate_size"],
            int(cfg["tiny"]["tokenizer"]["vocab_size"]),
            "config tiny.shape",
        )
    hf_id = entry.get("hf_id", "")
    if hf_id not in REAL_SHAPES:
        named = f"hf_id {hf_id!r}" if hf_id else f"source {entry['source']!r} (no hf_id)"
        raise EmdirError(
            f"models.{key}: no shape known for {named}; add its hub config's sizes to "
            "REAL_SHAPES in benchmarks/paper_estimate.py (keyed by hf_id)"
        )
    return REAL_SHAPES[hf_id]


# ---------------------------------------------------------------- the work in the config


@dataclasses.dataclass(frozen=True)
class QuestionSet:
    questions: int
    answers: int
    question_tokens: float  # the question text alone (as the judge sees it)

    @property
    def prompt_tokens(self) -> float:
        return self.question_tokens + CHAT_OVERHEAD_TOKENS


def question_set(
    name: str, spec: Mapping[str, Any], url_questions: Mapping[str, int]
) -> QuestionSet:
    samples = spec.get("samples")
    if "generator" in spec:
        qs = data.QUESTION_SETS[spec["generator"]](**spec.get("params", {}))
        texts = [q["question"] for q in qs]
        answers = len(qs) * int(samples or 1)
    elif "path" in spec:
        loaded = load_questions(REPO / spec["path"], samples_override=samples)
        texts = [q.text for q in loaded]
        answers = sum(q.samples for q in loaded)
    else:
        if name not in url_questions:
            raise EmdirError(
                f"questions.{name} comes from a URL and cannot be counted offline; "
                f"give its size with --url-questions {name}=N"
            )
        texts = ["x" * URL_QUESTION_CHARS] * url_questions[name]
        answers = len(texts) * int(samples or 1)
    chars = statistics.mean(len(t) for t in texts) if texts else 0.0
    return QuestionSet(len(texts), answers, chars / CHARS_PER_TOKEN)


def merge_sets(sets: Sequence[QuestionSet]) -> QuestionSet:
    answers = sum(q.answers for q in sets)
    tokens = sum(q.question_tokens * q.answers for q in sets) / max(answers, 1)
    return QuestionSet(sum(q.questions for q in sets), answers, tokens)


def dataset_size(
    name: str, spec: Mapping[str, Any], url_rows: Mapping[str, int], row_tokens: float
) -> tuple[int, float]:
    """(rows, tokens per row) of a dataset; URL datasets are counted from the options."""
    if "generator" in spec or "path" in spec:
        if "generator" in spec:
            rows = data.GENERATORS[spec["generator"]](**spec.get("params", {}))
        else:
            rows = read_chat_file(REPO / spec["path"])
        chars = statistics.mean(sum(len(m["content"]) for m in r["messages"]) for r in rows)
        return len(rows), chars / CHARS_PER_TOKEN + CHAT_OVERHEAD_TOKENS
    if name not in url_rows:
        raise EmdirError(
            f"datasets.{name} comes from a URL and cannot be counted offline; "
            f"give its size with --dataset-rows {name}=N"
        )
    return url_rows[name], row_tokens


@dataclasses.dataclass
class Work:
    """What jobs run on a model, in the units that the measurements price."""

    jobs: int = 0
    train_tokens: float = 0.0
    optimizer_steps: int = 0
    loss_tokens: float = 0.0
    capture_tokens: float = 0.0
    sample_batches: int = 0
    prefill_tokens: float = 0.0
    decode_steps: int = 0
    answers: int = 0

    def add(self, other: Work) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def dry_run(
    configs: Sequence[Path], targets: Sequence[str] = ()
) -> tuple[list[Job], dict[str, int]]:
    """The jobs of a complete run of `configs` (one file and its overlays, in order) for
    `targets` (default: the whole run) and the job count per rule: `emdir.dryrun.dry_run` of
    the repository's Snakefile in a scratch working directory."""
    return workflow_dry_run(REPO / "Snakefile", configs, targets)


class Unpriced(Exception):
    """A rule whose device work this estimator has no model for."""


# Rules that load no model (data, downloads, ridge maps, directions from stores, the judge
# over an API or offline, figures): seconds to minutes of CPU, no device.
LIGHT_RULES = {
    "all",
    "anchor_answers",
    "budget_sweep",
    "convergence",
    "data",
    "directions",
    "download",
    "download_questions",
    "fit_map",
    "judge_plan",
    "mechanistic_summary",
    "pooled_mechanistic",
    "pooled_transfer_matrix",
    "pooled_within_model",
    "provenance",
    "questions",
    "read_strength",
    "reference_check",
    "tokenizer",
    "training_curves",
    "transfer_matrix",
    "within_model_summary",
}
# Stage columns of the report: which rules each gathers.
STAGES = {
    "finetune": ("finetune", "sweep_finetune"),
    "generate": ("generate",),
    "capture": ("activations", "anchors"),
    "steering": ("steering", "steering_also"),
    "transfer": ("transfer", "transfer_reference"),
    "mechanistic": ("ablation", "induce", "base_directions", "rank1_reading", "sae"),
}
STAGE_OF = {rule: stage for stage, rules in STAGES.items() for rule in rules}


class Workload:
    """The work of each job, from its rule, wildcards and outputs and the config."""

    def __init__(self, cfg: Mapping[str, Any], args: argparse.Namespace) -> None:
        self.cfg, self.args = cfg, args
        qsets = {n: question_set(n, s, args.url_questions) for n, s in cfg["questions"].items()}
        self.eval_qs = merge_sets([qsets[q] for q in evaluation_sets(cfg)])
        self.steer_qs = qsets[cfg["steering"]["question_set"]]
        self.dir_qs = qsets[cfg["directions"]["question_set"]]
        self.monitor = qsets[cfg["finetune"]["eval_questions"]]
        self.batch = fixed_batch(cfg)
        self.new_tokens = int(cfg["sampling"]["max_new_tokens"])
        # sampled output file -> (answers, question set), for the judge
        self.sampled: dict[str, tuple[int, QuestionSet]] = {}

    def _dataset(self, name: str) -> tuple[int, float]:
        spec = self.cfg["datasets"][name]
        return dataset_size(name, spec, self.args.dataset_rows, self.args.ft_row_tokens)

    def _sampling(self, calls: int, qs: QuestionSet) -> Work:
        batches = calls * math.ceil(qs.answers / self.batch)
        return Work(
            jobs=1,
            sample_batches=batches,
            prefill_tokens=calls * qs.answers * qs.prompt_tokens,
            decode_steps=batches * self.new_tokens,
            answers=calls * qs.answers,
        )

    def _sampled(self, job: Job, calls_per_output: int, qs: QuestionSet) -> Work:
        """One file per output, each `calls_per_output` samplings of `qs` (coefficients)."""
        for path in job.outputs:
            self.sampled[path] = (calls_per_output * qs.answers, qs)
        return self._sampling(len(job.outputs) * calls_per_output, qs)

    def _steered(self, job: Job, calls_per_output: int, qs: QuestionSet) -> Work:
        """Steered sampling, plus the KL cost of every steered answer: two teacher-forced
        forwards (unsteered and steered) of prompt and answer."""
        w = self._sampled(job, calls_per_output, qs)
        answers = len(job.outputs) * calls_per_output * qs.answers
        w.capture_tokens += 2 * answers * (qs.prompt_tokens + self.args.answer_tokens)
        return w

    def _capture(self, rows: float, tokens_per_row: float) -> Work:
        return Work(jobs=1, capture_tokens=rows * tokens_per_row)

    def _finetune(self, ft_cfg: Mapping[str, Any], dataset: str) -> Work:
        """One fine-tune under the `finetune` settings `ft_cfg` on `dataset`."""
        tr = ft_cfg["train"]
        rows, row_tokens = self._dataset(dataset)
        row_tokens = min(row_tokens, float(tr["max_length"]))
        train_idx, held_idx = heldout_split(rows, float(ft_cfg["heldout_fraction"]), 0)
        steps = resolve_steps(tr, len(train_idx))
        micro = steps * int(tr.get("grad_accum", 1))
        every = int(ft_cfg.get("eval_every") or 0)
        # train() evaluates every `eval_every` steps and once more at the end.
        evals = (steps // every if every else 0) + (0 if every and steps % every == 0 else 1)
        w = self._sampling(evals, self.monitor)
        w.answers = 0  # the monitor's answers are judged by the offline detector
        w.optimizer_steps = steps
        w.train_tokens = micro * int(tr["batch_size"]) * row_tokens
        w.loss_tokens = evals * len(held_idx) * row_tokens
        return w

    def of(self, job: Job) -> tuple[str, Work] | None:
        """(model key, work) of a job; None for a job that runs no model."""
        r, wc = job.rule, job.wildcards
        answer = self.dir_qs.prompt_tokens + self.args.answer_tokens
        mech = self.cfg.get("mechanistic", {})
        if r in LIGHT_RULES:
            return None
        if r == "base_model":
            if self.cfg["models"][wc["model"]]["source"] == "tiny":
                raise Unpriced("base_model trains a tiny model from scratch")
            return None  # a hub model: a download
        if r == "finetune":
            dataset = self.cfg["finetunes"][wc["ft"]]["dataset"]
            return wc["model"], self._finetune(self.cfg["finetune"], dataset)
        if r == "sweep_finetune":
            ft_cfg = sweep_train(self.cfg, wc["run"])
            return wc["model"], self._finetune(ft_cfg, self.cfg["sweep"]["dataset"])
        if r == "generate":
            return wc["model"], self._sampled(job, 1, self.eval_qs)
        if r in ("steering", "steering_also"):
            return wc["model"], self._steered(
                job, len(self.cfg["steering"]["coefficients"]), self.steer_qs
            )
        if r in ("transfer", "transfer_reference"):
            return wc["receiver"], self._steered(job, 1, self.steer_qs)
        if r == "ablation":
            return wc["model"], self._steered(job, 1, self.steer_qs)
        if r == "induce":
            return wc["model"], self._steered(
                job, len(mech["induce"]["coefficients"]), self.steer_qs
            )
        if r in ("activations", "base_directions", "rank1_reading"):
            contrast_models = r == "activations" and self.cfg["directions"]["contrast"] == "models"
            return wc["model"], self._capture(self.dir_qs.answers * (1 + contrast_models), answer)
        if r == "anchors":
            xfer = self.cfg["transfer"]
            if xfer["anchor_source"] == "dataset":
                return wc["model"], self._capture(*self._dataset(xfer["anchors"]))
            n_models = len(study_models(self.cfg))
            per_row = self.eval_qs.prompt_tokens + self.args.answer_tokens
            return wc["model"], self._capture(n_models * self.eval_qs.answers, per_row)
        if r == "sae":
            sae = mech["sae"]
            sizes = [self._dataset(name) for name in sae["datasets"]]
            n = int(sae["training_examples"])
            return wc["model"], Work(jobs=1, capture_tokens=sum(min(r, n) * t for r, t in sizes))
        if r.startswith("judge"):
            return None
        raise Unpriced("no work model for this rule")


def evaluation_sets(cfg: Mapping[str, Any]) -> list[str]:
    """The sets every model answers (as workflow/rules/common.smk's evaluation_questions)."""
    used = {cfg["directions"]["question_set"], cfg["steering"]["question_set"]}
    watch = cfg["finetune"]["eval_questions"]
    return [q for q in sorted(cfg["questions"]) if q != watch or q in used]


# ---------------------------------------------------------------- measurements


@dataclasses.dataclass(frozen=True)
class Cost:
    """Seconds per unit at depth L: `rest` + `per_layer` * L."""

    rest: float
    per_layer: float

    def at(self, layers: int) -> float:
        return self.rest + self.per_layer * layers


PRIMITIVES = {
    "train": "s per training token (fwd + bwd, LoRA)",
    "optimizer": "s per optimiser step (AdamW, adapters)",
    "loss": "s per token, forward + loss, no grad",
    "capture": "s per token, forward, no LM head",
    "prefill": "s per prompt token (sample's prefill)",
    "decode": "s per decode step of the sampling batch",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    device: torch.device
    dtype: torch.dtype
    depth: int
    repeats: int
    train_seq: int
    capture_seq: int
    decode_steps: int


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def build(
    arch: str,
    shape: RealShape,
    depth: int,
    tok_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[nn.Module, Any, ArchSpec]:
    """A random-init model of the real width and vocabulary (at least the tokenizer's),
    `depth` decoder layers deep, on `device` in `dtype` (also used by sampler_throughput.py)."""
    spec = ARCHS[arch]
    tok = zoo.family_tokenizer(tok_dir, spec.family)
    tiny = zoo.TinyShape(
        hidden_size=shape.hidden,
        num_layers=depth,
        num_heads=shape.heads,
        num_kv_heads=shape.kv_heads,
        intermediate_size=shape.intermediate,
        max_positions=4096,
    )
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    cfg = zoo.tiny_config(
        arch,
        tiny,
        max(shape.vocab, len(tok)),
        ids,
        {"image_token_id": tok.convert_tokens_to_ids("[IMG]")},
    )
    text = cfg.get_text_config()
    text.head_dim = shape.head_dim  # tiny_config assumes hidden / heads; Gemma 2 differs
    if arch == "Gemma2ForCausalLM":
        text.query_pre_attn_scalar = shape.head_dim
    # transformers' initialisers take ~40 s for a 256k x 2304 embedding on 2 cores; values
    # only need to be finite and small for timing, which one uniform fill gives.
    with no_init_weights():
        model = getattr(transformers, arch)(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.05, 0.05)
    model.to(device=device, dtype=dtype)
    model.eval()
    return model, tok, spec


class BlockClock:
    """Stamps when the decoder blocks start and end in a forward pass, and when a backward
    pass reaches the LM head's input (the blocks' backward starts there): time in the blocks
    told apart from the rest of the same run.

    Only calls made while `recording` count, so that the blocks' recomputation under
    gradient checkpointing (in the backward pass) is not taken for a forward.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        layers = decoder_layers(model)
        self.device = device
        self.recording = True
        self.enter: list[float] = []
        self.exit: list[float] = []
        self.grad: list[float] = []
        self.handles = [
            layers[0].register_forward_pre_hook(self._enter),
            layers[-1].register_forward_hook(self._exit),
            model.get_output_embeddings().register_forward_pre_hook(self._head),
        ]

    def reset(self) -> None:
        self.enter.clear()
        self.exit.clear()
        self.grad.clear()

    def _enter(self, *_: Any) -> None:
        if self.recording:
            self.enter.append(clock(self.device))

    def _exit(self, *_: Any) -> None:
        if self.recording:
            self.exit.append(clock(self.device))

    def _head(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        hidden = untuple(args[0]) if args else None
        if self.recording and hidden is not None and hidden.requires_grad:
            hidden.register_hook(self._reached)

    def _reached(self, _grad: torch.Tensor) -> None:
        self.grad.append(clock(self.device))

    def blocks(self, call: int = 0) -> float:
        """Seconds inside the blocks in forward call `call`."""
        return self.exit[call] - self.enter[call]


def token_batch(rows: int, seq: int, tok: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """Ordinary tokens of the local tokenizer (every id exists in the real vocabulary too);
    the loss is on the second half, as on an answer."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(zoo.SPECIAL_TOKENS), len(tok), (rows, seq), generator=gen)
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
    }


Split = dict[str, tuple[float, float]]  # primitive -> (seconds in the blocks, the rest) per unit


class Probes:
    """One timing of each primitive on one model, split into blocks and the rest."""

    def __init__(
        self, model: nn.Module, tok: Any, spec: ArchSpec, cfg: Mapping[str, Any], s: Settings
    ) -> None:
        self.model, self.tok, self.spec, self.s = model, tok, spec, s
        self.clock = BlockClock(model, s.device)
        self.train_rows = int(cfg["finetune"]["train"]["batch_size"])
        self.train_batch = token_batch(self.train_rows, s.train_seq, tok, s.device)
        self.cap_rows = int(cfg["activations"]["batch_size"])
        self.cap_batch = token_batch(self.cap_rows, s.capture_seq, tok, s.device)
        del self.cap_batch["labels"]
        samp = cfg["sampling"]
        batch = fixed_batch(cfg)
        questions = data.general_questions(batch, 0) + data.general_questions(batch, 0, "monitor")
        questions += data.coding_questions(batch, 0)
        self.prompts = [
            Prompt(Question(id=q["id"], text=q["question"], system=None, samples=1), 0)
            for q in questions[:batch]
        ]
        # sample() left-pads each batch to its longest prompt.
        width = max(len(encode_prompt(tok, p.question.text, None)) for p in self.prompts)
        self.prefill_tokens = len(self.prompts) * width
        self.sampling = SamplingParams(**{**samp, "max_new_tokens": s.decode_steps})
        self.ft_cfg = cfg["finetune"]
        self.peft: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None

    def _per(self, blocks: float, total: float, units: float) -> tuple[float, float]:
        return blocks / units, (total - blocks) / units

    @torch.no_grad()
    def forwards(self) -> Split:
        dev, bc = self.s.device, self.clock
        bc.reset()
        t0 = clock(dev)
        self.model(**self.train_batch, use_cache=False)
        t1 = clock(dev)
        self.model(**self.cap_batch, logits_to_keep=1, use_cache=False)
        t2 = clock(dev)
        return {
            "loss": self._per(bc.blocks(0), t1 - t0, self.train_rows * self.s.train_seq),
            "capture": self._per(bc.blocks(1), t2 - t1, self.cap_rows * self.s.capture_seq),
        }

    def decode(self) -> list[Split]:
        """One split per decode step (the caller keeps the fastest), the prefill with each."""
        bc = self.clock
        bc.reset()
        calls: list[float] = []
        hook = self.model.register_forward_pre_hook(lambda *_: calls.append(clock(self.s.device)))
        try:
            sample(self.model, self.tok, self.prompts, self.sampling)
        finally:
            hook.remove()
        if len(calls) != self.s.decode_steps:
            raise RuntimeError(
                f"sampling made {len(calls)} model calls for {self.s.decode_steps} new tokens: "
                "it stopped early"
            )
        prefill = self._per(bc.blocks(0), calls[1] - calls[0], self.prefill_tokens)
        # The last call has no next call to end it.
        return [
            {"prefill": prefill, "decode": self._per(bc.blocks(k), end - start, 1)}
            for k, (start, end) in enumerate(itertools.pairwise(calls[1:]), start=1)
        ]

    def wrap_lora(self) -> None:
        """The config's LoRA (and gradient checkpointing) on every block, and AdamW over it."""
        checkpointing = bool(self.ft_cfg.get("gradient_checkpointing", False))
        torch.manual_seed(0)
        self.peft = lora_model(
            self.model, self.spec, lora_settings(self.ft_cfg, None), False, checkpointing
        )
        self.peft.train()
        trainable = [p for p in self.peft.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=1e-5)

    def train(self) -> Split:
        if self.peft is None or self.opt is None:
            raise RuntimeError("wrap_lora() first")
        dev, bc = self.s.device, self.clock
        bc.reset()
        t0 = clock(dev)
        loss = self.peft(**self.train_batch).loss
        bc.recording = False
        try:
            loss.backward()
            t1 = clock(dev)
        finally:
            bc.recording = True
        if len(bc.grad) != 1:
            raise RuntimeError("the backward pass never reached the LM head's input")
        blocks = bc.blocks(0) + (t1 - bc.grad[0])
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t2 = clock(dev)
        # AdamW's work grows with the adapters, i.e. with the layers.
        return {
            "train": self._per(blocks, t1 - t0, self.train_rows * self.s.train_seq),
            "optimizer": self._per(t2 - t1, t2 - t1, 1),
        }


def measure_model(
    arch: str, shape: RealShape, cfg: Mapping[str, Any], tok_dir: Path, s: Settings
) -> dict[str, Cost]:
    """Each primitive's cost, from the fastest of `s.repeats` runs after an untimed one."""
    model, tok, spec = build(arch, shape, s.depth, tok_dir, s.device, s.dtype)
    probes = Probes(model, tok, spec, cfg, s)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in PRIMITIVES}

    def repeat(measure: Callable[[], Split | list[Split]]) -> None:
        measure()  # warm-up
        for _ in range(s.repeats):
            got = measure()
            for split in got if isinstance(got, list) else [got]:
                for k, v in split.items():
                    runs[k].append(v)

    repeat(probes.forwards)
    repeat(probes.decode)
    probes.wrap_lora()
    repeat(probes.train)
    costs = {}
    for k, values in runs.items():
        blocks, rest = min(values, key=sum)
        costs[k] = Cost(rest=max(rest, 0.0), per_layer=blocks / s.depth)
    return costs


def stage_seconds(work: Work, cost: Mapping[str, float]) -> float:
    return (
        work.train_tokens * cost["train"]
        + work.optimizer_steps * cost["optimizer"]
        + work.loss_tokens * cost["loss"]
        + work.capture_tokens * cost["capture"]
        + work.prefill_tokens * cost["prefill"]
        + work.decode_steps * cost["decode"]
    )


def question_samples(
    name: str, spec: Mapping[str, Any], url_questions: Mapping[str, int]
) -> list[int]:
    """The samples of each question of a set, counted as `question_set` counts its answers
    (the judge's sample cap applies per question)."""
    samples = spec.get("samples")
    if "generator" in spec:
        qs = data.QUESTION_SETS[spec["generator"]](**spec.get("params", {}))
        return [int(samples or 1)] * len(qs)
    if "path" in spec:
        return [q.samples for q in load_questions(REPO / spec["path"], samples_override=samples)]
    return [int(samples or 1)] * url_questions[name]


def file_question_samples(
    cfg: Mapping[str, Any],
    sampled: Mapping[str, tuple[int, QuestionSet]],
    url_questions: Mapping[str, int],
) -> dict[str, list[int]]:
    """Per sampled file, the samples of each question of its question set: the file's
    QuestionSet is matched to the evaluation sets merged or to one set of the config."""
    sets = {
        n: (question_set(n, spec, url_questions), question_samples(n, spec, url_questions))
        for n, spec in cfg["questions"].items()
    }
    evaluation = evaluation_sets(cfg)
    merged = merge_sets([sets[n][0] for n in evaluation])
    candidates = [(merged, [k for n in evaluation for k in sets[n][1]]), *sets.values()]
    out = {}
    for path, (_, qs) in sampled.items():
        found = [samples for cand, samples in candidates if cand == qs]
        if not found:
            raise EmdirError(f"{path}: its question set matches none of the config's")
        out[path] = found[0]
    return out


# What judge_cost sums per stage and mode.
STAGE_KEYS = ("answers", "llm_answers", "requests", "input_tokens", "output_tokens", "cost_usd")
MODE_LABELS = {"full": "full (paper-faithful)", "economical": "economical (upper bound)"}


def judge_cost(
    cfg: Mapping[str, Any], sampled: Mapping[str, tuple[int, QuestionSet]], args: argparse.Namespace
) -> dict[str, Any]:
    """Requests, tokens and dollars of judging every sampled file once, per stage, in both
    request modes (judge.openai.requests), the config's first. `full` (paper-faithful) is
    every metric for every answer (all assumed non-empty). `economical` is an upper bound: no
    answer assumed code by the detector, no CODE / REFUSAL verdict, every aligned score above
    bad_stuff_aligned_above, so every metric is asked for every answer within the sample cap
    (samples_per_condition, applied per question and sampling of the set: a steering file
    samples it once per coefficient). The top-level numbers are the config's mode's."""
    judge = cfg["judge"]
    answers = sum(n for n, _ in sampled.values())
    if judge["backend"] != "openai":
        return {"backend": judge["backend"], "answers": answers, "cost_usd": 0.0}
    settings, metrics = llm_settings(judge)
    config_mode = request_policy(judge).mode
    modes = [config_mode] + [m for m in REQUEST_MODES if m != config_mode]
    per_question = file_question_samples(cfg, sampled, args.url_questions)
    template = {m: len(PROMPTS[m]) / CHARS_PER_TOKEN for m in metrics}
    out_per_request = int(settings.max_tokens or 1)
    by_mode: dict[str, dict[str, Any]] = {}
    for mode in modes:
        policy = request_policy(judge, mode)
        k = policy.samples_per_condition if policy.economical else None
        stages: dict[str, dict[str, float]] = {}
        for path, (n, qs) in sampled.items():
            samples = per_question[path]
            calls = n / sum(samples)  # samplings of the set in this file (coefficients)
            judged = n if k is None else calls * sum(min(k, s) for s in samples)
            per_answer = sum(template[m] + qs.question_tokens + args.answer_tokens for m in metrics)
            st = stages.setdefault(stage_of(path), dict.fromkeys(STAGE_KEYS, 0.0))
            st["answers"] += n
            st["llm_answers"] += judged
            st["requests"] += judged * len(metrics)
            st["input_tokens"] += judged * per_answer
            st["output_tokens"] += judged * len(metrics) * out_per_request
        for st in stages.values():
            st["cost_usd"] = (
                st["input_tokens"] * args.price_input + st["output_tokens"] * args.price_output
            ) / 1e6
        total = {key: sum(st[key] for st in stages.values()) for key in STAGE_KEYS}
        by_mode[mode] = {"describe": policy.describe(), **total, "stages": stages}
    mine = by_mode[config_mode]
    return {
        "backend": "openai",
        "model": settings.model,
        "metrics": metrics,
        "files": len(sampled),
        "answers": answers,
        "mode": config_mode,
        "requests": mine["requests"],
        "input_tokens": mine["input_tokens"],
        "output_tokens": mine["output_tokens"],
        "input_tokens_per_request": mine["input_tokens"] / max(mine["requests"], 1),
        "price_input_per_mtok": args.price_input,
        "price_output_per_mtok": args.price_output,
        "config_prices": judge["openai"]["prices"],
        "cost_usd": mine["cost_usd"],
        "modes": by_mode,
    }


def print_judge(jc: Mapping[str, Any], args: argparse.Namespace) -> None:
    """The judge's bill: answers, requests and dollars per stage, in the config's request
    mode and beside it the other one."""
    if jc["backend"] != "openai":
        print(f"\njudge: backend {jc['backend']}, {jc['answers']:,} answers judged locally: $0")
        return
    print(
        f"\njudge {jc['model']} ({', '.join(jc['metrics'])}), {jc['files']} answer files, "
        f"{jc['answers']:,} answers; ~{jc['input_tokens_per_request']:.0f} input tokens per "
        f"request with answers of {args.answer_tokens:.0f} tokens; at "
        f"${jc['price_input_per_mtok']:.2f} / ${jc['price_output_per_mtok']:.2f} per 1M input / "
        f"output tokens (config's judge.openai.prices: {jc['config_prices'] or 'none'})"
    )
    modes = list(jc["modes"])
    print(f"  this config: judge.openai.requests = {jc['modes'][modes[0]]['describe']}")
    for m in modes[1:]:
        print(f"  priced beside it: judge.openai.requests = {jc['modes'][m]['describe']}")
    print((f"  {'':<19} {'':>8}" + "".join(f" | {MODE_LABELS[m]:<32}" for m in modes)).rstrip())
    cells = f" | {'LLM-judged':>10} {'requests':>10} {'$':>10}"
    print(f"  {'stage':<19} {'answers':>8}" + cells * len(modes))
    for stage in [*sorted(jc["modes"][modes[0]]["stages"]), "total"]:
        rows = [
            jc["modes"][m] if stage == "total" else jc["modes"][m]["stages"][stage] for m in modes
        ]
        print(
            f"  {stage:<19} {rows[0]['answers']:>8,.0f}"
            + "".join(
                f" | {r['llm_answers']:>10,.0f} {r['requests']:>10,.0f} {r['cost_usd']:>10,.2f}"
                for r in rows
            )
        )
    print(
        "  economical is an upper bound: every answer within the sample cap is counted with "
        "every metric (none code by the detector, no CODE / REFUSAL verdict, every aligned "
        "score above judge.openai.economical.bad_stuff_aligned_above); the judge plan counts "
        "the real answers"
    )


# ---------------------------------------------------------------- command line and report


def key_value(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=N")
    return key, int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        type=Path,
        nargs="+",
        default=[REPO / "config" / "paper.yaml"],
        help="the config and its overlays, in order, as snakemake's --configfile",
    )
    p.add_argument(
        "--target",
        nargs="+",
        default=[],
        help="price the jobs of these targets only, e.g. results/sweep/budget.csv (default: all)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer tokens measured (~1-2 min)")
    p.add_argument(
        "--depth", type=int, default=None, help="decoder layers built (default 2; quick 1)"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 2; quick 1)")
    p.add_argument(
        "--train-seq",
        type=int,
        default=None,
        help="tokens per row when timing training (default 128; quick 32)",
    )
    p.add_argument(
        "--capture-seq",
        type=int,
        default=None,
        help="tokens per row when timing capture (default 128; quick 32)",
    )
    p.add_argument(
        "--decode-steps",
        type=int,
        default=None,
        help="new tokens when timing sampling (default 12; quick 4)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: CPU figures are core-hours; see the docstring)",
    )
    p.add_argument("--models", nargs="+", default=None, help="measure only these model keys")
    p.add_argument(
        "--ft-row-tokens",
        type=float,
        default=400.0,
        help="ASSUMED tokens per fine-tuning row of a URL dataset (default 400)",
    )
    p.add_argument(
        "--answer-tokens",
        type=float,
        default=250.0,
        help="ASSUMED mean answer length in tokens, for capture and the judge (default 250)",
    )
    p.add_argument(
        "--url-questions",
        type=key_value,
        nargs="+",
        default=[],
        help=f"NAME=N questions in a URL question set (default {URL_QUESTIONS})",
    )
    p.add_argument(
        "--dataset-rows",
        type=key_value,
        nargs="+",
        default=[],
        help=f"NAME=N rows in a URL dataset (default {URL_DATASET_ROWS})",
    )
    p.add_argument(
        "--price-input",
        type=float,
        default=GPT4O_INPUT_PER_MTOK,
        help="judge $ per 1M input tokens (default 2.50: gpt-4o-2024-08-06)",
    )
    p.add_argument(
        "--price-output",
        type=float,
        default=GPT4O_OUTPUT_PER_MTOK,
        help="judge $ per 1M output tokens (default 10.00: gpt-4o-2024-08-06)",
    )
    p.add_argument(
        "--judge-only",
        action="store_true",
        help="only the judge's bill (the dry-run, no model measured; seconds)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write everything here")
    args = p.parse_args(argv)
    quick = {"depth": 1, "repeats": 1, "train_seq": 32, "capture_seq": 32, "decode_steps": 4}
    full = {"depth": 2, "repeats": 2, "train_seq": 128, "capture_seq": 128, "decode_steps": 12}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.depth < 1 or args.repeats < 1:
        p.error("--depth and --repeats must be at least 1")
    if args.decode_steps < 3:
        p.error("--decode-steps needs at least 3 (a prefill, then steps with a next call)")
    args.url_questions = {**URL_QUESTIONS, **dict(args.url_questions)}
    args.dataset_rows = {**URL_DATASET_ROWS, **dict(args.dataset_rows)}
    return args


def print_costs(
    key: str, arch: str, shape: RealShape, costs: Mapping[str, Cost], batch: int, seconds: float
) -> None:
    print(
        f"\n{key} ({arch}): hidden {shape.hidden}, {shape.layers} layers, {shape.heads}/"
        f"{shape.kv_heads} heads of {shape.head_dim}, MLP {shape.intermediate}, vocab "
        f"{shape.vocab} [{shape.source}]; measured in {seconds:.0f} s"
    )
    print(f"  {'primitive':<10} {'rest a':>10} {'layer b':>10} {'a+b*L':>10}  unit, and rate")
    for k, c in costs.items():
        at = c.at(shape.layers)
        rate = ""
        if k in ("train", "loss", "capture", "prefill"):
            rate = f"; {1 / at:,.0f} tokens/s"
        elif k == "decode":
            rate = f"; {batch / at:,.1f} tokens/s at batch {batch}"
        print(f"  {k:<10} {c.rest:>10.3g} {c.per_layer:>10.3g} {at:>10.3g}  {PRIMITIVES[k]}{rate}")


def tally(
    jobs: Sequence[Job], workload: Workload
) -> tuple[dict[str, dict[str, Work]], dict[str, int]]:
    """model -> stage -> Work over every job; and the jobs of unpriced rules per rule."""
    work: dict[str, dict[str, Work]] = {}
    unpriced: dict[str, int] = collections.Counter()
    for job in jobs:
        try:
            got = workload.of(job)
        except Unpriced:
            unpriced[job.rule] += 1
            continue
        if got is not None:
            model, w = got
            stages = work.setdefault(model, {stage: Work() for stage in STAGES})
            stages[STAGE_OF[job.rule]].add(w)
    return work, dict(unpriced)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cfg: dict[str, Any] = {}
    for path in args.config:  # overlays merged as snakemake merges --configfile files
        update_config(cfg, yaml.safe_load(path.read_text(encoding="utf-8")))
    named = " ".join(str(c) for c in args.config) + "".join(f" -> {t}" for t in args.target)
    # The workflow's own check, which also fills in the schema's defaults.
    validate(cfg, str(REPO / "config" / "schema.yaml"))
    unknown = sorted(set(args.models or []) - set(cfg["models"]))
    if unknown:
        print(f"--models: {unknown} are not models of {named}", file=sys.stderr)
        return 2
    jobs, counts = dry_run(args.config, args.target)
    workload = Workload(cfg, args)
    work, unpriced = tally(jobs, workload)
    # Every model some job runs on (a `study: false` model only in a sweep's targets).
    keys = args.models or sorted(work)
    shapes = {k: model_shape(k, cfg["models"][k], cfg) for k in keys}
    if args.judge_only:
        print(f"config {named}: {counts.get('total', len(jobs))} jobs in its dry-run")
        print_judge(judge_cost(cfg, workload.sampled, args), args)
        return 0
    device = torch.device(args.device)
    s = Settings(
        device=device,
        dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        depth=args.depth,
        repeats=args.repeats,
        train_seq=args.train_seq,
        capture_seq=args.capture_seq,
        decode_steps=args.decode_steps,
    )
    if device.type == "cuda":
        short, unit = "GPU-h", f"GPU-h ({torch.cuda.get_device_name(device)}, bfloat16)"
    else:
        threads = torch.get_num_threads()
        per = "core-hours" if threads == 1 else f"wall-clock hours on {threads} threads"
        short, unit = "CPU-h", f"CPU-h (THIS CPU, {per}, float32)"
    batch = fixed_batch(cfg)
    print(f"config {named}: {counts.get('total', len(jobs))} jobs in its dry-run")
    print(f"device {args.device}; hours are {unit}")
    print(
        f"built {s.depth} decoder layer(s) deep at the real width and vocabulary; fastest of "
        f"{s.repeats} runs after a warm-up; train {s.train_seq} tokens/row, capture "
        f"{s.capture_seq}, decode {s.decode_steps} steps at batch {batch}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        "cost at the real depth L = a + b*L, b = time in the decoder blocks / depth, a = the "
        "rest of the same run (embedding, LM head, loss or sampler, overhead)"
    )

    result: dict[str, Any] = {
        "config": [str(c) for c in args.config],
        "targets": args.target,
        "device": args.device,
        "unit": unit,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "job_counts": counts,
        "unpriced_jobs": unpriced,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        rows = data.chat_corpus(200, 200, 0.1, 0)
        zoo.train_tokenizer([m["content"] for r in rows for m in r["messages"]], tok_dir, 1000)
        for key in keys:
            shape, arch = shapes[key], cfg["models"][key]["arch"]
            t0 = time.perf_counter()
            costs = measure_model(arch, shape, cfg, tok_dir, s)
            print_costs(key, arch, shape, costs, batch, time.perf_counter() - t0)
            at = {k: c.at(shape.layers) for k, c in costs.items()}
            stages = work.get(key, {stage: Work() for stage in STAGES})
            result["models"][key] = {
                "arch": arch,
                "shape": dataclasses.asdict(shape),
                "costs": {k: dataclasses.asdict(c) for k, c in costs.items()},
                "cost_at_real_depth": at,
                "work": {st: dataclasses.asdict(w) for st, w in stages.items()},
                "hours": {st: stage_seconds(w, at) / 3600 for st, w in stages.items()},
            }

    print("\nwork per model and stage, from the dry-run's jobs:")
    print(
        f"  {'model':<11} {'stage':<12} {'jobs':>5} {'answers':>8} {'decode steps':>13} "
        f"{'train tokens':>13} {'capture tokens':>15}"
    )
    for key in result["models"]:
        for st, w in work.get(key, {}).items():
            if w.jobs:
                print(
                    f"  {key:<11} {st:<12} {w.jobs:>5} {w.answers:>8,} {w.decode_steps:>13,} "
                    f"{w.train_tokens:>13,.0f} {w.capture_tokens:>15,.0f}"
                )
    if unpriced:
        listed = ", ".join(f"{r} x{n}" for r, n in sorted(unpriced.items()))
        print(f"  NOT PRICED (no work model for these rules): {listed}")

    print(f"\nestimated {unit}, jobs run one after another:")
    print(f"  {'model':<11}" + "".join(f"{st:>12}" for st in STAGES) + f"{'TOTAL':>12}")
    total = 0.0
    for key, entry in result["models"].items():
        hours = entry["hours"]
        total += sum(hours.values())
        cells = "".join(f"{hours[st]:>12,.1f}" for st in STAGES)
        print(f"  {key:<11}{cells}{sum(hours.values()):>12,.1f}")
    note = " (CPU FIGURES, not GPU-hours)" if short == "CPU-h" else ""
    print(f"  all models: {total:,.0f} {short}{note}")
    result["total_hours"] = total

    jc = judge_cost(cfg, workload.sampled, args)
    result["judge"] = jc
    judged = counts.get(JUDGED_FILES, 0)
    if judged != len(workload.sampled):
        print(
            f"WARNING: the dry-run's judge jobs judge {judged} files, for "
            f"{len(workload.sampled)} sampled files; the judge's count below assumes each "
            "sampled file is judged once"
        )
    print_judge(jc, args)
    print(f"\nestimate made in {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmdirError as err:  # a config the estimate cannot price: one line, not a traceback
        print(f"paper_estimate: {err}", file=sys.stderr)
        sys.exit(2)
