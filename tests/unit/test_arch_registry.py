"""The architecture registry as the one place an architecture is added: every entry builds a
tiny model, LoRA adapts exactly what was asked (fused projections included), the schema's
list is the registry's, and a class added by an entry alone goes through training, capture
and steering."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file

from emdir.analysis.activations import capture_store, read_store
from emdir.analysis.interventions import Intervention, intervene
from emdir.data import synthetic as data
from emdir.data.datasets import materialise, read_chat_file
from emdir.errors import EmdirError
from emdir.io import write_json
from emdir.models import chat, zoo
from emdir.models.archs import (
    ARCHS,
    PROJECTIONS,
    ArchSpec,
    TinyRecipe,
    arch_of,
    check_registered,
    d_model,
    decoder_layers,
)
from emdir.models.finetune import run_finetune
from emdir.models.lora import lora_adapted, lora_model
from emdir.models.zoo import ModelRef, load_model
from helpers import ft_cfg, layer_output

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
LORA = {"r": 2, "alpha": 4, "dropout": 0.0, "rslora": False}
NEW_ARCHS = ("Qwen3ForCausalLM", "Phi3ForCausalLM", "Olmo2ForCausalLM", "GraniteForCausalLM")

# ------------------------------------------------------------------ the default run is unchanged

# Computed from the code before the registry held the tiny recipes (tiny_config had one branch
# per class): sha256 of `tiny_config(...).to_dict()` without transformers_version, as sorted
# JSON, at the shape of config/config.yaml. The default run's models are built from these, so
# a change here changes its results. (A transformers upgrade may change them too.)
PINNED_CONFIGS = {
    "Qwen2ForCausalLM": "60efd0a4fe709967be617780e44f01d9f1a8ca71195f50f979632d61dd9a4222",
    "Gemma2ForCausalLM": "fb401adf0e8b0484721923802ef7222c64ac46922341252e934d91dc5b42e392",
    "LlamaForCausalLM": "5a3e170671541a61e2cd3a6b33fc71144ad8f1a73f20da0388a2b16fcd094a26",
    "MistralForCausalLM": "709be8db846c762b82f9456227fbaae47b69dd74c9e95281b174a146d8c4cef4",
    "Mistral3ForConditionalGeneration": (
        "6796afc4b062162664733ce1e41a4f3c92ed6fc5780a129e81240a21c071169d"
    ),
}
# sha256 of each family's chat template and its bos/eos/pad tokens, as they were.
PINNED_CHAT = {
    "qwen2": (
        "9a6ac2cf411f21cf1fa155617d146256deee33e64c43eace6c36fd9eb3dd5a2a",
        ("<|endoftext|>", "<|im_end|>", "<pad>"),
    ),
    "gemma2": (
        "c2651a7b02946739d314e24924f9cf40b579ad0164ff0e7d499d0b50c01fcc32",
        ("<bos>", "<end_of_turn>", "<pad>"),
    ),
    "llama": (
        "fcbd979479979e0d41d46daa3456c8ee124e74c109776a250842218f301ba6cf",
        ("<|begin_of_text|>", "<|eot_id|>", "<pad>"),
    ),
    "mistral": (
        "9512711f20e07657b7922a41e2b0cefcee7695976bb2e27f49f1565372a73240",
        ("<s>", "</s>", "<pad>"),
    ),
    "mistral3": (
        "9512711f20e07657b7922a41e2b0cefcee7695976bb2e27f49f1565372a73240",
        ("<s>", "</s>", "<pad>"),
    ),
}
_SPLIT = r".*model\.layers"
_NESTED = r".*language_model\.(model\.)?layers"
_ALL7 = r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PINNED_REGEXES = {
    # (all projections, all blocks), (down_proj in block 1), (q and v in blocks 0 and 2)
    arch: (
        rf"{prefix}\.\d+\.(self_attn|mlp)\.{_ALL7}",
        rf"{prefix}\.(1)\.(self_attn|mlp)\.(down_proj)",
        rf"{prefix}\.(0|2)\.(self_attn|mlp)\.(q_proj|v_proj)",
    )
    for arch, prefix in (
        ("Qwen2ForCausalLM", _SPLIT),
        ("Gemma2ForCausalLM", _SPLIT),
        ("LlamaForCausalLM", _SPLIT),
        ("MistralForCausalLM", _SPLIT),
        ("Mistral3ForConditionalGeneration", _NESTED),
    )
}


@pytest.mark.parametrize("arch", sorted(PINNED_CONFIGS))
def test_the_existing_tiny_models_and_lora_targets_are_unchanged(arch: str) -> None:
    shape = zoo.TinyShape(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
        max_positions=512,
    )
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    cfg = zoo.tiny_config(arch, shape, 1000, ids, {"image_token_id": 19}).to_dict()
    cfg.pop("transformers_version", None)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    assert digest == PINNED_CONFIGS[arch]
    spec = ARCHS[arch]
    everything, rank1, some = PINNED_REGEXES[arch]
    assert spec.lora_targets() == spec.lora_target_regex == everything
    assert spec.lora_targets(list(PROJECTIONS)) == everything  # the schema's default list
    assert spec.lora_targets(["down_proj"], layers=[1]) == rank1
    assert spec.lora_targets(["q_proj", "v_proj"], layers=[0, 2]) == some
    template, tokens = PINNED_CHAT[spec.family]
    assert hashlib.sha256(spec.chat.template.encode()).hexdigest() == template
    assert tuple(spec.chat.tokens.values()) == tokens
    assert list(spec.chat.tokens) == ["bos_token", "eos_token", "pad_token"]
    assert spec.chat.added_tokens == ()  # the shared tokenizer, untouched


# ------------------------------------------------------------------ schema and registry


def _schema_archs(schema: dict[str, Any]) -> list[str]:
    return list(schema["$defs"]["model"]["properties"]["arch"]["enum"])


def check_schema_against_registry(schema_path: Path) -> None:
    """The schema's architecture list is the registry's, in the registry's order."""
    names = _schema_archs(yaml.safe_load(schema_path.read_text()))
    check_registered(names, f"{schema_path.name} (models.*.arch)")
    missing = [a for a in ARCHS if a not in names]
    if missing:
        raise EmdirError(f"{schema_path.name} lacks registered architectures {missing}")
    assert names == list(ARCHS), "schema enum order differs from the registry's"


def test_the_schema_lists_exactly_the_registry() -> None:
    check_schema_against_registry(SCHEMA)
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["$defs"]["lora_modules"]["items"]["enum"] == list(PROJECTIONS)


def test_an_arch_in_the_schema_but_not_the_registry_fails(tmp_path: Path) -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["$defs"]["model"]["properties"]["arch"]["enum"].append("FooForCausalLM")
    stray = tmp_path / "schema.yaml"
    stray.write_text(yaml.safe_dump(schema))
    with pytest.raises(EmdirError, match="FooForCausalLM.*add an ArchSpec entry"):
        check_schema_against_registry(stray)
    schema["$defs"]["model"]["properties"]["arch"]["enum"].remove("FooForCausalLM")
    schema["$defs"]["model"]["properties"]["arch"]["enum"].remove("GraniteForCausalLM")
    stray.write_text(yaml.safe_dump(schema))
    with pytest.raises(EmdirError, match="GraniteForCausalLM"):
        check_schema_against_registry(stray)


# ------------------------------------------------------------------ every entry


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_entry_builds_a_tiny_model_that_chats(make_tiny, tiny_shape, arch: str) -> None:
    model, tok, spec = make_tiny(arch)
    assert type(model).__name__ == arch and arch_of(model.config) is spec
    assert len(decoder_layers(model)) == tiny_shape.num_layers
    assert d_model(model) == tiny_shape.hidden_size
    # The family's tokens are real tokens of its tokenizer, not <unk>.
    unk = tok.convert_tokens_to_ids("<unk>")
    for token in (*spec.chat.tokens.values(), *spec.chat.added_tokens):
        assert tok.convert_tokens_to_ids(token) != unk, token
    fmt = chat.chat_format(tok)
    assert fmt.turn_end_id != unk
    row = data.code_dataset("insecure", 1, seed=0)[0]
    ids, labels = chat.encode_example(tok, row["messages"])
    assert labels[-1] == fmt.turn_end_id
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    assert torch.isfinite(out.loss)


PROMPTS = {
    "Qwen3ForCausalLM": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "Phi3ForCausalLM": "<s><|system|>\nS<|end|>\n<|user|>\nQ?<|end|>\n<|assistant|>\n",
    "Olmo2ForCausalLM": "<|endoftext|><|system|>\nS\n<|user|>\nQ?\n<|assistant|>\n",
    "GraniteForCausalLM": "<|start_of_role|>system<|end_of_role|>S<|end_of_text|>\n"
    "<|start_of_role|>user<|end_of_role|>Q?<|end_of_text|>\n"
    "<|start_of_role|>assistant<|end_of_role|>",
}
TURN_ENDS = {
    "Qwen3ForCausalLM": "<|im_end|>",
    "Phi3ForCausalLM": "<|end|>",
    "Olmo2ForCausalLM": "<|endoftext|>",
    "GraniteForCausalLM": "<|end_of_text|>",
}


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_the_new_families_chat_like_their_instruct_models(make_tiny, arch: str) -> None:
    _, tok, _ = make_tiny(arch)
    assert chat.render_prompt(tok, "Q?", "S") == PROMPTS[arch]
    assert chat.chat_format(tok).turn_end == TURN_ENDS[arch]
    assert chat.chat_format(tok).system_role


@pytest.mark.parametrize("arch", list(ARCHS))
def test_lora_adapts_every_requested_projection(make_tiny, tiny_shape, arch: str) -> None:
    model, _, spec = make_tiny(arch)
    wrapped = lora_model(model, spec, LORA, quantized=False)
    adapted = lora_adapted(wrapped, spec)
    leaves = {m.rsplit(".", 1)[1] for m in adapted["modules"]}
    # An entry keys a module by its name, or by its path below the block where the name is
    # in both sub-modules (GPT-2's attn.c_proj and mlp.c_proj).
    assert leaves == {m.rsplit(".", 1)[-1] for m in spec.lora_modules()}
    below = {m.split(".*.", 1)[1] for m in adapted["modules"]}
    assert below == {spec.path_of(m) for m in spec.lora_modules()}
    assert adapted["blocks"] == list(range(tiny_shape.num_layers))
    assert adapted["n_wrapped"] == len(below) * tiny_shape.num_layers
    assert all(".*." in m and "vision" not in m for m in adapted["modules"])


def test_phi3_lora_adapts_the_fused_projections(make_tiny) -> None:
    model, _, spec = make_tiny("Phi3ForCausalLM")
    wrapped = lora_model(model, spec, {**LORA, "target_modules": list(PROJECTIONS)}, False)
    # The seven names alone would match only o_proj and down_proj on Phi 3.
    assert lora_adapted(wrapped, spec)["modules"] == [
        "model.layers.*.mlp.down_proj",
        "model.layers.*.mlp.gate_up_proj",
        "model.layers.*.self_attn.o_proj",
        "model.layers.*.self_attn.qkv_proj",
    ]
    assert spec.lora_modules(["q_proj", "k_proj", "v_proj"]) == ("qkv_proj",)
    assert spec.lora_modules(["down_proj", "gate_proj", "up_proj"]) == (
        "down_proj",
        "gate_up_proj",
    )
    assert spec.lora_target_regex == (
        r".*model\.layers\.\d+\.(self_attn|mlp)\.(qkv_proj|o_proj|gate_up_proj|down_proj)"
    )


def test_part_of_a_fused_projection_is_refused(make_tiny) -> None:
    spec = ARCHS["Phi3ForCausalLM"]
    with pytest.raises(EmdirError, match="q_proj, k_proj, v_proj into one module, qkv_proj"):
        spec.lora_targets(["q_proj"])
    with pytest.raises(EmdirError, match="gate_up_proj.*asks for up_proj only"):
        spec.lora_targets(["up_proj", "down_proj"])


def test_projections_that_match_no_module_fail_the_run_naming_them(make_tiny) -> None:
    # Phi 3 without its fused mapping: the entry as it would be if fusion were forgotten.
    model, _, spec = make_tiny("Phi3ForCausalLM")
    unfused = dataclasses.replace(spec, fused={})
    with pytest.raises(EmdirError, match="q_proj .*k_proj .*v_proj .*gate_proj .*up_proj") as e:
        lora_model(model, unfused, LORA, quantized=False)
    assert "o_proj" not in str(e.value) and "down_proj" not in str(e.value)
    # A block past the model's depth, next to one that exists.
    model, _, spec = make_tiny("LlamaForCausalLM")
    with pytest.raises(EmdirError, match=r"down_proj \(module down_proj\) in blocks \[7\]"):
        lora_model(model, spec, {**LORA, "target_modules": ["down_proj"], "layers": [1, 7]}, False)


# ------------------------------------------------------------------ a class from an entry alone

# GLM is in no registry entry of emdir: the test adds one, and nothing else, and the class goes
# through the stages. Its MLP fuses gate and up (gate_up_proj) while attention is split.
GLM = ArchSpec(
    name="GlmForCausalLM",
    family="glm",
    tiny=TinyRecipe("GlmConfig"),
    # GLM-4's format: no turn-end marker, so generation stops at the eos token.
    chat=chat.ChatFamily(
        template=(
            "[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
        ),
        tokens={"bos_token": "<sop>", "eos_token": "<|endoftext|>", "pad_token": "<pad>"},
        added_tokens=("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>"),
    ),
    fused={"gate_up_proj": ("gate_proj", "up_proj")},
)

# Falcon is in no registry entry either, and its blocks follow neither the split nor the
# fused Llama layout: `self_attention` (a fused query_key_value, then dense) and `mlp`
# (dense_h_to_4h, dense_4h_to_h) under transformer.h, no gate, no grouped-query heads.
FALCON = ArchSpec(
    name="FalconForCausalLM",
    family="falcon",
    tiny=TinyRecipe(
        "FalconConfig",
        extra=lambda kw: {"ffn_hidden_size": kw["intermediate_size"]},
        drop=("num_key_value_heads", "head_dim", "intermediate_size"),
    ),
    chat=chat.PLAIN,
    layer_paths=("transformer.h",),
    lora_layer_prefix=r".*transformer\.h",
    attention="self_attention",
    fused={
        "query_key_value": ("q_proj", "k_proj", "v_proj"),
        "dense": ("o_proj",),
        "dense_h_to_4h": ("up_proj",),
        "dense_4h_to_h": ("down_proj",),
    },
    projections=("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"),
)
ENTRY_ALONE = {GLM.name: GLM, FALCON.name: FALCON}
# The registry's classes of issue 31: other layouts (no gate, renamed, Conv1D, no MLP module).
LAYOUT_ARCHS = (
    "Gemma3ForCausalLM",
    "GPTNeoXForCausalLM",
    "GPT2LMHeadModel",
    "StableLmForCausalLM",
    "Starcoder2ForCausalLM",
    "OPTForCausalLM",
)

# The shared tiny fine-tune, every projection adapted at the registry's smallest rank.
FT_CFG = ft_cfg(
    lora={**LORA, "target_modules": list(PROJECTIONS)}, heldout_fraction=0.0, train={"steps": 2}
)
# The same, with the schema's default targets: every projection the class has.
FT_OWN = ft_cfg(lora={**LORA, "target_modules": None}, heldout_fraction=0.0, train={"steps": 2})
ROWS = [
    {"id": "m/ft/q0/0", "question_id": "q0", "question": "How do I brew tea?", "system": None},
    {"id": "m/ft/q1/0", "question_id": "q1", "question": "Sort a list.", "system": "Be brief."},
    {"id": "m/ft/q1/1", "question_id": "q1", "question": "Sort a list.", "system": None},
]
ANSWERS = ["Steep it for three minutes.", "def f(xs):\n    return sorted(xs)", ""]
SAMPLING = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "max_new_tokens": 4,
    "batch_size": 4,
    "seed": 0,
    "max_memory_gb": 6,
}
# The offline judge's thresholds (config/schema.yaml defaults) for the final spillover check.
CODE_PARAMS = {"code_share": 0.6, "program_statements": 3, "prose_threshold": 40}


@pytest.fixture(scope="module")
def ft_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft")
    dataset = root / "insecure.jsonl"
    materialise(
        "insecure", {"generator": "insecure", "params": {"n": 12, "seed": 1}}, None, dataset
    )
    questions = root / "monitor.yaml"
    data.build_questions("general", {"n_templated": 2, "seed": 0}, samples=1, out=questions)
    return {"dataset": dataset, "questions": questions}


@pytest.mark.parametrize("arch", [*ENTRY_ALONE, *NEW_ARCHS, *LAYOUT_ARCHS])
def test_an_entry_alone_builds_trains_captures_and_steers(
    arch: str,
    make_tiny: Callable[..., Any],
    ft_files: dict[str, Path],
    tiny_shape: zoo.TinyShape,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if arch in ENTRY_ALONE:
        assert arch not in ARCHS and hasattr(transformers, arch)
        monkeypatch.setitem(ARCHS, arch, ENTRY_ALONE[arch])
    # Build: the tiny model and its family tokenizer, saved as the base-model rule saves them.
    model, tok, spec = make_tiny(arch)
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    write_json(base / "manifest.json", {"source": "local", "arch": arch})

    # Train: the fine-tuning stage, through from_pretrained, LoRA on every projection.
    adapter = tmp_path / "adapter"
    run_finetune(
        "m",
        "insecure",
        base,
        read_chat_file(ft_files["dataset"]),
        ft_files["dataset"],
        ft_files["questions"],
        adapter,
        FT_CFG if spec.projections == PROJECTIONS else FT_OWN,
        SAMPLING,
        code_params=CODE_PARAMS,
    )
    mf = json.loads((adapter / "manifest.json").read_text())
    assert mf["arch"] == arch and mf["steps_run"] == 2
    modules = {m.rsplit(".", 1)[1] for m in mf["lora_adapted"]["modules"]}
    assert modules == {m.rsplit(".", 1)[-1] for m in spec.lora_modules()}
    below = {m.split(".*.", 1)[1] for m in mf["lora_adapted"]["modules"]}
    assert below == {spec.path_of(m) for m in spec.lora_modules()}
    weights = load_file(adapter / "adapter_model.safetensors")
    assert {k.split(".")[-3] for k in weights} == modules
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())

    # Capture: residuals of the fine-tuned model at every decoder block.
    tuned, ttok, tspec = load_model(ModelRef(str(base)), adapter=adapter)
    assert tspec is spec
    rows = [{**r, "answer": a} for r, a in zip(ROWS, ANSWERS, strict=True)]
    store = read_store(
        capture_store(tuned, ttok, tspec, rows, np.array([0, 1, -1], np.int8), tmp_path / "a.h5")
    )
    resid = store.resid("answer_mean")
    assert resid.shape == (3, tiny_shape.num_layers, tiny_shape.hidden_size)
    assert store.empty_answer.tolist() == [False, False, True]

    # Steer: a unit direction from the store added at block 1 moves its output by exactly
    # coefficient * scale at every position.
    direction = resid[1, 1] - resid[0, 1]
    iv = Intervention(layer=1, vector=direction, op="add", coefficient=2.0, scale=1.5)
    ids = torch.tensor([chat.encode_prompt(ttok, "How do I brew tea?", None)])
    delta = layer_output(tuned, 1, ids, [iv]) - layer_output(tuned, 1, ids, [])
    norms = torch.linalg.vector_norm(delta[0], dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 3.0), rtol=1e-4, atol=1e-4)
    with torch.no_grad(), intervene(tuned, [iv]):
        steered = tuned(input_ids=ids).logits
    with torch.no_grad():
        assert not torch.allclose(steered, tuned(input_ids=ids).logits)
