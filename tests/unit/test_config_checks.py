"""emdir.config and emdir.schema without Snakemake: the schema's short messages, canonical key
order, every cross-check (a valid config passes, an invalid one names the key and the fix), the
judge-key check and the settings subsets that rules carry as params."""

from __future__ import annotations

import copy
import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from emdir import config as cc
from emdir import settings as st
from emdir.errors import EmdirError
from emdir.judge import scoring_config
from emdir.schema import check_schema, did_you_mean, known_keys

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "config" / "schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prepared() -> dict[str, Any]:
    """The default config as the workflow holds it: validated, defaults filled, sorted."""
    cfg = copy.deepcopy(DEFAULT)
    cc.prepare_config(cfg, SCHEMA)
    return cfg


@pytest.fixture
def cfg(prepared: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(prepared)


def test_the_default_config_passes_every_check(cfg: dict[str, Any]) -> None:
    cc.check_references(cfg)  # nothing raised
    assert cfg["sampling"]["top_k"] == 0  # a default the schema filled in


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"modles": {}}, ["unknown key `modles`", "did you mean 'models'?", "section `models`"]),
        (
            {"sampling": {"temperature": "hot"}},
            ["`sampling.temperature`: expected number, got 'hot'", "section `sampling`"],
        ),
        (
            {"judge": {"backend": "offlin"}},
            ["`judge.backend`: 'offlin' is not one of offline, openai", "did you mean 'offline'?"],
        ),
        ({"finetunes": {"base": {"dataset": "chat"}}}, ["`finetunes`: the key 'base'"]),
        ({"zzz": 1}, ["unknown key `zzz`; the top level takes: activations, datasets,"]),
    ],
)
def test_a_schema_violation_is_one_short_line(patch: dict[str, Any], expected: list[str]) -> None:
    cfg = {**copy.deepcopy(DEFAULT), **patch}
    with pytest.raises(EmdirError) as err:
        check_schema(cfg, SCHEMA)
    message = str(err.value)
    assert message.startswith("config: ") and "\n" not in message, message
    assert "Every key is explained in config/README.md" in message, message
    for part in expected:
        assert part in message, message


def test_a_misspelt_name_gets_the_closest_known_one() -> None:
    assert did_you_mean("secur", ["insecure", "secure"]) == " (did you mean 'secure'?)"
    assert did_you_mean("zzz", ["insecure", "secure"]) == ""
    assert known_keys("secur", ["secure", "insecure"]) == (
        "(did you mean 'secure'? known: insecure, secure)"
    )
    assert known_keys("zzz", ["b", "a"]) == "(known: a, b)"


def test_importing_emdir_leaves_the_schema_checker_unloaded() -> None:
    """`import emdir` reads emdir.schema (for its defaults): jsonschema and Snakemake load
    only when a config is checked."""
    code = "import sys, emdir; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'jsonschema'" not in loaded and "'snakemake'" not in loaded, loaded


def test_canonical_order_sorts_mappings_and_keeps_lists() -> None:
    cfg = {"b": {"y": 1, "x": [{"d": 1, "c": 2}, 3]}, "a": 0}
    cc.make_canonical(cfg)
    assert list(cfg) == ["a", "b"] and list(cfg["b"]) == ["x", "y"]
    assert list(cfg["b"]["x"][0]) == ["c", "d"] and cfg["b"]["x"][1] == 3


def test_a_config_in_another_key_order_is_the_same_config() -> None:
    def reversed_keys(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: reversed_keys(obj[k]) for k in reversed(list(obj))}
        return obj

    a, b = copy.deepcopy(DEFAULT), reversed_keys(copy.deepcopy(DEFAULT))
    cc.prepare_config(a, SCHEMA)
    cc.prepare_config(b, SCHEMA)
    assert repr(a) == repr(b)


# ---------------------------------------------------------------- cross-checks
# (check, change to the valid default config, words the message must contain: the key, the fix)

Change = Callable[[dict[str, Any]], None]


def setting(path: str, value: Any) -> Change:
    def change(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def steps(*changes: Change) -> Change:
    def change(cfg: dict[str, Any]) -> None:
        for c in changes:
            c(cfg)

    return change


NAME_FIX = "fix the name or add the entry"
GPT2_LLAMA = setting("models.llama.arch", "GPT2LMHeadModel")
SWEEP = setting("sweep.runs", {"lr1e-3": {"lr": 1e-3}})
INVALID: list[tuple[Callable[[dict[str, Any]], None], Change, list[str]]] = [
    (
        cc.check_sweep,
        steps(SWEEP, setting("sweep.dataset", "insecur")),
        ["sweep.dataset = 'insecur' is not a key of `datasets`", "'insecure'?", NAME_FIX],
    ),
    (
        cc.check_sweep,
        steps(SWEEP, setting("sweep.dataset", "insecure"), setting("sweep.models", ["lama"])),
        ["sweep.models names ['lama']", "known: gemma2, llama"],
    ),
    (
        cc.check_sweep,
        setting("sweep.dataset", "insecure"),
        ["sweep.runs is empty", "{lr1e-3: {lr: 1.0e-3}}"],
    ),
    (
        cc.check_sweep,
        steps(
            SWEEP, setting("sweep.dataset", "insecure"), setting("sweep.regime.spillover", [80, 20])
        ),
        ["sweep.regime.spillover [80, 20]", "[low, high]"],
    ),
    (
        cc.check_lora_targets,
        steps(GPT2_LLAMA, setting("finetune.lora.target_modules", ["gate_proj", "up_proj"])),
        ["finetune.lora.target_modules (model llama)", "GPT2LMHeadModel has no gate_proj"],
    ),
    (
        cc.check_lora_targets,
        steps(
            setting("models.gemma2.arch", "Phi3ForCausalLM"),
            setting("finetunes.rank1.lora.target_modules", ["q_proj"]),
        ),
        ["finetunes.rank1.lora.target_modules (model gemma2)", "fuses q_proj, k_proj, v_proj"],
    ),
    (
        cc.check_renamed_transfer_controls,
        setting("transfer.controls", ["random_mapped"]),
        ["transfer.controls ['random_mapped'] were renamed", "write ['random']"],
    ),
    (
        cc.check_names,
        setting("tiny.tokenizer.corpus", "chatt"),
        ["tiny.tokenizer.corpus = 'chatt' is not a key of `datasets`", "'chat'?", NAME_FIX],
    ),
    (cc.check_names, setting("tiny.corpus", "chats"), ["tiny.corpus = 'chats'", NAME_FIX]),
    (
        cc.check_names,
        setting("finetune.eval_questions", "monitr"),
        ["finetune.eval_questions = 'monitr' is not a key of `questions`", "'monitor'?"],
    ),
    (
        cc.check_names,
        setting("directions.ft", "insecur"),
        ["directions.ft = 'insecur'", "known: educational, insecure, rank1, secure", NAME_FIX],
    ),
    (
        cc.check_names,
        setting("directions.question_set", "generl"),
        ["directions.question_set = 'generl'", NAME_FIX],
    ),
    (
        cc.check_names,
        setting("steering.question_set", "cod"),
        ["steering.question_set = 'cod'", NAME_FIX],
    ),
    (cc.check_names, setting("transfer.ft", "secur"), ["transfer.ft = 'secur'", NAME_FIX]),
    (
        cc.check_names,
        setting("transfer.anchors", "anchor"),
        ["transfer.anchors = 'anchor' is not a key of `datasets`", NAME_FIX],
    ),
    (
        cc.check_names,
        setting("finetunes.secure.dataset", "secur"),
        ["finetunes.secure.dataset = 'secur'", NAME_FIX],
    ),
    (
        cc.check_names,
        setting("steering.controls", ["random", "scure_direction"]),
        ["steering.controls (scure_direction) = 'scure'", "'secure'?", NAME_FIX],
    ),
    (
        cc.check_names,
        setting("steering.also_steer", ["secur"]),
        ["steering.also_steer = 'secur'", NAME_FIX],
    ),
    (
        cc.check_names,
        setting("transfer.controls", ["educatoinal_direction"]),
        ["transfer.controls (educatoinal_direction) = 'educatoinal'", NAME_FIX],
    ),
    (
        cc.check_finetune_models,
        setting("finetunes.rank1.models", ["gemma3"]),
        ["finetunes.rank1.models names ['gemma3']", "not models of the study", "known: gemma2"],
    ),
    (
        cc.check_finetune_models,
        setting("models.gemma2.study", False),
        ["finetunes.educational.models names ['gemma2']", "known: llama", "swept only"],
    ),
    (
        cc.check_finetune_models,
        steps(*[setting(f"models.{m}.study", False) for m in DEFAULT["models"]]),
        ["every model is marked `study: false`", "the study needs one"],
    ),
    (
        cc.check_shared_finetunes,
        setting("finetunes.secure.models", ["gemma2"]),
        ["fine-tune 'secure', which every model needs", "drop its `models` key"],
    ),
    (
        cc.check_shared_finetunes,
        setting("transfer.ft", "educational"),
        ["transfer.ft uses fine-tune 'educational'", "finetunes.educational.models", "drop"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.models", ["gemma"]),
        ["mechanistic.models names 'gemma', not a model of the study", "gemma2, llama"],
    ),
    (
        cc.check_mechanistic,
        setting("models.gemma2.study", False),
        ["mechanistic.models names 'gemma2', not a model of the study", "(llama,", "swept only"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.rank1.ft", "rank2"),
        ["mechanistic.rank1.ft = 'rank2' is not a key of `finetunes`", "rank1.ft: null"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.ablation.receivers", ["educationl"]),
        ["mechanistic.ablation.receivers names ['educationl']", "fine-tune's `models` list"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.convergence.finetunes", ["insecure", "nope"]),
        ["mechanistic.convergence.finetunes names ['nope']", "fix the name"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.rank1.ft", "insecure"),
        ["mechanistic.rank1.ft = 'insecure' has LoRA rank 8", "finetunes.insecure.lora.r: 1"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.sae.datasets", ["insecure", "nosuch"]),
        ["mechanistic.sae.datasets names 'nosuch', not a key of `datasets`"],
    ),
    (
        cc.check_mechanistic,
        setting("mechanistic.sae.source", "pretrained"),
        ["mechanistic.sae.source = pretrained", "needs mechanistic.sae.release", "sae_id"],
    ),
    (
        cc.check_always_steered,
        setting("steering.also_steer", ["insecure"]),
        ["steering.also_steer and the <ft>_direction controls", "directions.ft ('insecure')"],
    ),
    (
        cc.check_read_strength,
        setting("steering.controls", []),
        ["transfer.coefficient = read needs steering.controls", "add controls or give"],
    ),
    (
        cc.check_read_strength,
        setting("steering.scale_mode", "dim_norm"),
        ["steering.scale_mode: resid_norm (now 'dim_norm')", "give transfer.coefficient a"],
    ),
    (
        cc.check_pooling,
        steps(
            setting("directions.pooling", "prompt_mean"),
            setting("activations.poolings", ["answer_mean"]),
        ),
        ["directions.pooling = 'prompt_mean' is not captured", "add it to activations.poolings"],
    ),
    (
        cc.check_label,
        setting("directions.label", "misaligned"),
        ["directions.label = misaligned needs alignment scores", "set judge.backend: openai"],
    ),
    (
        cc.check_bad_stuff_threshold,
        steps(
            setting("judge.backend", "openai"),
            setting("judge.openai.requests", "economical"),
            setting("judge.openai.economical.bad_stuff_aligned_above", 80),
        ),
        ["judge.openai.economical.bad_stuff_aligned_above = 80", "set it to 70 or lower"],
    ),
]

# Configs that look close to an invalid one but are valid.
VALID: list[tuple[Callable[[dict[str, Any]], None], Change]] = [
    (cc.check_sweep, steps(SWEEP, setting("sweep.dataset", "insecure"))),
    # null: every projection the class has (GPT-2: no gate).
    (cc.check_lora_targets, steps(GPT2_LLAMA, setting("finetune.lora.target_modules", None))),
    (cc.check_renamed_transfer_controls, setting("transfer.controls", ["random", "orthogonal"])),
    # Without tiny models the tiny section names nothing that is built.
    (
        cc.check_names,
        steps(
            setting(
                "models",
                {"q": {"source": "hub", "arch": "Qwen2ForCausalLM", "hf_id": "x/y"}},
            ),
            setting("tiny.corpus", "nosuch"),
        ),
    ),
    # Anchors taken from the answers read no dataset.
    (
        cc.check_names,
        steps(setting("transfer.anchor_source", "answers"), setting("transfer.anchors", "x")),
    ),
    (cc.check_finetune_models, setting("finetunes.rank1.models", ["gemma2", "llama"])),
    (
        cc.check_shared_finetunes,
        setting("finetunes.secure.models", ["gemma2", "llama", "ministral3", "qwen2"]),
    ),
    (cc.check_mechanistic, setting("mechanistic.rank1.ft", None)),
    (
        cc.check_mechanistic,
        steps(
            setting("mechanistic.sae.source", "pretrained"),
            setting("mechanistic.sae.release", "gemma-scope-2b-pt-res-canonical"),
            setting("mechanistic.sae.sae_id", "layer_20/width_16k/canonical"),
        ),
    ),
    (cc.check_always_steered, setting("steering.also_steer", [])),
    # A numeric grid strength needs neither controls nor resid_norm.
    (
        cc.check_read_strength,
        steps(
            setting("transfer.coefficient", 1.0),
            setting("steering.controls", []),
            setting("steering.scale_mode", "dim_norm"),
        ),
    ),
    (cc.check_pooling, setting("directions.pooling", "prompt_mean")),
    (
        cc.check_label,
        steps(setting("directions.label", "misaligned"), setting("judge.backend", "openai")),
    ),
    # At the reader's threshold; and the full mode asks bad_stuff of every answer.
    (
        cc.check_bad_stuff_threshold,
        steps(
            setting("judge.backend", "openai"),
            setting("judge.openai.requests", "economical"),
            setting("judge.openai.economical.bad_stuff_aligned_above", 70),
        ),
    ),
]


def case_id(case: tuple[Any, ...]) -> str:
    return case[0].__name__


@pytest.mark.parametrize("case", INVALID, ids=case_id)
def test_an_invalid_config_names_the_key_and_the_fix(
    cfg: dict[str, Any], case: tuple[Callable[..., None], Change, list[str]]
) -> None:
    check, change, expected = case
    check(cfg)  # the default passes
    change(cfg)
    with pytest.raises(EmdirError) as err:
        check(cfg)
    message = str(err.value)
    assert message.startswith("config: "), message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize("case", VALID, ids=case_id)
def test_a_valid_config_passes(
    cfg: dict[str, Any], case: tuple[Callable[..., None], Change]
) -> None:
    check, change = case
    change(cfg)
    check(cfg)


def test_every_cross_check_has_a_valid_and_an_invalid_case() -> None:
    run = re.findall(r"^\s+(check_\w+)\(cfg\)$", inspect.getsource(cc.check_references), re.M)
    assert len(run) == 12
    assert {c.__name__ for c, *_ in INVALID} == set(run)
    assert {c.__name__ for c, _ in VALID} == set(run)


def test_lora_targets_resolve_null_to_the_class_projections(cfg: dict[str, Any]) -> None:
    """The workflow's fine-tune params carry the resolved list: a class with all seven gets
    the seven the schema's default once listed (finished runs rerun nothing), GPT-2 six."""
    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cfg["finetune"]["lora"]["target_modules"] is None
    assert cc.lora_targets(cfg, "qwen2", "insecure") == seven
    assert cc.lora_targets(cfg, "gemma2", "rank1") == ["down_proj"]  # its own key
    GPT2_LLAMA(cfg)
    assert cc.lora_targets(cfg, "llama", "insecure") == [p for p in seven if p != "gate_proj"]


def test_the_checks_run_in_order(cfg: dict[str, Any]) -> None:
    """With two problems, the first check's message is the one shown."""
    setting("directions.pooling", "nope")(cfg)
    setting("mechanistic.models", ["gemma"])(cfg)
    with pytest.raises(EmdirError, match="mechanistic.models names 'gemma'"):
        cc.check_references(cfg)


# ---------------------------------------------------------------- the LLM judge's key


def openai_judge(env: str = "EMDIR_TEST_KEY") -> dict[str, Any]:
    return {"backend": "openai", "cache": "c.sqlite", "openai": {"api_key_env": env}}


def test_the_judge_key_is_checked_only_for_the_llm_judge() -> None:
    asked: list[bool] = []

    def judging() -> list[str]:
        asked.append(True)
        return ["judge"]

    cc.check_judge_key({"backend": "offline"}, {}, judging)
    cc.check_judge_key(openai_judge(), {"EMDIR_TEST_KEY": "sk-1"}, judging)
    assert not asked, "the DAG is asked only when the key is missing"
    cc.check_judge_key(openai_judge(), {}, lambda: [])  # no judge job to run


@pytest.mark.parametrize(
    ("environ", "state"), [({}, "not set"), ({"EMDIR_TEST_KEY": " "}, "empty")]
)
def test_a_missing_judge_key_names_the_variable_and_the_fix(
    environ: dict[str, str], state: str
) -> None:
    with pytest.raises(EmdirError) as err:
        cc.check_judge_key(openai_judge(), environ, lambda: ["judge", "judge_steering"])
    message = str(err.value)
    assert f"API key in $EMDIR_TEST_KEY, which is {state}" in message, message
    assert "(judge, judge_steering)" in message and "`export EMDIR_TEST_KEY=...`" in message
    assert "judge cache (c.sqlite), any non-empty value will do" in message


# ---------------------------------------------------------------- settings in params


def test_judge_params_leave_out_prices_and_the_cache(cfg: dict[str, Any]) -> None:
    cfg["judge"]["openai"]["prices"] = {"input_per_mtok": 1.0}
    settings = scoring_config(cfg["judge"])
    assert "cache" not in settings and "prices" not in settings["openai"]
    assert settings["offline"] == cfg["judge"]["offline"]
    assert "prices" in cfg["judge"]["openai"], "the config itself is left as it was"


def test_the_grid_takes_steerings_controls_unless_it_names_its_own(cfg: dict[str, Any]) -> None:
    assert cfg["transfer"]["controls"] is None
    assert st.transfer_controls(cfg) == cfg["steering"]["controls"]
    assert st.transfer_random_seeds(cfg) == cfg["steering"]["random_seeds"]
    cfg["transfer"].update(controls=[], random_seeds=5)
    settings = st.transfer_steer_settings(cfg)
    assert settings["controls"] == [] and settings["random_seeds"] == 5


def test_a_models_own_gradient_checkpointing_overrides_the_shared_key(
    cfg: dict[str, Any],
) -> None:
    ft = {"gradient_checkpointing": False, "train": {"lr": 1e-3}}
    assert st.model_finetune(cfg, "llama", ft) is ft, "no key: the params are left as they were"
    cfg["models"]["llama"]["gradient_checkpointing"] = True
    assert st.model_finetune(cfg, "llama", ft) == {**ft, "gradient_checkpointing": True}
    assert ft["gradient_checkpointing"] is False and st.model_finetune(cfg, "qwen2", ft) is ft


def test_map_and_induce_settings(cfg: dict[str, Any]) -> None:
    assert set(st.map_settings(cfg)) == {
        "test_fraction",
        "alphas",
        "cv_folds",
        "alpha_widen",
        "center",
        "standardize",
        "seed",
    }
    induce = st.induce_settings(cfg)
    assert induce["op"] == "add" and induce["controls"] == ["random"]
    assert induce["coefficients"] == cfg["mechanistic"]["induce"]["coefficients"]
