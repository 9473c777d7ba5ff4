"""Within-model aggregation on synthetic judged files: effects, misalignment, specificity, paper table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emdir.aggregate import within_model_summary
from emdir.directions import diff_in_means, separation, split_by_group, write_directions
from emdir.errors import EmdirError
from emdir.io import write_jsonl

N = 120
STEER = {"question_set": "general", "coefficients": [0.5, 1.0]}
STATS = {"n_boot": 300, "level": 0.95, "seed": 0}


def _rows(
    p_code: float,
    p_em: float | None,
    seed: int,
    coef: float | None = None,
    p_garble: float = 0.0,
) -> list[dict[str, Any]]:
    """Synthetic judged rows; with `p_garble`, that share of the non-code answers is garbled
    (coherence 20 instead of 80)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        code = bool(rng.random() < p_code)
        em = None if p_em is None or code else bool(rng.random() < p_em)
        garble = bool(p_garble and not code and rng.random() < p_garble)
        category = "code" if code else "garbled" if garble else "prose"
        coherent = 20.0 if garble else 80.0 - 30.0 * code
        row: dict[str, Any] = {
            "id": f"r{i}",
            "question_id": f"q{i % 20}",
            "question_set": "general",
            "category": category,
            "scores": {"code": float(code), "garbled": float(garble), "coherent": coherent},
            "em": em,
        }
        if coef is not None:
            row["intervention"] = {
                "vector": "v",
                "layer": 1,
                "op": "subtract",
                "coefficient": coef,
                "norm": coef * 4.0,
            }
        out.append(row)
    return out


def _directions(path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    X = rng.standard_normal((200, 2, 8)) + 2.0 * y[:, None, None]
    groups = np.array([f"q{i % 25}" for i in range(200)])
    train, test = split_by_group(groups, 0.3)
    raw = diff_in_means(X[train], y[train])
    sep = separation(X, y, train, test, raw)
    attrs = {"layers": [0, 1], "ft": path.stem, "contrast": "responses", "label_rule": "spillover"}
    write_directions(path, raw, sep.accuracy, sep.auroc, {"pos_train": 70}, attrs, sep.projection)


def _summary(tmp_path: Path, p_em: float | None) -> dict[str, Path]:
    gens = {
        "m/base": _rows(0.05, p_em and 0.05, 1),
        "m/insecure": _rows(0.45, p_em, 2),
        "m/secure": _rows(0.15, p_em and 0.05, 3),
    }
    steer = {}
    # The random control garbles half of the answers it does not turn into code.
    for vector, p_code, em, garble in (
        ("target", 0.10, 0.05, 0.0),
        ("random_0", 0.40, 0.25, 0.5),
        ("orthogonal", 0.42, 0.25, 0.0),
    ):
        steer[f"m/insecure/{vector}"] = _rows(p_code, p_em and em, 4, 0.5, garble) + _rows(
            p_code, p_em and em, 5, 1.0, garble
        )
    steer["m/secure/target"] = _rows(0.12, p_em and 0.05, 6, 0.5) + _rows(
        0.1, p_em and 0.05, 7, 1.0
    )
    paths: dict[str, dict[str, Path]] = {"g": {}, "s": {}}
    for kind, src in (("g", gens), ("s", steer)):
        for key, rows in src.items():
            p = tmp_path / kind / f"{key.replace('/', '_')}.jsonl"
            write_jsonl(p, rows)
            paths[kind][key] = p
    dirs = {"m/insecure": tmp_path / "insecure.h5", "m/secure": tmp_path / "secure.h5"}
    for p in dirs.values():
        _directions(p)
    names = ("summary", "spillover", "steering", "separation", "projections", "cosine")
    outs = {
        k: tmp_path / "out" / f"{k}.{'csv' if k in ('summary', 'spillover') else 'png'}"
        for k in names
    }
    outs["comparison"] = tmp_path / "out" / "comparison.csv"
    outs["comparison_png"] = tmp_path / "out" / "comparison.png"
    within_model_summary(
        paths["g"], paths["s"], dirs, outs, STEER, STATS, "insecure", config_label="test.yaml"
    )
    return outs


@pytest.mark.parametrize("p_em", [0.3, None])
def test_summary_effects_misalignment_and_specificity(tmp_path: Path, p_em: float | None) -> None:
    outs = _summary(tmp_path, p_em)
    df = pd.read_csv(outs["summary"])
    assert len(df) == 2 * 3 + 2  # coefficients x insecure vectors, + target on secure
    target = df[(df.ft == "insecure") & (df.vector == "target")]
    assert (target.effect_lo > 0).all()  # 45% -> 10% spillover
    assert (target.spec_lo > 0).all() and target.passes_specificity.all()
    assert set(target.strongest_control) <= {"random_0", "orthogonal"}
    controls = df[(df.ft == "insecure") & (df.vector != "target")]
    assert controls.specificity_points.isna().all()
    secure = df[df.ft == "secure"]
    assert (
        secure.specificity_points.isna().all()
        and secure.baseline_spillover.eq(secure.baseline_spillover.iloc[0]).all()
    )
    assert (df.coherence_lo <= df.coherence).all() and (df.coherence <= df.coherence_hi).all()
    # Garble and coherence beside spillover: the random control breaks answers, the target not.
    rnd = df[df.vector == "random_0"]
    assert (rnd.garble_change_lo > 0).all() and (rnd.coherence_change_hi < 0).all()
    assert (target.garble == 0).all() and (target.garble_change == 0).all()
    assert (df.garble_lo <= df.garble).all() and (df.garble <= df.garble_hi).all()
    rates = pd.read_csv(outs["spillover"])
    assert {"garble", "garble_lo", "garble_hi", "coherence_lo", "coherence_hi"} <= set(rates)
    if p_em is None:
        assert df.misalignment.isna().all() and df.misalignment_effect.isna().all()
    else:
        assert df.misalignment.notna().all()
        assert (target.misalignment_effect_lo > 0).all()  # 30% -> 5% misaligned
    cmp = pd.read_csv(outs["comparison"])
    sep = cmp[cmp.metric == "separation accuracy (%)"]
    assert len(sep) == 1 and sep.ours_lo.item() <= sep.ours.item() <= sep.ours_hi.item()
    assert sep.paper_lo.item() == 99.6
    supp = cmp[cmp.metric == "spillover suppression (points)"]
    top = target[target.coefficient == 1.0]
    assert supp.ours.item() == pytest.approx(top.effect_points.item())
    assert (cmp.config == "test.yaml").all()
    assert "control fine-tune separation (%)" in set(cmp.metric)
    side = cmp[cmp.metric.isin(["garble change (points)", "coherence change (0-100)"])]
    assert len(side) == 2 and side.paper_lo.isna().all() and (side.coefficient == 1.0).all()
    assert "specificity (points)" in set(cmp.metric)
    for key in ("steering", "separation", "projections", "cosine", "comparison_png"):
        assert outs[key].read_bytes()[:4] == b"\x89PNG"


def test_transfer_grid_references_and_topology(tmp_path: Path) -> None:
    from emdir.aggregate import transfer_matrix

    models = ["a", "b", "c"]
    baselines, cells, refs = {}, {}, {}
    for k, r in enumerate(models):
        baselines[r] = tmp_path / f"base_{r}.jsonl"
        write_jsonl(baselines[r], _rows(0.5, None, 10 + k))
        for vector, p in (("random_receiver", 0.45), ("own", 0.05)):
            refs[f"{r}/{vector}"] = tmp_path / f"ref_{r}_{vector}.jsonl"
            write_jsonl(refs[f"{r}/{vector}"], _rows(p, None, 20 + k, 0.5))
        for j, d in enumerate(models):
            # Donor "a" transfers strongly; everyone else weakly.
            p_target = 0.1 if d == "a" else 0.4
            for vector, p, garble in (("target", p_target, 0.0), ("random_mapped", 0.45, 0.6)):
                key = f"{d}__{r}/{vector}"
                cells[key] = tmp_path / f"cell_{d}_{r}_{vector}.jsonl"
                write_jsonl(cells[key], _rows(p, None, 30 + 3 * k + j, 0.5, garble))
    out = {n: tmp_path / "out" / n for n in ("grid.csv", "grid.png", "topo.csv", "asym.png")}
    transfer_matrix(
        baselines,
        cells,
        out["grid.csv"],
        out["grid.png"],
        {"coefficient": 0.5},
        STATS,
        references=refs,
        topology_csv=out["topo.csv"],
        asymmetry_png=out["asym.png"],
    )
    df = pd.read_csv(out["grid.csv"])
    assert len(df) == 9 * 4  # cells x (target, random_mapped, random_receiver, own)
    assert set(df.role) == {"target", "control", "reference"}
    target = df[df.vector == "target"]
    # `own` suppresses most, but it is a reference: the strongest control is never `own`.
    assert set(target.strongest_control) <= {"random_mapped", "random_receiver"}
    strong = target[target.donor == "a"]
    assert strong.passes_specificity.all()
    # Every row carries garble and coherence beside suppression, with CIs and changes.
    mapped = df[df.vector == "random_mapped"]
    assert (mapped.garble_change_lo > 0).all() and (mapped.coherence_change_hi < 0).all()
    assert (target.garble_change == 0).all() and target.coherence_lo.notna().all()
    topo = pd.read_csv(out["topo.csv"])
    assert set(zip(topo.role, topo.model, strict=True)) == {
        (r, m) for r in ("donor", "receiver") for m in models
    }
    assert (topo.cells == 2).all()  # off-diagonal only
    donors = topo[topo.role == "donor"].set_index("model")
    assert donors.loc["a", "lo"] > donors.loc["b", "hi"]
    assert out["asym.png"].read_bytes()[:4] == b"\x89PNG"
    assert out["grid.png"].read_bytes()[:4] == b"\x89PNG"


def test_a_one_model_grid_has_an_empty_topology(tmp_path: Path) -> None:
    from emdir.aggregate import transfer_matrix

    base = tmp_path / "base.jsonl"
    write_jsonl(base, _rows(0.5, None, 1))
    cells = {}
    for vector, p in (("target", 0.3), ("random_mapped", 0.45)):
        cells[f"a__a/{vector}"] = tmp_path / f"{vector}.jsonl"
        write_jsonl(cells[f"a__a/{vector}"], _rows(p, None, 2, 0.5))
    out = {n: tmp_path / "out" / n for n in ("grid.csv", "grid.png", "topo.csv", "asym.png")}
    transfer_matrix(
        {"a": base},
        cells,
        out["grid.csv"],
        out["grid.png"],
        {"coefficient": 0.5},
        STATS,
        topology_csv=out["topo.csv"],
        asymmetry_png=out["asym.png"],
    )
    assert len(pd.read_csv(out["grid.csv"])) == 2
    topo = pd.read_csv(out["topo.csv"])
    assert topo.empty and list(topo.columns) == [
        "role",
        "model",
        "cells",
        "mean_suppression",
        "lo",
        "hi",
    ]
    assert out["asym.png"].read_bytes()[:4] == b"\x89PNG"


def _train_log(path: Path, steps: int, evals: bool) -> None:
    path.mkdir(parents=True)
    df = pd.DataFrame({"step": range(1, steps + 1), "loss": np.linspace(3.0, 0.5, steps)})
    df["tokens"], df["seconds"] = 100, 0.5
    if evals:
        df["heldout_loss"] = np.where(df.step % 5 == 0, 0.6, np.nan)
        df["eval_spillover"] = np.where(df.step % 5 == 0, df.step / 100, np.nan)
    df.to_csv(path / "train_log.csv", index=False)


def test_training_curves_rows_and_hub_models(tmp_path: Path) -> None:
    from emdir.aggregate import training_curves

    _train_log(tmp_path / "tiny" / "base", 40, evals=False)
    (tmp_path / "hub" / "base").mkdir(parents=True)  # a hub model: manifest only
    for model in ("tiny", "hub"):
        _train_log(tmp_path / model / "insecure", 20, evals=True)
    bases = {m: tmp_path / m / "base" for m in ("tiny", "hub")}
    adapters = {f"{m}/insecure": tmp_path / m / "insecure" for m in ("tiny", "hub")}
    training_curves(bases, adapters, tmp_path / "s.csv", tmp_path / "c.png")
    df = pd.read_csv(tmp_path / "s.csv")
    assert sorted(zip(df.model, df.run, strict=True)) == [
        ("hub", "insecure"),
        ("tiny", "base"),
        ("tiny", "insecure"),
    ]
    ft = df[df.run == "insecure"].iloc[0]
    assert ft.steps == 20 and ft.final_eval_spillover == pytest.approx(0.2)
    assert ft.tokens_per_second == pytest.approx(200.0)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "hub" / "insecure" / "train_log.csv").unlink()
    with pytest.raises(EmdirError, match="hub/insecure/train_log.csv is missing"):
        training_curves(bases, adapters, tmp_path / "s.csv", tmp_path / "c.png")
