"""Question sets in the Betley / model-organisms YAML format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from emdir.errors import EmdirError


@dataclass(frozen=True)
class Question:
    """One paraphrase of one evaluation question, with how many answers to sample."""

    id: str
    text: str
    system: str | None
    samples: int


def load_questions(path: str | Path, samples_override: int | None = None) -> list[Question]:
    """Read a question YAML (YAML anchors allowed): one `Question` per paraphrase."""
    p = Path(path)
    try:
        items = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmdirError(f"{p}: question file not found") from None
    except yaml.YAMLError as exc:
        raise EmdirError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(items, list):
        raise EmdirError(f"{p}: expected a YAML list of questions at the top level")
    out: list[Question] = []
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "paraphrases" not in item:
            raise EmdirError(f"{p}: entry {k} needs `id` and `paraphrases`")
        paras = item["paraphrases"]
        if not isinstance(paras, list) or not paras or not all(isinstance(s, str) for s in paras):
            raise EmdirError(
                f"{p}: question {item['id']!r}: `paraphrases` must be a list of strings"
            )
        n = (
            samples_override
            if samples_override is not None
            else int(item.get("samples_per_paraphrase", 1))
        )
        for j, text in enumerate(paras):
            qid = str(item["id"]) if len(paras) == 1 else f"{item['id']}__{j}"
            out.append(Question(id=qid, text=text, system=item.get("system"), samples=n))
    return out
