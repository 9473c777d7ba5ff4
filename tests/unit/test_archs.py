"""The architecture registry: layers of each tiny class, through peft, in sync with the zoo."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from torch import nn

from emdir.errors import EmdirError
from emdir.models import zoo
from emdir.models.archs import (
    ARCHS,
    arch_of,
    d_model,
    decoder_layers,
    n_layers,
    retuple,
    untuple,
)


def _lora(model: nn.Module, regex: str) -> nn.Module:
    return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=regex))


def test_decoder_layers_found_on_every_class(tiny, tiny_shape) -> None:
    model, _, spec = tiny
    layers = decoder_layers(model)
    assert isinstance(layers, nn.ModuleList)
    assert len(layers) == n_layers(model) == tiny_shape.num_layers
    assert d_model(model) == tiny_shape.hidden_size
    assert arch_of(model.config) is spec
    # The list is the text model's: the nested path on Mistral3, model.layers elsewhere.
    expected = model.model.language_model.layers if spec.text_config_attr else model.model.layers
    assert layers is expected


def test_decoder_layers_through_peft_wrapper(tiny, tiny_shape) -> None:
    model, _, spec = tiny
    plain = decoder_layers(model)
    wrapped = _lora(model, spec.lora_target_regex)
    assert decoder_layers(wrapped) is plain
    assert n_layers(wrapped) == len(plain)
    assert d_model(wrapped) == tiny_shape.hidden_size


def test_lora_targets_only_the_language_model(make_tiny) -> None:
    model, _, spec = make_tiny("Mistral3ForConditionalGeneration")
    wrapped = _lora(model, spec.lora_target_regex)
    targeted = [name for name, mod in wrapped.named_modules() if hasattr(mod, "lora_A")]
    assert targeted, "the LoRA regex matched nothing"
    assert all("language_model" in name for name in targeted)
    assert not any("vision" in name for name in targeted)


def test_decoder_layers_after_from_pretrained(make_tiny, reload_tiny, tiny_shape) -> None:
    model, tok, _ = make_tiny("Mistral3ForConditionalGeneration")
    loaded, _, spec = reload_tiny(model, tok)
    assert spec.name == "Mistral3ForConditionalGeneration"
    assert len(decoder_layers(loaded)) == tiny_shape.num_layers


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_tiny_recipe_makes_its_own_class(tiny_shape, arch: str) -> None:
    # The recipe lives in the registry entry: its config is the one the class is built from.
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    cfg = zoo.tiny_config(arch, tiny_shape, 100, ids, {"image_token_id": 3})
    assert isinstance(cfg, getattr(transformers, arch).config_class)
    assert cfg.architectures == [arch] and arch_of(cfg) is ARCHS[arch]
    assert zoo.TINY_ARCHS == tuple(ARCHS)
    with pytest.raises(EmdirError, match="no tiny-model recipe for architecture 'FooLM'"):
        zoo.tiny_config("FooLM", tiny_shape, 100, ids, {})


@pytest.mark.parametrize("arch", zoo.TINY_ARCHS)
def test_every_buildable_arch_resolves(make_tiny, tiny_shape, arch: str) -> None:
    model, _, spec = make_tiny(arch)
    assert spec.name == arch
    assert len(decoder_layers(model)) == tiny_shape.num_layers


def test_unknown_architecture_is_a_user_error() -> None:
    with pytest.raises(EmdirError, match="FooForCausalLM"):
        arch_of(SimpleNamespace(architectures=["FooForCausalLM"]))
    with pytest.raises(EmdirError, match="architectures"):
        arch_of(SimpleNamespace(architectures=None))


def test_missing_layer_path_is_a_user_error() -> None:
    module = nn.Module()
    module.config = SimpleNamespace(architectures=["LlamaForCausalLM"])  # type: ignore[assignment]
    with pytest.raises(EmdirError, match="layer paths"):
        decoder_layers(module)


def test_untuple_and_retuple() -> None:
    h = torch.randn(1, 3, 4)
    extra = torch.zeros(1)
    assert untuple(h) is h
    assert untuple((h, extra)) is h
    assert untuple([h]) is h
    new = h + 1
    assert retuple(h, new) is new
    back = retuple((h, extra), new)
    assert isinstance(back, tuple) and back[0] is new and back[1] is extra
    with pytest.raises(TypeError):
        untuple({"h": h})
