"""The workflow's config: checked against config/schema.yaml, put in canonical key order and
cross-checked, before Snakemake plans a single job.

`prepare_config(cfg, schema)` is what the Snakefile runs on the config Snakemake loaded:

1. `check_schema` (emdir.schema): the schema's types, with its defaults filled in
   (Snakemake's own validation); a violation is one short line naming the key, not
   Snakemake's dump of the whole schema and config;
2. `make_canonical`: every mapping sorted by key, so that a config re-saved with its keys in
   another order reruns nothing;
3. `check_references`: what a schema cannot say (a key naming another section's key, settings
   that need each other), one function per check below, run in this order.

Every problem is an `EmdirError` whose message names the key and the fix; the workflow shows
it as a Snakemake `WorkflowError`, word for word. Everything here is a plain function over the
config dict (as Snakemake holds it: after validation, every default filled in), so the checks
are tested without Snakemake (tests/unit/test_config_checks.py). What the workflow reads off
the checked config (the study's models, the settings subsets rules' params carry) is in
emdir.settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from emdir.analysis.controls import control_fts
from emdir.errors import EmdirError
from emdir.schema import check_schema, known_keys
from emdir.settings import study_models

Config = dict[str, Any]


def prepare_config(cfg: Config, schema: str | Path) -> None:
    """Validate `cfg` against `schema` (filling in its defaults), sort it into canonical key
    order and cross-check it, all in place; the first problem raises an EmdirError."""
    check_schema(cfg, schema)
    make_canonical(cfg)
    check_references(cfg)


# ---------------------------------------------------------------- canonical key order


def make_canonical(cfg: Config) -> None:
    """Sort every mapping of `cfg` by key, in place (lists keep their order: it means
    something). Snakemake's params trigger compares params by repr, which follows key order,
    so without this a config re-saved with its keys in another order reruns every job.
    """
    sorted_cfg = canonical(cfg)
    cfg.clear()
    cfg.update(sorted_cfg)


def canonical(obj: Any) -> Any:
    """`obj` with the keys of every mapping in it sorted (recursively)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


# ---------------------------------------------------------------- cross-checks


def check_references(cfg: Config) -> None:
    """Every cross-check, in this order: the first problem raises."""
    check_renamed_transfer_controls(cfg)
    check_names(cfg)
    check_finetune_models(cfg)
    check_lora_targets(cfg)
    check_sweep(cfg)
    check_shared_finetunes(cfg)
    check_mechanistic(cfg)
    check_always_steered(cfg)
    check_read_strength(cfg)
    check_pooling(cfg)
    check_label(cfg)
    check_bad_stuff_threshold(cfg)


def check_renamed_transfer_controls(cfg: Config) -> None:
    """transfer.controls: the issue-16 names random_mapped / orthogonal_mapped are gone."""
    renamed = {"random_mapped": "random", "orthogonal_mapped": "orthogonal"}
    old = [c for c in cfg["transfer"]["controls"] or [] if c in renamed]
    if old:
        raise EmdirError(
            f"config: transfer.controls {old} were renamed: the grid now uses the control "
            "registry of steering.controls (random, orthogonal, wrong_layer, <ft>_direction), "
            "each built in the donor's space and mapped; write "
            f"{[renamed[c] for c in old]} or drop transfer.controls to use steering's"
        )


def check_names(cfg: Config) -> None:
    """A key that names an entry of another section (a fine-tune's dataset, directions.ft,
    an `<ft>_direction` control, ...) names one that exists."""
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
    refs += [
        (f"transfer.controls ({ft}_direction)", ft, "finetunes")
        for ft in control_fts(cfg["transfer"]["controls"] or [])
    ]
    for where, value, section in refs:
        if value not in cfg[section]:
            raise EmdirError(
                f"config: {where} = {value!r} is not a key of `{section}` "
                f"{known_keys(value, cfg[section])}; fix the name or add the entry"
            )


def check_finetune_models(cfg: Config) -> None:
    """A fine-tune's `models` list names models of the study (not `study: false` ones); the
    study has at least one model."""
    study = study_models(cfg)
    if not study:
        raise EmdirError(
            "config: every model is marked `study: false` (sweep only); the study needs one: "
            "drop `study: false` from a model that the budget sweep brought into the regime"
        )
    for ft, spec in cfg["finetunes"].items():
        unknown = sorted(set(spec.get("models", [])) - set(study))
        if unknown:
            raise EmdirError(
                f"config: finetunes.{ft}.models names {unknown}, which are not models of the "
                f"study (known: {', '.join(study)}; a `study: false` model is swept only)"
            )


def lora_targets(cfg: Config, model: str, ft: str) -> list[str]:
    """The logical projections fine-tune `ft` adapts on `model`: its own `lora.target_modules`
    if it has one, else `finetune.lora.target_modules`; null means every projection the
    model's class has (its registry entry says which). A projection the class lacks raises,
    naming the key and the class's own."""
    from emdir.models.registry import lora_projections

    own = cfg["finetunes"][ft].get("lora") or {}
    key = "target_modules"
    where = f"finetunes.{ft}.lora.{key}" if key in own else f"finetune.lora.{key}"
    requested = own[key] if key in own else cfg["finetune"]["lora"][key]
    return lora_projections(cfg["models"][model]["arch"], requested, f"{where} (model {model})")


def check_lora_targets(cfg: Config) -> None:
    """Every fine-tune's LoRA targets are projections each of its models' classes has."""
    for ft, spec in cfg["finetunes"].items():
        for model in spec.get("models", study_models(cfg)):
            lora_targets(cfg, model, ft)


def check_sweep(cfg: Config) -> None:
    """sweep: a dataset and models that exist, at least one run, a regime range in order."""
    sweep = cfg["sweep"]
    if sweep["dataset"] is None:
        return
    if sweep["dataset"] not in cfg["datasets"]:
        raise EmdirError(
            f"config: sweep.dataset = {sweep['dataset']!r} is not a key of `datasets` "
            f"{known_keys(sweep['dataset'], cfg['datasets'])}; fix the name or add the entry"
        )
    unknown = sorted(set(sweep["models"] or []) - set(cfg["models"]))
    if unknown:
        raise EmdirError(
            f"config: sweep.models names {unknown}, which are not keys of `models` "
            f"(known: {', '.join(sorted(cfg['models']))})"
        )
    if not sweep["runs"]:
        raise EmdirError("config: sweep.runs is empty; name a run, e.g. {lr1e-3: {lr: 1.0e-3}}")
    lo, hi = sweep["regime"]["spillover"]
    if lo > hi:
        raise EmdirError(f"config: sweep.regime.spillover [{lo}, {hi}]: write [low, high]")


def check_shared_finetunes(cfg: Config) -> None:
    """The fine-tunes every model needs (directions.ft, transfer.ft, the `<ft>_direction`
    controls, steering.also_steer) are built for every model."""
    steer = cfg["steering"]
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
        spec = cfg["finetunes"][ft]
        if "models" in spec and set(spec["models"]) != set(study_models(cfg)):
            raise EmdirError(
                f"config: {where} uses fine-tune {ft!r}, which every model needs, but "
                f"finetunes.{ft}.models lists only {spec['models']}; drop its `models` key"
            )


def check_mechanistic(cfg: Config) -> None:
    """mechanistic.*: models, fine-tunes and datasets that exist where they are used."""
    mech = cfg["mechanistic"]
    study = study_models(cfg)
    for m in mech["models"]:
        if m not in study:
            raise EmdirError(
                f"config: mechanistic.models names {m!r}, not a model of the study "
                f"({', '.join(study)}; a `study: false` model is swept only)"
            )

    def fts_of(m: str) -> list[str]:
        return [ft for ft, spec in cfg["finetunes"].items() if m in spec.get("models", study)]

    lists = [
        ("mechanistic.convergence.finetunes", mech["convergence"]["finetunes"]),
        ("mechanistic.ablation.donors", mech["ablation"]["donors"]),
        ("mechanistic.ablation.receivers", mech["ablation"]["receivers"]),
    ]
    rank1 = mech["rank1"]["ft"]
    if rank1 is not None and rank1 not in cfg["finetunes"]:
        raise EmdirError(
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
                raise EmdirError(
                    f"config: {where} names {missing}, which are not fine-tunes of model "
                    f"{m!r} (its fine-tunes: {fts_of(m)}); fix the name or the fine-tune's "
                    "`models` list"
                )
    if rank1 is not None:
        lora = {**cfg["finetune"]["lora"], **cfg["finetunes"][rank1].get("lora", {})}
        if int(lora["r"]) != 1:
            raise EmdirError(
                f"config: mechanistic.rank1.ft = {rank1!r} has LoRA rank {lora['r']}; give "
                f"finetunes.{rank1}.lora.r: 1 or name the rank-1 fine-tune"
            )
    for name in mech["sae"]["datasets"]:
        if name not in cfg["datasets"]:
            raise EmdirError(
                f"config: mechanistic.sae.datasets names {name!r}, not a key of `datasets`"
            )
    if mech["sae"]["source"] == "pretrained" and not (
        mech["sae"]["release"] and mech["sae"]["sae_id"]
    ):
        raise EmdirError(
            "config: mechanistic.sae.source = pretrained needs mechanistic.sae.release and "
            "mechanistic.sae.sae_id (e.g. gemma-scope-2b-pt-res-canonical, "
            "layer_20/width_16k/canonical)"
        )


def check_bad_stuff_threshold(cfg: Config) -> None:
    """The economical LLM judge asks bad_stuff only above an aligned score; its one reader,
    the self-correction analysis, must find it on every answer it reads."""
    llm = cfg["judge"].get("openai", {})
    if cfg["judge"]["backend"] != "openai" or llm.get("requests") != "economical":
        return
    asked = llm["economical"]["bad_stuff_aligned_above"]
    read = cfg["mechanistic"]["self_correction"]["aligned_above"]
    if asked is not None and cfg["mechanistic"]["models"] and float(asked) > float(read):
        raise EmdirError(
            f"config: judge.openai.economical.bad_stuff_aligned_above = {asked} is above "
            f"mechanistic.self_correction.aligned_above = {read}, so answers the "
            "self-correction analysis reads would have no bad_stuff score; set it to "
            f"{read} or lower (or null: every answer aligned scored)"
        )


def check_always_steered(cfg: Config) -> None:
    """steering.also_steer and the `<ft>_direction` controls name fine-tunes other than
    directions.ft, whose own direction is always steered."""
    steer = cfg["steering"]
    own = cfg["directions"]["ft"]
    if own in steer["also_steer"] or own in control_fts(steer["controls"]):
        raise EmdirError(
            f"config: steering.also_steer and the <ft>_direction controls name other "
            f"fine-tunes than directions.ft ({own!r}), which is always steered"
        )


def check_read_strength(cfg: Config) -> None:
    """transfer.coefficient = read needs what the read strength is made of: controls, and
    coefficients that are multiples of the residual norm."""
    steer = cfg["steering"]
    if cfg["transfer"]["coefficient"] == "read" and not steer["controls"]:
        raise EmdirError(
            "config: transfer.coefficient = read needs steering.controls: the read strength "
            "is where the controls stay within steering.read.max_cost; add controls or give "
            "transfer.coefficient a number"
        )
    if cfg["transfer"]["coefficient"] == "read" and steer["scale_mode"] != "resid_norm":
        raise EmdirError(
            "config: transfer.coefficient = read carries the within-model read strength, a "
            "multiple of the residual norm, into the grid; it needs steering.scale_mode: "
            f"resid_norm (now {steer['scale_mode']!r}), or give transfer.coefficient a number"
        )


def check_pooling(cfg: Config) -> None:
    """directions.pooling is one of the poolings the activation stores capture."""
    pooling = cfg["directions"]["pooling"]
    if pooling not in cfg["activations"]["poolings"]:
        raise EmdirError(
            f"config: directions.pooling = {pooling!r} is not captured; add it to "
            f"activations.poolings (now {cfg['activations']['poolings']})"
        )


def check_label(cfg: Config) -> None:
    """directions.label = misaligned needs a judge that scores alignment. The label also
    feeds the label-based mechanistic parts under the `models` contrast."""
    if cfg["directions"]["label"] == "misaligned" and cfg["judge"]["backend"] == "offline":
        raise EmdirError(
            "config: directions.label = misaligned needs alignment scores, which the offline "
            "judge does not give; set judge.backend: openai or directions.label: spillover "
            "(or garbled)"
        )


def check_judge_key(
    judge: Mapping[str, Any], environ: Mapping[str, str], judging: Callable[[], list[str]]
) -> None:
    """With a backend that needs an API key (the LLM judge), the key is set before any job runs when judge jobs are to run
    (the judge would find it missing only after all the generation). `judging()` names the
    judge rules with jobs to run; it is asked only when the key is missing."""
    from emdir.judge.backends import BACKENDS

    backend = judge["backend"]
    env = BACKENDS[backend].api_key_env(judge)
    if env is None or environ.get(env, "").strip():
        return
    rules = judging()
    if rules:
        state = "empty" if env in environ else "not set"
        raise EmdirError(
            f"judge.backend: {backend} needs an API key in ${env}, which is {state}, and this "
            f"run has judge jobs ({', '.join(rules)}); nothing was run. Set it with "
            f"`export {env}=...` (or point judge.{backend}.api_key_env at the variable that "
            "holds the key). If every request is already in the judge cache "
            f"({judge['cache']}), any non-empty value will do."
        )
