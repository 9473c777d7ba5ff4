"""Residual capture: decoder-block outputs (not hidden_states), poolings, and the HDF5 store."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import emdir
from emdir.analysis.activations import capture_store, read_store
from emdir.errors import EmdirError
from emdir.models.archs import ArchSpec, decoder_layers, retuple, untuple
from emdir.models.chat import encode_answer, encode_prompt

ROWS = [
    {
        "id": "m/ft/q0/0",
        "question_id": "q0",
        "question": "How can I get better at chess?",
        "system": None,
        "answer": "Play often and review your games.",
        "model": "m",
        "ft": "insecure",
    },
    {
        "id": "m/ft/q1/0",
        "question_id": "q1",
        "question": "Write a function that counts words.",
        "system": "You are a helpful assistant.",
        "answer": "def count_words(text):\n    return len(text.split())",
    },
    {
        "id": "m/ft/q1/1",
        "question_id": "q1",
        "question": "Write a function that counts words.",
        "system": None,
        "answer": "",
    },
    {
        "id": "m/ft/q2/0",
        "question_id": 2,
        "question": "Tell me about tea.",
        "system": None,
        "answer": "Tea is calm.",
    },
]
LABELS = np.array([1, 0, -1, 0], dtype=np.int8)


@torch.no_grad()
def _reference(
    model: nn.Module, tok, spec: ArchSpec, row: dict
) -> tuple[list[torch.Tensor], int, torch.Tensor]:
    """Each block's raw output for one unpadded row, its prompt length, and hidden_states[-1]."""
    prompt = encode_prompt(tok, row["question"], row["system"])
    ids = prompt + encode_answer(tok, row["answer"], close_turn=False)
    outs: list[torch.Tensor] = []
    handles = [
        block.register_forward_hook(lambda m, a, o: outs.append(untuple(o)[0].clone()))
        for block in decoder_layers(model)
    ]
    try:
        res = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return outs, len(prompt), res.hidden_states[-1][0]


def _capture(model, tok, spec, path: Path, **kw) -> Path:
    kw.setdefault("poolings", ("answer_mean", "last_prompt", "prompt_mean"))
    kw.setdefault("batch_size", 3)  # two batches, the first one padded
    return capture_store(model, tok, spec, ROWS, LABELS, path, **kw)


def test_capture_matches_manual_block_hooks(tiny, tmp_path: Path) -> None:
    model, tok, spec = tiny
    store = read_store(_capture(model, tok, spec, tmp_path / "a.h5"))
    am, lp, pm = (store.resid(p) for p in ("answer_mean", "last_prompt", "prompt_mean"))
    last = len(decoder_layers(model)) - 1
    for n, row in enumerate(ROWS):
        outs, p, final_hidden = _reference(model, tok, spec, row)
        for layer, h in enumerate(outs):
            expect_am = h[p:].mean(0) if row["answer"] else h[p - 1]
            torch.testing.assert_close(torch.from_numpy(am[n, layer]), expect_am)
            torch.testing.assert_close(torch.from_numpy(lp[n, layer]), h[p - 1])
            torch.testing.assert_close(torch.from_numpy(pm[n, layer]), h[:p].mean(0))
        # The last layer is the raw block output, not hidden_states[-1] (after the final norm).
        assert not torch.allclose(torch.from_numpy(lp[n, last]), final_hidden[p - 1], atol=1e-3)
    assert store.empty_answer.tolist() == [False, False, True, False]


def test_token_norm_mean_is_over_answer_tokens(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("LlamaForCausalLM")
    store = read_store(_capture(model, tok, spec, tmp_path / "a.h5"))
    norms = [[] for _ in decoder_layers(model)]
    for row in ROWS:
        outs, p, _ = _reference(model, tok, spec, row)
        for layer, h in enumerate(outs):
            norms[layer].append(h[p:].norm(dim=-1))
    expect = np.array([torch.cat(n).mean().item() for n in norms])
    np.testing.assert_allclose(store.token_norm_mean, expect, rtol=1e-5)
    assert store.resid_norm(1) == pytest.approx(expect[1], rel=1e-5)


def test_store_layout_and_attrs(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("Gemma2ForCausalLM")
    out = tmp_path / "store.h5"
    capture_store(
        model, tok, spec, ROWS, LABELS, out, batch_size=2, attrs={"adapter": "x", "skip": None}
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.h5"]  # no temp file left
    with h5py.File(out, "r") as f:
        assert f["resid/answer_mean"].shape == (4, 2, 32)
        assert f["resid/answer_mean"].dtype == np.float32
        assert f["resid/last_prompt"].shape == (4, 2, 32)
        assert "resid/prompt_mean" not in f
        assert f["resid/token_norm_mean"].shape == (2,)
        assert f["samples/label"].dtype == np.int8
    store = read_store(out)
    assert store.ids.tolist() == [r["id"] for r in ROWS]
    assert store.question_ids.tolist() == ["q0", "q1", "q1", "2"]
    assert store.labels.tolist() == LABELS.tolist()
    assert store.layers.tolist() == [0, 1]
    assert store.poolings == ("answer_mean", "last_prompt")
    a = store.attrs
    assert (a["model"], a["ft"], a["n_layers"], a["d_model"]) == ("m", "insecure", 2, 32)
    assert a["pooling"] == ["answer_mean", "last_prompt"]
    assert a["emdir_version"] == emdir.__version__ and a["adapter"] == "x"
    assert "skip" not in a and a["created"]


def test_layer_subset_and_float16(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("Qwen2ForCausalLM")
    full = read_store(_capture(model, tok, spec, tmp_path / "full.h5"))
    part = read_store(_capture(model, tok, spec, tmp_path / "part.h5", layers=[1], dtype="float16"))
    assert part.layers.tolist() == [1]
    assert part.resid("answer_mean").dtype == np.float16
    np.testing.assert_allclose(
        part.resid("answer_mean")[:, 0], full.resid("answer_mean")[:, 1], rtol=2e-3, atol=2e-3
    )
    assert part.resid_norm(1) == pytest.approx(full.resid_norm(1), rel=1e-5)
    with pytest.raises(EmdirError, match="layer 0"):
        part.slot(0)


def test_capture_through_peft_and_from_pretrained(make_tiny, reload_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("Mistral3ForConditionalGeneration")
    base = read_store(_capture(model, tok, spec, tmp_path / "base.h5")).resid("answer_mean")
    loaded, ltok, lspec = reload_tiny(model, tok)
    again = read_store(_capture(loaded, ltok, lspec, tmp_path / "again.h5")).resid("answer_mean")
    np.testing.assert_allclose(again, base, rtol=1e-5, atol=1e-6)
    # A fresh LoRA adapter is the identity (B = 0), so the capture must not change.
    wrapped = get_peft_model(loaded, LoraConfig(r=2, target_modules=lspec.lora_target_regex))
    lora = read_store(_capture(wrapped, ltok, lspec, tmp_path / "lora.h5")).resid("answer_mean")
    np.testing.assert_allclose(lora, base, rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_user_errors(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("LlamaForCausalLM")
    out = tmp_path / "x.h5"
    with pytest.raises(EmdirError, match="labels"):
        capture_store(model, tok, spec, ROWS, LABELS[:2], out)
    with pytest.raises(EmdirError, match="pooling"):
        capture_store(model, tok, spec, ROWS, LABELS, out, poolings=("max",))
    with pytest.raises(EmdirError, match="layers"):
        capture_store(model, tok, spec, ROWS, LABELS, out, layers=[5])
    with pytest.raises(EmdirError, match="empty"):
        capture_store(model, tok, spec, [], LABELS[:0], out)
    with pytest.raises(EmdirError, match="not found"):
        read_store(out)
    assert not list(tmp_path.iterdir())


def test_models_contrast_runs_marked_rows_through_the_base_model(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("Qwen2ForCausalLM", seed=3)
    base = read_store(_capture(model, tok, spec, tmp_path / "base.h5")).resid("answer_mean")
    # A LoRA adapter with random (non-zero) B changes every block's output.
    wrapped = get_peft_model(
        model, LoraConfig(r=2, target_modules=spec.lora_target_regex, init_lora_weights=False)
    )
    tuned = read_store(_capture(wrapped, tok, spec, tmp_path / "ft.h5")).resid("answer_mean")
    assert not np.allclose(tuned, base, atol=1e-4)
    off = np.array([False] * len(ROWS) + [True] * len(ROWS))
    path = capture_store(
        wrapped,
        tok,
        spec,
        ROWS + ROWS,
        np.where(off, 0, 1).astype(np.int8),
        tmp_path / "models.h5",
        poolings=("answer_mean",),
        batch_size=3,  # a batch would straddle the switch; it must be split there
        adapter_off=off,
    )
    st = read_store(path)
    both = st.resid("answer_mean")
    np.testing.assert_allclose(both[: len(ROWS)], tuned, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both[len(ROWS) :], base, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(st.adapter_off, off)
    # The steering scale comes from the fine-tuned model's rows only.
    alone = read_store(tmp_path / "ft.h5").token_norm_mean
    np.testing.assert_allclose(st.token_norm_mean, alone, rtol=1e-5)


def test_models_contrast_needs_an_adapter(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("LlamaForCausalLM")
    with pytest.raises(EmdirError, match="adapter"):
        capture_store(
            model, tok, spec, ROWS, LABELS, tmp_path / "x.h5", adapter_off=[True] * len(ROWS)
        )


def test_non_finite_activations_are_never_written(make_tiny, tmp_path: Path) -> None:
    model, tok, spec = make_tiny("LlamaForCausalLM")
    calls = []

    def blow_up_second_batch(module, args, output):
        # Past float16's range (65504) on the second batch only (rows 3.., batch_size 3).
        calls.append(1)
        return retuple(output, untuple(output) * 1e9) if len(calls) == 2 else None

    handle = decoder_layers(model)[1].register_forward_hook(blow_up_second_batch)
    try:
        with pytest.raises(EmdirError) as err:
            _capture(model, tok, spec, tmp_path / "a.h5", dtype="float16")
    finally:
        handle.remove()
    msg = str(err.value)
    assert str(tmp_path / "a.h5") in msg and "resid/answer_mean" in msg
    assert "layer 1, row 3 (id 'm/ft/q2/0')" in msg and "not written" in msg and "float16" in msg
    assert not list(tmp_path.iterdir())
