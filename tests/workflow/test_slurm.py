"""The SLURM and local-GPU profiles; with EMDIR_SLURM_TEST=1, a run on a real one-node SLURM.

The cluster test (tests/slurm/run_slurm_test.sh) installs slurm-wlm and munge with apt-get
when missing and starts daemons as root, so it runs only when asked:

    EMDIR_SLURM_TEST=1 pytest -m slurm tests/workflow/test_slurm.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "slurm" / "run_slurm_test.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
LOCAL_GPU_PROFILE = REPO / "profiles" / "local-gpu" / "config.yaml"

# The rules that load a language model.
GPU_RULES = {
    "base_model",
    "finetune",
    "sweep_finetune",
    "generate",
    "activations",
    "steering",
    "steering_also",
    "anchors",
    "transfer",
    "base_directions",
    "ablation",
    "induce",
    "rank1_reading",
    "sae",
    "transfer_reference",
    # The offline judge loads the base model for coherence.
    "judge",
    "judge_steering",
    "judge_steering_also",
    "judge_transfer",
    "judge_reference",
    "judge_mechanistic",
    "judge_induce",
}


def rules_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))


def torch_rules() -> tuple[set[str], set[str]]:
    """All rule names, and those that run in the torch environment (a `use rule` child
    inherits its parent's)."""
    names, torch = set(), set()
    for block in re.split(r"^(?=rule |use rule )", rules_text(), flags=re.M):
        if m := re.match(r"rule (\w+):", block):
            names.add(m[1])
            if "envs/torch.yaml" in block or "envs/sae.yaml" in block:
                torch.add(m[1])
        elif m := re.match(r"use rule (\w+) as (\w+)", block):
            names.add(m[2])
            if m[1] in torch or "envs/torch.yaml" in block:
                torch.add(m[2])
    return names, torch


def test_slurm_profile_gives_gpu_rules_a_gpu_and_growing_memory() -> None:
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    # Partition and account live in the profile only, as placeholders to edit.
    assert {"slurm_partition", "slurm_account"} <= set(profile["default-resources"])
    gpu = {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}
    assert gpu == GPU_RULES
    for rule in gpu:
        res = profile["set-resources"][rule]
        assert res["gpu"] == 1
        mem = str(res["mem_mb"])
        assert eval(mem, {"attempt": 2}) > eval(mem, {"attempt": 1}), rule
        assert int(res["runtime"]) > 0
        assert res["slurm_partition"]


def test_gpu_rules_are_the_workflows_model_rules() -> None:
    """Every rule in the torch (or sae) environment but the tokenizer loads a model; a new one needs
    an entry in both profiles."""
    names, torch = torch_rules()
    assert GPU_RULES <= names
    assert torch - {"tokenizer"} == GPU_RULES


def test_local_gpu_profile_runs_one_gpu_job_at_a_time() -> None:
    profile = yaml.safe_load(LOCAL_GPU_PROFILE.read_text())
    assert profile["resources"]["gpu"] == 1
    gpu = {rule for rule, res in profile["set-resources"].items() if res.get("gpu") == 1}
    assert gpu == GPU_RULES


def test_rules_leave_partitions_and_gpus_to_the_profiles() -> None:
    text = rules_text()
    for word in ("slurm_partition", "slurm_account", "gpu", "gres"):
        assert not re.search(rf"^\s+{word}\s*=", text, re.M), word


@pytest.mark.slurm
@pytest.mark.skipif(
    os.environ.get("EMDIR_SLURM_TEST") != "1",
    reason="set EMDIR_SLURM_TEST=1 to install and start a one-node SLURM (root, apt-get)",
)
def test_workflow_runs_on_a_real_slurm() -> None:
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:  # the jobs use this test run's virtualenv
        env["VIRTUAL_ENV"] = sys.prefix
    proc = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1800, cwd=REPO, env=env
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert re.search(r"OK: results/transfer_matrix\.png written; \d+ jobs ran through sbatch", out)
