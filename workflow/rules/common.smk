"""What all the stages need from the config: the names (models, fine-tunes, vectors, ...),
the wildcard constraints and the helpers several stages share. A stage's own input and params
functions are in functions/<stage>.smk, which its rules file includes first. The config was
checked before this runs (emdir.config, from the Snakefile); every path comes from
emdir.layout."""

import re

from emdir import layout
from emdir.carry import (
    RESOURCE_KEYS,
    carried_path,
    check_carried,
    scope_of,
    study_config,
)
from emdir.analysis.controls import ablation_variants, control_fts, vector_names
from emdir.settings import (
    finetune_settings,
    model_finetune,
    study_models,
    sweep_train,
    transfer_controls,
    transfer_random_seeds,
)
from emdir.judge.backends import BACKENDS
from emdir.models.registry import lora_projections

# ---------------------------------------------------------------- names

# The study's models (emdir.settings.study_models); a `study: false` model is swept only
# (results/sweep/), so its base model is prepared but nothing of the study is planned for it.
MODELS = study_models(config)
ALL_MODELS = sorted(config["models"])
# Fine-tuning seeds: every fine-tune and everything downstream of it is drawn once per seed,
# under results/{seed} ("" for seed 0: today's paths; "seed<n>/" otherwise). emdir.layout.
SEEDS = list(config["finetune"]["seeds"])
SEED_DIRS = [layout.replicate(s) for s in SEEDS]
# The base models' own answers are shared by every seed (emdir.layout.generations): always
# under results/, whatever the seeds.
SEED_RE = "(?:" + "|".join(re.escape(d) for d in dict.fromkeys(SEED_DIRS + [""])) + ")"
# Carried seeds (emdir.carry): seed -> the folder (finetune.carried, relative to the
# repository) holding what the pooled within-model tables read of that seed, made on another
# machine by rule carry_seed (or by carry_finetunes, the fine-tunes' part alone, which only
# pooled_finetunes reads). Those rules read it there; every other target of that seed is
# computed as usual. Each folder is checked here: same study, a seed of this run, intact.
try:
    CARRIED_SEEDS = check_carried(
        config["finetune"]["carried"], config, workflow.basedir
    )
except EmdirError as err:
    raise WorkflowError(str(err)) from None
# The carried seeds that hold their fine-tunes' part alone (rule carry_finetunes).
FINETUNES_ONLY = [s for s, f in CARRIED_SEEDS.items() if scope_of(f) != "study"]
FINETUNES = sorted(config["finetunes"])
DIRECTION_FT = config["directions"]["ft"]
TRANSFER_FT = config["transfer"]["ft"]
# The config files this run was started with (the summary states them with the config's sha).
CONFIG_FILES = [str(f) for f in workflow.config_settings.configfiles] or [
    "config/config.yaml"
]
STEER = config["steering"]
STEERING_VECTORS = vector_names(STEER["controls"], STEER["random_seeds"])
CONTROL_FTS = control_fts(STEER["controls"])
ALSO_STEER = list(STEER["also_steer"])
# One control registry (emdir.analysis.controls): the grid's controls default to steering's.
TRANSFER_VECTORS = vector_names(
    transfer_controls(config), transfer_random_seeds(config)
)
TRANSFER_CONTROL_FTS = control_fts(transfer_controls(config))
READ_STRENGTH = config["transfer"]["coefficient"] == "read"
# Per receiver, shared by its column of the grid: receiver-space controls and the receiver's
# own direction (the diagonal reference).
REFERENCE_VECTORS = config["transfer"]["receiver_controls"] + (
    ["own"] if config["transfer"]["own_reference"] else []
)
PAIRS = [(donor, receiver) for donor in MODELS for receiver in MODELS]
MECH = config["mechanistic"]
MECH_MODELS = list(MECH["models"])
ABLATION_DONORS = MECH["ablation"]["donors"] or [DIRECTION_FT]
ABLATION_VARIANTS = ablation_variants(ABLATION_DONORS, MECH["ablation"]["random_seeds"])
INDUCE_VECTORS = vector_names(["random"], MECH["induce"]["random_seeds"])
RANK1_FT = MECH["rank1"]["ft"]
# Sampling jobs size their batches to this budget (emdir.models.memory) and ask for it.
MODEL_MEM_MB = int(config["sampling"]["max_memory_gb"] * 1000)
# What `rule all` builds (and results/provenance.json hashes).
FINAL_OUTPUTS = layout.final_outputs(MECH_MODELS, RANK1_FT is not None, SEEDS)
# The offline judge loads the answering model's base model to score coherence (a forward
# pass per answer), so on a cluster it is a job; the LLM judge only talks to its server.
# The judge backend (emdir.judge.backends): a remote one runs on this machine (network).
JUDGE = BACKENDS[config["judge"]["backend"]]
JUDGE_IS_LOCAL = JUDGE.remote


def model_fts(model):
    """The fine-tunes built for `model` (a fine-tune may list `models`; default all)."""
    return [
        ft for ft in FINETUNES if model in config["finetunes"][ft].get("models", MODELS)
    ]


# ---------------------------------------------------------------- wildcard constraints


def alternation(names):
    """A regex matching exactly one of `names` (longest first, so no prefix wins early);
    none: a regex that matches nothing."""
    names = sorted(set(names), key=lambda n: (-len(n), n))
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def downloaded(section):
    """A regex matching the keys of `section` that have a `url`."""
    return alternation(k for k, v in config[section].items() if "url" in v)


URL_DATASET_RE = downloaded("datasets")
URL_QSET_RE = downloaded("questions")
MODEL_RE = alternation(ALL_MODELS)
ARCHIVE_MODEL_RE = alternation(
    m for m in ALL_MODELS if config["models"][m]["source"] == "archive"
)
FT_RE = alternation(FINETUNES)
ALSO_STEER_RE = alternation(ALSO_STEER)
MECH_MODEL_RE = alternation(MECH_MODELS)


wildcard_constraints:
    seed=SEED_RE,
    model=MODEL_RE,
    donor=MODEL_RE,
    receiver=MODEL_RE,
    ft=alternation(["base"] + FINETUNES),
    vector=alternation(STEERING_VECTORS + TRANSFER_VECTORS + REFERENCE_VECTORS),
    dataset=alternation(config["datasets"]),
    qset=alternation(config["questions"]),
    n=r"\d+",


# ---------------------------------------------------------------- shared input functions


def model_inputs(wildcards):
    """The base model, plus the adapter (of the job's seed) unless {ft} is `base`."""
    inputs = {"base": layout.base_model(wildcards.model)}
    if wildcards.ft != "base":
        inputs["adapter"] = layout.adapter(
            wildcards.model, wildcards.ft, wildcards.seed
        )
    return inputs


def for_model(path, ft):
    """Input function: `path(model, ft, seed)` for the job's {model} and {seed} and a fixed
    fine-tune."""

    def inputs(wildcards):
        return path(wildcards.model, ft, seed=wildcards.seed)

    return inputs


def seed_of(wildcards):
    """The job's fine-tuning seed (0 for results/..., n for results/seed<n>/...)."""
    return layout.replicate_seed(wildcards.seed)


def sampling_cfg(wildcards):
    """`sampling`, its seed moved by the job's fine-tuning seed (seed 0: as configured)."""
    cfg = config["sampling"]
    return {**cfg, "seed": cfg["seed"] + seed_of(wildcards)}


def train_mem_mb(wildcards):
    """What a fine-tune or sweep run of the model asks for: its `train_memory_gb` where it
    sets one (training's peak is not sized by the sampling budget), else the sampling jobs'.
    """
    gb = config["models"][wildcards.model].get("train_memory_gb")
    return MODEL_MEM_MB if gb is None else int(gb * 1000)


def values(fn):
    """Input function listing the files of a dict-returning input function."""

    def inputs(wildcards):
        return list(fn(wildcards).values())

    return inputs


def evaluation_questions():
    """The sets every model answers: all but a set used only to watch fine-tunes train."""
    used = {config["directions"]["question_set"], STEER["question_set"]}
    watch = config["finetune"]["eval_questions"]
    return [
        layout.questions(q)
        for q in sorted(config["questions"])
        if q != watch or q in used
    ]


def coherence_model(wildcards):
    """{"coherence_model": the base model} for a backend that uses it (offline); else nothing.
    The answering model is {model}, or {receiver} for transfer outputs."""
    if not JUDGE.uses_base_model:
        return {}
    model = wildcards.get("model") or wildcards.get("receiver")
    return {"coherence_model": layout.base_model(model)}


# ---------------------------------------------------------------- transfer layers (maps, transfer)


def model_layer(model):
    """A model's transfer layer: its own `transfer_layer`, else `transfer.layer`."""
    return config["models"][model].get("transfer_layer", config["transfer"]["layer"])


def donor_layer(wildcards):
    return model_layer(wildcards.donor)


def receiver_layer(wildcards):
    return model_layer(wildcards.receiver)


# ---------------------------------------------------------------- outputs several stages read
# (judge_plan, the aggregates, the mechanistic summary)


def steering_outputs():
    """(model, fine-tune, vector) of every steering output: all vectors on directions.ft,
    the target on each steering.also_steer fine-tune."""
    return [(m, DIRECTION_FT, v) for m in MODELS for v in STEERING_VECTORS] + [
        (m, ft, "target") for m in MODELS for ft in ALSO_STEER
    ]


def judged_steering(model, ft, vector, seed):
    return layout.judged_copy(layout.steering(model, ft, vector, seed))


def ablation_receivers(model):
    return MECH["ablation"]["receivers"] or model_fts(model)
