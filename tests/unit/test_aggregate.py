"""Within-model aggregation on synthetic judged files: effects, misalignment, specificity, paper table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emdir.analysis.directions import diff_in_means, separation, split_by_group, write_directions
from emdir.errors import EmdirError
from emdir.io import write_jsonl
from emdir.report.within_model import finetune_summary, within_model_summary

N = 120
STEER = {
    "question_set": "general",
    "coefficients": [0.5, 1.0],
    "behaviour": "spillover",
    "read": {"cost": "coherence", "max_cost": 10.0},
    "match": ["norm", "kl"],
}
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


def _write(
    tmp_path: Path, gens: dict[str, Any], steer: dict[str, Any]
) -> dict[str, dict[str, Path]]:
    """Judged files for generations (`g`) and steering outputs (`s`), keyed as given."""
    paths: dict[str, dict[str, Path]] = {"g": {}, "s": {}}
    for kind, src in (("g", gens), ("s", steer)):
        for key, rows in src.items():
            p = tmp_path / kind / f"{key.replace('/', '_')}.jsonl"
            write_jsonl(p, rows)
            paths[kind][key] = p
    return paths


def summarise(
    generations: dict, steering: dict, dirs: dict, outs: dict, config_label: str = ""
) -> None:
    """Both per-seed summaries as the workflow runs them: finetune_summary's rates and
    contrasts, then within_model_summary's steering tables and figures."""
    finetune_summary(generations, outs, STEER["question_set"], STATS, "insecure")
    within_model_summary(
        generations, steering, dirs, outs, STEER, STATS, "insecure", config_label=config_label
    )


def _outs(tmp_path: Path) -> dict[str, Path]:
    """Every output finetune_summary and within_model_summary write."""
    csvs = ("summary", "calibration", "spillover", "contrasts", "comparison")
    names = (*csvs, "steering", "separation", "projections", "cosine", "comparison_png")
    return {k: tmp_path / "out" / f"{k}.{'csv' if k in csvs else 'png'}" for k in names}


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
    paths = _write(tmp_path, gens, steer)
    dirs = {"m/insecure": tmp_path / "insecure.h5", "m/secure": tmp_path / "secure.h5"}
    for p in dirs.values():
        _directions(p)
    outs = _outs(tmp_path)
    summarise(paths["g"], paths["s"], dirs, outs, config_label="test.yaml")
    return outs


def test_the_fine_tunes_are_contrasted_with_the_base_and_the_insecure_one(tmp_path: Path) -> None:
    """finetune_contrasts.csv: insecure (45% spillover) against base (5%) and against the
    secure control (15%), paired by question; the difference is the rates' difference."""
    outs = _summary(tmp_path, None)
    df = pd.read_csv(outs["contrasts"]).set_index(["ft", "versus"])
    rates = pd.read_csv(outs["spillover"]).set_index("ft")["spillover"]
    assert sorted(df.index) == [("insecure", "base"), ("insecure", "secure"), ("secure", "base")]
    for (a, b), row in df.iterrows():
        # (the tables are written to 4 significant digits)
        assert row.difference == pytest.approx(rates[a] - rates[b], abs=0.01)
        assert row.spillover == pytest.approx(rates[a], abs=0.01)
        assert row.lo <= row.difference <= row.hi
        assert row.n_seeds == 1 and row.n_questions > 0
    assert df.loc[("insecure", "secure"), "call"] == "higher"  # 45% vs 15%
    assert df.loc[("insecure", "base"), "lo"] > 0
    assert {"garble_difference", "garble_difference_lo", "garble_difference_hi"} <= set(df.columns)


@pytest.mark.parametrize("p_em", [0.3, None])
def test_summary_effects_misalignment_and_specificity(tmp_path: Path, p_em: float | None) -> None:
    outs = _summary(tmp_path, p_em)
    df = pd.read_csv(outs["summary"])
    assert len(df) == 2 * 3 + 2  # coefficients x insecure vectors, + target on secure
    target = df[(df.ft == "insecure") & (df.vector == "target")]
    assert (target.effect_lo > 0).all()  # 45% -> 10% spillover
    assert (target.spec_lo > 0).all() and target.passes_specificity.dropna().all()
    # The random control garbles at both strengths (coherence falls > 10): no strength keeps
    # every control coherent, so the read strength is the smallest, flagged as such.
    assert target.read.tolist() == [True, False]
    read = target[target.read]
    assert read.passes_specificity.all() and (read.verdict_holm == "passes").all()
    assert (read.family_size == 1).all() and (read.spec_p_holm == read.spec_p).all()
    assert (target.n_questions == 20).all() and (target.n_answers == N).all()
    assert set(target.strongest_control) <= {"random_0", "orthogonal"}
    calib = pd.read_csv(outs["calibration"])
    assert set(calib.vector) == {"target", "random_0", "orthogonal"}
    assert (calib.read_coefficient == 0.5).all() and not calib.controls_within_cost.any()
    assert calib.set_index("vector").loc["target", "moves_behaviour_at"] == 0.5
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
    top = target[target.read]  # the paper table reads the target at the read strength
    assert supp.ours.item() == pytest.approx(top.effect_points.item())
    assert (cmp.config == "test.yaml").all()
    assert "control fine-tune separation (%)" in set(cmp.metric)
    side = cmp[cmp.metric.isin(["garble change (points)", "coherence change (0-100)"])]
    assert len(side) == 2 and side.paper_lo.isna().all() and (side.coefficient == 0.5).all()
    assert "specificity (points)" in set(cmp.metric)
    for key in ("steering", "separation", "projections", "cosine", "comparison_png"):
        assert outs[key].read_bytes()[:4] == b"\x89PNG"


def test_transfer_grid_references_and_topology(tmp_path: Path) -> None:
    from emdir.report.transfer import transfer_matrix

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
            for vector, p, garble in (
                ("target", p_target, 0.0),
                ("random_0", 0.45, 0.6),
                ("random_1", 0.40, 0.6),
            ):
                key = f"{d}__{r}/{vector}"
                cells[key] = tmp_path / f"cell_{d}_{r}_{vector}.jsonl"
                write_jsonl(cells[key], _rows(p, None, 30 + 3 * k + j, 0.5, garble))
    out = {n: tmp_path / "out" / n for n in ("grid.csv", "grid.png", "topo.csv", "asym.png")}
    transfer_matrix(
        baselines,
        cells,
        out["grid.csv"],
        out["grid.png"],
        {"coefficient": 0.5, "behaviour": "spillover"},
        STATS,
        references=refs,
        topology_csv=out["topo.csv"],
        asymmetry_png=out["asym.png"],
    )
    df = pd.read_csv(out["grid.csv"])
    assert len(df) == 9 * 5  # cells x (target, random_0, random_1, random_receiver, own)
    assert set(df.role) == {"target", "control", "reference"}
    target = df[df.vector == "target"]
    # `own` suppresses most, but it is a reference: the strongest control is never `own`.
    assert set(target.strongest_control) <= {"random_0", "random_1", "random_receiver"}
    strong = target[(target.donor == "a") & (target.receiver != "a")]
    assert strong.passes_specificity.all() and (strong.verdict_holm == "passes").all()
    # Holm across the six off-diagonal cells; the diagonal is its own family (self-map check).
    off = target[target.donor != target.receiver]
    assert (off.family == "transfer").all() and (off.family_size == 6).all()
    diag = target[target.donor == target.receiver]
    assert (diag.family == "diagonal").all() and (diag.family_size == 3).all()
    assert (diag.cell == "diagonal (self-map check)").all()
    assert (target.spec_p_holm >= target.spec_p).all()
    # Several random draws per cell, summarised with their spread.
    assert (target.random_draws == 2).all()
    assert (target.random_effect_min <= target.random_effect_mean).all()
    assert (target.random_effect_mean <= target.random_effect_max).all()
    assert (df.n_questions == 20).all() and (df.n_answers == N).all()
    # Every row carries garble and coherence beside suppression, with CIs and changes.
    mapped = df[df.vector == "random_0"]
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
    from emdir.report.transfer import transfer_matrix

    base = tmp_path / "base.jsonl"
    write_jsonl(base, _rows(0.5, None, 1))
    cells = {}
    for vector, p in (("target", 0.3), ("random_0", 0.45)):
        cells[f"a__a/{vector}"] = tmp_path / f"{vector}.jsonl"
        write_jsonl(cells[f"a__a/{vector}"], _rows(p, None, 2, 0.5))
    out = {n: tmp_path / "out" / n for n in ("grid.csv", "grid.png", "topo.csv", "asym.png")}
    transfer_matrix(
        {"a": base},
        cells,
        out["grid.csv"],
        out["grid.png"],
        {"coefficient": 0.5, "behaviour": "spillover"},
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
    from emdir.report.training import training_curves

    _train_log(tmp_path / "tiny" / "base", 40, evals=False)
    (tmp_path / "hub" / "base").mkdir(parents=True)  # a hub model: manifest only
    for model in ("tiny", "hub"):
        _train_log(tmp_path / model / "insecure", 20, evals=True)
    bases = {m: tmp_path / m / "base" for m in ("tiny", "hub")}
    adapters = {f"{m}/insecure": tmp_path / m / "insecure" for m in ("tiny", "hub")}
    training_curves(bases, adapters, tmp_path / "s.csv", tmp_path / "c.png", tmp_path / "ft")
    df = pd.read_csv(tmp_path / "s.csv")
    assert sorted(zip(df.model, df.run, strict=True)) == [
        ("hub", "insecure"),
        ("tiny", "base"),
        ("tiny", "insecure"),
    ]
    ft = df[df.run == "insecure"].iloc[0]
    assert ft.steps == 20 and ft.final_eval_spillover == pytest.approx(0.2)
    # Wall-clock throughput stays out of the CSV (the same config gives the same file); it
    # is in each run's manifest and log.
    assert "tokens_per_second" not in df.columns and "seconds" not in df.columns
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # Each fine-tune's log also gets its own figure; base-model chat training does not.
    assert sorted(
        p.relative_to(tmp_path / "ft").as_posix() for p in (tmp_path / "ft").rglob("*")
    ) == [
        "hub",
        "hub/insecure.png",
        "tiny",
        "tiny/insecure.png",
    ]
    assert (tmp_path / "ft" / "tiny" / "insecure.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "hub" / "insecure" / "train_log.csv").unlink()
    with pytest.raises(EmdirError, match="hub/insecure/train_log.csv is missing"):
        training_curves(bases, adapters, tmp_path / "s.csv", tmp_path / "c.png", tmp_path / "ft")


def _with_kl(rows: list[dict[str, Any]], kl: float) -> list[dict[str, Any]]:
    return [{**r, "kl": kl} for r in rows]


def test_read_strength_and_kl_matched_controls(tmp_path: Path) -> None:
    """The read strength is the largest coefficient every control stays within its cost at;
    each control is also compared at the coefficient whose KL is closest to the target's."""
    from emdir.report.dose_response import read_strength

    base = tmp_path / "base.jsonl"
    write_jsonl(base, _rows(0.45, None, 1))
    files = {
        "target": _with_kl(_rows(0.10, None, 2, 0.1), 0.1)
        + _with_kl(_rows(0.05, None, 3, 0.5), 1.0),
        # at 0.5 the random control costs as much KL as the target at 0.1, and suppresses more
        "random_0": _with_kl(_rows(0.45, None, 4, 0.1), 0.01)
        + _with_kl(_rows(0.30, None, 5, 0.5), 0.1),
    }
    paths = {}
    for v, rows in files.items():
        paths[v] = tmp_path / f"{v}.jsonl"
        write_jsonl(paths[v], rows)
    steer = {**STEER, "coefficients": [0.1, 0.5]}
    out = tmp_path / "read.json"
    read_strength(base, paths, out, steer, STATS)
    got = json.loads(out.read_text())
    assert got["read_coefficient"] == 0.5 and got["controls_within_cost"]
    read_strength(base, paths, out, {**steer, "read": {"cost": "kl", "max_cost": 0.05}}, STATS)
    got = json.loads(out.read_text())
    assert got["read_coefficient"] == 0.1
    assert got["costs"]["0.5"]["random_0"] == pytest.approx(0.1)
    read_strength(base, paths, out, {**steer, "read": {"cost": "kl", "max_cost": 0.001}}, STATS)
    got = json.loads(out.read_text())
    assert got["read_coefficient"] == 0.1 and not got["controls_within_cost"]

    from emdir.report.dose_response import matched_coefficients
    from emdir.report.effects import PairedConditions

    conds = {"base": _rows(0.45, None, 1)}
    for v, rows in files.items():
        for c in (0.1, 0.5):
            conds[f"{v}@{c:g}"] = [r for r in rows if r["intervention"]["coefficient"] == c]
    p = PairedConditions(conds, STATS)
    assert matched_coefficients(p, "target", "random_0", 0.1, [0.1, 0.5], ["norm"]) == [0.1]
    assert matched_coefficients(p, "target", "random_0", 0.1, [0.1, 0.5], ["kl"]) == [0.5]
    assert matched_coefficients(p, "target", "random_0", 0.1, [0.1, 0.5], ["norm", "kl"]) == [
        0.1,
        0.5,
    ]


def test_holm_runs_across_models_at_the_read_strength(tmp_path: Path) -> None:
    gens, steer = {}, {}
    for k, model in enumerate(("m1", "m2", "m3")):
        gens[f"{model}/insecure"] = _rows(0.45, None, 10 + k)
        # m1's target is clearly specific; m2's barely; m3's is beaten by its control.
        p_target = {"m1": 0.05, "m2": 0.33, "m3": 0.40}[model]
        p_ctl = {"m1": 0.42, "m2": 0.42, "m3": 0.10}[model]
        for vector, p in (("target", p_target), ("random_0", p_ctl)):
            steer[f"{model}/insecure/{vector}"] = _rows(p, None, 20 + k, 0.5) + _rows(
                p, None, 30 + k, 1.0
            )
    paths = _write(tmp_path, gens, steer)
    outs = _outs(tmp_path)
    dirs = {}
    for model in ("m1", "m2", "m3"):
        dirs[f"{model}/insecure"] = tmp_path / model / "insecure.h5"
        dirs[f"{model}/insecure"].parent.mkdir(parents=True, exist_ok=True)
        _directions(dirs[f"{model}/insecure"])
    summarise(paths["g"], paths["s"], dirs, outs)
    df = pd.read_csv(outs["summary"])
    read = df[(df.vector == "target") & df.read].set_index("model")
    assert (read.family_size == 3).all()
    assert read.loc["m1", "verdict_holm"] == "passes"
    assert read.loc["m3", "verdict_holm"] == "beaten by a control"
    assert read.loc["m3", "verdict"] == "beaten by a control"
    assert not read.passes_specificity.loc["m3"]
    assert (read.spec_p_holm >= read.spec_p).all()
    # not in the family: no corrected verdict
    other = df[(df.vector == "target") & ~df.read]
    assert other.verdict_holm.isna().all() and other.verdict.notna().all()


def test_spillover_rates_report_the_denominator_of_every_rate(tmp_path: Path) -> None:
    rows = _rows(0.3, 0.2, 8)
    # Three answers the judge could not score at all, two whose coherence request failed
    # (so their garble verdict is unknown too), and the misalignment of prose answers only.
    for r in rows[:3]:
        r.update(category="unscored", unscored_reason="gave up after 7 attempts: HTTP 500")
    unknown = [r for r in rows[3:] if r["category"] == "prose"][:2]
    for r in unknown:
        r["scores"].update(coherent=None, garbled=None)
        r.update(em=None, unscored={"coherent": "HTTP 500", "garbled": "needs the coherent score"})
    steer = {
        f"m/insecure/{v}": _rows(0.2, 0.1, 9, 0.5) + _rows(0.2, 0.1, 10, 1.0)
        for v in ("target", "random_0")
    }
    paths = _write(tmp_path, {"m/base": rows, "m/insecure": rows}, steer)
    outs = _outs(tmp_path)
    dirs = {"m/insecure": tmp_path / "insecure.h5"}
    _directions(dirs["m/insecure"])
    summarise(paths["g"], paths["s"], dirs, outs)
    rates = pd.read_csv(outs["spillover"]).iloc[0]
    scored = rows[3:]
    assert rates.n_answers == len(scored) and rates.n_unscored == 3
    assert rates.n_garble == rates.n_coherence == len(scored) - 2
    assert rates.n_misalignment == sum(r["em"] is not None for r in scored)
    known = [r for r in scored if r not in unknown]
    garbled = np.mean([r["category"] == "garbled" for r in known])
    assert rates.garble == pytest.approx(100 * garbled, abs=0.01)
