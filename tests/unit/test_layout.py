"""emdir.layout: one function per file, its rule's wildcard pattern without arguments."""

from __future__ import annotations

from emdir import layout


def test_without_arguments_a_path_is_its_rules_pattern() -> None:
    assert layout.directions() == "results/{seed}directions/{model}/{ft}.h5"
    assert layout.directions("llama", "insecure", "") == "results/directions/llama/insecure.h5"
    assert layout.transfer(vector="target") == (
        "results/{seed}transfer/{donor}__{receiver}/target.jsonl"
    )
    assert layout.ablation("m", "secure", "random_0_single", "") == (
        "results/mechanistic/m/ablation/secure/random_0_single.jsonl"
    )


def test_a_fine_tuning_seed_is_a_directory_and_seed_0_keeps_todays_paths() -> None:
    assert layout.replicate(0) == "" and layout.replicate(2) == "seed2/"
    assert [layout.replicate_seed(layout.replicate(s)) for s in (0, 1, 17)] == [0, 1, 17]
    assert layout.adapter("m", "insecure", layout.replicate(1)) == (
        "results/seed1/adapters/m/insecure"
    )
    assert layout.ablation("m", "secure", "v", "seed3/") == (
        "results/seed3/mechanistic/m/ablation/secure/v.jsonl"
    )
    # The base model's own answers do not depend on a fine-tune: every seed shares them.
    assert layout.generations("m", "base", "seed1/") == "results/generations/m/base.jsonl"
    assert layout.judged("m", "base", "seed1/") == "results/judged/m/base.jsonl"
    assert layout.judged("m", "insecure", "seed1/") == "results/seed1/judged/m/insecure.jsonl"
    assert layout.base_model("m") == "results/models/m/base"  # shared: not a seed's


def test_judged_files_mirror_their_answers() -> None:
    assert layout.judged("llama", "base") == "results/judged/llama/base.jsonl"
    assert layout.judged_copy(layout.steering("m", "ft", "target", "")) == (
        "results/judged/steering/m/ft/target.jsonl"
    )
    assert layout.judged_copy(layout.steering("m", "ft", "target", "seed1/")) == (
        "results/seed1/judged/steering/m/ft/target.jsonl"
    )
    assert layout.judged_copy(layout.mechanistic_answers()) == (
        "results/{seed}judged/mechanistic/{model}/{experiment}/{name}.jsonl"
    )


def test_final_outputs_list_the_mechanistic_files_per_model() -> None:
    none = layout.final_outputs([], rank1=False)
    assert none[:2] == ["results/transfer_matrix.csv", "results/transfer_matrix.png"]
    assert len(none) == len(set(none)) == 16
    two = layout.final_outputs(["a", "b"], rank1=True)
    per_model = (len(two) - len(none)) // 2
    assert per_model == 13 and two[len(none)] == "results/mechanistic/a/convergence.csv"
    assert two[-1] == "results/mechanistic/b/rank1.png"
    assert not any("{" in p for p in two)
    assert len(layout.final_outputs(["a"], rank1=False)) == len(none) + 10
    seeds = layout.final_outputs(["a"], rank1=True, seeds=[0, 4])
    # Each seed's files, then the tables pooled over the seeds.
    pooled = [*layout.POOLED.values()]
    pooled += [p.replace("{model}", "a") for p in layout.POOLED_MECHANISTIC.values()]
    assert len(seeds) == 2 * len(layout.final_outputs(["a"], rank1=True)) + len(pooled)
    assert seeds[-len(pooled) :] == pooled
    assert "results/pooled/mechanistic/a/summary.csv" in pooled
    assert seeds[0] == "results/transfer_matrix.csv"
    assert "results/seed4/transfer_matrix.csv" in seeds
    assert "results/seed4/mechanistic/a/rank1.png" in seeds
