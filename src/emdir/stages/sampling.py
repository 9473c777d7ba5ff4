"""Sampling stage: answers of a model (base or fine-tune) to every question set (rule
generate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emdir.io import write_jsonl
from emdir.models.load import load_for_inference


def generate(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    question_files: Sequence[str | Path],
    out: str | Path,
    sampling_cfg: Mapping[str, Any],
    threads: int,
) -> None:
    """Sample answers to every question set; each row records its question set."""
    from emdir.data.questions import load_questions
    from emdir.models.generate import SamplingParams, expand, generation_rows, sample

    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    tagged = [(Path(f).stem, q) for f in question_files for q in load_questions(f)]
    qset = {q.id: s for s, q in tagged}
    prompts = expand([q for _, q in tagged])
    answers = sample(model, tok, prompts, SamplingParams(**sampling_cfg), desc=f"{model_key}/{ft}")
    rows = generation_rows(prompts, answers, model_key, ft)
    for row in rows:
        row["question_set"] = qset[row["question_id"]]
    write_jsonl(out, rows)
