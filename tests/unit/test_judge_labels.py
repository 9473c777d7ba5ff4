"""The offline verdict against the committed hand-labelled set (tests/data/judge_labels.jsonl).

Thresholds are held on the held-out `test` split, labelled after the detector was frozen;
the `dev` split is what its thresholds were chosen on (see tests/data/README.md). Run
`python -m emdir.judge.validate tests/data/judge_labels.jsonl --split test` for the table.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from emdir.judge.detector import KINDS
from emdir.judge.validate import confusion, default_thresholds, read_labels, report, scores

LABELS = Path(__file__).resolve().parents[1] / "data" / "judge_labels.jsonl"
# Stated floors on the held-out split (measured: code 0.975 / 0.975, prose 0.952 / 0.935,
# garbled 0.692 / 0.750 on 244 answers).
FLOORS = {
    "code": (0.95, 0.95),
    "prose": (0.90, 0.90),
    "garbled": (0.65, 0.70),
}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return read_labels(LABELS)


def test_the_labelled_set_is_what_it_says(rows: list[dict]) -> None:
    assert len(rows) >= 450
    assert {r["split"] for r in rows} == {"dev", "test"}
    assert {r["source"] for r in rows} == {"tiny", "real"}
    assert all(r["label"] in KINDS and r["note"].strip() for r in rows)
    assert len({r["item"] for r in rows}) == len(rows)
    test = [r for r in rows if r["split"] == "test"]
    kinds = Counter(r["label"] for r in test)
    assert kinds["code"] >= 30 and kinds["garbled"] >= 30 and kinds["prose"] >= 100
    # Every kind of output is in it: unsteered, steered, controls, transfer, mechanistic.
    assert {r["kind"] for r in rows} == {
        "unsteered",
        "steering_target",
        "steering_control",
        "transfer_target",
        "transfer_control",
        "mechanistic",
    }


def test_precision_and_recall_on_the_held_out_split(rows: list[dict]) -> None:
    test = [r for r in rows if r["split"] == "test"]
    print("\n" + report(test, "held-out test split", default_thresholds()))
    for kind, s in scores(confusion(test, default_thresholds())).items():
        lo_p, lo_r = FLOORS[kind]
        assert s.precision >= lo_p, f"{kind} precision {s.precision:.3f} < {lo_p}"
        assert s.recall >= lo_r, f"{kind} recall {s.recall:.3f} < {lo_r}"


def test_the_old_detector_called_soup_code(rows: list[dict]) -> None:
    """The verdicts of the detector this one replaced (kept in `old_verdict`): it found every
    program but most of what it called code in the tiny models' answers was not code."""
    tiny_code = [r for r in rows if r["source"] == "tiny" and r["old_verdict"] == "code"]
    assert len(tiny_code) >= 40
    really = sum(r["label"] == "code" for r in tiny_code)
    assert really / len(tiny_code) < 0.2
    tiny = [r for r in rows if r["source"] == "tiny"]
    new = scores(confusion(tiny, default_thresholds()))["code"]
    assert new.predicted <= 10
