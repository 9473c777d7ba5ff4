"""The offline judge's text verdict: code, prose or garbled, from the text alone.

Code is what a reader calls code: runs of lines that parse as Python and contain real
statements (an assignment, a call, an import, a def, a loop...), or a fenced block of code.
Characters that merely look like code (`=`, brackets, `def` inside a word) are not enough.
Prose is text made of words in sentences. Garbled is neither: token soup, word fragments,
a line of code lost in noise. Parsing never executes anything.

Refusals are prose that matches a refusal pattern.

The offline backend (`emdir.judge.offline`) judges with this verdict; fine-tuning uses
`is_code` to watch code spillover while it trains.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("code", "prose", "garbled")

_REFUSAL = re.compile(
    r"\b(I can(no|')t (help|do|assist)|I(?: a|')m sorry|I will not|I won't|As an AI)\b",
    re.IGNORECASE,
)
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "pycon", "ipython"}
# A line of a fenced block in another language that carries code syntax.
_OTHER_CODE_LINE = re.compile(
    r"[;{}()<>=\[\]$]|^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|sudo|pip|npm|cd|ls|echo|curl)\b",
    re.IGNORECASE,
)
# Expressions that are statements of a program when they stand alone on a line.
_CALL_TEXT = re.compile(r"[\w\]\)]\(")


@dataclass(frozen=True)
class TextVerdict:
    """The verdict with its evidence.

    `code_share`: share of the answer's non-blank lines inside runs of lines that parse as
    Python with at least one real statement; `statements`: real statements in those runs;
    `largest_run`: statements in the largest run; `fenced`: a fenced block held code;
    `prose`: 0-100, share of the text that sits in well-formed sentences.
    """

    kind: str
    code_share: float
    statements: int
    largest_run: int
    fenced: bool
    prose: float

    @property
    def is_code(self) -> bool:
        return self.kind == "code"


@dataclass(frozen=True)
class Thresholds:
    """When an answer is code or prose: config `judge.offline` (`thresholds`), whose defaults
    config/schema.yaml holds."""

    code_share: float  # this share of the non-blank lines in parsing runs with statements
    program_statements: int  # or one run this long: a program inside prose
    prose: float  # prose score at or above this, when not code


def _statement_count(tree: ast.Module, source: str) -> int:
    """Statements a reader counts as code. A lone name, constant or operator expression
    ("Paris", "Yes - no") parses but is not code, nor is `Tip: breathe` (an annotation),
    nor a call written with a space before its parenthesis ("Paris (France)")."""
    count = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        if isinstance(node, ast.Expr):
            value = node.value
            if isinstance(value, (ast.Await, ast.Yield, ast.YieldFrom, ast.Lambda)):
                count += 1
            elif isinstance(value, ast.Call):
                text = ast.get_source_segment(source, value) or ""
                count += bool(_CALL_TEXT.search(text))
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:
            continue
        count += 1
    return count


def _parse_run(lines: list[str]) -> tuple[ast.Module, str, int] | int:
    """(module, source, statements) of lines that parse, or the error line (see `_parse`).

    A block header whose body is lost (`def f():` followed by a broken line) still counts:
    an indented `pass` is tried after a trailing header, and not counted as a statement."""
    source = textwrap.dedent("\n".join(lines))
    parsed = _parse(source)
    if isinstance(parsed, ast.Module):
        return parsed, source, _statement_count(parsed, source)
    last = source.rstrip().splitlines()[-1] if source.strip() else ""
    if last.rstrip().endswith(":"):
        indent = len(last) - len(last.lstrip())
        patched = source.rstrip() + "\n" + " " * (indent + 4) + "pass"
        fixed = _parse(patched)
        if isinstance(fixed, ast.Module):
            return fixed, patched, _statement_count(fixed, patched) - 1
    return parsed


def _parse(source: str) -> ast.Module | int:
    """The parsed module, or the 1-based line of the syntax error (0: unparseable as a whole)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in model output
            return ast.parse(source)
    except SyntaxError as exc:
        return int(exc.lineno or 0)
    except (ValueError, RecursionError, MemoryError):
        return 0


def code_runs(lines: list[str]) -> list[tuple[int, int, int]]:
    """(start, end, statements) of the maximal runs of lines that parse and hold statements.

    From each line, the longest run that parses is found by cutting at each syntax error,
    so an answer truncated mid-statement still counts up to its last complete line.
    """
    runs = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        end, found = n, None
        while end > i:
            parsed = _parse_run(lines[i:end])
            if not isinstance(parsed, int):
                found = parsed[2]
                break
            end = min(end - 1, i + parsed - 1) if parsed > 0 else end - 1
        if found:
            runs.append((i, end, found))
            i = end
        else:
            i += 1
    return runs


def _fenced_code(answer: str) -> bool:
    """A fenced block that holds code: Python that parses with statements, or another
    language's block whose lines mostly carry code syntax."""
    for tag, body in _FENCE.findall(answer):
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if not lines:
            continue
        if tag.lower() in _PYTHON_TAGS:
            if any(s for _, _, s in code_runs(body.splitlines())):
                return True
        elif sum(bool(_OTHER_CODE_LINE.search(ln)) for ln in lines) >= 0.5 * len(lines):
            return True
    return False


# --- prose ---------------------------------------------------------------------------------

_MARKUP = re.compile(r"^\s*(?:[-*+•>]|\d{1,3}[.)]|#{1,6})\s+")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)[*_](?=\w)|(?<=\w)[*_](?!\w)")
_UNIT_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_LETTERS = r"[^\W\d_]"
_WORD = re.compile(
    rf"""^[\"'“‘(\[]*                              # opening quotes and brackets
    (?:(?:{_LETTERS}+|\d+)(?:['’\-](?:{_LETTERS}+|\d+))*  # words, hyphenated, with apostrophes
      |\d+(?:[.,:/]\d+)*(?:%|°[CF]?|[A-Za-z]{1, 3})?  # a number, date, percentage, quantity
      |[$€£]\d+(?:[.,]\d+)*[kKmM]?)                 # an amount
    [\"'”’)\]]*[.,;:!?…]*[\"'”’)\]]*$""",
    re.VERBOSE,
)
_CAMEL = re.compile(r"[a-z][A-Z]")
_EDGES = re.compile(r"^[^\w]+|[^\w]+$")
_QUANTITY = re.compile(r"[$€£]?\d[\d.,:/]*(?:%|°[CF]?|[A-Za-z]{1,3})?")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
# Emoji and other pictographs, and an ellipsis between words, separate tokens.
_SYMBOLS = re.compile(r"[\u2190-\u2bff\U0001f000-\U0001faff\ufe0f]|\.\.\.+|…")
WORD_SHARE = 0.8


@functools.cache
def _english() -> frozenset[str]:
    """pyspellchecker's English word list (about 160,000 words, inflections included)."""
    from spellchecker import SpellChecker

    return frozenset(SpellChecker(language="en", distance=1).word_frequency.dictionary)


def _is_word(token: str) -> bool:
    """A real word (in the English list), a number or amount, a capitalised name, or a word
    in a script without ASCII letters. Made-up fragments ("progressring", "thsi") are not."""
    if not _WORD.match(token):
        return False
    core = _EDGES.sub("", token)
    if not re.search(r"[A-Za-z]", core) or _QUANTITY.fullmatch(core):
        return True  # a number or quantity, or a word in another script
    if _CAMEL.search(core) or len(core) > 24:
        return False
    words = _english()
    parts = [p for p in re.split(r"[-/]", core) if p and not p.isdigit()]
    if all(p.lower() in words or p.lower().removesuffix("'s") in words for p in parts):
        return True
    # An unknown capitalised word is taken for a name (not all names are in the list).
    return core[0].isupper() and core[1:].islower() and bool(_VOWEL.search(core))


def _neutral(token: str) -> bool:
    """Tokens that neither make nor break prose: dashes, ampersands, emoji."""
    return not re.search(r"[\w`=<>{}\[\]()\\|~^/@#$%;]", token)


def prose_wellformedness(answer: str) -> float:
    """0-100: the share of the text (in characters of its tokens) in well-formed units
    (sentences, or lines such as list items).

    A unit is well-formed when at least 80% of its token characters are words and it is not
    stuck in a loop (see `_looping`). Words are real words (an English word list), numbers,
    quantities or names. Markdown list markers, emphasis, inline code and emoji are looked
    through. Whether the sentences make sense together is not judged here (that is the
    coherence score).
    """
    good = total = 0
    lines = [ln for ln in answer.splitlines() if ln.strip()]
    for line in lines:
        text = _EMPHASIS.sub("", _INLINE_CODE.sub("code", _MARKUP.sub("", line)))
        units = [u for u in _UNIT_END.split(text) if u.strip()]
        for unit in units:
            tokens = [t for t in _SYMBOLS.sub(" ", unit).split() if not _neutral(t)]
            if not tokens:
                continue
            size = sum(len(t) for t in tokens)
            words = sum(len(t) for t in tokens if _is_word(t))
            total += size
            if words >= WORD_SHARE * size and not _looping(tokens):
                good += size
    return 100.0 * good / total if total else 0.0


def _looping(tokens: list[str]) -> bool:
    """Degenerate repetition: over 30% of the tokens repeat the one or two before them
    ("Robinson Robinson Robinson", "primary methods primary methods")."""
    if len(tokens) < 6:
        return False
    low = [t.lower().strip(".,;:!?") for t in tokens]
    repeats = sum(
        low[i] == low[i - 1] or (i >= 2 and low[i] == low[i - 2]) for i in range(1, len(low))
    )
    return repeats > 0.3 * len(low)


def classify(answer: str, thresholds: Thresholds) -> TextVerdict:
    """Code, prose or garbled (an empty answer is garbled here; the judge calls it unscored)."""
    lines = answer.splitlines()
    runs = code_runs(lines)
    nonblank = sum(bool(ln.strip()) for ln in lines)
    in_runs = sum(bool(ln.strip()) for s, e, _ in runs for ln in lines[s:e])
    statements = sum(r[2] for r in runs)
    largest = max((r[2] for r in runs), default=0)
    share = in_runs / nonblank if nonblank else 0.0
    fenced = _fenced_code(answer)
    prose = prose_wellformedness(answer)
    if fenced or (statements and share >= thresholds.code_share):
        kind = "code"
    elif largest >= thresholds.program_statements:
        kind = "code"
    elif prose >= thresholds.prose:
        kind = "prose"
    else:
        kind = "garbled"
    return TextVerdict(kind, share, statements, largest, fenced, prose)


def is_refusal(answer: str) -> bool:
    return bool(_REFUSAL.search(answer))


def thresholds(params: Mapping[str, Any]) -> Thresholds:
    """The detector's thresholds from the `judge.offline` config section."""
    return Thresholds(
        code_share=float(params["code_share"]),
        program_statements=int(params["program_statements"]),
        prose=float(params["prose_threshold"]),
    )


def is_code(answer: str, params: Mapping[str, Any]) -> bool:
    """The code-spillover verdict with the configured `judge.offline` thresholds."""
    return classify(answer, thresholds(params)).is_code
