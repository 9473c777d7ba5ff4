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
    _remove_stale_temps(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove_stale_temps(final: Path) -> None:
    """Delete the temporary siblings that killed writers of `final` left behind (a process
    that no longer exists); a live writer's is left alone."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def text_lines(data: bytes, source: str | Path) -> list[str]:
    """The lines of UTF-8 text: a leading byte-order mark is dropped, records end at "\n"
    only ("\r\n" too; U+2028 or U+0085 inside a JSON string stay in it), and bytes that are
    not UTF-8 fail naming the file and line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            out.append(raw.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EmdirError(
                f"{source}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the line); "
                "re-save the file as UTF-8"
            ) from None
    if out and out[-1] == "":
        out.pop()
    return out


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
    for lineno, line in enumerate(text_lines(p.read_bytes(), p), start=1):
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
