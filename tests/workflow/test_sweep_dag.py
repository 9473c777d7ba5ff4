"""The training-budget sweep's DAG (issue 30): on demand, one fine-tune per model and run,
nothing of the main experiment, and a clear error when the config names no sweep."""

from __future__ import annotations

from pathlib import Path

from test_workflow_dag import DEFAULT, REPO, dry_run, snakemake, write_config

TARGET = "results/sweep/budget.csv"


def test_the_sweep_trains_one_run_per_model_and_nothing_else(tmp_path: Path) -> None:
    runs = {"lr1e-3": {"lr": 1e-3}, "lr3e-3": {"lr": 3e-3, "batch_size": 8}}
    cfg = {**DEFAULT, "sweep": {"dataset": "insecure", "models": ["llama", "qwen2"], "runs": runs}}
    config = write_config(tmp_path / "sweep.yaml", cfg)
    jobs = dry_run(tmp_path, TARGET, "--configfile", str(config))
    assert jobs["sweep_finetune"] == 2 * 2 and jobs["budget_sweep"] == 1
    # Only what a fine-tune needs: data, questions, the tokenizer and the two base models.
    assert jobs["base_model"] == 2 and "finetune" not in jobs and "generate" not in jobs
    proc = snakemake(tmp_path, "--dry-run", TARGET, "--configfile", str(config))
    assert "results/sweep/qwen2/lr3e-3" in proc.stdout
    # The sweep is not part of the experiment: `all` builds no sweep run.
    assert "sweep_finetune" not in dry_run(tmp_path, "--configfile", str(config))


def test_a_model_marked_study_false_is_swept_and_nothing_else(tmp_path: Path) -> None:
    """`models.<key>.study: false`: the sweep trains it, the study plans nothing for it (a
    3 x 3 grid of the others), and a study key that names it fails when the config is read."""
    runs = {"lr1e-3": {"lr": 1e-3}}
    models = {**DEFAULT["models"], "llama": {**DEFAULT["models"]["llama"], "study": False}}
    cfg = {**DEFAULT, "models": models, "sweep": {"dataset": "insecure", "runs": runs}}
    config = write_config(tmp_path / "study.yaml", cfg)
    sweep = dry_run(tmp_path, TARGET, "--configfile", str(config))
    assert sweep["sweep_finetune"] == len(models)
    proc = snakemake(tmp_path, "--dry-run", "--configfile", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "llama" not in proc.stdout and "results/adapters/qwen2/insecure" in proc.stdout
    study = dry_run(tmp_path, "--configfile", str(config))
    assert study["base_model"] == len(models) - 1 and study["transfer_matrix"] == 1
    assert study["fit_map"] == 3 * 3  # every donor x receiver of the three others
    mech = {**cfg, "mechanistic": {**DEFAULT["mechanistic"], "models": ["llama"]}}
    proc = snakemake(
        tmp_path, "--dry-run", "--configfile", str(write_config(tmp_path / "m.yaml", mech))
    )
    assert proc.returncode != 0
    assert "mechanistic.models names 'llama', not a model of the study" in proc.stdout + proc.stderr


def test_without_a_sweep_the_target_names_the_missing_key(tmp_path: Path) -> None:
    proc = snakemake(tmp_path, "--dry-run", TARGET)
    assert proc.returncode != 0
    assert "sweep.dataset is null" in proc.stdout + proc.stderr


def test_the_regime_overlay_gives_three_real_sets_and_a_sweep_on_every_real_model(
    tmp_path: Path,
) -> None:
    """config/real.yaml + config/regime.yaml: its sweep trains three learning rates on both
    real models; the study (Betley's insecure, secure and educational sets as three
    fine-tunes under three seeds) runs on Qwen2.5-Coder alone, SmolLM2 being swept only;
    betley_shared.yaml reads the shared copies instead of downloading."""
    real, regime, shared = (
        REPO / "config" / n for n in ("real.yaml", "regime.yaml", "betley_shared.yaml")
    )
    study = dry_run(tmp_path, "--configfile", str(real), str(regime))
    assert study["finetune"] == 1 * 3 * 3 and study["download"] == 3
    proc = snakemake(tmp_path, "--dry-run", "--configfile", str(real), str(regime))
    assert "results/adapters/qwen25coder/insecure" in proc.stdout
    assert "smollm2" not in proc.stdout
    sweep = dry_run(tmp_path, TARGET, "--configfile", str(real), str(regime))
    assert sweep["sweep_finetune"] == 2 * 3 and sweep["download"] == 1  # the insecure set
    # With the shared folder beside the working directory, its copies are read instead.
    if (REPO.parent / "shared" / "data" / "em").is_dir():
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
        work = tmp_path / "work"
        work.mkdir()
        args = (TARGET, "--configfile", str(real), str(regime), str(shared))
        assert "download" not in dry_run(work, *args)
        proc = snakemake(work, "--dry-run", *args)
        assert "../shared/data/em/insecure.jsonl.gz" in proc.stdout


def test_the_1p5b_overlay_adds_a_third_real_model_to_the_sweep(tmp_path: Path) -> None:
    real, regime, big = (
        REPO / "config" / n for n in ("real.yaml", "regime.yaml", "regime_1p5b.yaml")
    )
    jobs = dry_run(tmp_path, TARGET, "--configfile", str(real), str(regime), str(big))
    assert jobs["sweep_finetune"] == 3 * 3 and jobs["fetch_weights"] == jobs["base_model"] == 3


def test_the_regime_papers_table_is_a_smaller_target_with_the_same_jobs(tmp_path: Path) -> None:
    """The cheaper run the README offers for the regime keeps every job its verdicts come
    from (three seeds' fine-tunes, answers, directions, steering and controls) and none of
    the grid's or the mechanistic extensions': a target, not an overlay, so its verdicts are
    those of the whole study."""
    real, regime = (REPO / "config" / n for n in ("real.yaml", "regime.yaml"))
    args = ("--configfile", str(real), str(regime))
    table = dry_run(tmp_path, "results/pooled/within_model/paper_comparison.csv", *args)
    whole = dry_run(tmp_path, *args)
    verdicts = ("finetune", "generate", "activations", "directions", "steering", "steering_also")
    assert table["finetune"] == 1 * 3 * 3 and table["pooled_within_model"] == 1
    assert all(table[rule] == whole[rule] for rule in verdicts)
    skipped = {"anchors", "fit_map", "transfer", "transfer_reference", "ablation", "induce", "sae"}
    assert skipped <= set(whole) and not skipped & set(table)


def test_the_regime_fine_tune_contrasts_across_seeds_need_no_steering(tmp_path: Path) -> None:
    """Whether the insecure fine-tune spills more than its controls, pooled over the three
    seeds, is a target of its own: every seed's fine-tunes and answers, and no direction,
    steering or grid job."""
    real, regime = (REPO / "config" / n for n in ("real.yaml", "regime.yaml"))
    args = ("--configfile", str(real), str(regime))
    rates = dry_run(tmp_path, "results/pooled/within_model/finetune_contrasts.csv", *args)
    whole = dry_run(tmp_path, *args)
    assert rates["pooled_finetunes"] == 1 and rates["finetune_summary"] == 3
    assert all(rates[rule] == whole[rule] for rule in ("finetune", "generate"))
    skipped = {"activations", "directions", "steering", "within_model_summary", "transfer"}
    assert skipped <= set(whole) and not skipped & set(rates)
