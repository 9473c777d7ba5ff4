"""Chat formatting: prompts through each family's own template, and the exact assistant-token mask."""

from __future__ import annotations

from typing import Any

from emdir.archs import ArchSpec
from emdir.errors import EmdirError

Message = dict[str, str]


def prompt_messages(question: str, system: str | None, spec: ArchSpec) -> list[Message]:
    """Messages for one question; families without a system role get it folded into the user turn."""
    if system and not spec.system_role:
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


def render_prompt(tokenizer: Any, spec: ArchSpec, question: str, system: str | None) -> str:
    """The prompt text up to where the assistant's answer starts."""
    msgs = prompt_messages(question, system, spec)
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer: Any, spec: ArchSpec, question: str, system: str | None) -> list[int]:
    text = render_prompt(tokenizer, spec, question, system)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_answer(
    tokenizer: Any, spec: ArchSpec, answer: str, close_turn: bool = True
) -> list[int]:
    """Answer tokens exactly as generation produces them: the answer, then the turn-end token."""
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if close_turn:
        ids.append(turn_end_id(tokenizer, spec))
    return ids


def turn_end_id(tokenizer: Any, spec: ArchSpec) -> int:
    tid = tokenizer.convert_tokens_to_ids(spec.turn_end)
    if tid is None or tid == tokenizer.unk_token_id:
        raise EmdirError(
            f"tokenizer has no {spec.turn_end!r} token, which ends a {spec.family} assistant turn"
        )
    return int(tid)


def encode_example(
    tokenizer: Any, spec: ArchSpec, messages: list[Message], max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """input_ids and labels (-100 on prompt tokens) for one chat row; loss on the answer only.

    Prompt and answer are tokenized separately and concatenated, so the mask is exact
    by construction and matches what the model sees when it generates.
    """
    question, system, answer = split_conversation(messages)
    p = encode_prompt(tokenizer, spec, question, system)
    a = encode_answer(tokenizer, spec, answer)
    ids = p + a
    labels = [-100] * len(p) + a
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels
