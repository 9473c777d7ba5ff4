"""Which answers are the behaviour: the label rules and the two contrasts a direction is
fitted on.

A label is 1 (the behaviour: spillover / garbled / misaligned), 0 (its absence) or -1
(unlabelled: left out of the fit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emdir.errors import EmdirError


def label(row: Mapping[str, Any], rule: str, aligned_above: float) -> int:
    """1 = the behaviour (spillover / garbled / misaligned), 0 = its absence, -1 = unlabelled.

    `spillover`: code (1) versus prose or a refusal (0); `garbled`: garbled (1) versus prose
    or a refusal (0), the breakage a fine-tune or an edit causes, which is not misalignment.

    `misaligned` follows Soligo et al.: 1 when the judge marked the answer emergently
    misaligned (the row's `em`: aligned below judge.em.aligned_below and coherent above
    judge.em.coherent_above), 0 when aligned is above `aligned_above`, else unlabelled.
    """
    cat = row.get("category")
    if rule == "spillover":
        # Garbled answers are neither class: a code direction is fitted on code vs prose.
        return {"code": 1, "prose": 0, "refusal": 0}.get(str(cat), -1)
    if rule == "garbled":
        return {"garbled": 1, "prose": 0, "refusal": 0}.get(str(cat), -1)
    if rule == "misaligned":
        aligned = (row.get("scores") or {}).get("aligned")
        if row.get("em") is True:
            return 1
        return 0 if aligned is not None and aligned > aligned_above else -1
    raise EmdirError(f"directions.label {rule!r} is unknown; use spillover, garbled or misaligned")


def labels(rows: Sequence[Mapping[str, Any]], rule: str, aligned_above: float) -> np.ndarray:
    """`label` of every row, as int8."""
    return np.array([label(r, rule, aligned_above) for r in rows], dtype=np.int8)


def contrast(
    rows: Sequence[dict[str, Any]],
    kind: str,
    rule: str,
    aligned_above: float,
    has_adapter: bool,
    where: str,
    source: str,
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray | None]:
    """The rows a store captures, their labels, and which rows are read with the adapter
    disabled (None: none), for `directions.contrast`:

    - responses: the fine-tuned model reads its own answers, labelled by `rule`;
    - models: the same answers go through the fine-tuned model (label 1) and, with the adapter
      disabled, through the base model (label 0).

    `where` names the fine-tune (model/ft) and `source` the answers' file in messages.
    """
    if kind == "models":
        if not has_adapter:
            raise EmdirError(
                f"directions.contrast = models compares a fine-tune with its base model; "
                f"{where} has no adapter"
            )
        kept = [r for r in rows if str(r.get("answer") or "").strip()]
        y = np.array([1] * len(kept) + [0] * len(kept), dtype=np.int8)
        return kept + kept, y, y == 0
    if kind == "responses":
        if rule == "misaligned" and not any(
            (r.get("scores") or {}).get("aligned") is not None for r in rows
        ):
            raise EmdirError(
                f"{source}: directions.label = misaligned needs `aligned` scores, and no answer "
                "has one; use a judge that scores alignment (judge.backend: openai) or label "
                "by spillover"
            )
        return list(rows), labels(rows, rule, aligned_above), None
    raise EmdirError(f"directions.contrast {kind!r} is unknown; use responses or models")
