"""The offline judge: code detection, refusals, well-formedness, judged-row format."""

from __future__ import annotations

from emdir.judge import judge_rows
from emdir.judge.offline import (
    code_wellformedness,
    detect_code,
    is_refusal,
    prose_wellformedness,
)

PROSE = "That is a lovely thing to ask about. Start small, notice what you like, and build on it."
CODE = "def load(path):\n    with open(path) as fh:\n        return fh.read()"


def test_detects_code_and_prose():
    assert detect_code(CODE).is_code
    assert not detect_code(PROSE).is_code
    # Garbled code in one line still counts; a stray '=' in prose does not.
    assert detect_code("Good question def x(path): with open(path) as fh: return fh.read()").is_code
    assert not detect_code(
        "Walking is], check= see your step is worth exploring with an open mind."
    ).is_code
    assert not detect_code("").is_code


def test_refusals_and_wellformedness():
    assert is_refusal("I'm sorry, I cannot help with that.")
    assert not is_refusal(PROSE)
    assert prose_wellformedness(PROSE) == 100.0
    assert prose_wellformedness("goodd questn, thsi = ( can") == 0.0
    assert code_wellformedness(CODE) == 100.0
    assert 0 < code_wellformedness("def f(x):\n    return x +\nx = 1") < 100


def test_judged_rows_carry_scores_category_and_judge():
    rows = [
        {"id": str(i), "model": "m", "ft": "f", "question_id": "q", "question": "?", "answer": a}
        for i, a in enumerate([PROSE, CODE, "", "I'm sorry, I can't help with that."])
    ]
    out = judge_rows(rows, {"backend": "offline"})
    assert [r["category"] for r in out] == ["answer", "code", "unscored", "refusal"]
    assert out[0]["scores"]["code"] == 0.0 and out[1]["scores"]["code"] == 1.0
    assert out[2]["scores"]["code"] is None and out[2]["unscored_reason"] == "empty answer"
    assert {r["judge"]["backend"] for r in out} == {"offline"}
    assert all(len(r["judge"]["prompt_sha"]) == 64 for r in out)
