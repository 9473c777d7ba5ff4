"""Steering hooks: the three ops, positions, no-op bit-identity, hook cleanup, and scale modes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from emdir.analysis.interventions import Intervention, intervene, matched_scale
from emdir.errors import EmdirError
from emdir.models.archs import decoder_layers, untuple

D = 32
PROMPT = torch.tensor([[5, 17, 42, 99, 7, 250, 33]])
P = PROMPT.shape[1]


def _direction(seed: int = 0, d: int = D) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d)
    return v / np.linalg.norm(v)


def _hooks(model: nn.Module) -> int:
    return sum(len(layer._forward_hooks) for layer in decoder_layers(model))


@contextmanager
def _capture(model: nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """Record a layer's output as the next hooks see it (after any intervention hook)."""
    seen: list[torch.Tensor] = []
    handle = decoder_layers(model)[layer].register_forward_hook(
        lambda mod, args, out: seen.append(untuple(out).detach().clone())
    )
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def _logits(model: nn.Module, ids: torch.Tensor = PROMPT) -> torch.Tensor:
    return model(input_ids=ids).logits


def test_intervention_validates_and_records() -> None:
    v = 3.0 * _direction()
    iv = Intervention(layer=1, vector=v, op="subtract", coefficient=0.5, scale=4.0, name="target")
    assert torch.allclose(iv.unit.double(), torch.as_tensor(v / 3.0), atol=1e-6)
    assert iv.to_record() == {
        "vector": "target",
        "layer": 1,
        "op": "subtract",
        "coefficient": 0.5,
        "norm": 2.0,
    }
    assert Intervention(layer=0, vector=v, op="ablate").to_record()["norm"] is None
    assert Intervention(layer=0, vector=torch.tensor(v)).unit.shape == (D,)
    with pytest.raises(EmdirError, match="op"):
        Intervention(layer=0, vector=v, op="scale")  # type: ignore[arg-type]
    with pytest.raises(EmdirError, match="positions"):
        Intervention(layer=0, vector=v, positions="middle")  # type: ignore[arg-type]
    with pytest.raises(EmdirError, match="zero"):
        Intervention(layer=0, vector=np.zeros(D))
    with pytest.raises(EmdirError, match="1-D"):
        Intervention(layer=0, vector=np.ones((2, D)))


def test_matched_scale_modes() -> None:
    dim_norm = np.array([1.0, 2.0, 3.0])
    resid = np.array([10.0, 20.0, 30.0])
    kw = {"direction_norm": dim_norm, "resid_norm": resid}
    assert matched_scale("absolute", 2, absolute=5.0, **kw) == 5.0
    assert matched_scale("dim_norm", 1, **kw) == 2.0
    assert matched_scale("resid_norm", 2, **kw) == 30.0
    assert matched_scale("resid_norm", 0, resid_norm=7.5) == 7.5
    with pytest.raises(EmdirError, match="unknown"):
        matched_scale("relative", 0, **kw)
    with pytest.raises(EmdirError, match="needs resid_norm"):
        matched_scale("resid_norm", 0, direction_norm=dim_norm)
    with pytest.raises(EmdirError, match="out of range"):
        matched_scale("dim_norm", 3, **kw)


def test_coefficient_zero_is_bit_identical(tiny) -> None:
    model, _, _ = tiny
    clean = _logits(model)
    ivs = [
        Intervention(layer=0, vector=_direction(), op="add", coefficient=0.0, scale=100.0),
        Intervention(layer=1, vector=_direction(1), op="subtract", coefficient=0.0, scale=100.0),
    ]
    with intervene(model, ivs):
        assert _hooks(model) == 0
        steered = _logits(model)
    assert torch.equal(clean, steered)


def test_add_shifts_the_layer_output_by_c_n_v(tiny) -> None:
    model, _, _ = tiny
    v = _direction()
    with _capture(model, 0) as clean:
        _logits(model)
    iv = Intervention(layer=0, vector=v, op="add", coefficient=0.5, scale=3.0)
    with intervene(model, [iv]), _capture(model, 0) as steered:
        _logits(model)
    delta = (steered[0] - clean[0]).double()
    assert torch.allclose(delta, torch.as_tensor(1.5 * v).expand_as(delta), atol=1e-5)


def test_ablate_leaves_the_residual_orthogonal(tiny) -> None:
    model, _, _ = tiny
    v = _direction(2)
    with intervene(model, [Intervention(layer=1, vector=v, op="ablate")]):
        with _capture(model, 1) as seen:
            _logits(model)
    h = seen[0].double()
    proj = h @ torch.as_tensor(v)
    assert proj.abs().max() < 1e-5 * h.norm(dim=-1).max()


def test_hooks_removed_when_the_body_raises(tiny) -> None:
    model, _, _ = tiny
    iv = Intervention(layer=1, vector=_direction(), coefficient=1.0, scale=1.0)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, [iv]):
            assert _hooks(model) == 1
            raise RuntimeError("boom")
    assert _hooks(model) == 0


def test_a_forward_that_fails_in_the_hook_still_cleans_up(make_tiny) -> None:
    model, _, _ = make_tiny("LlamaForCausalLM")
    iv = Intervention(layer=0, vector=_direction(), positions="answer")
    with pytest.raises(EmdirError, match="start"):
        with intervene(model, [iv]):
            _logits(model)  # positions='answer' without ctx.start
    assert _hooks(model) == 0


@torch.no_grad()
def _prefill_then_step(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a KV-cache prefill of PROMPT and of one decoding step after it."""
    out = model(input_ids=PROMPT, use_cache=True)
    # A fixed next token, so a steered prefill cannot change what the step is fed.
    step = model(
        input_ids=torch.tensor([[11]]),
        past_key_values=out.past_key_values,
        attention_mask=torch.ones(1, P + 1, dtype=torch.long),
        use_cache=True,
    )
    return out.logits, step.logits


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Mistral3ForConditionalGeneration"])
def test_positions_answer_and_prompt_with_kv_cache(make_tiny, arch: str) -> None:
    model, _, _ = make_tiny(arch)
    v = _direction(3)
    with _capture(model, 0) as clean_h:
        clean_prefill, clean_step = _prefill_then_step(model)

    answer = Intervention(layer=0, vector=v, coefficient=2.0, scale=5.0, positions="answer")
    with intervene(model, [answer]) as ctx, _capture(model, 0) as seen:
        ctx.start(P)
        prefill, step = _prefill_then_step(model)
    assert torch.equal(prefill, clean_prefill)  # prefill = prompt positions: untouched
    assert not torch.allclose(step, clean_step)
    # The hooked layer's own output for the new token is shifted by exactly c * n * v.
    delta = (seen[1] - clean_h[1]).double()
    assert torch.allclose(delta, torch.as_tensor(10.0 * v).expand_as(delta), atol=1e-5)

    prompt = Intervention(layer=0, vector=v, coefficient=2.0, scale=5.0, positions="prompt")
    with intervene(model, [prompt]) as ctx, _capture(model, 0) as seen:
        ctx.start(P)
        prefill, _ = _prefill_then_step(model)
    assert not torch.allclose(prefill, clean_prefill)
    # At the hooked layer the decoding step is computed from unmodified inputs and left as is.
    assert torch.equal(seen[1], clean_h[1])


def test_positions_split_a_single_forward(make_tiny) -> None:
    model, _, _ = make_tiny("Qwen2ForCausalLM")
    v = _direction(4)
    cut = 4
    with _capture(model, 1) as clean:
        _logits(model)
    iv = Intervention(layer=1, vector=v, coefficient=1.0, scale=2.0, positions="answer")
    with intervene(model, [iv]) as ctx, _capture(model, 1) as seen:
        ctx.start(cut)
        _logits(model)
    assert torch.equal(seen[0][:, :cut], clean[0][:, :cut])
    delta = (seen[0][:, cut:] - clean[0][:, cut:]).double()
    assert torch.allclose(delta, torch.as_tensor(2.0 * v).expand_as(delta), atol=1e-5)


def test_steering_changes_generation(tiny) -> None:
    model, tok, _ = tiny
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tok.pad_token_id}
    with torch.no_grad():
        clean = model.generate(input_ids=PROMPT, **kw)
        last = len(decoder_layers(model)) - 1
        iv = Intervention(layer=last, vector=_direction(5), coefficient=1.0, scale=200.0)
        with intervene(model, [iv]) as ctx:
            ctx.start(P)
            assert _hooks(model) == 1
            steered = model.generate(input_ids=PROMPT, **kw)
    assert _hooks(model) == 0
    assert not torch.equal(clean[:, P:], steered[:, P:])


def test_intervene_through_peft_wrapper(make_tiny) -> None:
    model, _, spec = make_tiny("Gemma2ForCausalLM")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=spec.lora_target_regex))
    clean = _logits(wrapped)
    iv = Intervention(layer=0, vector=_direction(), coefficient=1.0, scale=10.0)
    with intervene(wrapped, [iv]):
        assert _hooks(wrapped) == 1
        steered = _logits(wrapped)
    assert _hooks(wrapped) == 0
    assert not torch.allclose(clean, steered)


def test_bad_layer_or_dimension_is_a_user_error(make_tiny) -> None:
    model, _, _ = make_tiny("LlamaForCausalLM")
    with pytest.raises(EmdirError, match="out of range"):
        with intervene(model, [Intervention(layer=2, vector=_direction())]):
            pass
    with pytest.raises(EmdirError, match="dimension"):
        with intervene(model, [Intervention(layer=0, vector=_direction(d=D + 1))]):
            pass
    assert _hooks(model) == 0
