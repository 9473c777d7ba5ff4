"""A SQLite cache of LLM-judge replies, so that no judge request is ever paid for twice.

Each reply is committed the moment it arrives: a run that is killed midway keeps everything it
finished, and a rerun sends only what is missing. WAL mode lets one process write while others
read, and a busy timeout makes concurrent writers from several processes (e.g. parallel
Snakemake jobs sharing one cache file) wait for the lock instead of failing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from emdir.errors import EmdirError
from emdir.io import sha256_text

log = logging.getLogger(__name__)

# How long a writer waits for another process's lock before giving up. Writes are single small
# rows, so a lock is normally held for milliseconds; minutes of waiting means something is stuck.
BUSY_TIMEOUT_S = 60.0


def key_for(
    backend: str,
    model: str,
    prompt_sha: str,
    question: str,
    answer: str,
    scoring_params: Mapping[str, Any],
) -> str:
    """The cache key: sha256 of everything that determines the judge's reply.

    Canonical JSON (sorted keys, no whitespace variation) keeps the key stable across runs,
    processes and dict insertion orders.
    """
    payload = {
        "backend": backend,
        "model": model,
        "prompt_sha": prompt_sha,
        "question": question,
        "answer": answer,
        "params": dict(scoring_params),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return sha256_text(text)


class JudgeCache:
    """Key -> JSON record store in one SQLite file.

    Use one instance per process, from one thread (the asyncio event-loop thread); other
    processes open their own instance on the same file.
    """

    key_for = staticmethod(key_for)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so each put is durable on return.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None
            )
            self._setup(self._conn)
        except (OSError, sqlite3.Error) as exc:
            raise EmdirError(
                f"judge cache {self.path}: cannot open ({exc}); check the directory is writable "
                "or delete a corrupt cache file"
            ) from None

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        """WAL mode and the table. Switching a new file to WAL needs it alone, and SQLite
        answers "database is locked" at once (no busy wait) when other processes open it at
        the same moment, so that step is retried until BUSY_TIMEOUT_S."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        # NORMAL in WAL mode survives a killed process (the case that matters for reruns);
        # only an OS crash can lose the last commits, which are then simply re-requested.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS judge_cache ("
            "key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        )

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EmdirError(f"judge cache {self.path} is closed; open a new JudgeCache")
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None if absent or unreadable (then it is simply re-requested)."""
        row = self._db().execute("SELECT value FROM judge_cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            log.warning("judge cache %s: unreadable entry %s ignored", self.path, key[:12])
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Store a record, committed before returning."""
        text = json.dumps(dict(value), sort_keys=True, ensure_ascii=False)
        self._db().execute(
            "INSERT OR REPLACE INTO judge_cache (key, value, created) VALUES (?, ?, ?)",
            (key, text, time.time()),
        )

    def __len__(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        row = self._db().execute("SELECT 1 FROM judge_cache WHERE key = ?", (key,)).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
