"""Atomic file writes, validated JSONL reading and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from emdir.errors import EmdirError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories, so an interrupted job never leaves a
    half-written output that looks complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON lines, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def parse_json_line(line: str, where: str) -> Any:
    """One JSON value; a syntax error names `where` (file:line) and the fix."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise EmdirError(f"{where}: not valid JSON ({exc.msg}); fix or delete that line") from None


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read JSON lines; a malformed line or a missing key fails naming file and line number."""
    need = tuple(required)
    rows: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        raise EmdirError(f"{p}: file not found")
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = parse_json_line(line, f"{p}:{lineno}")
            if not isinstance(row, dict):
                raise EmdirError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in need if k not in row]
            if missing:
                raise EmdirError(f"{p}:{lineno}: missing key(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_sha(config: Any) -> str:
    """sha256 of a resolved config (key order does not matter)."""
    return sha256_text(json.dumps(config, sort_keys=True, default=str))


def sha256_text(text: str) -> str:
    """Hex sha256 of a string (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
