"""Shared fixtures: a local BPE tokenizer and tiny random-init models of each architecture class.

Fixtures for other test files:
- `tokenizer_dir` (session): a directory holding the shared byte-level BPE tokenizer.
- `tiny_shape` (session): the `zoo.TinyShape` that the tiny models are built with.
- `tiny` (parametrized over TINY_TEST_ARCHS): a fresh `(model, tokenizer, spec)`.
- `make_tiny` (session): `make_tiny(arch, seed=0) -> (model, tokenizer, spec)`.
- `reload_tiny`: `reload_tiny(model, tokenizer) -> (model, tokenizer, spec)`, a round trip
  through `save_pretrained` and `zoo.load_model` (the from_pretrained path of real runs).

Helper for other test files: `run_snakemake(workdir, *args)` runs the repository's Snakefile
in a subprocess with `workdir` as its working directory.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from emdir.data import synthetic as data
from emdir.models import zoo
from emdir.models.archs import ARCHS, ArchSpec

# The four families of the study; MistralForCausalLM (text-only Mistral) is left out to
# keep the suite fast, Mistral3 covers the nested multimodal layout.
TINY_TEST_ARCHS = (
    "Qwen2ForCausalLM",
    "Gemma2ForCausalLM",
    "LlamaForCausalLM",
    "Mistral3ForConditionalGeneration",
)
TINY_TEST_SHAPE = zoo.TinyShape(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    max_positions=512,
)

Tiny = tuple[nn.Module, Any, ArchSpec]

SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"


def run_snakemake(
    workdir: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The repository's workflow run in `workdir` (so the checkout gets no .snakemake/)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
    cmd += ["--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    rows = data.chat_corpus(200, 200, 0.1, 0)
    texts = [m["content"] for row in rows for m in row["messages"]]
    zoo.train_tokenizer(texts, out, vocab_size=400)
    return out


@pytest.fixture(scope="session")
def tiny_shape() -> zoo.TinyShape:
    return TINY_TEST_SHAPE


@pytest.fixture(scope="session")
def make_tiny(tokenizer_dir: Path) -> Callable[..., Tiny]:
    def make(arch: str, seed: int = 0) -> Tiny:
        model, tok = zoo.build_tiny(arch, tokenizer_dir, TINY_TEST_SHAPE, seed=seed)
        model.eval()
        return model, tok, ARCHS[arch]

    return make


@pytest.fixture(params=TINY_TEST_ARCHS)
def tiny(request: pytest.FixtureRequest, make_tiny: Callable[..., Tiny]) -> Tiny:
    return make_tiny(request.param)


@pytest.fixture
def reload_tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[nn.Module, Any], Tiny]:
    def reload(model: nn.Module, tokenizer: Any) -> Tiny:
        out = tmp_path_factory.mktemp("saved")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return zoo.load_model(zoo.ModelRef(str(out)))

    return reload
