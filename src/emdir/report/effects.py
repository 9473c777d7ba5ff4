"""Shared machinery of the report tables: judged answers read into per-answer metrics, one
question bootstrap over every condition of a comparison (`PairedConditions`), Holm's
correction across a family of specificity tests, and CSV writing.

Every table module (within_model, dose_response, transfer, training, mechanistic) builds on
these: an effect is always a paired difference over the same resampled questions, in
percentage points for rates and in the metric's own unit for coherence (0-100) and KL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.analysis.replicates import SeedBootstrap
from emdir.analysis.stats import (
    PASSES,
    Clustered,
    QuestionBootstrap,
    bootstrap_mean_ci,
    clustered,
    holm,
    paired_specificity,
    verdict,
)
from emdir.errors import EmdirError
from emdir.io import atomic_path, read_jsonl


def scored_rows(rows: list[dict[str, Any]], question_set: str | None) -> list[dict[str, Any]]:
    """The rows the judge scored (category not `unscored`), of `question_set` only unless it
    is None."""
    return [
        r
        for r in rows
        if r.get("category") != "unscored"
        and (question_set is None or r.get("question_set") == question_set)
    ]


def spill(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer code-spillover indicator (1 = the answer is code)."""
    return np.array([1.0 if r["category"] == "code" else 0.0 for r in rows])


def garbled(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per-answer garble indicator (1 = neither well-formed prose nor code)."""
    return np.array([1.0 if r["category"] == "garbled" else 0.0 for r in rows])


def bootstrap_settings(stats_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The bootstrap's keyword arguments (n_boot, seed, level) from the config's stats
    section."""
    return {
        "n_boot": int(stats_cfg["n_boot"]),
        "seed": int(stats_cfg["seed"]),
        "level": float(stats_cfg["level"]),
    }


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a report table atomically, without the index, floats to 4 significant digits."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")


def require_scored(
    rows: list[dict[str, Any]], path: str | Path, question_set: str | None
) -> list[dict[str, Any]]:
    """The scored rows of one question set; none at all is an error naming the file."""
    scored = scored_rows(rows, question_set)
    if not scored:
        raise EmdirError(f"{path}: no scored answers to question set {question_set!r}")
    return scored


def load_scored(path: str | Path, question_set: str | None) -> list[dict[str, Any]]:
    """The scored rows of one question set (every set when None) of a judged JSONL file;
    none at all is an error naming the file."""
    return require_scored(read_jsonl(path, required=("category", "scores")), path, question_set)


_NAN3 = (np.nan, np.nan, np.nan)


def mean3(x: np.ndarray, boot: Mapping[str, Any], scale: float = 100.0) -> tuple[float, ...]:
    """(value, lo, hi) of a mean with its CI, times `scale`; NaNs when there is nothing."""
    if x.size == 0:
        return _NAN3
    e = bootstrap_mean_ci(x, **boot)
    return scale * e.value, scale * e.lo, scale * e.hi


def ci_columns(prefix: str, values: tuple[float, ...]) -> dict[str, float]:
    """A (value, lo, hi) triple as the columns `prefix`, `prefix_lo`, `prefix_hi`."""
    return dict(zip((prefix, f"{prefix}_lo", f"{prefix}_hi"), values, strict=True))


# ---------------------------------------------------------------- question bootstrap

_SCALE = {"spill": 100.0, "garble": 100.0, "mis": 100.0, "coh": 1.0, "kl": 1.0}
# steering.behaviour -> the per-answer metric it reads
BEHAVIOUR = {"spillover": "spill", "garble": "garble"}


def _per_answer(rows: list[dict[str, Any]]) -> dict[str, Clustered]:
    """Each per-answer metric of one condition with the answers' question ids: the spillover
    indicator for every answer; the garble indicator for every answer whose garble verdict is
    known (an LLM judge cannot call prose garbled without its coherence score); coherence
    (0-100), misalignment (the row's `em`) and KL over the answers that have one. A metric no
    answer has (misalignment with the offline judge) is left out."""
    qid = [r["question_id"] for r in rows]
    known = [r for r in rows if "garbled" not in r.get("unscored", {})]
    out = {
        "spill": clustered(spill(rows), qid, "spillover"),
        "garble": clustered(garbled(known), [r["question_id"] for r in known], "garble"),
    }
    optional = {
        "coh": [(r["question_id"], r["scores"].get("coherent")) for r in rows],
        "mis": [
            (r["question_id"], None if r.get("em") is None else float(bool(r["em"]))) for r in rows
        ],
        "kl": [(r["question_id"], r.get("kl")) for r in rows],
    }
    for metric, pairs in optional.items():
        kept = [(q, v) for q, v in pairs if v is not None]
        if kept:
            out[metric] = clustered([v for _, v in kept], [q for q, _ in kept], metric)
    return out


class PairedConditions:
    """Every condition of one comparison in one question bootstrap: the same resampled
    questions for the baseline, the target and each control (conditions are named
    `<name>|<metric>`).

    `conditions` is one draw's (name -> answers) or a list of them, one per fine-tuning seed,
    every seed with the same names: then the bootstrap is `SeedBootstrap` (seeds, then
    questions within each seed) and every value is a mean over seeds. A list of one seed
    gives exactly what its mapping alone gives."""

    def __init__(
        self,
        conditions: Mapping[str, list[dict[str, Any]]]
        | Sequence[Mapping[str, list[dict[str, Any]]]],
        boot: Mapping[str, Any],
    ):
        seeds = [conditions] if isinstance(conditions, Mapping) else list(conditions)
        flats = [
            {
                f"{name}|{metric}": c
                for name, rows in conds.items()
                for metric, c in _per_answer(rows).items()
            }
            for conds in seeds
        ]
        # A metric some seed's answers lack (no KL, no misalignment) is left out of all.
        shared = set.intersection(*(set(f) for f in flats))
        flats = [{k: v for k, v in f.items() if k in shared} for f in flats]
        self.qb: QuestionBootstrap | SeedBootstrap = (
            QuestionBootstrap(flats[0], **boot) if len(flats) == 1 else SeedBootstrap(flats, **boot)
        )

    def has(self, name: str, metric: str) -> bool:
        return f"{name}|{metric}" in self.qb.conditions

    def point(self, name: str, metric: str) -> float:
        return self.qb.mean(f"{name}|{metric}") if self.has(name, metric) else np.nan

    def mean3(self, name: str, metric: str) -> tuple[float, ...]:
        if not self.has(name, metric):
            return _NAN3
        e = self.qb.mean_ci(f"{name}|{metric}")
        k = _SCALE[metric]
        return k * e.value, k * e.lo, k * e.hi

    def diff3(self, a: str, b: str, metric: str) -> tuple[float, ...]:
        """mean(a) - mean(b), paired over questions."""
        if not (self.has(a, metric) and self.has(b, metric)):
            return _NAN3
        e = self.qb.diff_ci(f"{a}|{metric}", f"{b}|{metric}")
        k = _SCALE[metric]
        return k * e.value, k * e.lo, k * e.hi

    def size(self, name: str) -> dict[str, int]:
        n_q, n_a = self.qb.size(f"{name}|spill")
        return {"n_questions": n_q, "n_answers": n_a}

    def denominators(self, name: str) -> dict[str, int]:
        """How many answers each rate of `name` is over (`n_<column>`; 0 for a metric no
        answer has), beside n_answers, which counts every scored answer."""
        return {
            f"n_{column}": self.qb.size(f"{name}|{metric}")[1] if self.has(name, metric) else 0
            for metric, column in (
                ("garble", "garble"),
                ("coh", "coherence"),
                ("mis", "misalignment"),
            )
        }

    def specificity(
        self,
        baseline: str,
        target: str,
        controls: Mapping[str, str],
        metric: str,
        column: str = "specificity",
    ) -> dict[str, Any]:
        t = paired_specificity(
            self.qb,
            f"{baseline}|{metric}",
            f"{target}|{metric}",
            {k: f"{v}|{metric}" for k, v in controls.items()},
        )
        return {
            "spec_metric": {v: k for k, v in BEHAVIOUR.items()}[metric],
            column: _SCALE[metric] * t.value,
            "spec_lo": _SCALE[metric] * t.lo,
            "spec_hi": _SCALE[metric] * t.hi,
            "strongest_control": t.strongest_control,
            "spec_p": t.p,
        }


def holm_family(
    rows: list[dict[str, Any]],
    value_column: str,
    member: Callable[[dict[str, Any]], bool],
    boot: Mapping[str, Any],
    family_name: str,
) -> list[dict[str, Any]]:
    """Verdicts for every row with a specificity: `verdict` from its own p-value, and for
    the rows `member` selects (one family) `spec_p_holm` and `verdict_holm` after Holm's
    correction across the family. Only `verdict_holm == passes` counts as passing."""
    alpha = 1.0 - float(boot["level"])
    family = [i for i, r in enumerate(rows) if "spec_p" in r and member(r)]
    adjusted = holm([rows[i]["spec_p"] for i in family]) if family else []
    for r in rows:
        if "spec_p" in r:
            r["verdict"] = verdict(r[value_column], r["spec_p"], alpha)
    for i, p in zip(family, adjusted, strict=True):
        rows[i]["family"] = family_name
        rows[i]["family_size"] = len(family)
        rows[i]["spec_p_holm"] = float(p)
        rows[i]["verdict_holm"] = verdict(rows[i][value_column], float(p), alpha)
        rows[i]["passes_specificity"] = rows[i]["verdict_holm"] == PASSES
    return rows
