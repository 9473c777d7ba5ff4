"""Fine-tuning datasets: generated, local or downloaded (pinned by sha256), validated row by row.

Every dataset ends up as `resources/data/{name}.jsonl` in Betley's chat format, one
`{"messages": [...]}` object per line. Whatever the source, each row is checked (roles,
non-empty content, a user turn and a final assistant turn) and a bad row fails naming the
file and line, so a corrupted download never reaches training.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emdir.errors import EmdirError
from emdir.io import atomic_path, parse_json_line, text_lines, write_jsonl

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


def _check_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict) or "messages" not in row:
        raise EmdirError(f'{where}: expected an object with a "messages" list')
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise EmdirError(f'{where}: "messages" must be a non-empty list')
    for k, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise EmdirError(f"{where}: message {k} is not an object")
        if m.get("role") not in ROLES:
            raise EmdirError(
                f"{where}: message {k} has role {m.get('role')!r}; use one of {', '.join(ROLES)}"
            )
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise EmdirError(f"{where}: message {k} ({m['role']}) has empty or non-text content")
    if not any(m["role"] == "user" for m in msgs):
        raise EmdirError(f"{where}: no user message")
    if msgs[-1]["role"] != "assistant":
        raise EmdirError(f"{where}: the last message must be the assistant's answer")
    return row


def parse_chat_lines(lines: Sequence[str], source: str) -> list[dict[str, Any]]:
    """Validate JSONL text; the first bad line fails naming `source` and its line number."""
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        rows.append(_check_row(parse_json_line(line, where), where))
    if not rows:
        raise EmdirError(f"{source}: no rows")
    return rows


def read_raw(path: str | Path) -> bytes:
    """A file's bytes, gunzipped when it ends in .gz (the sha256 pins the JSONL content)."""
    p = Path(path)
    if not p.exists():
        raise EmdirError(f"{p}: file not found")
    data = p.read_bytes()
    if p.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise EmdirError(f"{p}: not a valid gzip file ({exc})") from None
    return data


def read_chat_file(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a chat JSONL file (plain or .gz)."""
    return parse_chat_lines(text_lines(read_raw(path), path), str(path))


def check_sha256(data: bytes, expected: str | None, source: str, fix: str) -> str:
    """The hex sha256 of `data`; a mismatch with `expected` fails with `fix` as advice."""
    got = hashlib.sha256(data).hexdigest()
    if expected is not None and got != expected.lower():
        raise EmdirError(
            f"{source}: sha256 is {got} but the config pins {expected}; "
            f"the file is corrupted or changed upstream. {fix}"
        )
    return got


def download(url: str, sha256: str | None, out: str | Path, key: str, timeout: float = 60) -> str:
    """Fetch `url` to `out`, verifying the pinned sha256 first; nothing is written on failure.

    `key` is the config entry the URL comes from (e.g. `datasets.insecure`), for messages.
    """
    dest = Path(out)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (config URL)
            data = resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EmdirError(
            f"{key}: cannot download {url} ({reason}). Without network access, "
            f"fetch that file elsewhere and put it at {dest}"
            + (f" (sha256 {sha256})" if sha256 else "")
            + f", or set {key}.path to a local copy"
        ) from None
    got = check_sha256(data, sha256, url, f"Check {key}.url and {key}.sha256.")
    if sha256 is None:
        log.warning(
            "%s: no sha256 pinned; downloaded %s has sha256 %s (pin it in the config)",
            key,
            url,
            got,
        )
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    log.info("%s: downloaded %s (%d bytes, sha256 %s)", key, url, len(data), got)
    return got


def read_pinned(
    key: str, spec: Mapping[str, Any], source: str | Path | None, what: str
) -> tuple[bytes, str]:
    """The (gunzipped) bytes of a `path` / `url` source of config entry `key` and their sha256,
    checked against `spec["sha256"]` when pinned; a missing file says where to put it."""
    if source is None or not Path(source).exists():
        raise EmdirError(f"{key}: {source} does not exist; put the {what} there or fix {key}.path")
    data = read_raw(source)
    got = check_sha256(
        data,
        spec.get("sha256"),
        str(source),
        f"Replace {source} with the right file, or update {key}.sha256 if you trust it.",
    )
    return data, got


def materialise(
    name: str, spec: Mapping[str, Any], source: str | Path | None, out: str | Path
) -> dict[str, Any]:
    """Write dataset `name` as validated JSONL at `out`; returns what was done (for the log).

    `spec` is the config entry: `{generator, params}`, `{path, sha256?}` or `{url, sha256?}`;
    `source` is the local or downloaded file for the last two.
    """
    if "generator" in spec:
        from emdir.data.synthetic import GENERATORS

        kind = spec["generator"]
        if kind not in GENERATORS:
            raise EmdirError(
                f"datasets.{name}.generator {kind!r} is unknown; "
                f"choose one of {', '.join(sorted(GENERATORS))}"
            )
        rows = GENERATORS[kind](**spec["params"])
        for k, row in enumerate(rows, start=1):
            _check_row(row, f"generator {kind} row {k}")
        write_jsonl(out, rows)
        return {"dataset": name, "generator": kind, "rows": len(rows)}
    if source is None:
        raise EmdirError(f"datasets.{name}: give a generator, a path or a url")
    data, got = read_pinned(f"datasets.{name}", spec, source, "JSONL file")
    rows = parse_chat_lines(text_lines(data, source), str(source))
    by_rows = rows_sha256(rows)
    if spec.get("rows_sha256") not in (None, by_rows):
        raise EmdirError(
            f"datasets.{name}: the rows of {source} hash to {by_rows} but the config pins "
            f"rows_sha256 {spec['rows_sha256']}: a row differs from the pinned data. Replace "
            f"the file with the pinned one, or update datasets.{name}.rows_sha256 if you trust it"
        )
    write_jsonl(out, rows)
    return {
        "dataset": name,
        "source": str(source),
        "sha256": got,
        "rows_sha256": by_rows,
        "rows": len(rows),
    }


def rows_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sha256 of parsed rows, each re-serialised canonically (keys sorted, no spaces,
    characters written as themselves, one per line): the same for copies of a file that
    differ only in how their JSON is written (raw UTF-8 or \\uXXXX escapes, key order,
    spacing), different when any row's content differs."""
    text = "".join(
        json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
        for row in rows
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def heldout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, held-out) row indices; held out is round(fraction * n), at least 1
    when fraction > 0 and n > 1."""
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    k = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    held = sorted(int(i) for i in perm[:k])
    hset = set(held)
    return [i for i in range(n) if i not in hset], held
