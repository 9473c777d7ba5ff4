"""The config schema: defaults, strictness, error messages that name the key, documentation."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "config" / "schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
README = (REPO / "config" / "README.md").read_text(encoding="utf-8")

MINIMAL: dict[str, Any] = {
    "models": {"llama": {"source": "tiny", "arch": "LlamaForCausalLM"}},
    "datasets": {
        "chat": {"generator": "chat", "params": {}},
        "insecure": {"generator": "insecure", "params": {"n": 50}},
        "anchors": {"generator": "anchors", "params": {}},
    },
    "questions": {"general": {"generator": "general", "params": {}}},
    "finetunes": {"insecure": {"dataset": "insecure"}},
}


def validated(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    validate(cfg, str(SCHEMA_PATH))
    return cfg


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for key, sub in node.items():
            yield from leaves(sub, (*path, key))
    else:
        yield path, node


def lookup(cfg: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        cfg = cfg[key]
    return cfg


def test_embedded_default_is_valid_and_kept() -> None:
    """Validation only adds defaults: every value config/config.yaml sets survives."""
    cfg = validated(DEFAULT)
    for path, value in leaves(DEFAULT):
        assert lookup(cfg, path) == value, path


def test_schema_fills_defaults() -> None:
    cfg = validated(MINIMAL)
    assert cfg["sampling"]["top_k"] == 0
    assert cfg["steering"]["controls"] == ["random", "orthogonal"]
    assert cfg["tiny"]["train"]["steps"] == 400
    assert cfg["finetune"]["lora"]["r"] == 8
    assert cfg["judge"]["offline"]["code_share"] == 0.6
    # Per-generator defaults inside a user's own params, never shared between entries.
    assert cfg["datasets"]["chat"]["params"] == {
        "n_general": 2000,
        "n_code": 2000,
        "vague_fraction": 0.1,
        "seed": 0,
    }
    assert cfg["datasets"]["insecure"]["params"] == {"n": 50, "seed": 0}
    assert cfg["datasets"]["anchors"]["params"] == {"n": 1000, "seed": 0}
    assert cfg["questions"]["general"]["samples"] is None  # the file's own, 1 for generators


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, sub in node.items():
            yield from walk(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for k, sub in enumerate(node):
            yield from walk(sub, f"{path}/{k}")


def test_every_object_forbids_unknown_keys() -> None:
    for path, node in walk(SCHEMA):
        # `if` / `then` branches refine an object whose own schema closes it.
        if path.endswith(("/if", "/then")) or path.endswith("/properties"):
            continue
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path


def test_type_is_checked_before_properties() -> None:
    """Otherwise snakemake's default filling crashes on e.g. `steering: 5`."""
    for path, node in walk(SCHEMA):
        if "type" in node and "properties" in node and not path.endswith("/properties"):
            keys = list(node)
            assert keys.index("type") < keys.index("properties"), path


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"modles": {}}, "modles"),
        ({"steering": {"coefficent": 1.0}}, "coefficent"),
        ({"sampling": {"temperature": "hot"}}, "temperature"),
        ({"steering": 5}, "steering"),
        ({"finetune": {"lora": {"rank": 8}}}, "rank"),
        ({"datasets": {"chat": {"generator": "chat", "params": {"n_genral": 3}}}}, "n_genral"),
        ({"models": {"llama": {"source": "tiny", "arch": "Llama"}}}, "arch"),
        ({"models": {"a__b": {"source": "tiny", "arch": "LlamaForCausalLM"}}}, "a__b"),
        ({"models": {"q": {"source": "hub", "arch": "Qwen2ForCausalLM"}}}, "hf_id"),
        ({"finetunes": {"base": {"dataset": "chat"}}}, "base"),
        ({"transfer": {"controls": ["sideways"]}}, "controls"),
    ],
)
def test_schema_errors_name_the_key(patch: dict[str, Any], key: str) -> None:
    cfg = copy.deepcopy(MINIMAL)
    cfg.update(patch)
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(SCHEMA_PATH))
    assert key in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("modles: {x: 1}\n", "modles"),
        ("steering: {coefficent: 1.0}\n", "coefficent"),
        ("sampling: {temperature: hot}\n", "temperature"),
        ("directions: {ft: insecur}\n", "directions.ft"),
        ("finetunes: {extra: {dataset: nosuch}}\n", "finetunes.extra.dataset"),
        ("steering: {controls: [scure_direction]}\n", "scure_direction"),
        ("steering: {controls: [sideways]}\n", "sideways"),
        ("steering: {also_steer: [insecure]}\n", "also_steer"),
        (
            "directions: {pooling: prompt_mean}\nactivations: {poolings: [answer_mean]}\n",
            "poolings",
        ),
        ("directions: {label: misaligned}\n", "offline"),
        ("mechanistic: {models: [gemma]}\n", "mechanistic.models"),
        ("mechanistic: {rank1: {ft: insecure}}\n", "mechanistic.rank1.ft"),
        ("mechanistic: {ablation: {receivers: [educationl]}}\n", "mechanistic.ablation.receivers"),
        ("mechanistic: {sae: {source: pretrained}}\n", "sae_id"),
        ("finetunes: {secure: {models: [gemma2]}}\n", "finetunes.secure.models"),
        ("finetunes: {rank1: {models: [gemma3]}}\n", "gemma3"),
        # issue 16: the grid's controls come from steering's registry; the read strength
        ("transfer: {controls: [random_mapped]}\n", "renamed"),
        ("steering: {controls: []}\n", "transfer.coefficient = read needs steering.controls"),
        ("steering: {scale_mode: dim_norm}\n", "resid_norm"),
        ("steering: {behaviour: code}\n", "behaviour"),
        ("steering: {read: {cost: coherance}}\n", "coherance"),
        ("steering: {match: [l2]}\n", "l2"),
    ],
)
def test_workflow_fails_at_start_naming_the_key(tmp_path: Path, override: str, key: str) -> None:
    # A --configfile replaces the default config, so the bad key goes into a full copy.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(merged(DEFAULT, yaml.safe_load(override))), encoding="utf-8")
    proc = run_snakemake(tmp_path, "--dry-run", "--configfile", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert key in out, out
    assert "Job stats" not in out, "failed only after building the DAG"


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def property_paths(node: dict[str, Any], prefix: str) -> Iterator[str]:
    """Dotted paths of the schema's leaf keys, with `<key>` for user-chosen mapping keys."""
    node = resolve(node)
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if "properties" not in resolve(sub):
            yield path
        yield from property_paths(sub, path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from property_paths(extra, f"{prefix}.<key>")
    for branch in node.get("allOf", []):
        yield from property_paths(branch.get("then", {}), prefix)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return SCHEMA["$defs"][ref.rsplit("/", 1)[1]]
    return node


def test_readme_documents_every_key() -> None:
    missing = sorted({p for p in property_paths(SCHEMA, "") if f"`{p}`" not in README})
    assert not missing, f"config/README.md lacks: {missing}"


@pytest.mark.parametrize(
    ("override", "key", "hint", "section"),
    [
        ("modles: {x: 1}\n", "`modles`", "did you mean 'models'?", "models"),
        (
            "steering: {coefficent: 1.0}\n",
            "`steering.coefficent`",
            "did you mean 'coefficients'?",
            "steering",
        ),
        (
            "datasets: {chat: {params: {n_genral: 3}}}\n",
            "`datasets.chat.params.n_genral`",
            "did you mean 'n_general'?",
            "datasets",
        ),
        (
            "steering: {read: {cost: coherance}}\n",
            "`steering.read.cost`",
            "did you mean 'coherence'?",
            "steering",
        ),
        ("sampling: {temperature: hot}\n", "`sampling.temperature`", "expected number", "sampling"),
        # transfer.pooling was dead (the anchor activation is always the answer-token mean).
        ("transfer: {pooling: mean}\n", "`transfer.pooling`", "`transfer` takes:", "transfer"),
    ],
)
def test_a_schema_violation_is_one_short_message(
    tmp_path: Path, override: str, key: str, hint: str, section: str
) -> None:
    """Not snakemake's dump of the whole schema and config (~1300 lines): the key path, what
    it takes, a close match and where it is documented."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(merged(DEFAULT, yaml.safe_load(override))), encoding="utf-8")
    proc = run_snakemake(tmp_path, "--dry-run", "--configfile", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    message = out[out.index("config: ") :]
    assert len(message.splitlines()) < 15, out
    assert key in message and hint in message, out
    assert f"config/README.md, section `{section}`" in message, out
    assert "Failed validating" not in out and "$schema" not in out, out


def test_unknown_top_level_key_lists_the_sections(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**DEFAULT, "zzz": 1}), encoding="utf-8")
    proc = run_snakemake(tmp_path, "--dry-run", "--configfile", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "unknown key `zzz`; the top level takes: activations, datasets," in out, out
    assert "did you mean" not in out and len(out.splitlines()) < 15, out


def test_rank1_ft_naming_no_finetune_is_one_short_message(tmp_path: Path) -> None:
    """Without mechanistic models the per-model check never looked; the LoRA-rank check then
    hit a raw KeyError."""
    cfg = merged(DEFAULT, {"mechanistic": {"models": [], "rank1": {"ft": "rank2"}}})
    del cfg["finetunes"]["rank1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = run_snakemake(tmp_path, "--dry-run", "--configfile", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "KeyError" not in out and len(out.splitlines()) < 15, out
    assert "mechanistic.rank1.ft = 'rank2' is not a key of `finetunes`" in out, out
    assert "mechanistic.rank1.ft: null" in out, out


E2E = REPO / "tests" / "configs" / "e2e.yaml"


def test_a_missing_judge_key_stops_the_run_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With judge.backend: openai and the key's variable unset, a run with judge jobs stops
    before generating anything (not after all the generation), and leaves no lock."""
    env = "EMDIR_TEST_JUDGE_KEY"
    monkeypatch.delenv(env, raising=False)
    cfg = yaml.safe_load(E2E.read_text(encoding="utf-8"))
    cfg["judge"] = {
        "backend": "openai",
        "openai": {"model": "judge-test", "api_key_env": env, "base_url": "http://127.0.0.1:9/v1"},
    }
    config = tmp_path / "openai.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    generations = "results/generations/llama/base.jsonl"
    # Everything upstream of one generation file recorded as built (empty), as in a real run.
    proc = run_snakemake(tmp_path, "--summary", generations, "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]:
        if Path(name).suffix:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).touch()
        else:
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
    touch = ("--touch", "--forceall", "--cores", "1", generations)
    proc = run_snakemake(tmp_path, *touch, "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / generations).unlink()
    for log in (tmp_path / "logs" / "generate").rglob("*.log"):
        log.unlink()

    judged = "results/judged/llama/base.jsonl"
    proc = run_snakemake(tmp_path, "--cores", "1", judged, "--configfile", str(config))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"`export {env}=...`" in out and "any non-empty value" in out, out
    assert not (tmp_path / generations).exists(), out
    assert not list((tmp_path / "logs" / "generate").rglob("*.log")), "generate ran"
    assert not list((tmp_path / ".snakemake" / "locks").glob("*")), "left locked"
    # A dry-run needs no key, and finds the working directory unlocked.
    proc = run_snakemake(tmp_path, "--dry-run", judged, "--configfile", str(config))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^generate\s+1$", out, re.M) and re.search(r"^judge\s+1$", out, re.M), out
