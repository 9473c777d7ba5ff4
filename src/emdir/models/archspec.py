"""What one registry entry says about a model class: its tiny recipe, chat format and block layout.

A decoder block holds logical projections (q, k, v, o of attention; gate, up, down of the
MLP). An `ArchSpec` says where each one lives below the block, which the class lacks, and
which modules carry several at once, and everything that names modules (LoRA's
`target_modules` regex, the check that every requested projection was adapted, the rank-1
reading) derives from that, so a new layout is an entry, not a branch in the code.
The registry of entries is `emdir.models.registry.ARCHS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emdir.errors import EmdirError
from emdir.models.chat import ChatFamily

# The logical projections LoRA can target, as config/schema.yaml names them.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Those of the attention sub-module; the rest belong to the MLP.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TinyRecipe:
    """How to build a tiny random-init config of one class.

    The shared keyword arguments (vocabulary, width, depth, heads, head_dim, positions, tied
    embeddings, token ids: `zoo._text_kwargs`) go to `config_class`, less those in `drop`
    (the ones a class has no use for, such as grouped-query heads on GPT-2); `extra` adds
    what the class needs on top, computed from them (a class's own name for the MLP width);
    `wrap` turns that text config into the class's own config (multimodal classes), given the
    tokenizer's ids (e.g. `image_token_id`).
    """

    config_class: str
    extra: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    wrap: Callable[[Any, Mapping[str, Any]], Any] | None = None
    drop: tuple[str, ...] = ()

    def config(self, kwargs: Mapping[str, Any], ids: Mapping[str, Any]) -> Any:
        import transformers

        more = self.extra(kwargs) if self.extra else {}
        shared = {k: v for k, v in kwargs.items() if k not in self.drop}
        cfg = getattr(transformers, self.config_class)(**shared, **more)
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
    # the layout of most text-only decoders in transformers.
    layer_paths: tuple[str, ...] = ("model.layers",)
    # Path to the text config inside the model config ("" = the config itself).
    text_config_attr: str = ""
    # Regex for the decoder-layer list as peft sees module names: LoRA targets are built under
    # it, so only language-model projections are wrapped, never a vision tower.
    lora_layer_prefix: str = r".*model\.layers"
    # The sub-modules of a decoder block that hold the attention projections (q, k, v, o) and
    # the MLP projections (gate, up, down); "" = they sit in the block itself (OPT's fc1, fc2).
    attention: str = "self_attn"
    mlp: str = "mlp"
    # Modules that carry logical projections under another name, each with the projections
    # it carries: fused ones (Phi 3's qkv_proj = q, k and v) and renamed ones (GPT-NeoX's
    # dense_4h_to_h = down). A key is the module's name inside its sub-module (`attention` or
    # `mlp`, by the projections it carries), or its dotted path below the block where a name
    # alone is ambiguous (GPT-2 has a c_proj in attn and one in mlp). A projection not listed
    # is a module of its own name.
    fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The logical projections the class has, in PROJECTIONS order: LoRA's default targets
    # (GPT-NeoX, GPT-2 and Starcoder2 have no gate).
    projections: tuple[str, ...] = PROJECTIONS
    # True where the class stores projection weights as [in, out] (GPT-2's Conv1D); peft
    # must then transpose its update (LoraConfig's fan_in_fan_out).
    fan_in_fan_out: bool = False

    def __post_init__(self) -> None:
        where = f"the ArchSpec entry {self.name} (emdir/models/registry.py)"
        odd = [p for p in self.projections if p not in PROJECTIONS]
        if odd or not self.projections:
            raise EmdirError(
                f"{where} lists projections {odd or []}; use some of {', '.join(PROJECTIONS)}"
            )
        seen: dict[str, str] = {}
        for module, parts in self.fused.items():
            for p in parts:
                if p not in self.projections:
                    raise EmdirError(
                        f"{where}: module {module} carries {p}, which its projections "
                        f"({', '.join(self.projections)}) lack; add it there or fix the module"
                    )
                if p in seen:
                    raise EmdirError(f"{where}: {p} is carried by both {seen[p]} and {module}")
                seen[p] = module
            sides = {p in ATTENTION_PROJECTIONS for p in parts}
            if "." not in module and len(sides) > 1:
                raise EmdirError(
                    f"{where}: module {module} carries attention and MLP projections; "
                    "give its path below the decoder block instead"
                )
        paths = [self.path_of(m) for m in self.modules()]
        if len(set(paths)) < len(paths):
            raise EmdirError(
                f"{where}: two projections resolve to one module path ({', '.join(paths)}); "
                "key `fused` by path below the block (e.g. attn.c_proj, mlp.c_proj)"
            )

    def module_of(self, projection: str) -> str:
        """The module that carries a logical projection on this class."""
        for module, parts in self.fused.items():
            if projection in parts:
                return module
        return projection

    def projections_of(self, module: str) -> tuple[str, ...]:
        """The logical projections a module carries."""
        return tuple(self.fused.get(module, (module,)))

    def modules(self) -> tuple[str, ...]:
        """Every projection module of a block, as the entry names them, in PROJECTIONS order."""
        return tuple(dict.fromkeys(self.module_of(p) for p in self.projections))

    def path_of(self, module: str) -> str:
        """Where a projection module (as the entry names it) sits below a decoder block."""
        if "." in module:
            return module
        attention = self.projections_of(module)[0] in ATTENTION_PROJECTIONS
        sub = self.attention if attention else self.mlp
        return f"{sub}.{module}" if sub else module

    def lora_modules(self, modules: Sequence[str] | None = None) -> tuple[str, ...]:
        """The module names LoRA wraps for these logical projections (None = every projection
        the class has), in request order.

        A fused module is adapted as a whole, so it must be requested whole: asking for
        `q_proj` alone on a class that fuses q, k and v into `qkv_proj` is an error rather
        than a silent adapter on k and v too (the adapted set would not be the requested one).
        A projection the class lacks (a gate on GPT-2) is an error naming what it has.
        """
        if modules is None:
            modules = self.projections
        bad = sorted(set(modules) - set(PROJECTIONS))
        if bad or not modules:
            raise EmdirError(
                f"LoRA target modules {bad or list(modules)} are not projections; "
                f"use some of {', '.join(PROJECTIONS)}"
            )
        lacking = [p for p in PROJECTIONS if p in modules and p not in self.projections]
        if lacking:
            raise EmdirError(
                f"{self.name} has no {', '.join(lacking)}; it has {', '.join(self.projections)}. "
                "Drop the others from finetune lora.target_modules, or leave it unset for "
                "every projection the class has"
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

    def _compact(self) -> bool:
        """Whether `(attention|mlp)\\.(names)` matches exactly the modules it is meant to: both
        sub-modules named, every module keyed by name, no name on both sides."""
        if not (self.attention and self.mlp) or any("." in m for m in self.modules()):
            return False
        sides = [
            {m for m in self.modules() if (self.projections_of(m)[0] in ATTENTION_PROJECTIONS) == a}
            for a in (True, False)
        ]
        return not sides[0] & sides[1]

    def lora_targets(
        self, modules: Sequence[str] | None = None, layers: Sequence[int] | None = None
    ) -> str:
        """peft `target_modules` regex: these projections (None = the class's own), in these
        decoder blocks (None = all).

        `modules` are logical projection names (see `lora_modules` for fused classes);
        `layers` are decoder-block indices (0-based), as everywhere in emdir.
        """
        names = self.lora_modules(modules)
        if layers is not None and (not layers or any(int(i) < 0 for i in layers)):
            raise EmdirError(f"LoRA layers {list(layers)} must be non-negative block indices")
        blocks = r"\d+" if layers is None else "(" + "|".join(str(int(i)) for i in layers) + ")"
        if self._compact():
            subs = f"({re.escape(self.attention)}|{re.escape(self.mlp)})"
            mods = "|".join(re.escape(m) for m in names)
            return rf"{self.lora_layer_prefix}\.{blocks}\.{subs}\.({mods})"
        paths = "|".join(re.escape(self.path_of(m)) for m in names)
        return rf"{self.lora_layer_prefix}\.{blocks}\.({paths})"

    @property
    def lora_target_regex(self) -> str:
        """Every projection of the class in every decoder block."""
        return self.lora_targets()

    def split_site(self, name: str) -> tuple[str, int, str] | None:
        """(layer-list path, decoder block, path below the block) of a module name under the
        LoRA prefix, else None."""
        m = re.fullmatch(rf"(?P<stem>{self.lora_layer_prefix})\.(?P<block>\d+)\.(?P<path>.+)", name)
        return (m["stem"], int(m["block"]), m["path"]) if m else None

    def module_at(self, path: str) -> str:
        """The projection module (as the entry names it) at a path below a block; a path that
        is no projection module of the class is returned as it is."""
        for module in self.modules():
            if self.path_of(module) == path:
                return module
        return path

    def lora_site(self, name: str) -> tuple[int, str] | None:
        """(decoder block, module) of a peft module name under the LoRA prefix, else None."""
        site = self.split_site(name)
        return (site[1], self.module_at(site[2])) if site else None
