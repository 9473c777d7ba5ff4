"""Provenance: which code, config and packages produced a result file.

`stamp()` is the flat record stored in every HDF5 result (activation stores, directions,
maps) and in every figure's PNG metadata; `results/provenance.json` summarises a run. The
config sha comes from the workflow (the Snakefile exports EMDIR_CONFIG_SHA to every job).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import emdir

KEY_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "numpy",
    "h5py",
    "pandas",
    "snakemake",
)
CONFIG_SHA_ENV = "EMDIR_CONFIG_SHA"


@functools.cache
def git_commit(repo: str | Path | None = None) -> str:
    """The checkout's commit, with "+dirty" when tracked files differ; "unknown" outside git."""
    where = Path(repo) if repo is not None else Path(emdir.__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results ("absent" when not installed)."""
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def stamp() -> dict[str, str]:
    """Flat string fields: config sha, emdir version, git commit, key package versions."""
    return {
        "config_sha": os.environ.get(CONFIG_SHA_ENV, "unknown"),
        "emdir_version": emdir.__version__,
        "git_commit": git_commit(),
        "packages": ", ".join(f"{k}={v}" for k, v in package_versions().items()),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_summary(
    config: Mapping[str, Any], outputs: Iterable[str | Path], config_files: Iterable[str]
) -> dict[str, Any]:
    """`results/provenance.json`: the stamp, the config itself, and sha256 and size of each
    final output."""
    from emdir.io import config_sha

    files = {}
    for p in map(Path, outputs):
        files[str(p)] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
    return {
        **stamp(),
        "config_sha": config_sha(config),
        "config_files": list(config_files),
        "packages": package_versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "outputs": files,
        "config": dict(config),
    }
