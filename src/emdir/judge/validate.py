"""The offline verdict against a hand-labelled set: precision and recall per kind.

    python -m emdir.judge.validate tests/data/judge_labels.jsonl [--split test]

A labelled row has `answer`, `label` (code | prose | garbled) and `split` (dev | test);
`tests/data/judge_labels.jsonl` is the committed set (see tests/data/README.md). Works on
any file of that shape, e.g. a set labelled on a new model's answers. The verdict uses the
default `judge.offline` thresholds of config/schema.yaml.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emdir.errors import EmdirError
from emdir.io import read_jsonl
from emdir.judge.detector import KINDS, Thresholds, classify
from emdir.judge.detector import thresholds as offline_thresholds
from emdir.schema import schema_defaults


@dataclass(frozen=True)
class Score:
    kind: str
    true_positive: int
    predicted: int
    actual: int

    @property
    def precision(self) -> float:
        return self.true_positive / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.true_positive / self.actual if self.actual else float("nan")


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    rows = read_jsonl(path, required=("answer", "label", "split"))
    for i, row in enumerate(rows, 1):
        if row["label"] not in KINDS:
            raise EmdirError(f"{path} line {i}: label {row['label']!r} is not one of {KINDS}")
    return rows


def default_thresholds() -> Thresholds:
    """The thresholds of the default `judge.offline` config (config/schema.yaml)."""
    return offline_thresholds(schema_defaults("judge.offline"))


def confusion(
    rows: Iterable[Mapping[str, Any]], thresholds: Thresholds
) -> Counter[tuple[str, str]]:
    """(label, verdict) counts under `thresholds`."""
    return Counter((str(r["label"]), classify(str(r["answer"]), thresholds).kind) for r in rows)


def scores(counts: Mapping[tuple[str, str], int]) -> dict[str, Score]:
    out = {}
    for kind in KINDS:
        tp = counts.get((kind, kind), 0)
        predicted = sum(n for (_, v), n in counts.items() if v == kind)
        actual = sum(n for (label, _), n in counts.items() if label == kind)
        out[kind] = Score(kind, tp, predicted, actual)
    return out


def report(rows: list[dict[str, Any]], title: str, thresholds: Thresholds) -> str:
    lines = [f"{title}: {len(rows)} answers"]
    for s in scores(confusion(rows, thresholds)).values():
        lines.append(
            f"  {s.kind:8s} precision {s.true_positive}/{s.predicted} = {s.precision:.3f}"
            f"   recall {s.true_positive}/{s.actual} = {s.recall:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", type=Path)
    ap.add_argument("--split", choices=["dev", "test", "all"], default="all")
    args = ap.parse_args(argv)
    rows = read_labels(args.labels)
    if args.split != "all":
        rows = [r for r in rows if r["split"] == args.split]
    t = default_thresholds()
    for source in sorted({str(r.get("source", "")) for r in rows}):
        part = [r for r in rows if str(r.get("source", "")) == source]
        print(report(part, f"{args.split} / {source or 'all'}", t))
    print(report(rows, f"{args.split} / every source", t))


if __name__ == "__main__":
    main()
