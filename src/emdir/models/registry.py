"""The architecture registry's entries: one `ArchSpec` per model class, keyed by
`config.architectures[0]` as transformers writes it.

Adding an architecture means adding an entry to `ARCHS` here (and its name to the `arch` enum
of config/schema.yaml, which a test holds to this registry), not a branch in the code. This
module imports neither torch nor transformers, so the workflow reads it when it plans jobs
(each model's LoRA targets are checked and resolved against its class there); what needs a
model object is in `emdir.models.archs`, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from emdir.errors import EmdirError
from emdir.models import chat
from emdir.models.archspec import ArchSpec, TinyRecipe

FUSED_PHI3 = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
# Classes with a plain two-layer MLP (up, then down) and no gate.
NO_GATE = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
# Shared keyword arguments of the tiny recipe that classes without grouped-query attention
# (or with their own name for the MLP width) have no use for.
NO_GQA = ("num_key_value_heads", "head_dim")


def _gemma2_extra(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "query_pre_attn_scalar": kw["head_dim"],
        "sliding_window": kw["max_position_embeddings"],
    }


def _ministral3_extra(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            # Ministral 3 attention reads these even without YaRN scaling.
            "llama_4_scaling_beta": 0.1,
            "original_max_position_embeddings": kw["max_position_embeddings"],
        }
    }


def _mistral3_wrap(text: Any, ids: Mapping[str, Any]) -> Any:
    import transformers

    vision = transformers.PixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        head_dim=16,
        image_size=28,
        patch_size=14,
    )
    return transformers.Mistral3Config(
        text_config=text,
        vision_config=vision,
        image_token_index=ids["image_token_id"],
        tie_word_embeddings=True,
    )


def _granite_extra(kw: Mapping[str, Any]) -> dict[str, Any]:
    # Granite 3's scalings (embedding x12, residual branches x0.22, attention 1/head_dim,
    # logits /8), so the tiny model runs the code paths where Granite differs from Llama.
    return {
        "embedding_multiplier": 12.0,
        "residual_multiplier": 0.22,
        "attention_multiplier": 1.0 / kw["head_dim"],
        "logits_scaling": 8.0,
    }


def _gpt2_extra(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {"n_inner": kw["intermediate_size"]}


def _opt_extra(kw: Mapping[str, Any]) -> dict[str, Any]:
    # OPT projects embeddings to word_embed_proj_dim; equal to the width, it projects nothing.
    return {"ffn_dim": kw["intermediate_size"], "word_embed_proj_dim": kw["hidden_size"]}


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            name="Qwen2ForCausalLM",
            family="qwen2",
            tiny=TinyRecipe("Qwen2Config"),
            chat=chat.CHATML,
        ),
        ArchSpec(
            name="Gemma2ForCausalLM",
            family="gemma2",
            tiny=TinyRecipe("Gemma2Config", extra=_gemma2_extra),
            chat=chat.GEMMA,
        ),
        ArchSpec(
            name="LlamaForCausalLM",
            family="llama",
            tiny=TinyRecipe("LlamaConfig"),
            chat=chat.LLAMA3,
        ),
        ArchSpec(
            name="MistralForCausalLM",
            family="mistral",
            tiny=TinyRecipe("MistralConfig"),
            chat=chat.MISTRAL,
        ),
        ArchSpec(
            name="Mistral3ForConditionalGeneration",
            family="mistral3",
            # transformers 5 nests the text model under model.language_model; older
            # releases used language_model.model.
            layer_paths=("model.language_model.layers", "language_model.model.layers"),
            text_config_attr="text_config",
            lora_layer_prefix=r".*language_model\.(model\.)?layers",
            tiny=TinyRecipe("Ministral3Config", extra=_ministral3_extra, wrap=_mistral3_wrap),
            chat=chat.MISTRAL,
        ),
        ArchSpec(
            name="Qwen3ForCausalLM",
            family="qwen3",
            tiny=TinyRecipe("Qwen3Config"),
            chat=chat.CHATML,
        ),
        ArchSpec(
            name="Phi3ForCausalLM",
            family="phi3",
            tiny=TinyRecipe("Phi3Config"),
            chat=chat.PHI3,
            fused=FUSED_PHI3,
        ),
        ArchSpec(
            name="Olmo2ForCausalLM",
            family="olmo2",
            tiny=TinyRecipe("Olmo2Config"),
            chat=chat.TULU,
        ),
        ArchSpec(
            name="GraniteForCausalLM",
            family="granite",
            tiny=TinyRecipe("GraniteConfig", extra=_granite_extra),
            chat=chat.GRANITE,
        ),
        ArchSpec(
            name="Gemma3ForCausalLM",
            family="gemma3",
            tiny=TinyRecipe("Gemma3TextConfig", extra=_gemma2_extra),
            chat=chat.GEMMA,
        ),
        ArchSpec(
            # Pythia. Blocks hold `attention` (a fused query_key_value, then dense) and `mlp`
            # (dense_h_to_4h, dense_4h_to_h) under gpt_neox.layers.
            name="GPTNeoXForCausalLM",
            family="gpt_neox",
            tiny=TinyRecipe("GPTNeoXConfig", drop=NO_GQA),
            chat=chat.PLAIN,
            layer_paths=("gpt_neox.layers",),
            lora_layer_prefix=r".*gpt_neox\.layers",
            attention="attention",
            fused={
                "query_key_value": ("q_proj", "k_proj", "v_proj"),
                "dense": ("o_proj",),
                "dense_h_to_4h": ("up_proj",),
                "dense_4h_to_h": ("down_proj",),
            },
            projections=NO_GATE,
        ),
        ArchSpec(
            # Conv1D projections ([in, out] weights) and a c_proj in both attn and mlp, so
            # those two are keyed by their path below the block.
            name="GPT2LMHeadModel",
            family="gpt2",
            tiny=TinyRecipe("GPT2Config", extra=_gpt2_extra, drop=(*NO_GQA, "intermediate_size")),
            chat=chat.PLAIN,
            layer_paths=("transformer.h",),
            lora_layer_prefix=r".*transformer\.h",
            attention="attn",
            fused={
                "c_attn": ("q_proj", "k_proj", "v_proj"),
                "attn.c_proj": ("o_proj",),
                "c_fc": ("up_proj",),
                "mlp.c_proj": ("down_proj",),
            },
            projections=NO_GATE,
            fan_in_fan_out=True,
        ),
        ArchSpec(
            name="StableLmForCausalLM",
            family="stablelm",
            tiny=TinyRecipe("StableLmConfig"),
            chat=chat.CHATML,
        ),
        ArchSpec(
            name="Starcoder2ForCausalLM",
            family="starcoder2",
            tiny=TinyRecipe("Starcoder2Config"),
            chat=chat.INSTRUCTION,
            fused={"c_fc": ("up_proj",), "c_proj": ("down_proj",)},
            projections=NO_GATE,
        ),
        ArchSpec(
            # fc1 and fc2 sit in the block itself, beside self_attn.
            name="OPTForCausalLM",
            family="opt",
            tiny=TinyRecipe("OPTConfig", extra=_opt_extra, drop=(*NO_GQA, "intermediate_size")),
            chat=chat.PLAIN,
            layer_paths=("model.decoder.layers",),
            lora_layer_prefix=r".*model\.decoder\.layers",
            mlp="",
            fused={"out_proj": ("o_proj",), "fc1": ("up_proj",), "fc2": ("down_proj",)},
            projections=NO_GATE,
        ),
    )
}


def check_registered(names: Iterable[str], where: str) -> None:
    """Every name is a registry entry; otherwise an error naming the strays and the fix."""
    stray = sorted(set(names) - set(ARCHS))
    if stray:
        raise EmdirError(
            f"{where} names architectures {stray} that emdir's registry lacks "
            f"({', '.join(ARCHS)}); add an ArchSpec entry to emdir/models/registry.py or remove them"
        )


def arch_of(config: Any) -> ArchSpec:
    """The registry entry for a transformers config (by `architectures[0]`)."""
    names = getattr(config, "architectures", None) or []
    if not names:
        raise EmdirError(
            "model config has no `architectures` entry; save the model with save_pretrained "
            "or set config.architectures"
        )
    try:
        return ARCHS[names[0]]
    except KeyError:
        raise EmdirError(
            f"architecture {names[0]!r} is not in emdir's registry ({', '.join(sorted(ARCHS))}); "
            "add an ArchSpec entry to emdir/models/registry.py"
        ) from None


def lora_projections(arch: str, requested: Iterable[str] | None, where: str) -> list[str]:
    """The logical projections LoRA adapts on class `arch`: `requested` (a config's
    `target_modules`), or every projection the class has when that is None. A projection
    the class lacks, or part of a fused module, fails naming `where` (the config key), the
    class and what it has."""
    spec = ARCHS[arch]
    if requested is None:
        return list(spec.projections)
    wanted = list(requested)
    try:
        spec.lora_modules(wanted)
    except EmdirError as err:
        raise EmdirError(f"config: {where}: {err}") from None
    return wanted
