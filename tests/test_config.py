"""The config schema: defaults, strictness, error messages that name the key, documentation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
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
