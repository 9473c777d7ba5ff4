"""The chunked training loss: the model's own loss and gradients, without full logits."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from emdir.models import train
from emdir.models.train import Example, causal_loss, collate


def _batch(n_rows: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for k in range(n_rows):
        ids = torch.randint(5, 200, (9 + 3 * k,), generator=g).tolist()
        labels = [-100] * 5 + ids[5:]
        rows.append(Example(ids, labels))
    return collate(rows, 0)


@pytest.mark.parametrize(
    "arch", ["Qwen2ForCausalLM", "Gemma2ForCausalLM", "Mistral3ForConditionalGeneration"]
)
def test_chunked_loss_is_the_models_loss(make_tiny, monkeypatch, arch: str) -> None:
    """Gemma2's logit soft-capping and Ministral 3's nested text model included; chunks of 4
    answer positions so that a batch spans several."""
    model, _, spec = make_tiny(arch)
    model = get_peft_model(
        model, LoraConfig(r=2, target_modules=spec.lora_target_regex, init_lora_weights=False)
    )
    batch = _batch()
    full = model(**batch).loss
    full.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    # Small logits: the model's own loss, exactly.
    assert torch.equal(causal_loss(model, batch).detach(), full.detach())
    monkeypatch.setattr(train, "FULL_LOGITS_BYTES", 0)
    monkeypatch.setattr(train, "LOSS_CHUNK", 4)
    chunked = causal_loss(model, batch)
    chunked.backward()
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Gemma2ForCausalLM"])
def test_chunked_loss_trains_every_parameter(make_tiny, monkeypatch, arch: str) -> None:
    """Full-parameter training (the tiny base models): the LM head's weight, tied to the
    embedding, gets the head's share of the gradient from the chunked loss too, and a
    no-grad evaluation gives the same loss without forming any gradient."""
    model, _, _ = make_tiny(arch)
    batch = _batch(4)
    full = model(**batch).loss
    full.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(train, "FULL_LOGITS_BYTES", 0)
    monkeypatch.setattr(train, "LOSS_CHUNK", 5)
    chunked = causal_loss(model, batch)
    chunked.backward()
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    head = model.get_output_embeddings().weight
    assert head.grad is not None and float(head.grad.abs().sum()) > 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        again = causal_loss(model, batch)
    assert not again.requires_grad
    torch.testing.assert_close(again, full.detach(), rtol=1e-5, atol=1e-6)


def test_chunked_loss_scales_with_what_follows(make_tiny, monkeypatch) -> None:
    """The gradient formed in the forward pass is scaled by whatever multiplies the loss
    afterwards (gradient accumulation divides it)."""
    model, _, _ = make_tiny("Qwen2ForCausalLM")
    batch = _batch()
    monkeypatch.setattr(train, "FULL_LOGITS_BYTES", 0)
    causal_loss(model, batch).backward()
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    (causal_loss(model, batch) * 0.25).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, once[name] * 0.25, rtol=1e-5, atol=1e-8)
