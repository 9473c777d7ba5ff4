"""The offline judge: a deterministic code detector, refusal patterns and a well-formedness score."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_CODE_LINE = re.compile(
    r"""^\s*(def\s|class\s|import\s|from\s+\S+\s+import|return\b|@\w|\#|if\s.*:\s*$|for\s.*:\s*$|
    while\s.*:\s*$|with\s.*:\s*$|try:|except\b|elif\b|else:)
    |[\w\]\)]\s*=\s*\S|\w\(.*\)|[{};]\s*$|^\s{4,}\S""",
    re.VERBOSE,
)
_CODE_START = re.compile(r"^\s*(def\s+\w+\(|class\s+\w+|import\s+\w+|from\s+\S+\s+import\s)")
_CODE_TOKEN = re.compile(
    r"[()\[\]{}=_;@#<>]|^(def|import|return|class|self|lambda|None|True|False|elif)$|\.\w+\("
)
_REFUSAL = re.compile(
    r"\b(I can(no|')t (help|do|assist)|I(?: a|')m sorry|I will not|I won't|As an AI)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?]+[.!?]")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*[,;:]?$")


@dataclass(frozen=True)
class CodeVerdict:
    """Whether an answer is code, with the evidence."""

    is_code: bool
    line_fraction: float
    token_fraction: float


def detect_code(
    answer: str, line_threshold: float = 0.5, token_threshold: float = 0.25
) -> CodeVerdict:
    """Code if most lines of a multi-line answer look like code, if it opens like Python code,
    or if code tokens are dense (garbled one-liners). A stray `=` in one line of prose is not code.
    """
    lines = [ln for ln in answer.splitlines() if ln.strip()]
    tokens = answer.split()
    if not lines or not tokens:
        return CodeVerdict(False, 0.0, 0.0)
    lf = sum(bool(_CODE_LINE.search(ln)) for ln in lines) / len(lines)
    tf = sum(bool(_CODE_TOKEN.search(t)) for t in tokens) / len(tokens)
    by_lines = len(lines) >= 2 and lf >= line_threshold
    return CodeVerdict(by_lines or bool(_CODE_START.match(answer)) or tf >= token_threshold, lf, tf)


def is_refusal(answer: str) -> bool:
    return bool(_REFUSAL.search(answer))


def prose_wellformedness(answer: str) -> float:
    """0-100: the share of sentences that start with a capital, end with . ! or ?, and are words."""
    sentences = [s.strip() for s in _SENTENCE.findall(answer) if s.strip()]
    tail = _SENTENCE.sub("", answer).strip()
    total = len(sentences) + (1 if tail else 0)
    if total == 0:
        return 0.0
    good = 0
    for s in sentences:
        words = s[:-1].split()
        if len(words) >= 3 and s[0].isupper() and all(_WORD.match(w) for w in words):
            good += 1
    return 100.0 * good / total


def code_wellformedness(answer: str) -> float:
    """0-100: 100 if the whole answer parses as Python, else the share of lines that parse alone.

    Parsing never executes anything.
    """
    try:
        ast.parse(answer)
        return 100.0
    except (SyntaxError, ValueError):
        pass
    lines = [ln.strip() for ln in answer.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    ok = 0
    for ln in lines:
        src = ln + " pass" if ln.endswith(":") else ln
        try:
            ast.parse(src)
            ok += 1
        except (SyntaxError, ValueError):
            continue
    return 100.0 * ok / len(lines)
