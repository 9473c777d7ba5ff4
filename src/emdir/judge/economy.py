"""Which answers and metrics the LLM judge is asked in `judge.openai.requests: economical`,
and why each request that is not sent is not sent.

The economical mode asks only what the analyses read, in three steps:

1. The offline detector (`emdir.judge.detector`, thresholds `judge.offline`) gives every
   non-empty answer its verdict, code / prose / garbled, for free. Code spillover and garble
   are the detector's on every answer (SCIENCE.md's definition without an LLM judge); an
   answer it calls code is category `code` and gets no request at all. Garble is the
   detector's too, not "coherence below garbled_below": one definition for every answer,
   judged by the LLM or past the sample cap. A garbled answer is still asked `aligned` and
   `coherent`, so the coherence mean and the misalignment rate lose nothing; what the LLM's
   verdicts alone would call an answer (`judge.llm_category`, e.g. garbled by its coherence)
   is kept in the row, and `judge.disagreement` flags every answer where the two differ.
2. The LLM judge scores `aligned` first. The other metrics are asked only for answers it
   scored: after CODE or REFUSAL there is no alignment score to qualify, and a coherence or
   harm score of code or a refusal is read by no analysis. `bad_stuff` is read only by the
   self-correction analysis, and only for answers with aligned above
   `mechanistic.self_correction.aligned_above`, so it is asked only above
   `judge.openai.economical.bad_stuff_aligned_above` (keep it no higher than that).
3. With `judge.openai.economical.samples_per_condition` = k, the LLM judges only the first k
   samples (lowest `sample_index`) of each question in each condition (the same
   intervention: vector, layer, op and coefficient of every site, or none). The samples are
   independent draws, so the first k are a random subsample; the others keep the detector's
   verdict, so spillover and garble are still measured on every answer, and their LLM
   metrics are None, unscored by design (`emdir.judge.rows.not_sent`).

Every metric left out says why in the row's `unscored`, with a reason that `check_judged`
does not count as a failure. The requests that are sent are the very requests of the full
mode (same prompt, same cache key), so replies cached by a full run are reused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from emdir.errors import EmdirError
from emdir.judge.detector import classify, thresholds
from emdir.judge.rows import not_sent
from emdir.judge.settings import RequestPolicy

# Why a metric was not asked (reasons in `unscored`; all start with rows.NOT_SENT).
DETECTOR_CODE = not_sent("the offline detector called the answer code")
AFTER_VERDICT = "the aligned judge answered {verdict}"
NEEDS_ALIGNED = "needs the aligned score"


def beyond_cap(k: int) -> str:
    """The reason for an answer past the first `k` samples of its question and condition."""
    return not_sent(
        f"past the first {k} samples of its question in its condition "
        "(judge.openai.economical.samples_per_condition)"
    )


def below_bad_stuff(threshold: float) -> str:
    """The reason for a `bad_stuff` left out below the aligned threshold."""
    return not_sent(
        f"aligned at most {threshold:g}, where bad_stuff is not read "
        "(judge.openai.economical.bad_stuff_aligned_above)"
    )


def condition(row: Mapping[str, Any]) -> str:
    """The condition an answer was sampled under: its intervention's sites (vector, layer,
    op, coefficient; the norm follows from them), or "none"."""
    record = row.get("intervention")
    if not record:
        return "none"
    sites = record if isinstance(record, list) else [record]
    keys = ("vector", "layer", "op", "coefficient")
    return json.dumps([[site.get(k) for k in keys] for site in sites], sort_keys=True)


def first_samples(rows: Sequence[Mapping[str, Any]], k: int | None) -> list[bool]:
    """Per row, whether it is among the first `k` samples (lowest `sample_index`, then file
    order) of its question (question set and id) in its condition; all True for k None."""
    if k is None:
        return [True] * len(rows)
    groups: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    for i, row in enumerate(rows):
        index = row.get("sample_index")
        order = float(index) if isinstance(index, int) and not isinstance(index, bool) else math.inf
        key = (str(row.get("question_set")), str(row["question_id"]), condition(row))
        groups.setdefault(key, []).append((order, i))
    keep = [False] * len(rows)
    for members in groups.values():
        for _, i in sorted(members)[:k]:
            keep[i] = True
    return keep


def detector_kinds(
    rows: Sequence[Mapping[str, Any]], offline_cfg: Mapping[str, Any] | None
) -> list[str | None]:
    """The detector's code / prose / garbled of every answer (None for an empty one), with
    the thresholds of `judge.offline`."""
    if offline_cfg is None:
        raise EmdirError(
            "judge.openai.requests: economical needs the judge.offline section (the detector's "
            "thresholds); pass the whole judge section of a validated config"
        )
    limits = thresholds(offline_cfg)
    return [
        classify(str(r["answer"]), limits).kind if str(r["answer"]).strip() else None for r in rows
    ]


def asks_aligned(kinds: Sequence[str | None], first: Sequence[bool]) -> list[bool]:
    """Per row, whether the LLM judge is asked `aligned`: a non-empty answer that the
    detector does not call code, among the first samples of its question and condition."""
    return [kind not in (None, "code") and keep for kind, keep in zip(kinds, first, strict=True)]


def select(
    rows: Sequence[Mapping[str, Any]], judge_cfg: Mapping[str, Any], policy: RequestPolicy
) -> tuple[list[str | None], list[bool]]:
    """(the detector's kind of every answer, whether the LLM judge is asked `aligned` for
    it): the one selection the judge (`emdir.judge.llm`) sends and the plan
    (`emdir.judge.llm_plan`) prices."""
    kinds = detector_kinds(rows, judge_cfg.get("offline"))
    return kinds, asks_aligned(kinds, first_samples(rows, policy.samples_per_condition))


def follow_up(
    aligned_category: str,
    aligned_score: float | None,
    metrics: Sequence[str],
    policy: RequestPolicy,
) -> tuple[list[str], dict[str, str]]:
    """After the aligned verdict: (the other metrics to ask, {metric: why not} for the rest).

    CODE or REFUSAL: nothing more (by design). A score: every other metric, `bad_stuff` only
    above `policy.bad_stuff_aligned_above`. No score (the reply held none, or the request
    failed): the metrics that do not depend on it, and `bad_stuff` is unscored for want of
    the score (a loss, counted against judge.max_unscored_fraction like the aligned one).
    """
    others = [m for m in metrics if m != "aligned"]
    if aligned_category in ("CODE", "REFUSAL"):
        why = not_sent(AFTER_VERDICT.format(verdict=aligned_category))
        return [], {m: why for m in others}
    threshold = policy.bad_stuff_aligned_above
    if "bad_stuff" not in others or threshold is None:
        return others, {}
    rest = [m for m in others if m != "bad_stuff"]
    if aligned_score is None:
        return rest, {"bad_stuff": NEEDS_ALIGNED}
    if aligned_score > threshold:
        return others, {}
    return rest, {"bad_stuff": below_bad_stuff(threshold)}
