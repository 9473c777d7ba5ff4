"""Carried seeds: one fine-tuning seed's inputs to the pooled within-model tables, made on
one machine and pooled on another.

One seed's chain (three fine-tunes, their answers, directions, the steering sweep and its
judging) takes hours of CPU; a machine that does not keep a run directory that long can
still pool the seeds if each seed's chain runs where it fits and leaves behind what
`pooled_finetunes` and `pooled_within_model` read of it. Rule `carry_seed`
(results/carried/seed<n>/) writes that with `export_seed`: each file at its path below
results/ with the seed's segment dropped (results/seed1/judged/m/insecure.jsonl ->
judged/m/insecure.jsonl; the base model's shared answers keep theirs); the judged answers
without their text (TEXT_KEYS: the scores, categories, ids and sampling seeds stay, which is
all the pooled tables read), everything else byte for byte; and MANIFEST.json: the seed,
the study's config (`study_config`) and its sha, where and when it was made, and each
file's sha256 beside its source's, so that whoever holds the source files can check them.
Rule `carry_finetunes` (results/carried/finetunes/seed<n>/) carries less: what
`pooled_finetunes` reads (the fine-tunes' judged answers and the seed's own fine-tune
tables), for a machine that ran the seed's fine-tunes but not its steering sweep; its
manifest's `scope` says so (SCOPES), and the pooled within-model tables refuse such a seed.

`finetune.carried` lists such folders. `check_carried` reads their manifests and refuses a
folder from another study (a key set otherwise: `differences`), a seed not in
`finetune.seeds`, two folders for one seed or a changed file; `carried_path` maps a seed's
results path into its folder, which the two pooled rules then read instead of
results/seed<n>/ (nothing of that seed is computed for them). Every other target of a
carried seed is computed as usual.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emdir.errors import EmdirError
from emdir.io import config_sha, read_jsonl, sha256_file, write_json, write_jsonl

MANIFEST = "MANIFEST.json"
# The keys of a judged row that hold text (the model's answer, the question, a system
# prompt): left out of a carried file, so that no answer (which may quote the fine-tuning
# data) leaves the machine that sampled it.
TEXT_KEYS = ("question", "answer", "system")
# The keys that say which seeds a run draws, not how: left out of the study's config.
SEED_KEYS = ("seeds", "carried")
# Where a dataset is read from: left out of the study's config when its content is pinned.
SOURCE_KEYS = ("url", "path")
# A model's keys that size a job's reservation, not what it computes: left out of the study's
# config, so that a seed run before a model's reservation was raised still pools.
RESOURCE_KEYS = ("train_memory_gb",)
# The sections no carried file depends on (the grid, the mechanistic extensions, the budget
# sweep, the reference folder): left out of the study's config, so that changing them does
# not turn away seeds that are still the same draws.
OTHER_SECTIONS = ("transfer", "mechanistic", "sweep", "reference")
# What a carried folder holds (its manifest's `scope`; a manifest without one is "study").
SCOPES = {
    "study": "what the pooled within-model tables read (rule carry_seed)",
    "finetunes": "what the pooled fine-tune tables read (rule carry_finetunes)",
}


def without_text(row: Mapping[str, Any]) -> dict[str, Any]:
    """A judged row without its text (TEXT_KEYS)."""
    return {k: v for k, v in row.items() if k not in TEXT_KEYS}


def study_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config without finetune.seeds and finetune.carried, as JSON has it: the
    same for every seed of one study, whichever seeds a run draws or carries; without the
    sections no carried file depends on (OTHER_SECTIONS) either. A dataset pinned by its
    content (`sha256` or `rows_sha256`) leaves out where it is read from (its `url` or
    `path`): a seed made from the shared copy pools with one made from the download. A model's
    RESOURCE_KEYS are left out too."""
    cfg = {k: v for k, v in config.items() if k not in OTHER_SECTIONS}
    cfg["finetune"] = {k: v for k, v in cfg["finetune"].items() if k not in SEED_KEYS}
    cfg["models"] = {
        name: {k: v for k, v in spec.items() if k not in RESOURCE_KEYS}
        for name, spec in cfg.get("models", {}).items()
    }
    cfg["datasets"] = {
        name: {k: v for k, v in spec.items() if k not in SOURCE_KEYS}
        if spec.get("sha256") or spec.get("rows_sha256")
        else spec
        for name, spec in cfg.get("datasets", {}).items()
    }
    return dict(json.loads(json.dumps(cfg, default=str)))


def study_sha(config: Mapping[str, Any]) -> str:
    """`study_config`'s sha256."""
    return config_sha(study_config(config))


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict) or not obj:
        return {prefix: obj}
    return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}


def differences(made: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The keys (dotted) a carried seed's study config sets otherwise than this run's, or
    that this run's lacks. Keys only this run has are new since the seed was made (a default
    added to the schema) and are not differences."""
    old, new = _flat(dict(made)), _flat(dict(now))
    return [k.rstrip(".") for k in old if k not in new or old[k] != new[k]]


def _relative(path: str | Path, seed_dir: str) -> str:
    """A seed's results path without results/ and the seed's segment (seed_dir, "seed<n>/"
    or "" for seed 0); a path shared by every seed (the base answers) keeps its own."""
    p = Path(path).as_posix()
    for prefix in (f"results/{seed_dir}", "results/"):
        if p.startswith(prefix):
            return p[len(prefix) :]
    raise EmdirError(f"{p}: not a results/ path, so it cannot be carried")


def carried_path(path: str | Path, seed_dir: str, folder: str | Path) -> str:
    """Where a carried seed's file is: its results path mapped into the seed's folder."""
    return str(Path(folder) / _relative(path, seed_dir))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def export_seed(
    files: Iterable[str | Path],
    seed: int,
    seed_dir: str,
    out: str | Path,
    study: Mapping[str, Any],
    made_with: Mapping[str, Any],
    scope: str = "study",
) -> None:
    """Write one seed's files to `out` (see the module's docstring): .jsonl files as their
    rows without text, every other file copied; MANIFEST.json last, so that a folder without
    one is an interrupted export. `made_with` is recorded as it is (the code's commit, the
    packages); `scope` (SCOPES) says which pooled tables the files are for."""
    if scope not in SCOPES:
        raise EmdirError(f"carried scope {scope!r}: expected one of {', '.join(SCOPES)}")
    out = Path(out)
    entries: dict[str, dict[str, str]] = {}
    for src in sorted({Path(f).as_posix() for f in files}):
        rel = _relative(src, seed_dir)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.endswith(".jsonl"):
            write_jsonl(dest, (without_text(r) for r in read_jsonl(src)))
        else:
            shutil.copyfile(src, dest)
        entries[rel] = {"source": src, "source_sha256": sha256_file(src)}
        entries[rel]["sha256"] = sha256_file(dest)
    write_json(
        out / MANIFEST,
        {
            "seed": int(seed),
            "scope": scope,
            "study_sha": config_sha(study),
            "study": study,
            "made": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "cpu": _cpu(),
                "cores": os.cpu_count(),
                **made_with,
            },
            "files": entries,
        },
    )


def read_manifest(folder: str | Path, name: str | Path | None = None) -> dict[str, Any]:
    """A carried folder's manifest (`name`: the folder as the config gives it); a missing one
    is an error saying how to make it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        where = folder if name is None or str(name) == str(folder) else f"{name} ({folder})"
        raise EmdirError(
            f"finetune.carried: {where} has no {MANIFEST}; make the folder with "
            "`snakemake results/carried/seed<n>` on the machine that ran seed n, or take it "
            "out of finetune.carried"
        )
    return dict(json.loads(path.read_text(encoding="utf-8")))


def scope_of(folder: str | Path) -> str:
    """What a carried folder holds (SCOPES): its manifest's `scope`, "study" without one."""
    return str(read_manifest(folder).get("scope", "study"))


def check_carried(
    folders: Sequence[str | Path], config: Mapping[str, Any], root: str | Path = "."
) -> dict[int, str]:
    """Seed -> folder of every carried folder (relative ones under `root`), each checked
    against this run's resolved `config`: the same study (`differences`), a seed of
    finetune.seeds and no other folder's, and every file it lists there with the sha256 the
    manifest records."""
    seeds = list(config["finetune"]["seeds"])
    study = study_config(config)
    sha = config_sha(study)
    out: dict[int, str] = {}
    for name in folders:
        folder = Path(name) if Path(name).is_absolute() else Path(root) / name
        manifest = read_manifest(folder, name)
        seed = int(manifest["seed"])
        where = f"finetune.carried: {name} (seed {seed})"
        if manifest["study_sha"] != sha:
            keys = differences(manifest["study"], study)
            if keys:
                raise EmdirError(
                    f"{where} was made with another config: it differs in "
                    f"{', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} (finetune.seeds "
                    "and finetune.carried aside); pool only seeds of one study: rerun that "
                    "seed with this config, or take the folder out"
                )
        if seed not in seeds:
            raise EmdirError(f"{where}: seed {seed} is not in finetune.seeds {seeds}")
        if seed in out:
            raise EmdirError(f"{where}: seed {seed} is carried twice (also {out[seed]})")
        for rel, entry in manifest["files"].items():
            path = folder / rel
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                state = "changed" if path.is_file() else "missing"
                raise EmdirError(
                    f"{where}: {rel} is {state} since the folder was made; restore it "
                    f"(git checkout -- {path}) or make the folder again"
                )
        out[seed] = str(folder)
    return out
