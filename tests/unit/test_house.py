"""The package's shape, as DESIGN.md's layout describes it: layers that import only
downwards, no private name imported across modules, and modules short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "emdir"
# Lower layers never import higher ones. The top-level modules (errors, io, schema,
# provenance, resume, logs, dryrun, carry) are the floor every layer stands on; config,
# settings and layout, which the workflow reads (validation, cross-checks, settings, paths),
# stand above every layer.
LAYERS = {
    "": 0,
    "data": 1,
    "models": 2,
    "analysis": 3,
    "judge": 2,
    "mechanistic": 4,
    "report": 5,
    "stages": 6,
    "config": 7,
    "settings": 7,
    "layout": 7,
}
MAX_LINES = 420


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every `from emdir... import` and `import emdir...`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emdir"):
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("emdir."):
                    out.append((node.lineno, a.name, []))
    return out


def _target(module: str, name: str) -> str:
    """The module a `from module import name` reaches: a submodule when one exists."""
    sub = SRC.parent / Path(*f"{module}.{name}".split("."))
    return f"{module}.{name}" if sub.with_suffix(".py").exists() or sub.is_dir() else module


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_imports_go_downwards_and_reach_no_private_names(path: Path) -> None:
    here = _name(path)
    wrong = []
    for line, module, names in _imports(path):
        for name in names or [""]:
            target = _target(module, name) if name else module
            if target.split(".")[1:2] != here.split(".")[1:2] and _layer(target) > _layer(here):
                wrong.append(f"line {line}: {here} imports {target} from a higher layer")
            if name.startswith("_") and not name.endswith("__") and target != here:
                wrong.append(f"line {line}: {here} imports the private {module}.{name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_modules_are_short_enough_to_read(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{_name(path)} has {n} lines; split it by topic (<= ~400)"


def test_every_subpackage_is_a_known_layer() -> None:
    packages = {p.parent.name for p in SRC.rglob("__init__.py")} - {"emdir"}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS"
