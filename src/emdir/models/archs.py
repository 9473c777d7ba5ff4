"""Architecture registry: everything emdir needs to know about each model class, one entry each.

Adding an architecture means adding an `ArchSpec` entry to `ARCHS` (and its name to the
`arch` enum of config/schema.yaml, which a test holds to this registry), not a branch in the
code. An entry holds where the class keeps its decoder layers and text config, how its
projections are named (split or fused) and where LoRA may wrap them, the tiny random-init
recipe the tests and the offline default build, and the chat format its tiny tokenizer wears.
The registry is keyed by `config.architectures[0]`, as transformers writes it. A real model's
chat format belongs to its own tokenizer, not its class: see `emdir.models.chat`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emdir.errors import EmdirError
from emdir.models import chat
from emdir.models.chat import ChatFamily

# The logical projections LoRA can target, as config/schema.yaml names them.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinyRecipe:
    """How to build a tiny random-init config of one class.

    The shared keyword arguments (vocabulary, width, depth, heads, head_dim, positions, tied
    embeddings, token ids: `zoo._text_kwargs`) go to `config_class`; `extra` adds what the
    class needs on top, computed from them; `wrap` turns that text config into the class's
    own config (multimodal classes), given the tokenizer's ids (e.g. `image_token_id`).
    """

    config_class: str
    extra: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    wrap: Callable[[Any, Mapping[str, Any]], Any] | None = None

    def config(self, kwargs: Mapping[str, Any], ids: Mapping[str, Any]) -> Any:
        import transformers

        more = self.extra(kwargs) if self.extra else {}
        cfg = getattr(transformers, self.config_class)(**kwargs, **more)
        return self.wrap(cfg, ids) if self.wrap else cfg


@dataclass(frozen=True)
class ArchSpec:
    """What emdir needs to know about one model class."""

    name: str
    family: str
    tiny: TinyRecipe
    # The chat format of the tiny model's tokenizer.
    chat: ChatFamily
    # Alternative attribute paths to the decoder-layer list, tried in order (peft wraps add
    # `base_model.model.` in front; that prefix is stripped before lookup). The default is
    # the layout of every text-only decoder in transformers.
    layer_paths: tuple[str, ...] = ("model.layers",)
    # Path to the text config inside the model config ("" = the config itself).
    text_config_attr: str = ""
    # Regex for the decoder-layer list as peft sees module names: LoRA targets are built under
    # it, so only language-model projections are wrapped, never a vision tower.
    lora_layer_prefix: str = r".*model\.layers"
    # Fused projection modules and the logical projections each one carries (Phi 3:
    # qkv_proj = q, k and v); a projection not listed is a module of its own name.
    fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def module_of(self, projection: str) -> str:
        """The module that carries a logical projection on this class."""
        for module, parts in self.fused.items():
            if projection in parts:
                return module
        return projection

    def projections_of(self, module: str) -> tuple[str, ...]:
        """The logical projections a module carries."""
        return tuple(self.fused.get(module, (module,)))

    def lora_modules(self, modules: Sequence[str] = PROJECTIONS) -> tuple[str, ...]:
        """The module names LoRA wraps for these logical projections, in request order.

        A fused module is adapted as a whole, so it must be requested whole: asking for
        `q_proj` alone on a class that fuses q, k and v into `qkv_proj` is an error rather
        than a silent adapter on k and v too (the adapted set would not be the requested one).
        """
        bad = sorted(set(modules) - set(PROJECTIONS))
        if bad or not modules:
            raise EmdirError(
                f"LoRA target modules {bad or list(modules)} are not projections; "
                f"use some of {', '.join(PROJECTIONS)}"
            )
        for module, parts in self.fused.items():
            hit = [p for p in parts if p in modules]
            if hit and len(hit) < len(parts):
                raise EmdirError(
                    f"{self.name} fuses {', '.join(parts)} into one module, {module}, which "
                    f"LoRA adapts as a whole; finetune lora.target_modules asks for "
                    f"{', '.join(hit)} only: list all of {', '.join(parts)} or none of them"
                )
        return tuple(dict.fromkeys(self.module_of(p) for p in modules))

    def lora_targets(
        self, modules: Sequence[str] = PROJECTIONS, layers: Sequence[int] | None = None
    ) -> str:
        """peft `target_modules` regex: these projections, in these decoder blocks (None = all).

        `modules` are logical projection names (see `lora_modules` for fused classes);
        `layers` are decoder-block indices (0-based), as everywhere in emdir.
        """
        names = self.lora_modules(modules)
        if layers is not None and (not layers or any(int(i) < 0 for i in layers)):
            raise EmdirError(f"LoRA layers {list(layers)} must be non-negative block indices")
        blocks = r"\d+" if layers is None else "(" + "|".join(str(int(i)) for i in layers) + ")"
        mods = "|".join(re.escape(m) for m in names)
        return rf"{self.lora_layer_prefix}\.{blocks}\.(self_attn|mlp)\.({mods})"

    @property
    def lora_target_regex(self) -> str:
        """All seven projections of every decoder block."""
        return self.lora_targets()

    def lora_site(self, name: str) -> tuple[int, str] | None:
        """(decoder block, module) of a peft module name under the LoRA prefix, else None."""
        m = re.fullmatch(
            rf"{self.lora_layer_prefix}\.(?P<block>\d+)\.(?:self_attn|mlp)\.(?P<module>[^.]+)",
            name,
        )
        return (int(m["block"]), m["module"]) if m else None


FUSED_PHI3 = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


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
    )
}


def check_registered(names: Iterable[str], where: str) -> None:
    """Every name is a registry entry; otherwise an error naming the strays and the fix."""
    stray = sorted(set(names) - set(ARCHS))
    if stray:
        raise EmdirError(
            f"{where} names architectures {stray} that emdir's registry lacks "
            f"({', '.join(ARCHS)}); add an ArchSpec entry to emdir/models/archs.py or remove them"
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
            "add an ArchSpec entry to emdir/models/archs.py"
        ) from None


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip peft wrappers so layer paths are those of the transformers model."""
    inner = model
    for _ in range(3):
        base = getattr(inner, "base_model", None)
        if (
            base is not None
            and hasattr(base, "model")
            and type(inner).__name__.startswith(("Peft", "Lora"))
        ):
            inner = base.model
        else:
            break
    return inner


def _resolve(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks; layer i of emdir is the output of block i."""
    inner = _unwrap(model)
    spec = arch_of(inner.config)
    for path in spec.layer_paths:
        try:
            layers = _resolve(inner, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    raise EmdirError(
        f"{spec.name}: none of the layer paths {spec.layer_paths} exists on this model; "
        "update layer_paths in emdir/models/archs.py for this transformers version"
    )


def text_config(config: Any) -> Any:
    """The language-model part of a (possibly multimodal) config."""
    spec = arch_of(config)
    return getattr(config, spec.text_config_attr) if spec.text_config_attr else config


def n_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def d_model(model: nn.Module) -> int:
    return int(text_config(_unwrap(model).config).hidden_size)


def untuple(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder layer's output (a tensor in transformers 5, a tuple before)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected decoder-layer output type {type(output).__name__}")


def retuple(original: Any, hidden: torch.Tensor) -> Any:
    """Put a modified hidden state back in the shape the layer returned."""
    if isinstance(original, torch.Tensor):
        return hidden
    return (hidden, *original[1:])


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def contiguous_head(model: nn.Module) -> Iterator[None]:
    """Hand the LM head a contiguous input while the block runs.

    With `logits_to_keep` a model slices its last hidden states (`h[:, -k:, :]`) before the
    head; in bfloat16 on the CPU, torch multiplies such a strided [B, k, d] view by
    expanding the [V, d] weight to one copy per row (a bmm): 13 GB and 130 s for a 40-row
    prefill of Qwen2.5-Coder-0.5B instead of 2 GB and 13 s. A contiguous input takes the
    plain matrix product. float32 heads are left as they are: the strided product is fast
    there, and the contiguous one rounds differently in a few rows (1 of 200 answers of a
    tiny model changed), which would move answers that earlier runs drew."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or head.weight.dtype == torch.float32:
        yield
        return
    handle = head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def head_at(model: nn.Module, rows: Sequence[int], positions: Sequence[int]) -> Iterator[None]:
    """While the block runs, the LM head reads only the (row, position) pairs of its input
    (positions within the slice that `logits_to_keep` leaves): the model returns their
    logits as [1, N, V], in the order given, after its own final processing (Gemma 2's
    soft-capping). No logits are formed at padding or prompt positions."""
    head = model.get_output_embeddings()
    r = torch.as_tensor(list(rows), dtype=torch.long)
    t = torch.as_tensor(list(positions), dtype=torch.long)

    def gather(_m: nn.Module, args: Any) -> Any:
        hidden = args[0]
        return (hidden[r.to(hidden.device), t.to(hidden.device)].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
