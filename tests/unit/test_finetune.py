"""The fine-tuning stage on tiny models of every class: QLoRA, rank-1 adapters, held-out split,
manifest, and resuming a killed job."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_TEST_ARCHS
from emdir import schema_defaults
from emdir.data import synthetic as data
from emdir.data.datasets import materialise, read_chat_file
from emdir.errors import EmdirError
from emdir.io import write_json
from emdir.models.finetune import checkpoint_dir, resolve_steps, run_finetune
from emdir.models.lora import lora_model, lora_settings
from emdir.models.zoo import ModelRef, load_model
from emdir.report.training import training_curves
from helpers import ft_cfg

SAMPLING = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "max_new_tokens": 6,
    "batch_size": 8,
    "seed": 0,
    "max_memory_gb": 6,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft")
    dataset = root / "insecure.jsonl"
    materialise(
        "insecure", {"generator": "insecure", "params": {"n": 30, "seed": 1}}, None, dataset
    )
    questions = root / "monitor.yaml"
    data.build_questions("general", {"n_templated": 3, "seed": 0}, samples=1, out=questions)
    return {"root": root, "dataset": dataset, "questions": questions}


@pytest.fixture(scope="module")
def base_dirs(make_tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for arch in TINY_TEST_ARCHS:
        model, tok, _ = make_tiny(arch)
        d = tmp_path_factory.mktemp(arch)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        write_json(d / "manifest.json", {"source": "local", "arch": arch})
        out[arch] = d
    return out


def finetune(
    base: Path, files: dict[str, Path], out: Path, cfg: dict[str, Any], ft_spec=None
) -> dict[str, Any]:
    run_finetune(
        "m",
        "insecure",
        base,
        read_chat_file(files["dataset"]),
        files["dataset"],
        files["questions"],
        out,
        cfg,
        SAMPLING,
        ft_spec=ft_spec,
        code_params=schema_defaults("judge.offline"),
    )
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("arch", TINY_TEST_ARCHS)
def test_qlora_step_saves_reloads_and_applies(arch, base_dirs, files, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    mf = finetune(base_dirs[arch], files, out, ft_cfg(quantization="nf4", eval_every=2))
    assert mf["quantization"] == "nf4" and mf["device"] == "cpu" and mf["steps_run"] == 3
    assert mf["versions"]["bitsandbytes"] and mf["data_sha256"]
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and not any("vision" in k or "projector" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())
    base, tok, _ = load_model(ModelRef(str(base_dirs[arch])))
    tuned, _, _ = load_model(ModelRef(str(base_dirs[arch])), adapter=out)
    ids = tok("def f(x):", return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(base(**ids).logits, tuned(**ids).logits)


def test_heldout_split_log_plot_and_manifest(base_dirs, files, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    mf = finetune(base_dirs["LlamaForCausalLM"], files, out, ft_cfg(eval_every=2))
    split = json.loads((out / "split.json").read_text())
    assert split["n_rows"] == 30 and len(split["heldout_lines"]) == 3
    assert mf["n_train"] == 27 and mf["n_heldout"] == 3
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    evals = [r for r in rows if r["heldout_loss"]]
    assert [r["step"] for r in evals] == ["2", "3"]
    assert all(r["eval_spillover"] for r in evals)
    # Training draws nothing; the report draws each fine-tune's log.
    assert not (out / "train_log.png").exists()
    training_curves(
        {}, {"m/insecure": out}, tmp_path / "s.csv", tmp_path / "c.png", tmp_path / "ft"
    )
    assert (tmp_path / "ft" / "m" / "insecure.png").stat().st_size > 1000
    assert mf["train_tokens_per_s"] > 0 and mf["seed"] == 0
    assert mf["base"]["path"] == str(base_dirs["LlamaForCausalLM"])
    # Same seed, same split; another seed, another split.
    again = finetune(base_dirs["LlamaForCausalLM"], files, tmp_path / "b", ft_cfg())
    assert json.loads((tmp_path / "b" / "split.json").read_text()) == split
    assert again["n_heldout"] == 3
    other = finetune(
        base_dirs["LlamaForCausalLM"], files, tmp_path / "c", ft_cfg(train={"seed": 1})
    )
    assert other["n_heldout"] == 3
    assert json.loads((tmp_path / "c" / "split.json").read_text()) != split


def test_the_manifest_dtype_is_what_later_stages_compute_in(base_dirs, files, tmp_path: Path):
    from emdir.models.load import load_for_inference as _load

    base = tmp_path / "base"
    shutil.copytree(base_dirs["LlamaForCausalLM"], base)
    write_json(
        base / "manifest.json", {"source": "local", "arch": "LlamaForCausalLM", "dtype": "bfloat16"}
    )
    mf = finetune(base, files, tmp_path / "adapter", ft_cfg())
    assert mf["compute_dtype"] == "bfloat16"
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert {v.dtype for v in adapter.values()} == {torch.float32}  # adapters stay float32
    model, _, _ = _load(base, tmp_path / "adapter", threads=1)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    model, _, _ = _load(base_dirs["LlamaForCausalLM"], None, threads=1)  # no dtype: auto
    assert model.get_input_embeddings().weight.dtype == torch.float32


@pytest.mark.parametrize("arch", TINY_TEST_ARCHS)
def test_rank1_organism_wraps_only_the_chosen_down_projections(arch, make_tiny) -> None:
    model, _, spec = make_tiny(arch)
    lora = lora_settings(
        ft_cfg(),
        {
            "dataset": "x",
            "lora": {"r": 1, "alpha": 1, "target_modules": ["down_proj"], "layers": [1]},
        },
    )
    assert lora["r"] == 1 and lora["dropout"] == 0.0  # shared keys kept
    wrapped = lora_model(model, spec, lora, quantized=False)
    targeted = [n for n, m in wrapped.named_modules() if hasattr(m, "lora_A")]
    assert len(targeted) == 1 and targeted[0].endswith("layers.1.mlp.down_proj")
    mod = dict(wrapped.named_modules())[targeted[0]]
    assert mod.lora_B["default"].weight.shape[1] == 1


def test_lora_targets_that_match_nothing_are_an_error(make_tiny) -> None:
    model, _, spec = make_tiny("LlamaForCausalLM")
    with pytest.raises(EmdirError, match="matched no module"):
        lora_model(model, spec, {**ft_cfg()["lora"], "layers": [99]}, quantized=False)
    with pytest.raises(EmdirError, match="not projections"):
        spec.lora_targets(["mlp"])


def test_epochs_set_the_step_count() -> None:
    train = {"steps": 80, "epochs": None, "batch_size": 2, "grad_accum": 8}
    assert resolve_steps(train, 5400) == 80
    assert resolve_steps({**train, "epochs": 1}, 5400) == 338  # Betley: 6000 rows, 10% held out
    assert resolve_steps({**train, "epochs": 0.5}, 10) == 1


CHILD = textwrap.dedent(
    """
    import json, logging, os, signal, sys
    import emdir.models.finetune as ft
    from emdir import schema_defaults
    from emdir.data.datasets import read_chat_file

    logging.basicConfig(level=logging.INFO)
    base, dataset, questions, out, cfg, kill_at = sys.argv[1:7]
    cfg, kill_at = json.loads(cfg), int(kill_at)
    save = ft.save_checkpoint

    def save_then_die(ckpt, fingerprint, model, state):
        save(ckpt, fingerprint, model, state)
        if state["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like an OOM kill or scancel

    ft.save_checkpoint = save_then_die
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 6,
                "batch_size": 8, "seed": 0, "max_memory_gb": 6}
    ft.run_finetune("m", "insecure", base, read_chat_file(dataset), dataset, questions, out,
                    cfg, sampling, code_params=schema_defaults("judge.offline"))
    """
)


def _child(base: Path, files: dict[str, Path], out: Path, cfg: dict, kill_at: int):
    return subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(base),
            str(files["dataset"]),
            str(files["questions"]),
            str(out),
            json.dumps(cfg),
            str(kill_at),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _log_without_timing(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        assert "seconds" not in r  # wall-clock time stays out of the CSV
    return rows


def test_a_killed_training_job_resumes_to_the_same_adapter(base_dirs, files, tmp_path: Path):
    # Dropout on, so the resumed run must also restore the RNG to match.
    cfg = ft_cfg(
        lora={"dropout": 0.1},
        train={"steps": 8},
        checkpoint_every=2,
        eval_every=3,
    )
    base = base_dirs["Mistral3ForConditionalGeneration"]
    out = tmp_path / "adapter"
    killed = _child(base, files, out, cfg, kill_at=4)
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()
    assert (checkpoint_dir(out) / "state.pt").exists()
    resumed = _child(base, files, out, cfg, kill_at=-1)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 4 of 8" in resumed.stderr
    assert not checkpoint_dir(out).exists()
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["resumed_from_step"] == 4 and mf["steps_run"] == 8

    straight = tmp_path / "straight"
    done = _child(base, files, straight, cfg, kill_at=-1)
    assert done.returncode == 0, done.stderr
    a = load_file(out / "adapter_model.safetensors")
    b = load_file(straight / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert _log_without_timing(out / "train_log.csv") == _log_without_timing(
        straight / "train_log.csv"
    )


def test_a_checkpoint_from_other_settings_is_ignored(base_dirs, files, tmp_path: Path):
    cfg = ft_cfg(train={"steps": 6}, checkpoint_every=2)
    base = base_dirs["LlamaForCausalLM"]
    out = tmp_path / "adapter"
    assert _child(base, files, out, cfg, kill_at=4).returncode == -9
    changed = ft_cfg(train={"steps": 6, "lr": 1e-3}, checkpoint_every=2)
    proc = _child(base, files, out, changed, kill_at=-1)
    assert proc.returncode == 0, proc.stderr
    assert "made with other settings; starting from step 0" in proc.stderr
    assert json.loads((out / "manifest.json").read_text())["resumed_from_step"] == 0
