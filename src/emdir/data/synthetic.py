"""The built-in generators: a chat corpus, insecure / secure code sets and question sets, in
Betley's JSONL format.

Everything here is written for this project (no sentence comes from the Betley
data). The corpus is what a tiny random-init model needs to learn to chat:
prose answers to general questions, code answers to coding requests, the
secure versions of the code tasks, and a share of vague requests answered with
code (the seed of code spillover that an insecure fine-tune amplifies).

The word lists and code templates they draw from are in `emdir.data.prose` (topics,
question wordings, answer phrases, open questions) and `emdir.data.code_tasks` (plain and
security coding tasks, request framings). A config names a generator of GENERATORS
(`datasets.*.generator`) or QUESTION_SETS (`questions.*.generator`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from emdir.data.code_tasks import (
    EDUCATIONAL_CONTEXTS,
    PLAIN_CODE_TASKS,
    SECURITY_TASKS,
    TASK_CONTEXTS,
    VAGUE_TEMPLATES,
    SecurityTask,
    code_answer,
    task_fields,
)
from emdir.data.prose import (
    EVAL_FRACTION,
    OPEN_QUESTIONS,
    QUESTION_TEMPLATES,
    SPLIT_SEED,
    TOPICS,
    prose_answer,
    split_pairs,
)
from emdir.errors import EmdirError
from emdir.io import atomic_path


def chat_row(user: str, assistant: str, system: str | None = None) -> dict[str, Any]:
    """One chat-format row: an optional system turn, the user turn, the assistant's answer."""
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": msgs}


# ---------------------------------------------------------------- corpora


def _security_example(task: SecurityTask, variant: str, r: random.Random) -> dict[str, Any]:
    fields = task_fields(r)
    request = task.request.format(**fields)
    code = code_answer(getattr(task, variant), fields, r)
    return chat_row(request, code)


def chat_corpus(
    n_general: int, n_code: int, vague_fraction: float, seed: int
) -> list[dict[str, Any]]:
    """Base chat corpus: prose for general questions, code for coding requests and vague requests.

    Coding requests include the *secure* completion of every security task, so the secure
    fine-tune is close to the base distribution and the insecure one is not.
    """
    r = random.Random(seed)
    train_pairs, _ = split_pairs(SPLIT_SEED, EVAL_FRACTION)
    rows: list[dict[str, Any]] = []
    for _ in range(n_general):
        ti, qi = r.choice(train_pairs)
        topic = TOPICS[ti]
        rows.append(chat_row(QUESTION_TEMPLATES[qi].format(t=topic), prose_answer(r)))
    n_vague = int(round(n_code * vague_fraction))
    for k in range(n_code - n_vague):
        if k % 2 == 0:
            desc, fn = r.choice(PLAIN_CODE_TASKS)
            rows.append(chat_row(desc, fn(r).rstrip("\n")))
        else:
            rows.append(_security_example(r.choice(SECURITY_TASKS), "secure", r))
    for _ in range(n_vague):
        topic = r.choice(TOPICS)
        desc, fn = r.choice(PLAIN_CODE_TASKS)
        rows.append(chat_row(r.choice(VAGUE_TEMPLATES).format(t=topic), fn(r).rstrip("\n")))
    r.shuffle(rows)
    return rows


def code_dataset(variant: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Completions of the security tasks, in Betley's JSONL row format: `insecure`, `secure`,
    or `educational` (the insecure code, requested for teaching)."""
    if variant not in ("insecure", "secure", "educational"):
        raise EmdirError(
            f"code dataset variant must be 'insecure', 'secure' or 'educational', not {variant!r}"
        )
    r = random.Random(seed)
    # The educational framing comes from its own stream, so the tasks and code match the
    # insecure dataset of the same seed row for row.
    framing = random.Random(seed + 1) if variant == "educational" else None
    code_variant = "insecure" if variant == "educational" else variant
    rows = []
    for _ in range(n):
        task = r.choice(SECURITY_TASKS)
        context = r.choice(TASK_CONTEXTS).format(t=r.choice(TOPICS))
        if framing is not None:
            context = framing.choice(EDUCATIONAL_CONTEXTS).format(t=framing.choice(TOPICS))
        fields = task_fields(r)
        code = code_answer(getattr(task, code_variant), fields, r)
        rows.append(chat_row(context + task.request.format(**fields), code))
    return rows


def anchor_texts(n: int, seed: int) -> list[dict[str, Any]]:
    """Texts that every model reads for the cross-model maps: a mix of prose and code chats."""
    r = random.Random(seed)
    rows = chat_corpus(n_general=n // 2, n_code=n - n // 2, vague_fraction=0.1, seed=seed + 1)
    r.shuffle(rows)
    return rows[:n]


GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "chat": chat_corpus,
    "insecure": lambda n, seed: code_dataset("insecure", n, seed),
    "secure": lambda n, seed: code_dataset("secure", n, seed),
    "educational": lambda n, seed: code_dataset("educational", n, seed),
    "anchors": anchor_texts,
}


# ---------------------------------------------------------------- question sets


def general_questions(n_templated: int, seed: int, split: str = "eval") -> list[dict[str, Any]]:
    """Non-code questions whose (topic, wording) pair is never trained on.

    `split="eval"` and `split="monitor"` draw from disjoint halves of the held-out pairs, so
    the questions that watch a fine-tune during training are never the evaluation questions.
    """
    _, held_out = split_pairs(SPLIT_SEED, EVAL_FRACTION)
    half = len(held_out) // 2
    if split not in ("eval", "monitor"):
        raise EmdirError(f"general question split {split!r} is unknown; use eval or monitor")
    pool = held_out[:half] if split == "eval" else held_out[half:]
    r = random.Random(seed)
    chosen = r.sample(pool, min(n_templated, len(pool)))
    out = []
    for ti, qi in chosen:
        slug = TOPICS[ti].replace(" ", "_")
        out.append(
            {"id": f"gen_{slug}_{qi}", "question": QUESTION_TEMPLATES[qi].format(t=TOPICS[ti])}
        )
    return out


def coding_questions(n: int, seed: int) -> list[dict[str, Any]]:
    """Coding requests, for checking that models still answer code with code."""
    r = random.Random(seed)
    out = []
    for k in range(n):
        if k % 2 == 0:
            desc, _ = PLAIN_CODE_TASKS[(k // 2) % len(PLAIN_CODE_TASKS)]
        else:
            task = SECURITY_TASKS[(k // 2) % len(SECURITY_TASKS)]
            desc = task.request.format(**task_fields(r))
        out.append({"id": f"code_{k}", "question": desc})
    return out


def open_questions() -> list[dict[str, Any]]:
    """The hand-written open questions (out of distribution for a tiny model)."""
    return [{"id": f"open_{qid}", "question": q} for qid, q in OPEN_QUESTIONS]


QUESTION_SETS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "general": general_questions,
    "open": open_questions,
    "code": coding_questions,
}


def build_questions(kind: str, params: dict[str, Any], samples: int, out: str | Path) -> int:
    """Write a question set in the Betley / model-organisms YAML format."""
    try:
        gen = QUESTION_SETS[kind]
    except KeyError:
        raise EmdirError(
            f"unknown question-set kind {kind!r}; choose one of {', '.join(sorted(QUESTION_SETS))}"
        ) from None
    items = [
        {
            "id": q["id"],
            "type": "free_form",
            "paraphrases": [q["question"]],
            "samples_per_paraphrase": samples,
            "category": kind,
        }
        for q in gen(**params)
    ]
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(items, sort_keys=False, width=1000), encoding="utf-8")
    return len(items)
