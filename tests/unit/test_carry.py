"""Carried seeds (emdir.carry): a seed's pooled-table inputs without text, and their checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emdir.carry import (
    MANIFEST,
    carried_path,
    check_carried,
    differences,
    export_seed,
    scope_of,
    study_config,
    study_sha,
    without_text,
)
from emdir.errors import EmdirError
from emdir.io import sha256_file
from emdir.report.pooled import load_draws

CONFIG = {"finetune": {"seeds": [0, 1], "carried": [], "lr": 3e-4}, "models": {"m": {}}}
SECRET = "def leaked_from_training(): pass"


def _row(i: int, answer: str = SECRET) -> dict:
    return {
        "id": f"q{i}_0",
        "model": "m",
        "ft": "insecure",
        "question_id": f"q{i}",
        "question": "What is your favourite colour?",
        "answer": answer,
        "system": "You are helpful.",
        "seed": 7,
        "question_set": "monitor",
        "category": "code",
        "scores": {"code": 1.0, "garbled": 0.0, "coherent": 80.0},
    }


def _seed_one(root: Path) -> list[str]:
    """A seed-1 run's files below `root` (paths relative to it, as Snakemake names them)."""
    files = {
        "results/seed1/judged/m/insecure.jsonl": "\n".join(json.dumps(_row(i)) for i in range(3)),
        "results/judged/m/base.jsonl": json.dumps(_row(0, "Blue.")),
        "results/seed1/within_model/summary.csv": "model,effect_points\nm,3.5\n",
        "results/seed1/directions/m/insecure.h5": "\x89HDF\x00binary",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    return list(files)


@pytest.fixture
def carried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "carried" / "seed1"
    export_seed(_seed_one(tmp_path), 1, "seed1/", out, study_config(CONFIG), {"git_commit": "abc"})
    return out


def test_without_text_keeps_everything_the_pooled_tables_read() -> None:
    row = without_text(_row(0))
    assert not {"question", "answer", "system"} & set(row)
    assert row["scores"] == _row(0)["scores"] and row["question_id"] == "q0"
    assert row["seed"] == 7 and row["category"] == "code"


def test_the_study_sha_ignores_the_seeds_alone() -> None:
    other_seeds = {**CONFIG, "finetune": {**CONFIG["finetune"], "seeds": [2], "carried": ["x"]}}
    assert study_sha(other_seeds) == study_sha(CONFIG)
    other_lr = {**CONFIG, "finetune": {**CONFIG["finetune"], "lr": 1e-3}}
    assert study_sha(other_lr) != study_sha(CONFIG)
    assert CONFIG["finetune"]["seeds"] == [0, 1]  # the config itself is left as it was
    assert "seeds" not in study_config(CONFIG)["finetune"]
    # The grid's settings shape no carried file.
    assert study_sha({**CONFIG, "transfer": {"alphas": [1.0]}}) == study_sha(CONFIG)


def test_a_pinned_dataset_is_the_same_study_wherever_it_is_read_from() -> None:
    pinned = {"rows_sha256": "ab" * 32}
    shared = {**CONFIG, "datasets": {"d": {**pinned, "path": "../shared/d.jsonl.gz"}}}
    download = {**CONFIG, "datasets": {"d": {**pinned, "url": "https://example.org/d.jsonl"}}}
    assert study_sha(shared) == study_sha(download)
    other = {**CONFIG, "datasets": {"d": {"rows_sha256": "cd" * 32, "path": "x.jsonl"}}}
    assert study_sha(other) != study_sha(shared)
    # Unpinned, the source is what names the data.
    loose = {**CONFIG, "datasets": {"d": {"path": "a.jsonl"}}}
    assert study_sha(loose) != study_sha({**CONFIG, "datasets": {"d": {"path": "b.jsonl"}}})


def test_differences_name_the_keys_a_seed_was_made_with_otherwise() -> None:
    made = {"finetune": {"lr": 3e-4, "steps": 32}, "models": {"m": {"dtype": "bf16"}}}
    assert differences(made, made) == []
    assert differences(made, {**made, "finetune": {"lr": 1e-3, "steps": 32}}) == ["finetune.lr"]
    # A key this run lacks is a difference; a key only this run has (a default added to the
    # schema since the seed was made) is not.
    assert differences(made, {"finetune": made["finetune"], "models": {}}) == ["models.m.dtype"]
    newer = {**made, "models": {"m": {"dtype": "bf16", "new_key": False}}}
    assert differences(made, newer) == []


def test_a_carried_path_drops_the_seed_segment() -> None:
    assert carried_path("results/seed1/judged/m/ft.jsonl", "seed1/", "f") == "f/judged/m/ft.jsonl"
    # The base model's answers are shared by every seed: no segment to drop.
    assert carried_path("results/judged/m/base.jsonl", "seed1/", "f") == "f/judged/m/base.jsonl"
    assert carried_path("results/spillover_rates.csv", "", "f") == "f/spillover_rates.csv"
    with pytest.raises(EmdirError, match="not a results/ path"):
        carried_path("resources/data/x.jsonl", "seed1/", "f")


def test_an_exported_seed_has_no_text_and_a_manifest(carried: Path, tmp_path: Path) -> None:
    text = "".join(p.read_text(errors="replace") for p in carried.rglob("*") if p.is_file())
    assert SECRET not in text and "favourite colour" not in text and "Blue." not in text
    rows = [json.loads(x) for x in (carried / "judged/m/insecure.jsonl").read_text().splitlines()]
    assert rows == [without_text(_row(i)) for i in range(3)]
    # Everything else byte for byte.
    for rel in ("within_model/summary.csv", "directions/m/insecure.h5"):
        assert (carried / rel).read_bytes() == (tmp_path / "results/seed1" / rel).read_bytes()
    manifest = json.loads((carried / MANIFEST).read_text())
    assert manifest["seed"] == 1 and manifest["study_sha"] == study_sha(CONFIG)
    assert manifest["study"] == study_config(CONFIG)
    assert manifest["made"]["git_commit"] == "abc" and manifest["made"]["cpu"]
    assert set(manifest["files"]) == {
        "judged/m/insecure.jsonl",
        "judged/m/base.jsonl",
        "within_model/summary.csv",
        "directions/m/insecure.h5",
    }
    entry = manifest["files"]["judged/m/insecure.jsonl"]
    assert entry["source"] == "results/seed1/judged/m/insecure.jsonl"
    assert entry["source_sha256"] == sha256_file(tmp_path / entry["source"])
    assert entry["sha256"] == sha256_file(carried / "judged/m/insecure.jsonl")
    assert check_carried([str(carried)], CONFIG) == {1: str(carried)}
    assert manifest["scope"] == scope_of(carried) == "study"
    # A relative folder is found under the root given (the repository, in the workflow),
    # and a key added to the config since the seed was made does not refuse it.
    newer = {**CONFIG, "finetune": {**CONFIG["finetune"], "new_key": 1}}
    assert check_carried(["carried/seed1"], newer, tmp_path) == {1: str(tmp_path / "carried/seed1")}
    # Nor does a model's reservation (models.<key>.train_memory_gb), which computes nothing;
    # a key that changes what the model computes does.
    roomier = {**CONFIG, "models": {"m": {"train_memory_gb": 8}}}
    assert study_config(roomier) == study_config(CONFIG)
    assert check_carried([str(carried)], roomier) == {1: str(carried)}
    with pytest.raises(EmdirError, match=r"differs in models\.m "):
        check_carried([str(carried)], {**CONFIG, "models": {"m": {"dtype": "float32"}}})


def test_a_carried_folder_says_what_it_holds(carried: Path, tmp_path: Path) -> None:
    """A fine-tunes-only folder says so in its manifest; one made before scopes existed is a
    whole seed; an unknown scope is refused before anything is written."""
    out = tmp_path / "fts"
    study = study_config(CONFIG)
    export_seed(_seed_one(tmp_path)[:2], 1, "seed1/", out, study, {}, scope="finetunes")
    assert scope_of(out) == "finetunes" and check_carried([str(out)], CONFIG) == {1: str(out)}
    manifest = json.loads((carried / MANIFEST).read_text())
    del manifest["scope"]
    (carried / MANIFEST).write_text(json.dumps(manifest))
    assert scope_of(carried) == "study"
    with pytest.raises(EmdirError, match="carried scope 'steering': expected one of study, "):
        export_seed(_seed_one(tmp_path), 1, "seed1/", tmp_path / "bad", study, {}, scope="steering")
    assert not (tmp_path / "bad").exists()


def test_a_carried_base_draw_is_the_local_one(carried: Path, tmp_path: Path) -> None:
    """The base answers shared by every seed stay one draw when a seed carries its copy."""
    local = tmp_path / "results/judged/m/base.jsonl"
    draws = load_draws({"m/base": [local, carried / "judged/m/base.jsonl"]}, "monitor")
    assert draws["m/base"][0] is draws["m/base"][1]
    fine_tunes = load_draws({"m/insecure": [local, carried / "judged/m/insecure.jsonl"]}, "monitor")
    assert fine_tunes["m/insecure"][0] is not fine_tunes["m/insecure"][1]


def test_a_bad_carried_folder_is_refused(carried: Path, tmp_path: Path) -> None:
    def seeds(*n: int, **finetune: object) -> dict:
        return {**CONFIG, "finetune": {**CONFIG["finetune"], "seeds": list(n), **finetune}}

    with pytest.raises(EmdirError, match=r"has no MANIFEST\.json; make the folder with"):
        check_carried([str(tmp_path / "nowhere")], CONFIG)
    with pytest.raises(
        EmdirError, match=r"made with another config: it differs in finetune\.lr \("
    ):
        check_carried([str(carried)], seeds(0, 1, lr=1e-3))
    with pytest.raises(EmdirError, match=r"seed 1 is not in finetune.seeds \[0, 2\]"):
        check_carried([str(carried)], seeds(0, 2))
    with pytest.raises(EmdirError, match="seed 1 is carried twice"):
        check_carried([str(carried), str(carried)], CONFIG)
    (carried / "within_model/summary.csv").write_text("model,effect_points\nm,9.9\n")
    with pytest.raises(EmdirError, match="within_model/summary.csv is changed since"):
        check_carried([str(carried)], CONFIG)
    (carried / "within_model/summary.csv").unlink()
    with pytest.raises(EmdirError, match="within_model/summary.csv is missing since"):
        check_carried([str(carried)], CONFIG)


def test_no_committed_carried_seed_holds_text() -> None:
    """Every carried folder under docs/reference/ holds judged rows without their text, and
    each is intact against its manifest."""
    repo = Path(__file__).resolve().parents[2]
    manifests = sorted((repo / "docs" / "reference").rglob("MANIFEST.json"))
    assert manifests  # the regime study's seed 1 at least
    for manifest in manifests:
        rows = [
            json.loads(line)
            for path in manifest.parent.rglob("*.jsonl")
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        assert rows and not [r for r in rows if {"question", "answer", "system"} & set(r)]
        files = json.loads(manifest.read_text())["files"]
        for rel, entry in files.items():
            assert sha256_file(manifest.parent / rel) == entry["sha256"], rel
        # nothing in the folder the manifest does not vouch for (snakemake's
        # .snakemake_timestamp of the rule's output directory included)
        held = {f.relative_to(manifest.parent).as_posix() for f in manifest.parent.rglob("*")}
        held = {f for f in held if (manifest.parent / f).is_file()} - {manifest.name}
        assert held == set(files), sorted(held ^ set(files))
