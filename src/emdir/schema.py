"""The defaults of config/schema.yaml, for code that runs without a validated config.

The workflow gets every default from the schema when Snakemake validates the config; the
library has none of its own (its settings classes take every value). Code that has no config,
such as the judge-label check (`python -m emdir.judge.validate`) and the tests, reads the
schema's defaults here, so that a default is written in one place only.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from emdir.errors import EmdirError

# The checkout's schema: src/emdir/schema.py -> the repository root.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EmdirError(
            f"{path} does not exist; the schema's defaults are read from a checkout of the "
            "repository (pass its config/schema.yaml as `schema`)"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/$defs/"):
        raise EmdirError(f"schema reference {ref!r} is not a local $defs entry")
    return root["$defs"][ref.removeprefix("#/$defs/")]


def _filled(node: dict[str, Any], value: Any, root: dict[str, Any]) -> Any:
    """`value` with its missing keys set to their defaults, recursively, as Snakemake's
    validation fills them (a key's `default` is filled, then the key is descended into)."""
    props = _resolve(node, root).get("properties")
    if not isinstance(value, dict) or props is None:
        return value
    out = dict(value)
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _filled(sub, out[key], root)
    return out


def schema_defaults(key: str, schema: str | Path = SCHEMA_PATH) -> Any:
    """What a validated config holds at `key` (dotted, e.g. "sampling", "judge.offline" or
    "sampling.max_new_tokens") when the config leaves it out: its default, with the defaults
    of everything under it filled in. A fresh copy on every call."""
    root = _load(Path(schema).resolve())
    node = root
    for part in key.split("."):
        props = _resolve(node, root).get("properties", {})
        if part not in props:
            raise EmdirError(f"config key `{key}` is not in {schema} (no `{part}`)")
        node = props[part]
    if "default" not in node:
        raise EmdirError(f"config key `{key}` has no default in {schema}")
    return _filled(node, copy.deepcopy(node["default"]), root)
