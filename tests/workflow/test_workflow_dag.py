"""DAG tests: dry-runs of the workflow (nothing is executed, no emdir stage is imported).

Every run uses the repository's Snakefile with a temporary working directory, so the
checkout gets no `.snakemake/` and the Snakefile is checked to work from anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import run_snakemake
from emdir import layout
from emdir.analysis.controls import control_fts, vector_names
from emdir.carry import read_manifest

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
CONFIG = REPO / "config" / "config.yaml"
STEERING_VECTORS_DEFAULT = vector_names(
    DEFAULT["steering"]["controls"], DEFAULT["steering"]["random_seeds"]
)


def whole_experiment(cfg: dict) -> bool:
    """A config with models (each with its source) and fine-tunes; an overlay (e.g.
    real_betley.yaml, regime_1p5b.yaml, which adds a model, or regime.yaml, which marks one
    `study: false`) is added to one of them."""
    models = cfg.get("models") or {}
    return "finetunes" in cfg and bool(models) and all("source" in m for m in models.values())


SHIPPED = sorted(
    p
    for p in (REPO / "config").glob("*.yaml")
    if p.name != "schema.yaml" and whole_experiment(yaml.safe_load(p.read_text(encoding="utf-8")))
)


snakemake = run_snakemake


def dry_run(workdir: Path, *args: str) -> dict[str, int]:
    """Job counts per rule from the dry-run's job stats table."""
    proc = snakemake(workdir, "--dry-run", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def judged_files(workdir: Path, *args: str) -> dict[str, int]:
    """Judged files to be (re)made per judge rule, from `snakemake --summary` (a judge job
    judges all of one generating job's answer files, so files and jobs differ)."""
    proc = snakemake(workdir, "--summary", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) >= 6 and cols[0].startswith("results/judged/") and cols[5] != "no update":
            counts[cols[2]] = counts.get(cols[2], 0) + 1
    return counts


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_default_config_gives_a_4x4_grid(tmp_path: Path) -> None:
    jobs = dry_run(tmp_path)
    n_models, n_ft = len(DEFAULT["models"]), len(DEFAULT["finetunes"])
    assert n_models == 4
    steer = DEFAULT["steering"]
    vectors = vector_names(steer["controls"], steer["random_seeds"])
    n_dir_fts = 1 + len(control_fts(steer["controls"]))
    # The grid uses steering's control registry (transfer.controls: null), drawn per cell.
    assert DEFAULT["transfer"]["controls"] is None
    n_transfer = len(vectors)
    assert jobs["transfer"] == 16
    assert jobs["fit_map"] == 16
    # One judge job per generating job: a cell's vectors are judged together.
    assert jobs["judge_transfer"] == 16
    judged = judged_files(tmp_path)
    assert judged["judge_transfer"] == 16 * n_transfer
    assert jobs["anchors"] == n_models
    assert jobs["base_model"] == n_models
    # Fine-tunes that list `models` (the mechanistic ones) are built for those models only.
    n_pairs = sum(
        len(spec.get("models", DEFAULT["models"])) for spec in DEFAULT["finetunes"].values()
    )
    assert n_ft == 4 and n_pairs == 2 * n_models + 2
    assert jobs["finetune"] == n_pairs
    assert jobs["generate"] == jobs["judge"] == n_models + n_pairs
    # The mechanistic extensions, on gemma2 only.
    mech = DEFAULT["mechanistic"]
    assert mech["models"] == ["gemma2"]
    receivers = mech["ablation"]["receivers"]
    # The base model's own directions only when convergence.base asks for them (the
    # default's `models` contrast leaves them out: they need answer labels).
    assert jobs.get("base_directions", 0) == (
        len(mech["convergence"]["finetunes"]) if mech["convergence"]["base"] else 0
    )
    assert jobs["ablation"] == len(receivers)
    assert jobs["induce"] == jobs["rank1_reading"] == jobs["sae"] == 1
    assert jobs["convergence"] == jobs["mechanistic_summary"] == 1
    n_variants = 2 * (len(mech["ablation"]["donors"]) + mech["ablation"]["random_seeds"])
    assert jobs["judge_mechanistic"] == len(receivers) and jobs["judge_induce"] == 1
    assert (
        judged["judge_mechanistic"] + judged["judge_induce"]
        == len(receivers) * n_variants + 1 + mech["induce"]["random_seeds"]
    )
    # Directions for directions.ft and the fine-tunes whose directions are controls; all
    # vectors steer directions.ft, the target alone each also_steer fine-tune.
    # ... and for every fine-tune that the convergence of a mechanistic model compares.
    extra = len(
        set(mech["convergence"]["finetunes"])
        - {DEFAULT["directions"]["ft"], *control_fts(steer["controls"])}
    )
    assert jobs["activations"] == jobs["directions"] == n_models * n_dir_fts + extra == 10
    assert jobs["steering"] == n_models
    assert jobs["steering_also"] == n_models * len(steer["also_steer"])
    assert jobs["judge_steering"] + jobs["judge_steering_also"] == n_models * (
        1 + len(steer["also_steer"])
    )
    assert judged["judge_steering"] + judged["judge_steering_also"] == n_models * (
        len(vectors) + len(steer["also_steer"])
    )
    assert jobs["tokenizer"] == 1
    assert jobs["data"] == len(DEFAULT["datasets"])
    assert jobs["questions"] == len(DEFAULT["questions"])
    assert jobs["within_model_summary"] == jobs["transfer_matrix"] == jobs["all"] == 1


def test_a_fifth_model_gives_a_5x5_grid(tmp_path: Path) -> None:
    cfg = {
        **DEFAULT,
        "models": {
            **DEFAULT["models"],
            "mistral": {"source": "tiny", "arch": "MistralForCausalLM"},
        },
    }
    jobs = dry_run(tmp_path, "--configfile", str(write_config(tmp_path / "five.yaml", cfg)))
    assert jobs["transfer"] == 25
    assert jobs["fit_map"] == 25
    assert jobs["base_model"] == jobs["anchors"] == jobs["transfer_reference"] == 5


def _fake_complete_run(workdir: Path, config: Path) -> None:
    """Make every output exist and be recorded as built with `config`, without running a job:
    outputs are created empty (directories for the directory outputs), then `--touch`
    records each job's params in Snakemake's metadata, as a real run would."""
    proc = snakemake(workdir, "--summary", "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]
    assert "results/transfer_matrix.png" in names
    for name in names:
        path = workdir / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:  # models, adapters, the tokenizer
            path.mkdir(parents=True, exist_ok=True)
    proc = snakemake(workdir, "--touch", "--forceall", "--cores", "1", "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dry_run(workdir, "--configfile", str(config)) == {}


FIVE = {
    **DEFAULT,
    "models": {**DEFAULT["models"], "mistral": {"source": "tiny", "arch": "MistralForCausalLM"}},
}


@pytest.fixture(scope="module")
def five_model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete (fake) run of the default config with a fifth model, shared by the tests
    that edit one model's key and dry-run. Each rewrites the run's own five.yaml, as a user
    edits the same file (the summaries record the config files' names)."""
    workdir = tmp_path_factory.mktemp("five")
    _fake_complete_run(workdir, write_config(workdir / "five.yaml", FIVE))
    return workdir


def with_model_key(name: str, key: str, value: object) -> dict:
    """FIVE with `models.<name>.<key>` set to `value`."""
    models = FIVE["models"]
    return {**FIVE, "models": {**models, name: {**models[name], key: value}}}


def test_marking_a_model_study_false_retrains_and_resamples_nothing(five_model_run: Path) -> None:
    """A model the sweep could not bring into the regime, marked `study: false` after a run:
    nothing of the others is trained or sampled again (the flag is not in any model's params)."""
    changed = write_config(five_model_run / "five.yaml", with_model_key("mistral", "study", False))
    jobs = dry_run(five_model_run, "--configfile", str(changed))
    # Only the tables and figures over the models, which now leave it out.
    aggregates = (
        "training_curves",
        "finetune_summary",
        "within_model_summary",
        "transfer_matrix",
        "provenance",
    )
    assert jobs == {**dict.fromkeys(aggregates, 1), "all": 1, "total": 6}


def test_one_models_gradient_checkpointing_retrains_only_its_fine_tunes(
    five_model_run: Path,
) -> None:
    """`models.<key>.gradient_checkpointing` is a setting of that model's fine-tunes: its
    base model is not rebuilt and no other model's fine-tune is trained again."""
    changed = with_model_key("qwen2", "gradient_checkpointing", True)
    config = write_config(five_model_run / "five.yaml", changed)
    jobs = dry_run(five_model_run, "--configfile", str(config))
    own = [k for k, ft in FIVE["finetunes"].items() if "qwen2" in ft.get("models", FIVE["models"])]
    assert "base_model" not in jobs and jobs["finetune"] == len(own) == 2
    proc = snakemake(five_model_run, "--dry-run", "--configfile", str(config))
    outputs = "\n".join(re.findall(r"^\s+output: (.*)$", proc.stdout, re.M))
    assert "results/adapters/qwen2/insecure" in outputs
    assert not re.search(r"results/adapters/(?!qwen2/)\w+/", outputs)


def test_one_models_training_reservation_reruns_nothing_and_sizes_its_fine_tunes(
    five_model_run: Path,
) -> None:
    """`models.<key>.train_memory_gb` is what that model's fine-tunes reserve (mem_mb), a
    resource: setting it reruns nothing, and the other models' fine-tunes keep the sampling
    budget's reservation."""
    changed = with_model_key("qwen2", "train_memory_gb", 9.5)
    config = write_config(five_model_run / "five.yaml", changed)
    assert dry_run(five_model_run, "--configfile", str(config)) == {}
    proc = snakemake(
        five_model_run, "--dry-run", "--forcerun", "finetune", "--configfile", str(config)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reserved = {
        m[1]: int(m[2])
        for m in re.finditer(
            r"output: results/adapters/(\w+)/\w+\n(?:\s+\w+:.*\n)*?\s+resources: .*mem_mb=(\d+)",
            proc.stdout,
        )
    }
    budget = int(FIVE["sampling"]["max_memory_gb"] * 1000)
    assert reserved.pop("qwen2") == 9500
    assert reserved and set(reserved.values()) == {budget}, reserved


def test_one_models_map_layer_reruns_only_its_maps_and_cells(five_model_run: Path) -> None:
    cfg = FIVE
    changed = with_model_key("qwen2", "transfer_layer", 2)
    config = write_config(five_model_run / "five.yaml", changed)
    jobs = dry_run(five_model_run, "--configfile", str(config))
    n = len(cfg["models"])
    cells = 2 * n - 1  # qwen2's row and column of the 5 x 5 grid
    tr = cfg["transfer"]
    n_vectors = len(
        vector_names(tr["controls"] or cfg["steering"]["controls"], cfg["steering"]["random_seeds"])
    )
    n_refs = len(tr["receiver_controls"]) + tr["own_reference"]
    assert jobs == {
        "fit_map": cells,
        "transfer": cells,
        "judge_transfer": cells,
        "transfer_reference": 1,
        "judge_reference": 1,
        "transfer_matrix": 1,
        "provenance": 1,
        "all": 1,
        "total": 3 * cells + 2 + 3,
    }
    judged = judged_files(five_model_run, "--configfile", str(config))
    assert judged == {"judge_transfer": cells * n_vectors, "judge_reference": n_refs}


def reversed_keys(node: object) -> object:
    """`node` with the keys of every mapping in it in reverse order (lists as they are)."""
    if isinstance(node, dict):
        return {k: reversed_keys(node[k]) for k in reversed(list(node))}
    if isinstance(node, list):
        return [reversed_keys(v) for v in node]
    return node


def test_a_config_resaved_in_another_key_order_reruns_nothing(tmp_path: Path) -> None:
    """Snakemake's params trigger compares params by repr, and a dict's repr follows its key
    order: the workflow puts every mapping of the config in one order first."""
    # The LLM judge's nested settings are params too (no key needed: nothing runs).
    cfg = {**DEFAULT, "judge": {"backend": "openai", "openai": {"model": "judge-test"}}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    _fake_complete_run(tmp_path, config)
    # Sorted keys reorder the mappings written out of order, reversed keys all the others.
    config.write_text(yaml.safe_dump(cfg, sort_keys=True), encoding="utf-8")
    assert dry_run(tmp_path, "--configfile", str(config)) == {}
    config.write_text(yaml.safe_dump(reversed_keys(cfg), sort_keys=False), encoding="utf-8")
    assert dry_run(tmp_path, "--configfile", str(config)) == {}


def _jobs_after_a_coefficient_change(tmp_path: Path, cfg: dict) -> dict[str, int]:
    """Jobs a dry-run lists after a complete (fake) run of `cfg` whose last steering
    coefficient the user then edits in the same file."""
    config = write_config(tmp_path / "config.yaml", cfg)
    _fake_complete_run(tmp_path, config)
    steer = cfg["steering"]
    changed = {
        **cfg,
        "steering": {**steer, "coefficients": [*steer["coefficients"][:-1], 0.75]},
    }
    return dry_run(tmp_path, "--configfile", str(write_config(config, changed)))


def test_one_steering_coefficient_reruns_only_steering_judging_and_aggregation(
    tmp_path: Path,
) -> None:
    # The grid at a fixed strength: a steering coefficient does not touch it.
    fixed = {**DEFAULT, "transfer": {**DEFAULT["transfer"], "coefficient": 0.5}}
    jobs = _jobs_after_a_coefficient_change(tmp_path, fixed)
    steer = DEFAULT["steering"]
    n_models = len(DEFAULT["models"])
    n_vectors = len(STEERING_VECTORS_DEFAULT) + len(steer["also_steer"])
    # One steering job samples all of a model's vectors; the transfer grid is steered at
    # transfer.coefficient, and the spillover rates its aggregation reads are the fine-tunes'
    # own (finetune_summary), so nothing of the grid reruns.
    assert jobs == {
        "steering": n_models,
        "steering_also": n_models * len(steer["also_steer"]),
        "judge_steering": n_models,
        "judge_steering_also": n_models * len(steer["also_steer"]),
        "within_model_summary": 1,
        # Self-correction under steering, for each model in mechanistic.models.
        "mechanistic_summary": len(DEFAULT["mechanistic"]["models"]),
        "provenance": 1,
        "all": 1,
        "total": 4 * n_models + 3 + len(DEFAULT["mechanistic"]["models"]),
    }
    # One judge job per steering job, judging each of its vectors' files.
    judged = judged_files(tmp_path, "--configfile", str(tmp_path / "config.yaml"))
    assert judged["judge_steering"] + judged["judge_steering_also"] == n_models * n_vectors


def test_hub_models_need_no_tokenizer(tmp_path: Path) -> None:
    cfg = dict(DEFAULT)
    cfg["models"] = {
        "qwen": {
            "source": "hub",
            "arch": "Qwen2ForCausalLM",
            "hf_id": "Qwen/Qwen2.5-1.5B-Instruct",
            "revision": "main",
        },
        "llama": {
            "source": "hub",
            "arch": "LlamaForCausalLM",
            "hf_id": "meta-llama/Llama-3.2-1B-Instruct",
            "revision": "main",
        },
    }
    # Without the gemma2-only fine-tunes and the mechanistic section, which name gemma2.
    cfg["finetunes"] = {k: v for k, v in DEFAULT["finetunes"].items() if "models" not in v}
    cfg["mechanistic"] = {"models": []}
    path = write_config(tmp_path / "hub.yaml", cfg)
    jobs = dry_run(tmp_path, "--configfile", str(path), "--replace-workflow-config")
    assert "tokenizer" not in jobs
    assert jobs["base_model"] == 2
    assert jobs["transfer"] == jobs["fit_map"] == 4


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_dry_runs(tmp_path: Path, config: Path) -> None:
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    jobs = dry_run(tmp_path, "--configfile", str(config), "--replace-workflow-config")
    # One grid per fine-tuning seed.
    seeds = len(cfg.get("finetune", {}).get("seeds", [0]))
    assert jobs["transfer"] == jobs["fit_map"] == seeds * len(cfg["models"]) ** 2


def test_the_quick_overlay_keeps_every_job_with_one_random_draw(tmp_path: Path) -> None:
    default, quick = REPO / "config" / "config.yaml", REPO / "config" / "quick.yaml"
    overlay = yaml.safe_load(quick.read_text(encoding="utf-8"))
    assert "models" not in overlay, "quick.yaml is an overlay on the default"
    jobs = dry_run(tmp_path, "--configfile", str(default), str(quick))
    assert jobs == dry_run(tmp_path), "the overlay changes sizes, never the jobs"
    controls = DEFAULT["steering"]["controls"]
    assert overlay["steering"]["random_seeds"] == 1 < DEFAULT["steering"]["random_seeds"]
    judged = judged_files(tmp_path, "--configfile", str(default), str(quick))
    assert judged["judge_transfer"] == 16 * len(vector_names(controls, 1))
    assert judged["judge_transfer"] < 16 * len(STEERING_VECTORS_DEFAULT)


def test_the_real_config_fetches_converts_and_switches_to_betleys_data(tmp_path: Path) -> None:
    real, betley = REPO / "config" / "real.yaml", REPO / "config" / "real_betley.yaml"
    jobs = dry_run(tmp_path, "--configfile", str(real))
    assert jobs["fetch_weights"] == jobs["base_model"] == 2 and "tokenizer" not in jobs
    assert "download" not in jobs
    # Three fine-tuning seeds (issue 29): 2 models x 2 fine-tunes x 3; one_seed.yaml: x 1.
    assert jobs["finetune"] == 12 and jobs["pooled_within_model"] == 1
    one = dry_run(tmp_path, "--configfile", str(real), str(REPO / "config" / "one_seed.yaml"))
    assert one["finetune"] == 4 and "pooled_within_model" not in one
    assert one["base_model"] == 2 and one["steering"] * 3 == jobs["steering"] == 6
    proc = snakemake(tmp_path, "--dry-run", "--configfile", str(real), str(betley))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "resources/downloads/betley_insecure.jsonl" in out
    assert "resources/downloads/betley_secure.jsonl" in out
    assert re.search(r"output: resources/data/betley_insecure\.jsonl", out)
    assert not re.search(r"output: resources/data/insecure\.jsonl", out)


def test_a_local_model_reads_its_path_and_a_missing_path_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    cfg = yaml.safe_load((REPO / "config" / "real.yaml").read_text(encoding="utf-8"))
    cfg["models"] = {"mine": {"source": "local", "arch": "LlamaForCausalLM", "path": "mine"}}
    cfg["mechanistic"] = {"models": []}
    path = write_config(tmp_path / "local.yaml", cfg)
    target = "results/models/mine/base"
    proc = snakemake(tmp_path, "--dry-run", target, "--configfile", str(path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"rule base_model:\n\s+input: mine\n", out), out
    folder.rmdir()
    proc = snakemake(tmp_path, "--dry-run", target, "--configfile", str(path))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Missing input files for rule base_model" in out, out
    assert "mine" in out


def test_base_generations_need_no_adapter(tmp_path: Path) -> None:
    jobs = dry_run(tmp_path, "results/generations/llama/base.jsonl")
    assert jobs["generate"] == jobs["base_model"] == 1
    assert "finetune" not in jobs


def test_wildcards_are_constrained_to_config_keys(tmp_path: Path) -> None:
    for target in (
        "results/generations/nomodel/insecure.jsonl",  # unknown model
        "results/adapters/llama/base",  # `base` is no fine-tune
        "results/steering/llama/insecure/sideways.jsonl",  # unknown vector
        "results/maps/llama__nomodel.h5",  # unknown receiver
    ):
        proc = snakemake(tmp_path, "--dry-run", target)
        assert proc.returncode != 0, target
        assert "MissingRuleException" in proc.stdout + proc.stderr, target


def test_lint_is_clean(tmp_path: Path) -> None:
    proc = snakemake(tmp_path, "--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


def test_paper_config_lists_real_models_finetunes_and_downloads(tmp_path: Path) -> None:
    """The paper config dry-runs offline: four hub models x {insecure, secure}, two downloads."""
    paper = REPO / "config" / "paper.yaml"
    proc = snakemake(
        tmp_path, "--dry-run", "results/transfer_matrix.png", "--configfile", str(paper)
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = dry_run(tmp_path, "results/transfer_matrix.png", "--configfile", str(paper))
    # The spillover rates (which the matrix reads) cover every fine-tune, gemma2's
    # educational and rank-1 ones (for the mechanistic targets) included.
    assert jobs["download"] == 3 and jobs["download_questions"] == 1
    assert jobs["finetune"] == 10 and "tokenizer" not in jobs
    finetunes = set(re.findall(r"output: results/adapters/(\w+)/(\w+)", out))
    assert finetunes == {
        (m, ft) for m in ("qwen2", "gemma2", "llama", "ministral3") for ft in ("insecure", "secure")
    } | {("gemma2", "educational"), ("gemma2", "rank1")}
    every = dry_run(tmp_path, "--configfile", str(paper))
    # Three fine-tuning seeds, each with its own mechanistic files; the pooled tables once.
    seeds = yaml.safe_load(paper.read_text(encoding="utf-8"))["finetune"]["seeds"]
    assert len(seeds) == 3 and every["finetune"] == 10 * 3
    assert every["sae"] == every["rank1_reading"] == every["mechanistic_summary"] == 3
    assert every["pooled_within_model"] == every["pooled_transfer_matrix"] == 1
    assert every["pooled_mechanistic"] == every["mechanistic_summary"] // 3
    assert "resources/downloads/insecure.jsonl" in out
    assert "resources/downloads/secure.jsonl" in out
    assert "resources/downloads/questions/first_plot.yaml" in out
    # The judge jobs say which judge they use.
    assert "with the openai backend (gpt-4o-2024-08-06)" in out
    # 16 cells x (target + steering's registry: random x3, orthogonal, wrong_layer,
    # secure_direction), every control drawn per cell and mapped.
    assert jobs["judge"] == 14 and jobs["judge_transfer"] == 16
    judged = judged_files(tmp_path, "results/transfer_matrix.png", "--configfile", str(paper))
    assert judged["judge_transfer"] == 16 * 7


def test_with_read_strength_a_steering_coefficient_also_reruns_the_grid(tmp_path: Path) -> None:
    """transfer.coefficient: read steers each receiver at its within-model read strength,
    which the sweep decides: the grid's steered answers rerun too, nothing upstream does."""
    assert DEFAULT["transfer"]["coefficient"] == "read"
    jobs = _jobs_after_a_coefficient_change(tmp_path, DEFAULT)
    steer = DEFAULT["steering"]
    n_models = len(DEFAULT["models"])
    tr = DEFAULT["transfer"]
    n_cell = len(vector_names(steer["controls"], steer["random_seeds"]))
    n_refs = len(tr["receiver_controls"]) + tr["own_reference"]
    assert jobs["read_strength"] == n_models
    assert jobs["transfer"] == n_models**2 and jobs["transfer_reference"] == n_models
    assert jobs["judge_transfer"] == n_models**2 and jobs["judge_reference"] == n_models
    judged = judged_files(tmp_path, "--configfile", str(tmp_path / "config.yaml"))
    assert judged["judge_transfer"] == n_models**2 * n_cell
    assert judged["judge_reference"] == n_models * n_refs
    assert not {"finetune", "activations", "directions", "fit_map", "generate", "judge"} & set(jobs)


# Rules whose jobs do not depend on a fine-tune: drawn once, whatever finetune.seeds says.
SHARED_RULES = {"data", "questions", "tokenizer", "base_model", "provenance", "all"}


def test_fine_tuning_seeds_expand_every_seed_dependent_stage_and_nothing_else(
    tmp_path: Path,
) -> None:
    one = dry_run(tmp_path)
    # The shipped overlay: three seeds.
    seeds = REPO / "config" / "seeds.yaml"
    assert yaml.safe_load(seeds.read_text(encoding="utf-8")) == {"finetune": {"seeds": [0, 1, 2]}}
    three = dry_run(tmp_path, "--configfile", str(CONFIG), str(seeds))
    # With more than one seed, the fine-tunes' and the within-model tables, the grid and
    # each mechanistic model's tables pooled over them.
    pooled = {
        "pooled_finetunes",
        "pooled_within_model",
        "pooled_transfer_matrix",
        "pooled_mechanistic",
    }
    assert set(three) == set(one) | pooled
    assert three["pooled_finetunes"] == three["pooled_within_model"] == 1
    assert three["pooled_within_model"] == three["pooled_transfer_matrix"] == 1
    assert three["pooled_mechanistic"] == one["mechanistic_summary"] == 1
    n_models = len(DEFAULT["models"])
    for rule, n in one.items():
        if rule == "total":
            continue
        if rule in SHARED_RULES:
            assert three[rule] == n, rule
        elif rule in ("generate", "judge"):
            # The base models' own answers are one draw shared by every seed.
            assert three[rule] == n_models + 3 * (n - n_models), rule
        else:
            assert three[rule] == 3 * n, rule
    # Seed 0's files are today's; seed n's are under results/seed<n>/.
    proc = snakemake(tmp_path, "--summary", "--configfile", str(CONFIG), str(seeds))
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]
    assert "results/transfer_matrix.png" in names
    assert "results/seed2/transfer_matrix.png" in names
    assert "results/seed1/adapters/llama/insecure" in names
    assert "results/seed1/judged/steering/llama/insecure/target.jsonl" in names
    assert "results/generations/llama/base.jsonl" in names
    assert not any(n.startswith("results/seed1/generations/") and "/base." in n for n in names)


def test_adding_a_seed_runs_only_that_seeds_jobs(tmp_path: Path) -> None:
    cfg = {**DEFAULT, "finetune": {**DEFAULT["finetune"], "seeds": [0]}}
    config = write_config(tmp_path / "run.yaml", cfg)
    _fake_complete_run(tmp_path, config)
    one = dry_run(tmp_path / "fresh")
    more = {**cfg, "finetune": {**cfg["finetune"], "seeds": [0, 3]}}
    jobs = dry_run(tmp_path, "--configfile", str(write_config(tmp_path / "run.yaml", more)))
    n_models = len(DEFAULT["models"])
    expected = {
        rule: n - n_models if rule in ("generate", "judge") else n
        for rule, n in one.items()
        if rule not in SHARED_RULES - {"provenance", "all"} and rule != "total"
    }
    expected["pooled_finetunes"] = expected["pooled_within_model"] = 1
    expected["pooled_transfer_matrix"] = 1
    expected["pooled_mechanistic"] = one["mechanistic_summary"]
    assert {k: v for k, v in jobs.items() if k != "total"} == expected
    proc = snakemake(tmp_path, "--summary", "--configfile", str(tmp_path / "run.yaml"))
    stale = [
        cols[0]
        for cols in (line.split("\t") for line in proc.stdout.splitlines()[1:])
        if len(cols) >= 6 and cols[5] != "no update"
    ]
    assert stale and all(
        p.startswith(("results/seed3/", "results/pooled/")) or p == "results/provenance.json"
        for p in stale
    ), [p for p in stale if not p.startswith("results/seed3/")]


def test_a_seed_is_carried_by_its_own_target(tmp_path: Path) -> None:
    """results/carried/seed<n> needs seed n's chain to its within-model tables, and nothing
    of the other seeds; a seed not in the run, or a carried folder without its manifest,
    stops the dry-run with the fix."""
    seeds = str(REPO / "config" / "seeds.yaml")
    jobs = dry_run(tmp_path, "results/carried/seed1", "--configfile", str(CONFIG), seeds)
    tables = ["results/within_model/summary.csv", "results/spillover_rates.csv"]
    seed0 = dry_run(tmp_path / "zero", *tables)
    assert jobs.pop("carry_seed") == 1 and jobs.pop("total") == seed0.pop("total") + 1
    assert jobs == seed0
    proc = snakemake(tmp_path, "-n", "results/carried/seed5", "--configfile", str(CONFIG), seeds)
    assert proc.returncode != 0
    assert "seed 5 is not in finetune.seeds [0, 1, 2]" in proc.stdout + proc.stderr
    cfg = {**DEFAULT, "finetune": {**DEFAULT["finetune"], "seeds": [0, 1], "carried": ["x"]}}
    proc = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path / "c.yaml", cfg)))
    assert proc.returncode != 0
    assert f"finetune.carried: x ({REPO / 'x'}) has no MANIFEST.json" in proc.stdout + proc.stderr


def test_a_fine_tune_for_no_model_plans_nothing(tmp_path: Path) -> None:
    """`finetunes.<key>.models: []` leaves the fine-tune out of the run (an overlay that fits
    a run to a session): the same jobs as without it; one that a stage needs is refused,
    naming the key."""
    cfg = {**DEFAULT, "finetunes": {**DEFAULT["finetunes"]}}
    cfg["finetunes"]["parked"] = {"dataset": "insecure", "models": []}
    target = "results/within_model/finetune_contrasts.csv"
    parked = dry_run(tmp_path, target, "--configfile", str(write_config(tmp_path / "p.yaml", cfg)))
    assert parked == dry_run(tmp_path / "default", target) and parked["finetune"] >= 2
    cfg["finetunes"]["educational"] = {**cfg["finetunes"]["educational"], "models": []}
    proc = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path / "e.yaml", cfg)))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "mechanistic.convergence.finetunes names ['educational'], which are not" in out


def test_a_seeds_fine_tunes_are_carried_by_their_own_target(tmp_path: Path) -> None:
    """results/carried/finetunes/seed<n> needs seed n's chain to its fine-tune tables only:
    no directions, steering or judging of steered answers."""
    seeds = str(REPO / "config" / "seeds.yaml")
    target = "results/carried/finetunes/seed1"
    jobs = dry_run(tmp_path, target, "--configfile", str(CONFIG), seeds)
    tables = ["results/within_model/finetune_contrasts.csv", "results/spillover_rates.csv"]
    seed0 = dry_run(tmp_path / "zero", *tables)
    assert jobs.pop("carry_finetunes") == 1 and jobs.pop("total") == seed0.pop("total") + 1
    assert jobs == seed0 and "finetune_summary" in jobs
    assert not {"directions", "steering"} & set(jobs)
    proc = snakemake(tmp_path, "-n", target.replace("1", "5"), "--configfile", str(CONFIG), seeds)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "results/carried/finetunes/seed5: seed 5 is not in finetune.seeds [0, 1, 2]" in out


def test_the_regime_pools_its_carried_seeds_without_computing_them(tmp_path: Path) -> None:
    """config/regime_carried.yaml: the pooled paper table plans the seeds not carried and
    reads the carried ones from docs/reference/regime/seeds/ (their manifests checked)."""
    overlay = yaml.safe_load((REPO / "config" / "regime_carried.yaml").read_text())
    carried = overlay["finetune"]["carried"]
    assert carried and all((REPO / c / "MANIFEST.json").is_file() for c in carried)
    # Without config/betley_shared.yaml (the carried seed read the shared copies): the same
    # study, its datasets pinned by their rows, downloaded here.
    configs = [
        str(REPO / "config" / f) for f in ("real.yaml", "regime.yaml", "regime_carried.yaml")
    ]
    target = "results/pooled/within_model/paper_comparison.csv"
    jobs = dry_run(tmp_path, target, "--configfile", *configs)
    local = len(overlay["finetune"]["seeds"]) - len(carried)
    assert jobs.get("finetune", 0) == 3 * local and jobs.get("steering", 0) == local
    assert jobs["pooled_within_model"] == jobs["pooled_finetunes"] == 1
    if not local:  # every seed carried: the pooling and nothing else
        assert set(jobs) == {"pooled_within_model", "pooled_finetunes", "total"}, jobs
    proc = snakemake(tmp_path, "--summary", target, "--configfile", *configs)
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]
    seeds = [int(Path(c).name.removeprefix("seed")) for c in carried]
    # seed 0's files have no seed segment (results/judged/..., emdir.layout.replicate)
    own = [f"results/{layout.replicate(n)}{d}/" for n in seeds for d in ("judged", "steering")]
    assert names and not [n for n in names if n.startswith(tuple(own))], names


def test_the_1p5b_alone_overlay_plans_its_study_and_nothing_of_the_0p5b(tmp_path: Path) -> None:
    """config/regime_1p5b_alone.yaml: the within-model tables of Qwen2.5-Coder-1.5B alone
    (three fine-tunes, two directions, one steering sweep and its secure-code control), no
    job of the 0.5B and no mechanistic extension."""
    configs = [
        str(REPO / "config" / f)
        for f in (
            "real.yaml",
            "regime.yaml",
            "regime_1p5b.yaml",
            "one_seed.yaml",
            "regime_1p5b_alone.yaml",
        )
    ]
    targets = ["results/within_model/summary.csv", "results/within_model/finetune_contrasts.csv"]
    jobs = dry_run(tmp_path, *targets, "--configfile", *configs)
    assert jobs["finetune"] == 3 and jobs["base_model"] == jobs["fetch_weights"] == 1
    assert jobs["generate"] == jobs["judge"] == 4
    assert jobs["directions"] == 2 and jobs["steering"] == jobs["steering_also"] == 1
    proc = snakemake(tmp_path, "--summary", *targets, "--configfile", *configs)
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]
    assert any("qwen15coder" in n for n in names)
    assert not [n for n in names if "qwen25coder" in n or "smollm2" in n], names
    assert not [n for n in names if n.startswith("results/mechanistic")], names


def test_a_seeds_pair_of_fine_tunes_is_carried_without_the_educational_one(
    tmp_path: Path,
) -> None:
    """config/without_educational.yaml with the 1.5B alone and seed 1: carrying that seed's
    fine-tunes plans its insecure and secure fine-tunes (and the shared base answers), their
    answers and tables, nothing of the educational set."""
    seed1 = write_config(tmp_path / "seed1.yaml", {"finetune": {"seeds": [1]}})
    files = ("real.yaml", "regime.yaml", "regime_1p5b.yaml", "regime_1p5b_alone.yaml")
    configs = [str(REPO / "config" / f) for f in (*files, "without_educational.yaml")]
    target = "results/carried/finetunes/seed1"
    jobs = dry_run(tmp_path, target, "--configfile", *configs, str(seed1))
    assert jobs["finetune"] == 2 and jobs["carry_finetunes"] == jobs["finetune_summary"] == 1
    assert jobs["generate"] == jobs["judge"] == 3
    proc = snakemake(tmp_path, "--summary", target, "--configfile", *configs, str(seed1))
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]
    assert "results/seed1/adapters/qwen15coder/secure" in names
    assert not [n for n in names if "educational" in n], names


def test_the_1p5b_pools_its_carried_fine_tunes_and_refuses_the_within_model_tables(
    tmp_path: Path,
) -> None:
    """config/regime_1p5b_carried.yaml: the 1.5B's pooled fine-tune tables read every seed
    from docs/reference/regime/qwen15coder/seeds/ (fine-tunes only) and compute nothing else;
    the pooled within-model tables are refused, naming the folders."""
    overlay = yaml.safe_load((REPO / "config" / "regime_1p5b_carried.yaml").read_text())
    carried = overlay["finetune"]["carried"]
    assert len(carried) == len(overlay["finetune"]["seeds"]) > 1
    assert all((REPO / c / "MANIFEST.json").is_file() for c in carried)
    files = ("real.yaml", "regime.yaml", "regime_1p5b.yaml", "regime_1p5b_alone.yaml")
    files += ("without_educational.yaml", "regime_1p5b_carried.yaml")
    configs = [str(REPO / "config" / f) for f in files]
    jobs = dry_run(tmp_path, layout.POOLED["spillover"], "--configfile", *configs)
    assert jobs == {"pooled_finetunes": 1, "total": 1}
    proc = snakemake(tmp_path, "--dry-run", layout.POOLED["summary"], "--configfile", *configs)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    seeds = ", ".join(str(read_manifest(REPO / c)["seed"]) for c in carried)
    folders = ", ".join(str(REPO / c) for c in carried)
    assert f"{folders} carry seeds {seeds}'s fine-tunes only (rule carry_finetunes)" in out, out
