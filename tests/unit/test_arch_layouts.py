"""Decoder blocks of other layouts from one registry entry each (issue 31): GPT-NeoX's renamed
and fused projections, GPT-2's Conv1D and its two c_proj, OPT's MLP in the block itself,
Starcoder2 without a gate. LoRA targets, the adapted-site check, the rank-1 reading, capture
and steering all derive from where the entry says each projection lives."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from emdir.analysis.interventions import Intervention
from emdir.errors import EmdirError
from emdir.mechanistic.rank1 import adapter_sites, b_cosines
from emdir.models import chat, zoo
from emdir.models.archs import ARCHS, PROJECTIONS, decoder_layers
from emdir.models.lora import lora_adapted, lora_model
from helpers import layer_output

LORA = {"r": 2, "alpha": 4, "dropout": 0.0, "rslora": False}
NO_GATE = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
# What LoRA wraps in block 0 with the default targets (every projection the class has).
ADAPTED = {
    "GPTNeoXForCausalLM": [
        "gpt_neox.layers.*.attention.dense",
        "gpt_neox.layers.*.attention.query_key_value",
        "gpt_neox.layers.*.mlp.dense_4h_to_h",
        "gpt_neox.layers.*.mlp.dense_h_to_4h",
    ],
    "GPT2LMHeadModel": [
        "transformer.h.*.attn.c_attn",
        "transformer.h.*.attn.c_proj",
        "transformer.h.*.mlp.c_fc",
        "transformer.h.*.mlp.c_proj",
    ],
    "OPTForCausalLM": [
        "model.decoder.layers.*.fc1",
        "model.decoder.layers.*.fc2",
        "model.decoder.layers.*.self_attn.k_proj",
        "model.decoder.layers.*.self_attn.out_proj",
        "model.decoder.layers.*.self_attn.q_proj",
        "model.decoder.layers.*.self_attn.v_proj",
    ],
    "Starcoder2ForCausalLM": [
        "model.layers.*.mlp.c_fc",
        "model.layers.*.mlp.c_proj",
        "model.layers.*.self_attn.k_proj",
        "model.layers.*.self_attn.o_proj",
        "model.layers.*.self_attn.q_proj",
        "model.layers.*.self_attn.v_proj",
    ],
}


@pytest.mark.parametrize("arch", sorted(ADAPTED))
def test_the_default_targets_are_the_class_own_projections(make_tiny, arch: str) -> None:
    model, _, spec = make_tiny(arch)
    assert spec.projections == NO_GATE
    wrapped = lora_model(model, spec, {**LORA, "target_modules": None}, quantized=False)
    adapted = lora_adapted(wrapped, spec)
    assert adapted["modules"] == ADAPTED[arch]
    assert adapted["n_wrapped"] == 2 * len(ADAPTED[arch])
    # The regex matches exactly those modules of the plain model, and nothing else.
    regex = spec.lora_target_regex
    hits = sorted(n for n, _ in model.named_modules() if re.fullmatch(regex, n))
    assert hits == sorted(p.replace("*", str(b)) for p in ADAPTED[arch] for b in (0, 1))


def test_the_target_regexes_of_the_new_layouts() -> None:
    neox, gpt2, opt = (
        ARCHS[a] for a in ("GPTNeoXForCausalLM", "GPT2LMHeadModel", "OPTForCausalLM")
    )
    # GPT-NeoX's names tell attention and MLP apart: the compact form of the split classes.
    assert neox.lora_targets(["down_proj"], layers=[1]) == (
        r".*gpt_neox\.layers\.(1)\.(attention|mlp)\.(dense_4h_to_h)"
    )
    # GPT-2 has a c_proj on both sides, so each module is named by its path.
    assert gpt2.lora_targets(["o_proj"]) == r".*transformer\.h\.\d+\.(attn\.c_proj)"
    assert gpt2.lora_targets(["down_proj", "q_proj", "k_proj", "v_proj"], layers=[0]) == (
        r".*transformer\.h\.(0)\.(mlp\.c_proj|attn\.c_attn)"
    )
    # OPT's fc1 and fc2 sit in the block itself.
    assert opt.lora_targets(["up_proj", "o_proj"]) == (
        r".*model\.decoder\.layers\.\d+\.(fc1|self_attn\.out_proj)"
    )
    assert gpt2.lora_site("base_model.model.transformer.h.3.mlp.c_proj") == (3, "mlp.c_proj")
    assert gpt2.lora_site("transformer.h.3.attn.c_proj") == (3, "attn.c_proj")
    assert opt.lora_site("model.decoder.layers.0.fc2") == (0, "fc2")
    assert opt.projections_of(opt.module_at("fc2")) == ("down_proj",)


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "GPTNeoXForCausalLM", "OPTForCausalLM"])
def test_a_projection_the_class_lacks_fails_naming_the_class_and_what_it_has(arch: str) -> None:
    spec = ARCHS[arch]
    with pytest.raises(EmdirError, match=rf"{arch} has no gate_proj; it has q_proj, .*down_proj"):
        spec.lora_targets(list(PROJECTIONS))
    with pytest.raises(EmdirError, match=f"{arch} has no gate_proj;"):
        spec.lora_targets(["q_proj", "k_proj", "v_proj", "gate_proj"])


def test_an_entry_that_contradicts_itself_is_refused() -> None:
    gpt2 = ARCHS["GPT2LMHeadModel"]
    # attn.c_proj twice: once as c_proj (o, so under attn) and once by its path (down).
    twice = {
        "c_attn": ("q_proj", "k_proj", "v_proj"),
        "c_proj": ("o_proj",),
        "c_fc": ("up_proj",),
        "attn.c_proj": ("down_proj",),
    }
    with pytest.raises(EmdirError, match="two projections resolve to one module path"):
        dataclasses.replace(gpt2, fused=twice)
    with pytest.raises(EmdirError, match="k_proj is carried by both c_attn and attn.c_proj"):
        dataclasses.replace(gpt2, fused={**gpt2.fused, "attn.c_proj": ("k_proj",)})
    with pytest.raises(EmdirError, match="carries gate_proj, which its projections"):
        dataclasses.replace(gpt2, fused={"c_fc": ("gate_proj", "up_proj")})
    with pytest.raises(EmdirError, match="carries attention and MLP projections"):
        dataclasses.replace(ARCHS["LlamaForCausalLM"], fused={"odd": ("o_proj", "down_proj")})
    with pytest.raises(EmdirError, match=r"lists projections \['w_proj'\]"):
        dataclasses.replace(gpt2, projections=("w_proj",))


def _randomise_b(model: Any, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_gpt2_conv1d_adapters_are_the_update_their_merge_writes(make_tiny) -> None:
    model, tok, spec = make_tiny("GPT2LMHeadModel")
    assert spec.fan_in_fan_out
    wrapped = lora_model(model, spec, {**LORA, "target_modules": None}, quantized=False)
    layer = decoder_layers(wrapped)[0].get_submodule("attn.c_attn")
    assert layer.fan_in_fan_out and type(layer.get_base_layer()).__name__ == "Conv1D"
    _randomise_b(wrapped, 0)
    ids = torch.tensor([chat.encode_prompt(tok, "How do I brew tea?", None)])
    with torch.no_grad():
        plain = wrapped(input_ids=ids).logits
        with wrapped.disable_adapter():
            base = wrapped(input_ids=ids).logits
        merged = wrapped.merge_and_unload()(input_ids=ids).logits
    # The adapter changes the output, and merging the transposed update into the [in, out]
    # Conv1D weights gives the same model (a wrong layout would not).
    assert not torch.allclose(plain, base, atol=1e-3)
    torch.testing.assert_close(merged, plain, rtol=1e-4, atol=1e-4)


def test_a_wrong_weight_layout_in_an_entry_fails(make_tiny) -> None:
    model, _, spec = make_tiny("GPT2LMHeadModel")
    linear = dataclasses.replace(spec, fan_in_fan_out=False)
    with pytest.raises(EmdirError, match=r"wrapped Conv1D modules .*fan_in_fan_out=False"):
        lora_model(model, linear, {**LORA, "target_modules": ["down_proj"]}, quantized=False)
    model, _, spec = make_tiny("OPTForCausalLM")
    conv = dataclasses.replace(spec, fan_in_fan_out=True)
    with pytest.raises(EmdirError, match=r"wrapped nn.Linear modules .*fan_in_fan_out=True"):
        lora_model(model, conv, {**LORA, "target_modules": ["down_proj"]}, quantized=False)


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "GPTNeoXForCausalLM", "OPTForCausalLM"])
def test_capture_reads_the_block_outputs_and_steering_moves_them(
    make_tiny, tiny_shape: zoo.TinyShape, arch: str
) -> None:
    model, tok, _ = make_tiny(arch)
    wrapped = lora_model(model, ARCHS[arch], {**LORA, "target_modules": None}, quantized=False)
    _randomise_b(wrapped, 1)
    ids = torch.tensor([chat.encode_prompt(tok, "Sort a list.", "Be brief.")])
    with torch.no_grad():
        hidden = wrapped(input_ids=ids, output_hidden_states=True).hidden_states
    # Block 0's output is the model's hidden state 1 (the last one has the final norm).
    torch.testing.assert_close(layer_output(wrapped, 0, ids), hidden[1])
    direction = np.ones(tiny_shape.hidden_size, dtype=np.float32)
    iv = Intervention(layer=0, vector=direction, op="add", coefficient=1.0, scale=2.0)
    delta = layer_output(wrapped, 0, ids, [iv]) - hidden[1]
    norms = torch.linalg.vector_norm(delta[0], dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0), rtol=1e-4, atol=1e-4)


def test_rank1_reads_renamed_residual_writers(make_tiny: Callable[..., Any]) -> None:
    model, _, spec = make_tiny("GPTNeoXForCausalLM")
    cfg = {"r": 1, "alpha": 2, "dropout": 0.0, "rslora": False}
    wrapped = lora_model(
        model, spec, {**cfg, "target_modules": ["o_proj", "down_proj", "up_proj"]}, False
    )
    _randomise_b(wrapped, 2)
    sites = adapter_sites(wrapped)
    assert [s.name for s in sites[:3]] == ["L0.dense", "L0.dense_h_to_4h", "L0.dense_4h_to_h"]
    assert sites[2].projections == ("down_proj",)
    rng = np.random.default_rng(0)
    rows = b_cosines(sites, {0: rng.standard_normal(32), 1: rng.standard_normal(32)})
    by_module = {(r["layer"], r["module"]): r for r in rows}
    # dense (o) and dense_4h_to_h (down) write into the residual stream; dense_h_to_4h does not.
    assert np.isfinite(by_module[(0, "dense")]["cosine"])
    assert np.isfinite(by_module[(0, "dense_4h_to_h")]["cosine"])
    assert np.isnan(by_module[(0, "dense_h_to_4h")]["cosine"])

    model, _, spec = make_tiny("GPT2LMHeadModel")
    wrapped = lora_model(model, spec, {**cfg, "target_modules": ["o_proj", "down_proj"]}, False)
    assert [s.name for s in adapter_sites(wrapped)[:2]] == ["L0.attn.c_proj", "L0.mlp.c_proj"]


PROMPTS = {
    # Base models without a template of their own: plain User / Assistant lines.
    "GPT2LMHeadModel": "S\n\nUser: Q?\nAssistant:\n",
    "GPTNeoXForCausalLM": "S\n\nUser: Q?\nAssistant:\n",
    "OPTForCausalLM": "S\n\nUser: Q?\nAssistant:\n",
    "Starcoder2ForCausalLM": "S\n\n### Instruction\nQ?\n\n### Response\n",
    "StableLmForCausalLM": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
    "<|im_start|>assistant\n",
}


@pytest.mark.parametrize("arch", sorted(PROMPTS))
def test_the_new_families_chat_formats(make_tiny, arch: str) -> None:
    _, tok, _ = make_tiny(arch)
    assert chat.render_prompt(tok, "Q?", "S") == PROMPTS[arch]
    fmt = chat.chat_format(tok)
    assert fmt.system_role and fmt.turn_end == (
        "<|im_end|>" if "Stable" in arch else "<|endoftext|>"
    )
    _, tok, _ = make_tiny("Gemma3ForCausalLM")
    assert not chat.chat_format(tok).system_role  # Gemma's template folds the system prompt


def test_the_tiny_recipes_keep_only_what_a_class_uses(tiny_shape: zoo.TinyShape) -> None:
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    gpt2 = zoo.tiny_config("GPT2LMHeadModel", tiny_shape, 400, ids, {})
    assert (gpt2.n_embd, gpt2.n_layer, gpt2.n_head, gpt2.n_inner) == (32, 2, 2, 64)
    assert not hasattr(gpt2, "num_key_value_heads")
    opt = zoo.tiny_config("OPTForCausalLM", tiny_shape, 400, ids, {})
    assert (opt.ffn_dim, opt.word_embed_proj_dim) == (64, 32)
    neox = zoo.tiny_config("GPTNeoXForCausalLM", tiny_shape, 400, ids, {})
    assert neox.intermediate_size == 64 and not hasattr(neox, "num_key_value_heads")
