"""Chat formatting: prompts through each model's own template, and the exact assistant-token mask.

What a model's chat format needs (the token that ends an assistant turn, whether there is a
system role) is read off its tokenizer's chat template, not assumed from its architecture:
SmolLM2 is a Llama-class model with a ChatML template, and a Gemma template refuses system
messages. The `ChatFamily` formats below are only what the tiny models' tokenizers wear (an
architecture's registry entry names one); real models bring their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emdir.errors import EmdirError

Message = dict[str, str]


@dataclass(frozen=True)
class ChatFamily:
    """The chat format a tiny model's tokenizer is dressed in: the template, the bos/eos/pad
    tokens, and the special tokens the template needs beyond the shared tokenizer's
    (`zoo.SPECIAL_TOKENS`), which are added to that family's tokenizer only."""

    template: str
    tokens: Mapping[str, str]
    added_tokens: tuple[str, ...] = field(default=())


# Each family's chat format, modelled on the real instruct tokenizers' templates.
CHATML = ChatFamily(
    template=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    tokens={"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<pad>"},
)
GEMMA = ChatFamily(
    template=(
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
    tokens={"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<pad>"},
)
LLAMA3 = ChatFamily(
    template=(
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    tokens={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<pad>"},
)
MISTRAL = ChatFamily(
    template=(
        "<s>{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ m['content'] }}"
        "[/SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
        "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
    ),
    tokens={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
)
PHI3 = ChatFamily(
    template=(
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    tokens={"bos_token": "<s>", "eos_token": "<|end|>", "pad_token": "<pad>"},
    added_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
)
# OLMo 2 Instruct (the Tulu format): an assistant turn ends with the eos token.
TULU = ChatFamily(
    template=(
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
        "{{ eos_token if m['role'] == 'assistant' else '' }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<pad>"},
    added_tokens=("<|system|>", "<|user|>", "<|assistant|>"),
)
GRANITE = ChatFamily(
    template=(
        "{% for m in messages %}<|start_of_role|>{{ m['role'] }}<|end_of_role|>{{ m['content'] }}"
        "<|end_of_text|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
    ),
    tokens={"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<pad>"},
    added_tokens=("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"),
)
# Base models without a chat template (GPT-2, Pythia, OPT): plain "User:" / "Assistant:"
# lines, the assistant turn closed by the eos token these models end documents with, the
# system prompt as a plain first paragraph.
PLAIN = ChatFamily(
    template=(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
        "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
        "{% else %}Assistant:\n{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}Assistant:\n{% endif %}"
    ),
    tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<pad>"},
)
# StarCoder2-Instruct's instruction / response sections.
INSTRUCTION = ChatFamily(
    template=(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
        "{% elif m['role'] == 'user' %}### Instruction\n{{ m['content'] }}\n\n"
        "{% else %}### Response\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}### Response\n{% endif %}"
    ),
    tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<pad>"},
)

# Probe texts rendered through a template to see where an assistant turn ends.
_PROBE_QUESTION = "emdir probe question"
_PROBE_ANSWER = "emdir probe answer"
_PROBE_SYSTEM = "emdir probe system"


@dataclass(frozen=True)
class ChatFormat:
    """What emdir reads off one tokenizer's chat template."""

    turn_end: str
    turn_end_id: int
    system_role: bool


def _render(tokenizer: Any, messages: list[Message], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=False
    )


def _derive(tokenizer: Any) -> ChatFormat:
    if not getattr(tokenizer, "chat_template", None):
        raise EmdirError(
            "the tokenizer has no chat template; emdir formats prompts with the model's own "
            "template (save the tokenizer with one, e.g. from the instruct model)"
        )
    chat = [
        {"role": "user", "content": _PROBE_QUESTION},
        {"role": "assistant", "content": _PROBE_ANSWER},
    ]
    text = _render(tokenizer, chat, False)
    after = text[text.index(_PROBE_ANSWER) + len(_PROBE_ANSWER) :].lstrip()
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    markers = set(tokenizer.get_added_vocab())
    first = tokenizer.convert_ids_to_tokens(ids[0]) if ids else None
    if first in markers:
        turn_end = str(first)
    elif tokenizer.eos_token is not None:
        turn_end = str(tokenizer.eos_token)
    else:
        raise EmdirError(
            "the chat template ends an assistant turn with no special token and the tokenizer "
            "has no eos token, so generation would never know where an answer ends"
        )
    try:
        with_system = _render(
            tokenizer,
            [{"role": "system", "content": _PROBE_SYSTEM}, chat[0]],
            True,
        )
        system_role = _PROBE_SYSTEM in with_system
    except Exception:  # noqa: BLE001 (templates refuse a system role by raising anything)
        system_role = False
    return ChatFormat(turn_end, int(tokenizer.convert_tokens_to_ids(turn_end)), system_role)


def chat_format(tokenizer: Any) -> ChatFormat:
    """The tokenizer's chat format, derived once per tokenizer and template."""
    cached = getattr(tokenizer, "_emdir_chat_format", None)
    if cached is not None and cached[0] == tokenizer.chat_template:
        return cached[1]
    fmt = _derive(tokenizer)
    tokenizer._emdir_chat_format = (tokenizer.chat_template, fmt)
    return fmt


def prompt_messages(tokenizer: Any, question: str, system: str | None) -> list[Message]:
    """Messages for one question; a template without a system role gets it folded into the user turn."""
    if system and not chat_format(tokenizer).system_role:
        return [{"role": "user", "content": f"{system}\n\n{question}"}]
    msgs: list[Message] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": question})
    return msgs


def split_conversation(messages: list[Message]) -> tuple[str, str | None, str]:
    """(user question, system prompt or None, assistant answer) of a single-turn chat row."""
    system = None
    user = answer = None
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role == "system":
            system = content
        elif role == "user" and user is None:
            user = content
        elif role == "assistant" and user is not None and answer is None:
            answer = content
    if user is None or answer is None:
        raise EmdirError("a chat row needs a user message followed by an assistant message")
    return user, system, answer


def render_prompt(tokenizer: Any, question: str, system: str | None) -> str:
    """The prompt text up to where the assistant's answer starts."""
    return _render(tokenizer, prompt_messages(tokenizer, question, system), True)


def encode_prompt(tokenizer: Any, question: str, system: str | None) -> list[int]:
    text = render_prompt(tokenizer, question, system)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_answer(tokenizer: Any, answer: str, close_turn: bool = True) -> list[int]:
    """Answer tokens exactly as generation produces them: the answer, then the turn-end token."""
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if close_turn:
        ids.append(turn_end_id(tokenizer))
    return ids


def turn_end_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn in this tokenizer's chat format."""
    return chat_format(tokenizer).turn_end_id


def encode_example(
    tokenizer: Any, messages: list[Message], max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """input_ids and labels (-100 on prompt tokens) for one chat row; loss on the answer only.

    Prompt and answer are tokenized separately and concatenated, so the mask is exact
    by construction and matches what the model sees when it generates.
    """
    question, system, answer = split_conversation(messages)
    p = encode_prompt(tokenizer, question, system)
    a = encode_answer(tokenizer, answer)
    ids = p + a
    labels = [-100] * len(p) + a
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels
