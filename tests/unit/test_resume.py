"""A killed steering or transfer job resumes at its first unfinished pass and writes what an
uninterrupted job writes; pieces of other inputs, settings or code are never reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emdir import schema_defaults
from emdir.analysis import steering
from emdir.data import synthetic as data
from emdir.io import read_jsonl, write_json
from emdir.resume import Pieces, fingerprint
from emdir.stages import transfer


def test_pieces_are_computed_once_and_cleared_for_another_fingerprint(tmp_path: Path) -> None:
    calls: list[str] = []

    def compute(key: str) -> list[dict[str, Any]]:
        calls.append(key)
        return [{"key": key, "x": 0.1 + 0.2}]

    folder = tmp_path / ".pieces"
    first = Pieces(folder, "a")
    assert first.rows("target x0.5", lambda: compute("t")) == [{"key": "t", "x": 0.1 + 0.2}]
    again = Pieces(folder, "a")
    assert again.rows("target x0.5", lambda: compute("t")) == [{"key": "t", "x": 0.1 + 0.2}]
    assert calls == ["t"]  # read back exactly, floats included
    other = Pieces(folder, "b")  # other inputs or code: nothing of "a" is reused
    other.rows("target x0.5", lambda: compute("t"))
    assert calls == ["t", "t"]
    other.finish()
    assert not folder.exists()


def test_the_fingerprint_follows_files_vectors_and_settings(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    v = {"target": np.arange(4.0)}
    base = fingerprint([f, None], v, {"coefficient": 0.5})
    assert fingerprint([f], v, {"coefficient": 0.5}) == base
    assert fingerprint([f], {"target": np.arange(4.0) + 1e-9}, {"coefficient": 0.5}) != base
    assert fingerprint([f], v, {"coefficient": 0.25}) != base
    f.write_bytes(b"other weights")
    assert fingerprint([f], v, {"coefficient": 0.5}) != base


class _Store:
    def resid_norm(self, layer: int) -> float:
        return 4.0


@pytest.fixture(scope="module")
def setup(make_tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume")
    model, tok, _ = make_tiny("LlamaForCausalLM")
    base = root / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    write_json(base / "manifest.json", {"source": "local", "arch": "LlamaForCausalLM"})
    questions = root / "general.yaml"
    data.build_questions("general", {"n_templated": 3, "seed": 0}, samples=2, out=questions)
    rng = np.random.default_rng(0)
    d = int(model.config.hidden_size)
    return {
        "base": base,
        "questions": questions,
        "vectors": {v: rng.standard_normal(d) for v in ("target", "random_0", "orthogonal")},
        "sampling": {**schema_defaults("sampling"), "max_new_tokens": 6, "batch_size": 4},
    }


def _run(setup: dict[str, Any], out: Path) -> dict[str, Path]:
    outs = {v: out / f"{v}.jsonl" for v in setup["vectors"]}
    transfer._steer_receiver(
        "m",
        setup["base"],
        None,
        _Store(),
        1,
        setup["questions"],
        setup["vectors"],
        outs,
        {"coefficient": 0.5, "ft": "base"},
        setup["sampling"],
        1,
        {"donor": "d"},
    )
    return outs


def test_a_killed_transfer_job_resumes_where_it_stopped(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = _run(setup, tmp_path / "whole")
    real = steering._draw
    calls: list[str] = []

    def killed_on_the_second(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append(args[-1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job dies in the middle of its second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(steering, "_draw", killed_on_the_second)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(setup, out)
    assert (out / ".pieces").is_dir()
    for done in out.glob("*.jsonl"):  # Snakemake deletes a failed job's outputs before rerunning
        done.unlink()
    first = calls[0]
    calls.clear()

    def counted(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(steering, "_draw", counted)
    resumed = _run(setup, out)
    # 3 vectors x 6 prompts in batches of 4: the first batch was kept, the other four drawn.
    assert len(calls) == 4 and first not in calls, (first, calls)
    assert calls[0].startswith("d->m rows 5-8 of 18")
    for v in setup["vectors"]:
        assert read_jsonl(resumed[v]) == read_jsonl(whole[v])
    assert not (out / ".pieces").exists()
