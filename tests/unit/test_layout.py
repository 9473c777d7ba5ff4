"""emdir.layout: one function per file, its rule's wildcard pattern without arguments."""

from __future__ import annotations

from emdir import layout


def test_without_arguments_a_path_is_its_rules_pattern() -> None:
    assert layout.directions() == "results/directions/{model}/{ft}.h5"
    assert layout.directions("llama", "insecure") == "results/directions/llama/insecure.h5"
    assert layout.transfer(vector="target") == "results/transfer/{donor}__{receiver}/target.jsonl"
    assert layout.ablation("m", "secure", "random_0_single") == (
        "results/mechanistic/m/ablation/secure/random_0_single.jsonl"
    )


def test_judged_files_mirror_their_answers() -> None:
    assert layout.judged("llama", "base") == "results/judged/llama/base.jsonl"
    assert layout.judged_copy(layout.steering("m", "ft", "target")) == (
        "results/judged/steering/m/ft/target.jsonl"
    )
    assert layout.judged_copy(layout.mechanistic_answers()) == (
        "results/judged/mechanistic/{model}/{experiment}/{name}.jsonl"
    )


def test_final_outputs_list_the_mechanistic_files_per_model() -> None:
    none = layout.final_outputs([], rank1=False)
    assert none[:2] == ["results/transfer_matrix.csv", "results/transfer_matrix.png"]
    assert len(none) == len(set(none)) == 15
    two = layout.final_outputs(["a", "b"], rank1=True)
    per_model = (len(two) - len(none)) // 2
    assert per_model == 13 and two[len(none)] == "results/mechanistic/a/convergence.csv"
    assert two[-1] == "results/mechanistic/b/rank1.png"
    assert not any("{" in p for p in two)
    assert len(layout.final_outputs(["a"], rank1=False)) == len(none) + 10
