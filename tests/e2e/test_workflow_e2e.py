"""End to end: the real workflow on a small config, to results/transfer_matrix.png, then reruns."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from conftest import run_snakemake
from emdir.analysis.controls import vector_names
from emdir.models.archspec import PROJECTIONS

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "configs" / "e2e.yaml"


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(
        workdir, "--configfile", str(config), "--replace-workflow-config", *args, timeout=1800
    )


def fresh_run(factory: pytest.TempPathFactory, name: str) -> Path:
    """The whole e2e config run from nothing in a new directory."""
    work = factory.mktemp(name)
    proc = snakemake(work, CONFIG, "--cores", "2", "results/transfer_matrix.png", "all")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return work


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_run(tmp_path_factory, "e2e")


@pytest.mark.e2e
def test_the_grid_is_complete_with_cis(run_dir: Path) -> None:
    png = run_dir / "results" / "transfer_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = pd.read_csv(run_dir / "results" / "transfer_matrix.csv")
    cfg = yaml.safe_load(CONFIG.read_text())
    models = list(cfg["models"])
    target = df[df.vector == "target"]
    assert sorted(zip(target.donor, target.receiver, strict=True)) == sorted(
        (d, r) for d in models for r in models
    )
    # The control registry's names (random expands per draw), plus the schema defaults: one
    # receiver-space control and the receiver's own direction.
    controls = vector_names(cfg["transfer"]["controls"], cfg["steering"]["random_seeds"])[1:]
    assert controls == ["random_0", "random_1", "orthogonal", "secure_direction"]
    assert set(df.vector) == {"target", *controls, "random_receiver", "own"}
    assert set(df[df.role == "control"].vector) == {*controls, "random_receiver"}
    assert (df.lo <= df.suppression).all() and (df.suppression <= df.hi).all()
    assert target.specificity.notna().all() and (target.spec_lo <= target.spec_hi).all()
    assert "own" not in set(target.strongest_control)
    prov = json.loads((run_dir / "results" / "provenance.json").read_text())
    assert prov["emdir_version"] and prov["git_commit"] and prov["packages"]["torch"]
    assert prov["config"]["models"] == cfg["models"]
    assert len(prov["config_sha"]) == 64
    assert (
        prov["outputs"]["results/transfer_matrix.png"]["sha256"]
        == hashlib.sha256(png.read_bytes()).hexdigest()
    )
    # Every HDF5 result carries the same config sha.
    with h5py.File(run_dir / "results" / "directions" / "llama" / "insecure.h5") as f:
        assert f.attrs["config_sha"] == prov["config_sha"]
    topo = pd.read_csv(run_dir / "results" / "transfer_topology.csv")
    assert set(topo.role) == {"donor", "receiver"} and (topo.lo <= topo.hi).all()
    asym = run_dir / "results" / "transfer_asymmetry.png"
    assert asym.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    training = pd.read_csv(run_dir / "results" / "training" / "summary.csv")
    runs = {(m, "base") for m in models} | {
        (m, ft) for ft, spec in cfg["finetunes"].items() for m in spec.get("models", models)
    }
    assert set(zip(training.model, training.run, strict=True)) == runs
    assert (training.final_loss < training.first_loss).all()
    assert "results/training/curves.png" in prov["outputs"]


@pytest.mark.e2e
def test_the_mechanistic_targets_are_built(run_dir: Path) -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    mech = cfg["mechanistic"]
    (model,) = mech["models"]
    out = run_dir / "results" / "mechanistic" / model
    conv = pd.read_csv(out / "convergence.csv")
    fts = mech["convergence"]["finetunes"]
    pairs = conv[conv.kind == "fine-tunes"]
    assert len(pairs) == len(fts) * (len(fts) - 1) // 2 * pairs.layer.nunique()
    assert set(conv[conv.kind == "base vs fine-tuned"].b) == set(fts)
    assert conv.cosine.between(-1, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    abl = summary[summary.experiment == "ablation"]
    assert set(abl.ft) == set(mech["ablation"]["receivers"])
    assert set(abl["mode"]) == {"layerwise", "single"}
    assert set(abl.role) == {"target", "control"}
    assert (abl.spillover_change_lo <= abl.spillover_change_hi).all()
    induce = summary[summary.experiment == "induce"]
    assert set(induce.coefficient) == set(mech["induce"]["coefficients"])
    sc = pd.read_csv(out / "self_correction.csv")
    assert "none" in set(sc.vector) and "target" in set(sc.vector)
    rank1 = pd.read_csv(out / "rank1.csv")
    assert set(rank1.module) == {"down_proj"} and rank1.cosine_rank1.between(-1, 1).all()
    probe = json.loads((out / "rank1.json").read_text())
    assert 0 <= probe["accuracy"] <= 1 and probe["folds"] >= 2
    feats = pd.read_csv(out / "sae_features.csv")
    assert feats.groupby("ranking").size().eq(mech["sae"]["top_k"]).all()
    assert len(set(feats.ranking)) == 3
    sae = json.loads((out / "sae.json").read_text())
    assert sae["d_sae"] == mech["sae"]["d_sae"] and sae["train_steps"] == mech["sae"]["steps"]
    for png in ("convergence", "ablation", "induce", "self_correction", "rank1", "sae"):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG", png


@pytest.mark.e2e
def test_rates_summary_and_stores(run_dir: Path) -> None:
    res = run_dir / "results"
    rates = pd.read_csv(res / "spillover_rates.csv")
    cfg = yaml.safe_load(CONFIG.read_text())
    assert set(zip(rates.model, rates.ft, strict=True)) == {(m, "base") for m in cfg["models"]} | {
        (m, ft) for ft, spec in cfg["finetunes"].items() for m in spec.get("models", cfg["models"])
    }
    assert rates.spillover.between(0, 100).all()
    # The coding-question check counts only the `code` set; the monitor set that only
    # watched the fine-tunes is not answered again.
    assert set(pd.read_json(res / "judged" / "llama" / "base.jsonl", lines=True).question_set) == {
        "general",
        "code",
    }
    judged = pd.read_json(res / "judged" / "llama" / "base.jsonl", lines=True)
    code = judged[judged.question_set == "code"]
    expected = 100 * code.scores.map(lambda s: s["code"]).mean()
    got = rates[(rates.model == "llama") & (rates.ft == "base")]
    assert got.code_questions_answered_with_code.item() == pytest.approx(expected)
    summary = pd.read_csv(res / "within_model" / "summary.csv")
    vectors = {"target", "random_0", "random_1", "orthogonal", "wrong_layer", "secure_direction"}
    insecure = summary[summary.ft == "insecure"]
    assert set(insecure.vector) == vectors
    assert len(insecure) == 2 * len(vectors) * 2  # models x vectors x coefficients
    # Every vector at one site and coefficient is applied at the same norm.
    assert (insecure.groupby(["model", "coefficient"]).norm.nunique() == 1).all()
    target = insecure[insecure.vector == "target"]
    assert target.specificity_points.notna().all()
    assert (target.spec_lo <= target.specificity_points).all()
    assert (target.specificity_points <= target.spec_hi).all()
    # The insecure direction on the secure fine-tune, against the secure baseline.
    secure = summary[summary.ft == "secure"]
    assert set(secure.vector) == {"target"} and len(secure) == 4
    assert secure.effect_lo.le(secure.effect_points).all()
    assert summary.separation_accuracy.between(0, 1).all()
    # The offline judge scores no alignment: misalignment is reported as missing, not 0.
    assert summary.misalignment.isna().all()
    assert summary.coherence_lo.le(summary.coherence).all()
    for model in ("llama", "ministral3"):
        assert (res / "adapters" / model / "insecure" / "train_log.csv").exists()
        for ft in ("insecure", "secure"):
            assert (res / "activations" / model / f"{ft}.h5").exists()
    for png in ("steering", "separation", "projections", "cosine_layers", "paper_comparison"):
        assert (res / "within_model" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    contrasts = pd.read_csv(res / "within_model" / "finetune_contrasts.csv")
    pairs = set(zip(contrasts.ft, contrasts.versus, strict=True))
    assert {("insecure", "base"), ("secure", "base"), ("insecure", "secure")} <= pairs
    assert (contrasts.lo <= contrasts.difference).all() and (
        contrasts.difference <= contrasts.hi
    ).all()
    assert set(contrasts.call) <= {"higher", "lower", "inconclusive"}
    comparison = pd.read_csv(res / "within_model" / "paper_comparison.csv")
    assert set(comparison.metric) == {
        "separation accuracy (%)",
        "spillover suppression (points)",
        "specificity (points)",
        "control fine-tune separation (%)",
        "garble change (points)",
        "coherence change (0-100)",
    }
    assert comparison.config.str.contains("e2e.yaml").all()
    sep = comparison[comparison.metric == "separation accuracy (%)"]
    assert (sep.ours_lo <= sep.ours).all() and (sep.ours <= sep.ours_hi).all()
    # Every judged row is code, prose, garbled, refusal or unscored; the offline judge's
    # coherence (under the answering model's base model) is on 0-100 for every scored answer.
    for path in (res / "judged").rglob("*.jsonl"):
        rows = pd.read_json(path, lines=True)
        assert set(rows.category) <= {"code", "prose", "garbled", "refusal", "unscored"}, path
        scored = rows[rows.category != "unscored"]
        coherent = scored.scores.map(lambda s: s["coherent"])
        assert coherent.between(0, 100).all(), path
    # Garble and coherence sit beside spillover in every table.
    side = {"garble", "garble_lo", "garble_hi", "coherence", "coherence_lo", "coherence_hi"}
    assert side <= set(rates.columns) and side | {"garble_change"} <= set(summary.columns)
    grid = pd.read_csv(res / "transfer_matrix.csv")
    assert side | {"garble_change", "coherence_change_lo"} <= set(grid.columns)
    assert (grid.garble_lo <= grid.garble).all() and (grid.garble <= grid.garble_hi).all()


@pytest.mark.e2e
def test_second_run_has_nothing_to_do(run_dir: Path) -> None:
    proc = snakemake(run_dir, CONFIG, "--dry-run", "all")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_coefficient_change_reruns_only_downstream_jobs(run_dir: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["steering"]["coefficients"] = [0.25, 0.75]
    changed = tmp_path / "changed.yaml"
    # Keep key order: Snakemake compares dict params as text, so a reordered dump would
    # look like a change everywhere.
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(run_dir, changed, "--dry-run", "all")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    rules = set(re.findall(r"^rule (\w+):", out, re.M)) | set(
        re.findall(r"^localrule (\w+):", out, re.M)
    )
    assert "steering" in rules
    # The grid steers each receiver at its read strength (transfer.coefficient: read), which
    # the sweep decides: the grid's steered generations rerun too, nothing upstream does.
    assert rules <= {
        "steering",
        "steering_also",
        "judge_steering",
        "judge_steering_also",
        "within_model_summary",
        "read_strength",
        "transfer",
        "transfer_reference",
        "judge_transfer",
        "judge_reference",
        "transfer_matrix",
        "mechanistic_summary",
        "provenance",
        "all",
    }, rules


@pytest.fixture(scope="module")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second fresh run of the same config in another directory."""
    return fresh_run(tmp_path_factory, "e2e_again")


def _datasets(path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


@pytest.mark.e2e
def test_two_fresh_runs_are_identical(run_dir: Path, second_run: Path) -> None:
    """DESIGN.md: the same config on the same machine gives identical results. Every CSV is
    byte-identical; directions and ridge maps hold identical arrays (their HDF5 files differ
    only in the creation-time attribute)."""
    import numpy as np

    csvs = sorted(p.relative_to(run_dir) for p in (run_dir / "results").rglob("*.csv"))
    assert len(csvs) > 10
    assert csvs == sorted(
        p.relative_to(second_run) for p in (second_run / "results").rglob("*.csv")
    )
    differ = [str(p) for p in csvs if (run_dir / p).read_bytes() != (second_run / p).read_bytes()]
    assert not differ, differ
    h5s = sorted(
        p.relative_to(run_dir)
        for sub in ("directions", "maps")
        for p in (run_dir / "results" / sub).rglob("*.h5")
    )
    assert h5s
    for rel in h5s:
        a, b = _datasets(run_dir / rel), _datasets(second_run / rel)
        assert a.keys() == b.keys(), rel
        for key in a:
            assert np.array_equal(a[key], b[key]), (rel, key)


@pytest.mark.e2e
def test_a_second_fine_tuning_seed_is_its_own_draw(run_dir: Path, tmp_path: Path) -> None:
    """finetune.seeds [0, 1] on a copy of the finished run: seed 1's fine-tune trains under
    train.seed + 1 and its answers are drawn under sampling.seed + 1, under results/seed1/,
    while seed 0's files stay as they were and nothing of seed 0 reruns. Then the pooled
    tables (seed 1's whole chain) and the reference check of seed 1 against seed 0."""
    import shutil

    work = tmp_path / "run"
    shutil.copytree(run_dir, work, symlinks=True)
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["finetune"]["seeds"] = [0, 1]
    # A model's own gradient_checkpointing reaches its fine-tunes (seed 0's was trained
    # before the key was set, and is not rerun: the target needs seed 1's alone).
    cfg["models"]["llama"]["gradient_checkpointing"] = True
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text(yaml.safe_dump(cfg, sort_keys=False))
    target = "results/seed1/generations/llama/insecure.jsonl"
    before = {p: p.read_bytes() for p in (work / "results").rglob("*") if p.is_file()}
    proc = snakemake(work, seeds, "--cores", "2", target)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
    assert ran == {"finetune", "generate"}, ran
    one = json.loads((work / "results/adapters/llama/insecure/manifest.json").read_text())
    two = json.loads((work / "results/seed1/adapters/llama/insecure/manifest.json").read_text())
    assert one["seed"] == cfg["finetune"]["train"]["seed"]
    # target_modules null resolves to the class's projections: llama's seven, as listed before.
    assert one["lora"]["target_modules"] == list(PROJECTIONS)
    assert two["seed"] == one["seed"] + 1 and two["train"]["seed"] == two["seed"]
    assert two["gradient_checkpointing"] is True and one["gradient_checkpointing"] is False
    rows = [json.loads(x) for x in (work / target).read_text().splitlines()]
    zero_path = work / "results/generations/llama/insecure.jsonl"
    zero = [json.loads(x) for x in before[zero_path].decode().splitlines()]
    assert len(rows) == len(zero) and not {r["seed"] for r in rows} & {r["seed"] for r in zero}

    # The key taken back (seed 1's llama fine-tunes are trained again, seed 0's are not).
    del cfg["models"]["llama"]["gradient_checkpointing"]
    seeds.write_text(yaml.safe_dump(cfg, sort_keys=False))
    pooled = ["results/pooled/within_model/summary.csv", "results/pooled/transfer_matrix.csv"]
    mech = [f"results/pooled/mechanistic/{m}/summary.csv" for m in cfg["mechanistic"]["models"]]
    proc = snakemake(work, seeds, "--cores", "2", *pooled, *mech)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    # Nothing of seed 0 reran but its two summaries, whose params name the config file (now
    # another): their tables are byte-identical, the paper comparison names the new file.
    changed = sorted(str(p.relative_to(work)) for p, b in before.items() if p.read_bytes() != b)
    assert all(c.endswith((".png", "paper_comparison.csv")) for c in changed), changed
    summary = pd.read_csv(work / pooled[0])
    assert set(summary.seed.astype(str)) == {"0", "1", "pooled"}
    rows = summary[summary.seed.astype(str) == "pooled"]
    assert len(rows) == (summary.seed.astype(str) == "1").sum() > 0
    assert (rows.n_seeds == 2).all() and rows.effect_seeds_agree.str.fullmatch(r"[0-2]/2").all()
    # The pooled effect is the mean of the seeds' (each seed weighs the same).
    key = ["model", "ft", "vector", "coefficient"]
    each = summary[summary.seed.astype(str) != "pooled"].groupby(key).effect_points.mean()
    pooled_effect = rows.set_index(key).effect_points
    assert (pooled_effect - each.loc[pooled_effect.index]).abs().max() < 0.01
    assert rows.effect_seed_sd.notna().all()
    grid = pd.read_csv(work / pooled[1])
    cells = grid[grid.seed.astype(str) == "pooled"]
    assert len(cells) == (grid.seed.astype(str) == "0").sum() > 0
    assert cells.effect_seeds_agree.str.fullmatch(r"[0-2]/2").all()
    assert (work / "results/pooled/within_model/steering.png").stat().st_size > 0
    comparison = pd.read_csv(work / "results/pooled/within_model/paper_comparison.csv")
    assert (comparison.seed == "pooled").all() and (comparison.n_seeds == 2).all()
    contrasts = pd.read_csv(work / "results/pooled/within_model/finetune_contrasts.csv")
    assert set(contrasts.seed.astype(str)) == {"0", "1", "pooled"}
    assert contrasts[contrasts.seed == "pooled"].seeds_agree.str.fullmatch(r"[0-2]/2").all()
    for path in mech:  # ablation and inducing effects of both seeds and pooled
        table = pd.read_csv(work / path)
        assert set(table.seed.astype(str)) == {"0", "1", "pooled"}
        assert (table[table.seed.astype(str) == "pooled"].n_seeds == 2).all()
        conv = pd.read_csv(work / path.replace("summary", "convergence"))
        assert "across seeds" in set(conv.kind) and conv.cosine.between(-1.001, 1.001).all()
    assert (work / "results/pooled/transfer_matrix.png").stat().st_size > 0

    # Seed 1 carried (emdir.carry): what the pooled within-model tables read of it, exported
    # without the answers' text, then pooled in a copy of the run that has no results/seed1/:
    # the same tables, and nothing of seed 1 computed there.
    proc = snakemake(work, seeds, "--cores", "1", "results/carried/seed1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    folder = tmp_path / "seed1"
    shutil.copytree(work / "results/carried/seed1", folder)
    answers = [json.loads(x)["answer"] for x in (work / target).read_text().splitlines()]
    carried_text = (folder / "judged/llama/insecure.jsonl").read_text()
    assert not [a for a in answers if len(a) > 20 and json.dumps(a)[1:-1] in carried_text]
    elsewhere = tmp_path / "elsewhere"
    skip = shutil.ignore_patterns("seed1", "pooled", "carried")
    shutil.copytree(work, elsewhere, symlinks=True, ignore=skip)
    cfg["finetune"]["carried"] = [str(folder)]
    seeds.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tables = [pooled[0], "results/pooled/spillover_rates.csv"]
    proc = snakemake(elsewhere, seeds, "--cores", "1", *tables)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
    assert ran == {"pooled_finetunes", "pooled_within_model"}, ran
    assert not (elsewhere / "results/seed1").exists()
    for table in [*tables, "results/pooled/within_model/finetune_contrasts.csv"]:
        assert (elsewhere / table).read_bytes() == (work / table).read_bytes(), table
    # The paper comparison too, but for the config it names (the carried folder is in it).
    comparison = "results/pooled/within_model/paper_comparison.csv"
    here, there = (pd.read_csv(d / comparison) for d in (work, elsewhere))
    assert here.drop(columns="config").equals(there.drop(columns="config"))
    # A changed carried file stops the run before any job, naming the file and the fix.
    (folder / "within_model/summary.csv").write_text("changed\n")
    proc = snakemake(elsewhere, seeds, "--cores", "1", "--dry-run", *tables)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "within_model/summary.csv is changed since" in out, out
    cfg["finetune"]["carried"] = []
    seeds.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # Seed 1's fine-tunes alone (rule carry_finetunes): the pooled fine-tune tables are the
    # same from them; the pooled within-model tables refuse the seed, naming the fix.
    proc = snakemake(work, seeds, "--cores", "1", "results/carried/finetunes/seed1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    fts = tmp_path / "seed1_finetunes"
    shutil.copytree(work / "results/carried/finetunes/seed1", fts)
    manifest = json.loads((fts / "MANIFEST.json").read_text())
    assert (
        manifest["scope"] == "finetunes"
        and "within_model/finetune_contrasts.csv" in manifest["files"]
    )
    tops = {f.split("/")[0] for f in manifest["files"]}
    assert tops == {"judged", "within_model", "spillover_rates.csv"}, tops
    cfg["finetune"]["carried"] = [str(fts)]
    seeds.write_text(yaml.safe_dump(cfg, sort_keys=False))
    table = "results/pooled/spillover_rates.csv"
    proc = snakemake(elsewhere, seeds, "--cores", "1", "-f", table)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert (elsewhere / table).read_bytes() == (work / table).read_bytes()
    proc = snakemake(elsewhere, seeds, "--cores", "1", "--dry-run", "-f", pooled[0])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "carries seed 1's fine-tunes only" in out, out
    cfg["finetune"]["carried"] = []
    seeds.write_text(yaml.safe_dump(cfg, sort_keys=False))

    # Seed 1's tables checked against seed 0's: another draw of every fine-tune, so effects
    # are compared, not found identical, and the summary says how many lie inside intervals.
    out = subprocess.run(
        [sys.executable, "-m", "emdir.report.reference", "results/seed1", "results"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    n = int(re.search(r"(\d+) effects compared", out)[1])
    same = int(re.search(r"identical: (\d+) of", out)[1])
    inside = int(re.search(r"inside each other's intervals: (\d+) of", out)[1])
    assert n > 50 and same < n and same <= inside <= n, out
    assert ("moved (outside each other's intervals)" in out) == (inside < n), out


@pytest.mark.e2e
def test_a_rerun_passes_the_reference_check(
    run_dir: Path, second_run: Path, tmp_path: Path
) -> None:
    """The second fresh run's tables as the reference: `snakemake results/reference_check.csv`
    on (a copy of) the first finds every effect identical and every verdict equal."""
    import shutil

    reference = tmp_path / "reference"
    tables = ("spillover_rates", "within_model/summary", "within_model/finetune_contrasts")
    for rel in [f"{t}.csv" for t in tables] + ["transfer_matrix.csv"]:
        (reference / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(second_run / "results" / rel, reference / rel)
    work = tmp_path / "run"
    shutil.copytree(run_dir, work, symlinks=True)
    # The same config file with the reference named on the command line: nothing else reruns.
    # (--config takes every KEY=VALUE after it, so the target comes first.)
    target = "results/reference_check.csv"
    proc = snakemake(work, CONFIG, "--cores", "1", target, "--config", f"reference={reference}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
    assert ran == {"reference_check"}, ran
    text = (work / "results" / "reference_check.txt").read_text()
    n = int(re.search(r"(\d+) effects compared", text)[1])
    assert n > 50 and f"identical: {n} of {n}" in text, text
    assert "moved" not in text and "verdict changed" not in text
    table = pd.read_csv(work / "results" / "reference_check.csv")
    assert set(table.table) == {
        "spillover_rates",
        "within_model",
        "finetune_contrasts",
        "transfer_matrix",
    }
