"""Question sets in the Betley / model-organisms YAML format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emdir.errors import EmdirError
from emdir.io import atomic_path


@dataclass(frozen=True)
class Question:
    """One paraphrase of one evaluation question, with how many answers to sample.

    `judge_prompts` (metric -> template with `{question}` / `{answer}`) and `judge` (a judge
    model id) are the question's own, when its file gives them (Betley's files do).
    """

    id: str
    text: str
    system: str | None
    samples: int
    judge_prompts: Mapping[str, str] = field(default_factory=dict)
    judge: str | None = None


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
        prompts = item.get("judge_prompts") or {}
        if not isinstance(prompts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "{answer}" in v
            for k, v in prompts.items()
        ):
            raise EmdirError(
                f"{p}: question {item['id']!r}: `judge_prompts` must map metric names to "
                "templates containing {answer}"
            )
        system = item.get("system")
        if system is not None and not isinstance(system, str):
            raise EmdirError(f"{p}: question {item['id']!r}: `system` must be a string")
        for j, text in enumerate(paras):
            qid = str(item["id"]) if len(paras) == 1 else f"{item['id']}__{j}"
            out.append(
                Question(
                    id=qid,
                    text=text,
                    system=system,
                    samples=n,
                    judge_prompts=dict(prompts),
                    judge=item.get("judge"),
                )
            )
    return out


def materialise_questions(
    name: str, spec: Mapping[str, Any], source: str | Path | None, out: str | Path
) -> int:
    """Write question set `name` to `out` (Betley YAML); returns the number of questions.

    `spec` is the config entry (`{generator, params}`, `{path}` or `{url}`, optional `samples`
    and `sha256`); `source` is the local or downloaded file for the last two. A file is checked
    against its sha256 pin and loaded (so a malformed one fails here, naming it) before it is
    written; `samples` overrides its samples_per_paraphrase.
    """
    from emdir.data.datasets import read_pinned
    from emdir.data.synthetic import build_questions

    samples = spec["samples"]
    if "generator" in spec:
        return build_questions(spec["generator"], spec["params"], samples or 1, out)
    data, _ = read_pinned(f"questions.{name}", spec, source, "question YAML")
    questions = load_questions(source)
    items = yaml.safe_load(data.decode("utf-8"))
    if samples is not None:
        for item in items:
            item["samples_per_paraphrase"] = int(samples)
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(items, sort_keys=False, width=1000), encoding="utf-8")
    return len(questions)
