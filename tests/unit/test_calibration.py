"""Steering cost: KL from the unsteered to the steered next-token distribution over an answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emdir.analysis.calibration import kl_to_unsteered
from emdir.analysis.interventions import Intervention, intervene
from emdir.data.questions import Question
from emdir.errors import EmdirError
from emdir.models.archs import decoder_layers, untuple
from emdir.models.chat import encode_answer, encode_prompt
from emdir.models.generate import Prompt

D = 32  # tests/conftest.py's TINY_TEST_SHAPE.hidden_size

QUESTIONS = [
    Question("sort", "How do I sort a list in Python?", None, 3),
    Question("capital", "What is the capital of France?", "Answer briefly.", 2),
    Question("story", "Tell me a short story about a cat and a dog.", None, 3),
    Question("hi", "hi", None, 2),
]
PROMPTS = [Prompt(q, k) for q in QUESTIONS for k in range(q.samples)]
ANSWERS = [
    "Use sorted(x), or x.sort() to sort in place.",
    "",
    "def f(xs):\n    return sorted(xs)",
    "Paris.",
    "The capital of France is Paris, a city on the Seine.",
    "Once upon a time a cat and a dog shared a house.",
    "x",
    "They argued, then slept in the sun together. The end.",
    "Hello! How can I help you today?",
    "",
]


def _direction(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(D)


def _steer(
    layer: int, vector: np.ndarray, coefficient: float, scale: float, **kw: Any
) -> list[Intervention]:
    return [Intervention(layer=layer, vector=vector, coefficient=coefficient, scale=scale, **kw)]


@torch.no_grad()
def _resid_norm(model: nn.Module, tok: Any, layer: int) -> float:
    """Mean residual norm at the output of block `layer` over one prompt's tokens."""
    seen: list[float] = []
    block = decoder_layers(model)[layer]
    handle = block.register_forward_hook(
        lambda m, a, out: seen.append(float(untuple(out).norm(dim=-1).mean()))
    )
    try:
        ids = encode_prompt(tok, QUESTIONS[0].text, None)
        model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return seen[0]


def test_no_steering_costs_nothing(tiny) -> None:
    model, tok, _ = tiny
    zero = kl_to_unsteered(model, tok, PROMPTS, ANSWERS, _steer(1, _direction(0), 0.0, 100.0))
    assert zero.dtype == np.float64 and zero.shape == (len(PROMPTS),)
    assert np.all(zero == 0.0)
    assert np.all(kl_to_unsteered(model, tok, PROMPTS, ANSWERS, []) == 0.0)


def test_batch_size_does_not_change_the_cost(tiny) -> None:
    model, tok, _ = tiny
    ivs = _steer(0, _direction(1), 1.0, _resid_norm(model, tok, 0))
    one = kl_to_unsteered(model, tok, PROMPTS, ANSWERS, ivs, batch_size=1)
    many = kl_to_unsteered(model, tok, PROMPTS, ANSWERS, ivs, batch_size=16)
    assert np.all(one > 0)
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-5)
    # Deterministic: the same call gives the same numbers.
    assert np.array_equal(many, kl_to_unsteered(model, tok, PROMPTS, ANSWERS, ivs, batch_size=16))


@torch.no_grad()
def test_matches_one_direct_forward(make_tiny) -> None:
    """One conversation by hand: prompt + answer ids, the steered forward, KL by torch's own
    kl_div (target = the unsteered distribution), averaged over the answer's predictions."""
    model, tok, _ = make_tiny("LlamaForCausalLM")
    # Sharpen the output distribution (a random-init model's is near uniform), so that
    # KL(p || q) and KL(q || p) differ clearly.
    model.model.norm.weight.mul_(30.0)
    question, answer = QUESTIONS[2], ANSWERS[5]
    prompt_ids = encode_prompt(tok, question.text, question.system)
    answer_ids = encode_answer(tok, answer, close_turn=False)
    ids = torch.tensor([prompt_ids + answer_ids])
    ivs = _steer(0, _direction(4), 3.0, _resid_norm(model, tok, 0), positions="answer")
    clean = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    with intervene(model, ivs) as ctx:
        ctx.start(len(prompt_ids))
        steered = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    span = slice(len(prompt_ids) - 1, ids.shape[1] - 1)
    per_token = F.kl_div(steered[span], clean[span], log_target=True, reduction="none").sum(-1)
    reverse = F.kl_div(clean[span], steered[span], log_target=True, reduction="none").sum(-1)
    got = kl_to_unsteered(model, tok, [Prompt(question, 0)], [answer], ivs)
    assert got[0] == pytest.approx(float(per_token.mean()), rel=1e-5)
    assert abs(float(reverse.mean()) - got[0]) > 0.1 * got[0], (got, reverse.mean())


def test_cost_grows_with_the_coefficient(make_tiny) -> None:
    model, tok, _ = make_tiny("Qwen2ForCausalLM")
    v, n = _direction(2), _resid_norm(model, tok, 0)
    coefs = [0.05, 0.1, 0.25, 0.5]
    means = [
        kl_to_unsteered(model, tok, PROMPTS, ANSWERS, _steer(0, v, c, n)).mean() for c in coefs
    ]
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means
    # For a small push KL is second order in it: doubling the coefficient about quadruples it
    # (a first-order quantity such as a total-variation distance would double).
    assert 3.0 < means[1] / means[0] < 5.0, means


def test_the_logit_sensitive_direction_costs_most(make_tiny) -> None:
    """At the last block, the top right-singular vector of lm_head . diag(final norm weight)
    moves the output distribution most per unit norm: it reaches a KL threshold at a smaller
    coefficient than random unit vectors (a coefficient grid from 0.01, ratio 1.2)."""
    model, tok, _ = make_tiny("LlamaForCausalLM")
    last = len(decoder_layers(model)) - 1
    n = _resid_norm(model, tok, last)
    readout = model.get_output_embeddings().weight.detach().double()
    readout = readout * model.model.norm.weight.detach().double()
    planted = torch.linalg.svd(readout, full_matrices=False).Vh[0].numpy()
    # One question's samples: one batch per call.
    prompts, answers = PROMPTS[5:8], ANSWERS[5:8]
    grid = 0.01 * 1.2 ** np.arange(45)  # 0.01 .. ~30 x the residual norm
    threshold = 0.01  # nats; the tiny model's output is near uniform, so KL saturates ~0.015

    def first_reach(v: np.ndarray, up_to: float = np.inf) -> float:
        """The first grid coefficient whose mean KL reaches the threshold (inf: none <= up_to)."""
        for c in grid[grid <= up_to]:
            ivs = _steer(last, v, c, n)
            if kl_to_unsteered(model, tok, prompts, answers, ivs).mean() >= threshold:
                return float(c)
        return float("inf")

    top = first_reach(planted)
    assert np.isfinite(top)
    # A random vector only needs scanning up to `top`: later is later, however much.
    random = [first_reach(_direction(100 + s), up_to=top) for s in range(7)]
    assert top < np.median(random), (top, random)
    assert top <= min(random), (top, random)


def test_positions_prompt_and_answer(make_tiny) -> None:
    model, tok, _ = make_tiny("LlamaForCausalLM")
    last = len(decoder_layers(model)) - 1
    v = _direction(3)

    def cost(layer: int, positions: str, answers: list[str]) -> np.ndarray:
        n = _resid_norm(model, tok, layer)
        ivs = _steer(layer, v, 2.0, n, positions=positions)
        return kl_to_unsteered(model, tok, PROMPTS, answers, ivs)

    # An empty answer has one prediction, from the last prompt position: answer-only steering
    # leaves it alone, prompt-only steering changes it as much as steering everywhere.
    empty = [""] * len(PROMPTS)
    assert np.all(cost(0, "answer", empty) == 0.0)
    np.testing.assert_allclose(cost(0, "prompt", empty), cost(0, "all", empty), rtol=1e-5)
    assert np.all(cost(0, "prompt", empty) > 0)
    # One answer token: its only prediction is made from the last prompt position.
    assert len(encode_answer(tok, "x", close_turn=False)) == 1
    assert np.all(cost(0, "answer", ["x"] * len(PROMPTS)) == 0.0)

    # At the last block each position's logits depend only on that position's steering, so
    # the answer's n predictions split exactly: the first (last prompt position) is prompt-
    # steered, the other n - 1 answer-steered.
    tokens = np.array([len(encode_answer(tok, a, close_turn=False)) for a in ANSWERS])
    prompt_only = cost(last, "prompt", ANSWERS)
    answer_only = cost(last, "answer", ANSWERS)
    everywhere = cost(last, "all", ANSWERS)
    np.testing.assert_allclose(prompt_only + answer_only, everywhere, rtol=1e-5)
    first_prediction = cost(last, "all", empty)
    np.testing.assert_allclose(prompt_only * np.maximum(tokens, 1), first_prediction, rtol=1e-4)
    assert np.all(answer_only[tokens > 1] > 0)
    assert np.all(answer_only[tokens <= 1] == 0.0)


def test_bad_inputs_are_user_errors(make_tiny) -> None:
    model, tok, _ = make_tiny("LlamaForCausalLM")
    ivs = _steer(0, _direction(0), 1.0, 1.0)
    with pytest.raises(EmdirError, match="one answer per prompt"):
        kl_to_unsteered(model, tok, PROMPTS, ANSWERS[:-1], ivs)
    with pytest.raises(EmdirError, match="batch_size"):
        kl_to_unsteered(model, tok, PROMPTS, ANSWERS, ivs, batch_size=0)
    with pytest.raises(EmdirError, match="out of range"):
        kl_to_unsteered(model, tok, PROMPTS, ANSWERS, _steer(5, _direction(0), 1.0, 1.0))
    assert kl_to_unsteered(model, tok, [], [], ivs).shape == (0,)
