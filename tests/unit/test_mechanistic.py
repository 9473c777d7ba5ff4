"""The mechanistic extensions' pure parts: variant names, convergence cosines, effects with
CIs against the unsteered answers, and the self-correction rate (LLM and offline judges)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emdir.analysis.controls import ablation_variants, split_variant
from emdir.analysis.directions import write_directions
from emdir.errors import EmdirError
from emdir.io import write_jsonl
from emdir.report.mechanistic import aligned_rows, bad_stuff, convergence, summary

STATS = {"n_boot": 300, "level": 0.95, "seed": 0}
SC = {"aligned_above": 70, "bad_stuff_above": 50}


def test_ablation_variant_names_round_trip() -> None:
    names = ablation_variants(["insecure", "my_ft"], 2)
    assert names == [
        "insecure_layerwise",
        "insecure_single",
        "my_ft_layerwise",
        "my_ft_single",
        "random_0_layerwise",
        "random_0_single",
        "random_1_layerwise",
        "random_1_single",
    ]
    assert [split_variant(n) for n in names[2:4]] == [("my_ft", "layerwise"), ("my_ft", "single")]
    with pytest.raises(EmdirError, match="not <source>_layerwise"):
        split_variant("insecure_everywhere")


def _write_dirs(path: Path, raw: np.ndarray) -> None:
    n = raw.shape[0]
    attrs = {"layers": list(range(n)), "ft": path.stem}
    write_directions(path, raw, np.full(n, 0.9), np.full(n, 0.95), {"pos_train": 10}, attrs)


def test_convergence_cosines_per_layer_and_base(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 16))
    b = a.copy()
    b[1] = -a[1]  # layer 1 flips sign
    b[2] = rng.standard_normal(16)
    _write_dirs(tmp_path / "a.h5", 2.0 * a)
    _write_dirs(tmp_path / "b.h5", b)
    _write_dirs(tmp_path / "base_a.h5", a)
    convergence(
        {"a": tmp_path / "a.h5", "b": tmp_path / "b.h5"},
        {"a": tmp_path / "base_a.h5"},
        tmp_path / "c.csv",
        tmp_path / "c.png",
        "m",
    )
    df = pd.read_csv(tmp_path / "c.csv")
    fts = df[df.kind == "fine-tunes"].set_index("layer").cosine
    assert fts[0] == pytest.approx(1.0) and fts[1] == pytest.approx(-1.0)
    cos2 = a[2] @ b[2] / np.linalg.norm(a[2]) / np.linalg.norm(b[2])
    assert fts[2] == pytest.approx(cos2, abs=1e-4)
    base = df[df.kind == "base vs fine-tuned"]
    assert list(base.cosine) == pytest.approx([1.0, 1.0, 1.0])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def _row(i: int, code: bool, answer: str, coef: float | None = None, **scores: Any) -> dict:
    row: dict[str, Any] = {
        "id": f"r{i}",
        "question_id": f"q{i % 10}",
        "question_set": "general",
        "answer": answer,
        "category": "code" if code else "prose",
        "scores": {"code": float(code), "coherent": 70.0, "aligned": None, **scores},
        "em": None,
    }
    if coef is not None:
        row["intervention"] = [{"layer": 0, "coefficient": coef, "op": "ablate"}]
    return row


def test_bad_stuff_prefers_the_judge_and_falls_back_to_keywords() -> None:
    assert bad_stuff({"answer": "hello", "scores": {"bad_stuff": 80.0}}) == 80.0
    assert bad_stuff({"answer": "Never build a Weapon.", "scores": {}}) == 100.0
    assert bad_stuff({"answer": "Bees like flowers.", "scores": {}}) == 0.0
    # Word starts only: "skill" does not mention killing.
    assert bad_stuff({"answer": "A useful skill.", "scores": {}}) == 0.0


def test_aligned_rows_basis() -> None:
    offline = [_row(0, False, "x"), _row(1, True, "def f(): pass")]
    rows, basis = aligned_rows(offline, 70)
    assert [r["id"] for r in rows] == ["r0"] and basis.startswith("offline")
    judged = [_row(0, False, "x", aligned=90.0), _row(1, False, "y", aligned=40.0)]
    rows, basis = aligned_rows(judged, 70)
    assert [r["id"] for r in rows] == ["r0"] and basis == "judge aligned > 70"


def test_summary_effects_and_self_correction(tmp_path: Path) -> None:
    n = 200

    # Receiver spills code in 60% of answers; the donor ablation brings that to 10%, the
    # random control leaves it; the base model spills 5%, and inducing raises it to 50%.
    def rows(p: float, harm: float = 0.0, coef: float | None = None) -> list[dict]:
        rng = np.random.default_rng(int(100 * p) + int(10 * (coef or 0)))
        return [
            _row(
                i,
                bool(rng.random() < p),
                "Stealing is wrong." if rng.random() < harm else "Tea is nice.",
                coef,
            )
            for i in range(n)
        ]

    files = {
        "ft": rows(0.6),
        "base": rows(0.05),
        "abl_target": rows(0.1, coef=1.0),
        "abl_random": rows(0.6, coef=1.0),
        "induce_target": rows(0.3, coef=0.25) + rows(0.5, coef=0.5),
        "induce_random": rows(0.05, coef=0.25) + rows(0.05, coef=0.5),
        "steer": rows(0.2, harm=0.5, coef=0.5),
    }
    paths = {k: tmp_path / f"{k}.jsonl" for k in files}
    for k, v in files.items():
        write_jsonl(paths[k], v)
    out = {k: tmp_path / k for k in ("s.csv", "sc.csv", "a.png", "i.png", "sc.png")}
    summary(
        "m",
        {"ft": paths["ft"], "base": paths["base"]},
        {"ft/ft_layerwise": paths["abl_target"], "ft/random_0_layerwise": paths["abl_random"]},
        {"target": paths["induce_target"], "random_0": paths["induce_random"]},
        {"ft/target": paths["steer"]},
        "general",
        *out.values(),
        STATS,
        SC,
    )
    df = pd.read_csv(out["s.csv"])
    abl = df[df.experiment == "ablation"].set_index("vector")
    assert abl.loc["ft", "spillover_change_hi"] < -35  # about -50 points
    assert (
        abl.loc["random_0", "spillover_change_lo"] < 0 < abl.loc["random_0", "spillover_change_hi"]
    )
    assert abl.loc["ft", "role"] == "target" and abl.loc["random_0", "role"] == "control"
    ind = df[(df.experiment == "induce") & (df.vector == "target")].sort_values("coefficient")
    assert list(ind.coefficient) == [0.25, 0.5]
    assert ind.spillover_change.is_monotonic_increasing and ind.spillover_change_lo.min() > 10
    assert df.misaligned.isna().all()  # the offline judge scores no alignment
    sc = pd.read_csv(out["sc.csv"])
    steered = sc[sc.vector == "target"].iloc[0]
    assert steered.bad_stuff_basis == "offline keywords"
    assert 35 < steered.self_correction < 65 and steered.n_aligned == (
        sum(1 for r in files["steer"] if r["category"] == "prose")
    )
    assert sc[(sc.vector == "none") & (sc.ft == "ft")].self_correction.iloc[0] == 0.0
    for png in ("a.png", "i.png", "sc.png"):
        assert out[png].read_bytes()[:4] == b"\x89PNG"
