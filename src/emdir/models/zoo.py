"""Models: tiny random-init models of the real architecture classes, a local tokenizer, and one loader.

The tiny models are built from transformers configs (nothing downloaded), saved with
`save_pretrained`, and loaded back through `load_model`, the same `from_pretrained`
path that the paper config uses for hub models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from emdir.errors import EmdirError
from emdir.models.archs import ARCHS, ArchSpec, arch_of
from emdir.models.chat import ChatFamily

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<bos>",
    "<eos>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[IMG]",
]


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int) -> None:
    """Train a byte-level BPE tokenizer on local text and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(str(out_dir))


def chat_family(family: str) -> ChatFamily:
    """The chat format of a registry family (`ArchSpec.family`, e.g. "qwen2")."""
    for spec in ARCHS.values():
        if spec.family == family:
            return spec.chat
    families = sorted({spec.family for spec in ARCHS.values()})
    raise EmdirError(f"model family {family!r} is not in emdir's registry ({', '.join(families)})")


def family_tokenizer(tokenizer_dir: str | Path, family: str | ChatFamily) -> Any:
    """The shared tokenizer dressed as one family's: its chat template and special tokens."""
    fam = chat_family(family) if isinstance(family, str) else family
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    if fam.added_tokens:
        tok.add_tokens(list(fam.added_tokens), special_tokens=True)
    for key, value in fam.tokens.items():
        setattr(tok, key, value)
    tok.chat_template = fam.template
    tok.padding_side = "left"
    return tok


@dataclass(frozen=True)
class TinyShape:
    """The size of a tiny model; the same for every family so the comparison is fair (config
    `tiny.shape`, whose defaults config/schema.yaml holds)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_positions: int


def _ids(tok: Any, family: ChatFamily) -> dict[str, int]:
    t = family.tokens
    return {
        "bos_token_id": tok.convert_tokens_to_ids(t["bos_token"]),
        "eos_token_id": tok.convert_tokens_to_ids(t["eos_token"]),
        "pad_token_id": tok.convert_tokens_to_ids(t["pad_token"]),
    }


def _text_kwargs(shape: TinyShape, vocab: int, ids: dict[str, int]) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.hidden_size // shape.num_heads,
        "max_position_embeddings": shape.max_positions,
        "tie_word_embeddings": True,
        **ids,
    }


def tiny_config(
    arch: str, shape: TinyShape, vocab: int, ids: dict[str, int], extra: dict[str, Any]
) -> Any:
    """A transformers config of architecture class `arch` at tiny size (its registry recipe)."""
    spec = ARCHS.get(arch)
    if spec is None:
        raise EmdirError(
            f"no tiny-model recipe for architecture {arch!r}; tiny models exist for "
            f"{', '.join(sorted(ARCHS))}"
        )
    cfg = spec.tiny.config(_text_kwargs(shape, vocab, ids), extra)
    cfg.architectures = [arch]
    return cfg


# Every registry entry has a tiny recipe; the tuple is kept for callers that list them.
TINY_ARCHS = tuple(ARCHS)


def build_tiny(
    arch: str, tokenizer_dir: str | Path, shape: TinyShape, seed: int
) -> tuple[nn.Module, Any]:
    """A random-init model of class `arch` and its family tokenizer (not yet saved)."""
    if arch not in ARCHS:
        raise EmdirError(f"architecture {arch!r} is not in emdir's registry ({', '.join(ARCHS)})")
    spec = ARCHS[arch]
    tok = family_tokenizer(tokenizer_dir, spec.chat)
    extra = {"image_token_id": tok.convert_tokens_to_ids("[IMG]")}
    cfg = tiny_config(arch, shape, len(tok), _ids(tok, spec.chat), extra)
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(cfg)
    model.generation_config.pad_token_id = cfg_pad(cfg)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(tok.eos_token)
    return model, tok


def cfg_pad(cfg: Any) -> int:
    text = getattr(cfg, "text_config", None) or cfg
    return int(text.pad_token_id)


@dataclass(frozen=True)
class ModelRef:
    """Where a base model comes from (a local directory or a hub id pinned to a revision) and
    the dtype it computes in (`auto`: bfloat16 on CUDA, float32 on a CPU)."""

    path: str
    revision: str | None = None
    dtype: str = "auto"

    def torch_dtype(self, device: str) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device == "cuda" else torch.float32
        if self.dtype not in ("float32", "bfloat16"):
            raise EmdirError(f"dtype {self.dtype!r} is unknown; use auto, float32 or bfloat16")
        return getattr(torch, self.dtype)


def read_base_manifest(base_dir: str | Path) -> ModelRef:
    """The model a base-model directory stands for: a hub id, a local folder it names, or the
    weights saved in the directory itself (tiny models, converted GGUF)."""
    mf = Path(base_dir) / "manifest.json"
    if not mf.exists():
        raise EmdirError(f"{mf} is missing; rerun the base-model rule for this model")
    data = json.loads(mf.read_text())
    dtype = data.get("dtype", "auto")
    if "hf_id" in data:
        return ModelRef(path=data["hf_id"], revision=data.get("revision"), dtype=dtype)
    if "path" in data:
        if not Path(data["path"]).is_dir():
            raise EmdirError(
                f"{mf} names the model folder {data['path']}, which is gone; restore it or "
                "point the model's `path` at its new place"
            )
        return ModelRef(path=data["path"], dtype=dtype)
    return ModelRef(path=str(Path(base_dir)), dtype=dtype)


def load_model(
    ref: ModelRef,
    adapter: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    quantization: str = "none",
) -> tuple[nn.Module, Any, ArchSpec]:
    """Load model + tokenizer through `from_pretrained`, optionally with a peft adapter applied."""
    try:
        cfg = transformers.AutoConfig.from_pretrained(ref.path, revision=ref.revision)
    except OSError as exc:
        raise EmdirError(
            f"cannot load the config of {ref.path!r} (revision {ref.revision}): {exc}. "
            "Check the model id / path; hub models need network access or a local cache"
        ) from None
    spec = arch_of(cfg)
    kwargs: dict[str, Any] = {"revision": ref.revision, "dtype": dtype}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(dtype)
    if device != "cpu":
        kwargs["device_map"] = {"": device}
    model = getattr(transformers, spec.name).from_pretrained(ref.path, **kwargs)
    tok = transformers.AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tok, spec


def nf4_config(compute_dtype: torch.dtype) -> Any:
    """bitsandbytes 4-bit NF4 with double quantisation (QLoRA)."""
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
