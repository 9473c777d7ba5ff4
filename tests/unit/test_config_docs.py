"""config/README.md's key tables against config/schema.yaml: the same keys, the same defaults.

The schema holds every default (Snakemake fills them in when it validates the config); the
README restates them for readers, so this test keeps the two from drifting apart. A README
row's default column is a backticked YAML value that must equal the schema's default, or,
for a key without one, words ("required", "none", ...) or a backticked key it falls back to.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from snakemake.utils import validate

from emdir.schema import schema_defaults

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "config" / "schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
README_PATH = REPO / "config" / "README.md"

# A table row: | `key` | default | meaning |
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<default>.*?) \| .* \|$")
HEADER = "| key | default | meaning |"


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return SCHEMA["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def schema_keys(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, its subschema) for every key, `<key>` standing for a mapping's own keys;
    a key declared in several `allOf` branches (per-generator params) comes once per branch."""
    node = resolve(node)
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, sub
        yield from schema_keys(sub, path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        path = f"{prefix}.<key>"
        yield path, extra
        yield from schema_keys(extra, path)
    for branch in node.get("allOf", []):
        yield from schema_keys(branch.get("then", {}), prefix)


def schema_table() -> dict[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = {}
    for path, sub in schema_keys(SCHEMA):
        table.setdefault(path, []).append(sub)
    return table


def is_section(subs: list[dict[str, Any]]) -> bool:
    """An object whose keys have rows of their own (`tiny.train`, `models`), not a value."""
    return any(
        "properties" in resolve(s) or isinstance(resolve(s).get("additionalProperties"), dict)
        for s in subs
    )


def readme_rows() -> dict[str, str]:
    """README key -> its default column, from every `| key | default | meaning |` table."""
    rows: dict[str, str] = {}
    in_table = False
    for n, line in enumerate(README_PATH.read_text(encoding="utf-8").splitlines(), 1):
        if line == HEADER:
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table or line.startswith("|---"):
            continue
        m = ROW.match(line)
        assert m, f"config/README.md line {n} is not a `| key | default | meaning |` row"
        key = m["key"]
        assert key not in rows, f"config/README.md line {n}: `{key}` has a second row"
        rows[key] = m["default"]
    return rows


SCHEMA_KEYS = schema_table()
README_ROWS = readme_rows()


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types (`1` is not `1.0`, `0` is not `false`)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def literal(cell: str) -> tuple[bool, Any]:
    """(True, value) when the default column starts with a backticked YAML value."""
    m = re.match(r"`([^`]*)`", cell)
    if not m:
        return False, None
    return True, yaml.safe_load(m[1])


def test_the_readme_has_the_tables() -> None:
    assert len(README_ROWS) > 150
    assert "steering.coefficients" in README_ROWS and "stats.seed" in README_ROWS


def test_every_readme_key_is_in_the_schema() -> None:
    unknown = sorted(set(README_ROWS) - set(SCHEMA_KEYS))
    assert not unknown, f"config/README.md documents keys the schema does not have: {unknown}"


def test_every_schema_key_has_a_readme_row() -> None:
    missing = sorted(
        k for k, subs in SCHEMA_KEYS.items() if not is_section(subs) and k not in README_ROWS
    )
    assert not missing, f"config/README.md has no row for: {missing}"


def test_readme_defaults_are_the_schema_defaults() -> None:
    wrong = []
    for key, cell in README_ROWS.items():
        subs = SCHEMA_KEYS.get(key, [])
        defaults = [s["default"] for s in subs if "default" in s]
        has_literal, value = literal(cell)
        if defaults:
            # Per-generator params may repeat a key; each branch must agree with the row.
            shown = " / ".join(repr(d) for d in defaults)
            if not has_literal:
                wrong.append(f"`{key}`: README says {cell!r}, the schema's default is {shown}")
            elif not all(same(value, d) for d in defaults):
                wrong.append(f"`{key}`: README says {value!r}, the schema's default is {shown}")
        elif has_literal and not (isinstance(value, str) and value in SCHEMA_KEYS):
            # No default: the column may name the key it falls back to, never a value.
            wrong.append(f"`{key}`: README gives the default {value!r}, the schema has none")
    assert not wrong, "config/README.md disagrees with config/schema.yaml:\n" + "\n".join(wrong)


MINIMAL: dict[str, Any] = {
    "models": {"llama": {"source": "tiny", "arch": "LlamaForCausalLM"}},
    "datasets": {"chat": {"generator": "chat", "params": {}}},
    "questions": {"general": {"generator": "general", "params": {}}},
    "finetunes": {"insecure": {"dataset": "chat"}},
}


def test_schema_defaults_are_what_validation_fills_in() -> None:
    """`emdir.schema_defaults` (what tests and the judge-label check use for a config they do
    not have) gives exactly the sections that Snakemake's validation fills in."""
    cfg = copy.deepcopy(MINIMAL)
    validate(cfg, str(SCHEMA_PATH))
    sections = [k for k, sub in SCHEMA["properties"].items() if "default" in sub]
    assert {"sampling", "judge", "transfer", "mechanistic"} <= set(sections)
    for section in sections:
        assert same(schema_defaults(section), cfg[section]), section
    assert schema_defaults("sampling.max_new_tokens") == cfg["sampling"]["max_new_tokens"]
