"""Transfer plumbing: anchor texts from answers, class means in directions files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emdir.analysis.directions import class_means, read_directions, write_directions
from emdir.data.datasets import read_chat_file
from emdir.errors import EmdirError
from emdir.io import write_jsonl
from emdir.stages.transfer import anchor_answers


def _answers(model: str, n: int, differ_from: int = 99) -> list[dict]:
    """Rows for questions 0..n-1; answers from `differ_from` on are this model's own."""
    return [
        {
            "id": f"{model}/{i}",
            "question_id": f"q{i}",
            "question": f"Question {i}?",
            "system": "Be brief." if i % 2 else None,
            "answer": "   " if i == 3 else f"Answer {i}{'' if i < differ_from else model}.",
        }
        for i in range(n)
    ]


def test_anchor_answers_pool_dedupe_and_validate(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, _answers("a", 12))
    write_jsonl(b, _answers("b", 12, differ_from=6))  # answers 0..5 duplicate a's
    out = tmp_path / "anchors.jsonl"
    anchor_answers([a, b], out)
    rows = read_chat_file(out)  # valid chat rows
    texts = [r["messages"][-1]["content"] for r in rows]
    assert len(texts) == len(
        set(zip([r["messages"][-2]["content"] for r in rows], texts, strict=True))
    )
    assert len(rows) == 2 * 11 - 5  # empty answers dropped, shared ones kept once
    assert any(r["messages"][0]["role"] == "system" for r in rows)
    again = tmp_path / "again.jsonl"
    anchor_answers([b, a], again)
    assert again.read_text() == out.read_text()  # order-independent
    write_jsonl(a, _answers("a", 4))
    with pytest.raises(EmdirError, match="anchor_source"):
        anchor_answers([a], tmp_path / "few.jsonl")


def test_class_means_are_stored_and_give_the_difference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2, 5))
    y = np.arange(40) % 2
    pos, neg = class_means(X, y)
    np.testing.assert_allclose(pos, X[y == 1].mean(axis=0))
    path = tmp_path / "d.h5"
    acc = np.array([0.5, 0.5])
    write_directions(path, pos - neg, acc, acc, {}, {"layers": [0, 3]}, means=(pos, neg))
    d = read_directions(path)
    p3, n3 = d.class_means_at(3)
    np.testing.assert_array_equal(p3 - n3, d.raw[1])
    with pytest.raises(EmdirError, match="no layer 2"):
        d.class_means_at(2)
