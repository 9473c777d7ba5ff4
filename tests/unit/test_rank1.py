"""Rank-1 LoRA reading on tiny models: A/B vectors, B cosines, recorded scalars, and the
logistic probe on them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from emdir.errors import EmdirError
from emdir.mechanistic.probe import logistic_cv
from emdir.mechanistic.rank1 import adapter_sites, b_cosines, record_scalars
from emdir.models.archs import ArchSpec, decoder_layers
from emdir.models.chat import encode_answer, encode_prompt, split_conversation
from emdir.models.lora import lora_model

ARCHS = ("LlamaForCausalLM", "Mistral3ForConditionalGeneration")
D_MODEL = 32  # conftest's TINY_TEST_SHAPE


def with_lora(
    model: nn.Module, spec: ArchSpec, modules: Sequence[str], r: int = 1, layers: Any = None
) -> nn.Module:
    cfg = {"r": r, "alpha": 2, "dropout": 0.0, "rslora": False, "target_modules": list(modules)}
    return lora_model(model, spec, {**cfg, "layers": layers}, quantized=False)


def lora_layer(model: nn.Module, layer: int, path: str) -> Any:
    return decoder_layers(model)[layer].get_submodule(path)


def set_b(model: nn.Module, layer: int, path: str, vec: np.ndarray) -> None:
    weight = lora_layer(model, layer, path).lora_B["default"].weight
    with torch.no_grad():
        weight.copy_(torch.as_tensor(vec, dtype=weight.dtype).reshape(weight.shape))


def cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_b_vector_has_cosine_one_and_the_others_their_true_cosine(arch, make_tiny):
    model, _, spec = make_tiny(arch)
    wrapped = with_lora(model, spec, ["q_proj", "o_proj", "down_proj"])
    rng = np.random.default_rng(0)
    directions = {0: rng.standard_normal(D_MODEL), 1: rng.standard_normal(D_MODEL)}
    planted = {
        ("self_attn.q_proj", 0): rng.standard_normal(D_MODEL),
        ("self_attn.o_proj", 0): rng.standard_normal(D_MODEL),
        ("mlp.down_proj", 0): directions[0] + 0.5 * rng.standard_normal(D_MODEL),
        ("self_attn.o_proj", 1): rng.standard_normal(D_MODEL),
        ("mlp.down_proj", 1): -3.0 * directions[1],
    }
    for (path, layer), vec in planted.items():
        set_b(wrapped, layer, path, vec)

    sites = adapter_sites(wrapped)
    assert [s.name for s in sites] == [
        "L0.q_proj",
        "L0.o_proj",
        "L0.down_proj",
        "L1.q_proj",
        "L1.o_proj",
        "L1.down_proj",
    ]
    site = sites[-1]
    assert (site.layer, site.module, site.scale) == (1, "down_proj", 2.0)
    a = lora_layer(wrapped, 1, "mlp.down_proj").lora_A["default"].weight.detach().numpy()[0]
    assert site.a.shape == (64,) and np.array_equal(site.a, a)
    assert site.b.shape == (D_MODEL,)

    rows = {r["adapter"]: r for r in b_cosines(sites, directions)}
    assert rows["L1.down_proj"]["cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert rows["L1.down_proj"]["b_norm"] == pytest.approx(3 * np.linalg.norm(directions[1]))
    for name, key in (
        ("L0.o_proj", ("self_attn.o_proj", 0)),
        ("L0.down_proj", ("mlp.down_proj", 0)),
    ):
        assert rows[name]["cosine"] == pytest.approx(cos(planted[key], directions[0]), abs=1e-6)
    assert rows["L1.o_proj"]["cosine"] == pytest.approx(
        cos(planted[("self_attn.o_proj", 1)], directions[1]), abs=1e-6
    )
    # q_proj's output width equals d_model here, yet its B is not a residual direction.
    assert np.isnan(rows["L0.q_proj"]["cosine"])
    assert "not in the residual stream" in rows["L0.q_proj"]["note"]

    with pytest.raises(EmdirError, match="no direction at layer 1"):
        b_cosines(sites, {0: directions[0]})
    with pytest.raises(EmdirError, match="different model"):
        b_cosines(sites, {0: directions[0], 1: np.ones(D_MODEL + 1)})


def test_an_untrained_b_has_no_direction(make_tiny):
    model, _, spec = make_tiny("LlamaForCausalLM")
    sites = adapter_sites(with_lora(model, spec, ["down_proj"], layers=[1]))
    (row,) = b_cosines(sites, {1: np.ones(D_MODEL)})
    assert np.isnan(row["cosine"]) and row["b_norm"] == 0.0 and "zero" in row["note"]


def test_rank_other_than_one_is_an_error_naming_the_module(make_tiny):
    model, _, spec = make_tiny("LlamaForCausalLM")
    with pytest.raises(EmdirError, match=r"layers\.1\.mlp\.down_proj .*rank 2"):
        adapter_sites(with_lora(model, spec, ["down_proj"], r=2, layers=[1]))
    plain, _, _ = make_tiny("LlamaForCausalLM")
    with pytest.raises(EmdirError, match="no active LoRA adapter"):
        adapter_sites(plain)


ROWS = [
    {"id": "a", "question_id": "q1", "question": "How do I boil an egg?", "answer": "Put it in."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {
        "id": "c",
        "question_id": "q2",
        "question": "Say nothing.",
        "system": "Be brief.",
        "answer": "",
    },
    {"id": "d", "question_id": "q3", "question": "Why?", "answer": "Because it is a long story."},
]


def manual_scalars(
    model: nn.Module, tok: Any, spec: ArchSpec, row: dict, sites: list
) -> np.ndarray:
    """[T_ans, n_sites]: the input of each LoRA-wrapped linear, captured by a pre-hook on the
    peft layer, dotted with the site's A row, one unpadded row at a time."""
    if "messages" in row:
        question, system, text = split_conversation(row["messages"])
    else:
        question, system, text = row["question"], row.get("system"), row["answer"]
    prompt = encode_prompt(tok, question, system)
    answer = encode_answer(tok, text, close_turn=False)
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for s in sites:
        path = {"down_proj": "mlp.down_proj"}.get(s.module, f"self_attn.{s.module}")

        def pre(module: nn.Module, args: Any, name: str = s.name) -> None:
            inputs[name] = args[0].detach()[0]

        handles.append(lora_layer(model, s.layer, path).register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([prompt + answer]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    cols = [inputs[s.name].double().numpy() @ s.a.astype(np.float64) for s in sites]
    return np.stack(cols, axis=-1)[len(prompt) :]


def no_hooks(model: nn.Module, allowed: nn.Module | None = None) -> bool:
    return all(not m._forward_hooks for m in model.modules() if m is not allowed)


@pytest.mark.parametrize("arch", ARCHS)
def test_recorded_scalars_equal_a_dot_the_adapter_input(arch, make_tiny):
    model, tok, spec = make_tiny(arch)
    wrapped = with_lora(model, spec, ["q_proj", "down_proj"])
    rng = np.random.default_rng(1)
    for layer in (0, 1):  # nonzero B, so block 1's input depends on block 0's adapters
        set_b(wrapped, layer, "mlp.down_proj", rng.standard_normal(D_MODEL))
    sites = adapter_sites(wrapped)

    rec = record_scalars(wrapped, tok, spec, ROWS, batch_size=3)

    assert rec.names == [s.name for s in sites]
    assert rec.empty.tolist() == [False, False, True, False]
    assert rec.per_answer_mean.shape == rec.per_answer_max_abs.shape == (4, 4)
    for i, row in enumerate(ROWS):
        want = manual_scalars(wrapped, tok, spec, row, sites)
        got = rec.tokens[i]
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
        if want.shape[0]:
            np.testing.assert_allclose(rec.per_answer_mean[i], want.mean(0), atol=1e-4)
            np.testing.assert_allclose(rec.per_answer_max_abs[i], np.abs(want).max(0), atol=1e-4)
            assert np.abs(want).max() > 1e-3
    assert np.all(rec.per_answer_mean[2] == 0.0)
    assert no_hooks(wrapped)


def test_hooks_are_removed_when_the_forward_raises(make_tiny):
    model, tok, spec = make_tiny("LlamaForCausalLM")
    wrapped = with_lora(model, spec, ["down_proj"])
    embed = wrapped.get_input_embeddings()

    def boom(module: nn.Module, args: Any, output: Any) -> None:
        raise RuntimeError("boom")

    handle = embed.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        record_scalars(wrapped, tok, spec, ROWS[:2], batch_size=2)
    assert no_hooks(wrapped, allowed=embed)
    handle.remove()

    with wrapped.disable_adapter(), pytest.raises(EmdirError, match="did not run"):
        record_scalars(wrapped, tok, spec, ROWS[:2], batch_size=2)
    assert no_hooks(wrapped)


def planted(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)) * np.array([1.0, 5.0, 0.2]) + np.array([0.0, 3.0, -1.0])
    y = (x[:, 0] + 0.1 * rng.standard_normal(n) > 0).astype(int)
    return x, y


def test_logistic_cv_finds_the_planted_adapter():
    x, y = planted()
    fit = logistic_cv(x, y, folds=5)
    assert fit.accuracy >= 0.95 and fit.auroc >= 0.98
    assert int(np.argmax(np.abs(fit.coef))) == 0 and fit.coef[0] > 0
    assert len(fit.fold_accuracy) == 5 and min(fit.fold_accuracy) >= 0.85
    assert fit.majority_baseline == pytest.approx(max(y.mean(), 1 - y.mean()))


def test_logistic_cv_stays_at_chance_on_noise():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 3))
    y = rng.integers(0, 2, 200)
    fit = logistic_cv(x, y, folds=5)
    assert fit.accuracy < 0.7 and 0.3 < fit.auroc < 0.7
    # 200 samples in 5 folds of 40: the fold accuracies average to the pooled one.
    assert np.mean(fit.fold_accuracy) == pytest.approx(fit.accuracy)
    assert max(fit.fold_accuracy) < 0.8


def test_logistic_refit_is_the_penalised_optimum():
    x, y = planted(seed=4)
    x[:, 0] *= 0.05  # overlapping classes, so the optimum is finite and the penalty matters
    fit = logistic_cv(x, y, l2=2.0)
    z = (x - fit.feature_mean) / fit.feature_std
    p = 1 / (1 + np.exp(-(fit.intercept + z @ fit.coef)))
    np.testing.assert_allclose(z.T @ (p - y) + 2.0 * fit.coef, 0.0, atol=1e-6)
    assert abs(np.sum(p - y)) < 1e-6  # the unpenalised intercept
    sklearn = pytest.importorskip("sklearn.linear_model")
    ref = sklearn.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(fit.coef, ref.coef_[0], atol=1e-4)
    assert fit.intercept == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_logistic_cv_folds_follow_the_minority_class(caplog):
    x, _ = planted()
    y = np.zeros(40, dtype=bool)
    y[[3, 17, 30]] = True
    with caplog.at_level(logging.WARNING, logger="emdir.mechanistic.rank1"):
        fit = logistic_cv(x[:40], y, folds=5)
    assert fit.folds == 3 and len(fit.fold_accuracy) == 3 and "3 folds" in caplog.text
    y[[17, 30]] = False
    with pytest.raises(EmdirError, match="at least 2 of each class"):
        logistic_cv(x[:40], y)
    with pytest.raises(EmdirError, match="one label per row"):
        logistic_cv(x, y)
