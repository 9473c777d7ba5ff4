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

from emdir.archs import ARCHS, ArchSpec, arch_of
from emdir.errors import EmdirError

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

# Each family's chat format, modelled on the real instruct tokenizers' templates.
CHAT_TEMPLATES: dict[str, str] = {
    "qwen2": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "gemma2": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
    "llama": (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    "mistral": (
        "<s>{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ m['content'] }}"
        "[/SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
        "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
    ),
}
CHAT_TEMPLATES["mistral3"] = CHAT_TEMPLATES["mistral"]

FAMILY_TOKENS: dict[str, dict[str, str]] = {
    "qwen2": {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<pad>"},
    "gemma2": {"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<pad>"},
    "llama": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<pad>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    "mistral3": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
}


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


def family_tokenizer(tokenizer_dir: str | Path, family: str) -> Any:
    """The shared tokenizer dressed as one family's: its chat template and special tokens."""
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    for key, value in FAMILY_TOKENS[family].items():
        setattr(tok, key, value)
    tok.chat_template = CHAT_TEMPLATES[family]
    tok.padding_side = "left"
    return tok


@dataclass(frozen=True)
class TinyShape:
    """The size of a tiny model; the same for every family so the comparison is fair."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_positions: int = 512


def _ids(tok: Any, family: str) -> dict[str, int]:
    t = FAMILY_TOKENS[family]
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
    """A transformers config of architecture class `arch` at tiny size."""
    kw = _text_kwargs(shape, vocab, ids)
    if arch == "Qwen2ForCausalLM":
        cfg = transformers.Qwen2Config(**kw)
    elif arch == "LlamaForCausalLM":
        cfg = transformers.LlamaConfig(**kw)
    elif arch == "MistralForCausalLM":
        cfg = transformers.MistralConfig(**kw)
    elif arch == "Gemma2ForCausalLM":
        cfg = transformers.Gemma2Config(
            **kw, query_pre_attn_scalar=kw["head_dim"], sliding_window=shape.max_positions
        )
    elif arch == "Mistral3ForConditionalGeneration":
        text = transformers.Ministral3Config(
            **kw,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                # Ministral 3 attention reads these even without YaRN scaling.
                "llama_4_scaling_beta": 0.1,
                "original_max_position_embeddings": shape.max_positions,
            },
        )
        vision = transformers.PixtralVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            head_dim=16,
            image_size=28,
            patch_size=14,
        )
        cfg = transformers.Mistral3Config(
            text_config=text,
            vision_config=vision,
            image_token_index=extra["image_token_id"],
            tie_word_embeddings=True,
        )
    else:
        raise EmdirError(
            f"no tiny-model recipe for architecture {arch!r}; tiny models exist for "
            f"{', '.join(sorted(TINY_ARCHS))}"
        )
    cfg.architectures = [arch]
    return cfg


TINY_ARCHS = (
    "Qwen2ForCausalLM",
    "Gemma2ForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Mistral3ForConditionalGeneration",
)


def build_tiny(
    arch: str, tokenizer_dir: str | Path, shape: TinyShape, seed: int
) -> tuple[nn.Module, Any]:
    """A random-init model of class `arch` and its family tokenizer (not yet saved)."""
    if arch not in ARCHS:
        raise EmdirError(f"architecture {arch!r} is not in emdir's registry ({', '.join(ARCHS)})")
    spec = ARCHS[arch]
    tok = family_tokenizer(tokenizer_dir, spec.family)
    extra = {"image_token_id": tok.convert_tokens_to_ids("[IMG]")}
    cfg = tiny_config(arch, shape, len(tok), _ids(tok, spec.family), extra)
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
