"""config/schema.yaml: its defaults, for code that runs without a validated config, and the
check of a config against it, with one short message per violation.

The workflow gets every default from the schema when Snakemake validates the config; the
library has none of its own (its settings classes take every value). Code that has no config,
such as the judge-label check (`python -m emdir.judge.validate`) and the tests, reads the
schema's defaults here, so that a default is written in one place only.

`check_schema` is the first step of emdir.config.prepare_config; `known_keys` and
`did_you_mean` also word its cross-checks' messages. `import emdir` reads this module, so
jsonschema and Snakemake are imported only when a config is checked.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
import reprlib
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from emdir.errors import EmdirError

if TYPE_CHECKING:
    from jsonschema import ValidationError

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


# ---------------------------------------------------------------- checking a config


def check_schema(cfg: dict[str, Any], schema: str | Path) -> None:
    """Validate `cfg` against `schema`, filling in defaults, in place; a violation is one
    short message (Snakemake's own prints the whole schema and config, ~1300 lines)."""
    from jsonschema import ValidationError
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(cfg, str(schema))
    except WorkflowError as err:
        if not isinstance(err.__context__, ValidationError):
            raise
        raise EmdirError(schema_message(err.__context__)) from None


def close_match(name: Any, options: Iterable[Any]) -> str | None:
    """The option closest to a misspelt `name`, or None."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return close[0] if close else None


def did_you_mean(name: Any, options: Iterable[Any]) -> str:
    """` (did you mean 'x'?)` for the option closest to `name`, or nothing."""
    close = close_match(name, options)
    return f" (did you mean {close!r}?)" if close else ""


def known_keys(name: Any, keys: Iterable[Any]) -> str:
    """`(did you mean 'x'? known: a, b, x)` for a `name` that is not one of `keys`."""
    keys = list(keys)
    close = close_match(name, keys)
    guess = f"did you mean {close!r}? " if close else ""
    return f"({guess}known: {', '.join(sorted(map(str, keys)))})"


def schema_message(err: ValidationError) -> str:
    """One line: the key path, what it takes, a close match and where it is documented."""
    from jsonschema.exceptions import best_match

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
