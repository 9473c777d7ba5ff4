"""Finished pieces of a long job, kept across a kill so that the rerun starts where it stopped.

A steering job samples every vector at every coefficient (24 passes of an hour's work on a
CPU for a 0.5B model); Snakemake deletes a job's declared outputs before running it again,
so pieces are kept in a hidden sibling folder that is not an output, under a fingerprint of
everything that shapes them: the model's files, the intervention vectors themselves, the
settings and emdir's own code. A different fingerprint clears the folder; a finished job
removes it. Sampling is seeded per answer, so a resumed job writes what an uninterrupted one
would have.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emdir.io import read_jsonl, sha256_text, write_jsonl

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.txt"


@functools.cache
def code_sha() -> str:
    """The sha256 of emdir's source files (a piece computed by other code is not reused)."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _file_identity(paths: Iterable[str | Path | None]) -> list[list[Any]]:
    """(path, size, mtime) of every file under `paths`: what Snakemake also goes by."""
    out: list[list[Any]] = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def fingerprint(
    files: Iterable[str | Path | None],
    arrays: Mapping[str, np.ndarray],
    settings: Mapping[str, Any],
) -> str:
    """One sha over the files' identities, the arrays' exact values and the settings."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    meta = {
        "files": _file_identity(files),
        "arrays": h.hexdigest(),
        "settings": settings,
        "code": code_sha(),
    }
    return sha256_text(json.dumps(meta, sort_keys=True, default=str))


class Pieces:
    """The finished pieces of one job in `folder`, valid for one fingerprint."""

    def __init__(self, folder: str | Path, fingerprint: str):
        self.folder = Path(folder)
        stamp = self.folder / FINGERPRINT_FILE
        if self.folder.exists() and (
            not stamp.exists() or stamp.read_text(encoding="utf-8") != fingerprint
        ):
            log.info("%s: kept pieces are of other inputs or code; starting afresh", self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint, encoding="utf-8")

    def rows(self, key: str, compute: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The rows of piece `key`: read back if a killed run finished it, else computed and
        kept (atomically) before they are returned."""
        path = self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".jsonl")
        if path.exists():
            log.info("%s: resumed from %s", key, path)
            return read_jsonl(path)
        rows = compute()
        write_jsonl(path, rows)
        return rows

    def finish(self) -> None:
        """The job's outputs are written: the pieces are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)


def pieces_beside(
    outs: Mapping[str, str | Path],
    files: Sequence[str | Path | None],
    arrays: Mapping[str, np.ndarray],
    settings: Mapping[str, Any],
) -> Pieces:
    """Where a steering or transfer job keeps its finished passes: `.pieces/` beside its
    outputs, under the fingerprint of `files`, `arrays` and `settings`."""
    folder = Path(next(iter(outs.values()))).parent / ".pieces"
    return Pieces(folder, fingerprint(files, arrays, settings))
