"""A grid of the architectures of issue 31 (other block layouts, no gate, Conv1D) plans like
any other: a dry-run of the default experiment with one tiny model of each new class added."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from conftest import run_snakemake
from emdir.models.archs import ARCHS

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
NEW = {
    "gemma3": "Gemma3ForCausalLM",
    "pythia": "GPTNeoXForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "stablelm": "StableLmForCausalLM",
    "starcoder2": "Starcoder2ForCausalLM",
    "opt": "OPTForCausalLM",
}


def test_a_grid_with_every_new_layout_dry_runs(tmp_path: Path) -> None:
    assert set(NEW.values()) <= set(ARCHS)
    models = {**DEFAULT["models"], **{k: {"source": "tiny", "arch": a} for k, a in NEW.items()}}
    config = tmp_path / "layouts.yaml"
    config.write_text(yaml.safe_dump({**DEFAULT, "models": models}), encoding="utf-8")
    proc = run_snakemake(tmp_path, "--dry-run", "--configfile", str(config))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    table = out.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    n = len(models)
    assert jobs["base_model"] == n == 10
    seeds = len(DEFAULT.get("finetune", {}).get("seeds", [0]))
    assert jobs["transfer"] == jobs["fit_map"] == seeds * n * n
    for key in NEW:
        assert f"results/models/{key}/base" in out
