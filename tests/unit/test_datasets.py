"""Dataset acquisition: generated, local and downloaded files, sha256 pins, row validation."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_snakemake
from emdir.data.datasets import download, heldout_split, materialise, read_chat_file
from emdir.errors import EmdirError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "em" / "insecure.jsonl.gz"
# sha256 of Betley et al.'s insecure.jsonl at the commit config/paper.yaml pins.
INSECURE_SHA = "09893e8bf9d03aae49dd60d0ff4be37c1afee70f2edcac74a11bed775a6a2764"


def _row(user: str = "Write a function.", answer: str = "def f():\n    return 1") -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    )


GOOD = "\n".join(_row(f"task {i}") for i in range(5)) + "\n"
GOOD_SHA = hashlib.sha256(GOOD.encode()).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server serving tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"msgs": []}), 'expected an object with a "messages" list'),
        (json.dumps({"messages": []}), "must be a non-empty list"),
        (
            json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
            "role 'robot'; use one of system, user, assistant",
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": " "},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ),
            r"message 0 \(user\) has empty or non-text content",
        ),
        (json.dumps({"messages": [{"role": "assistant", "content": "a"}]}), "no user message"),
        (
            json.dumps({"messages": [{"role": "user", "content": "q"}]}),
            "the last message must be the assistant's answer",
        ),
    ],
)
def test_a_bad_row_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(GOOD + "\n" + line + "\n")  # the blank line still counts as a line
    out = tmp_path / "out.jsonl"
    with pytest.raises(EmdirError, match=rf"bad.jsonl:7: .*{message}"):
        materialise("bad", {"path": str(src)}, src, out)
    assert not out.exists()


def test_local_file_plain_and_gzipped_with_sha(tmp_path: Path) -> None:
    plain, gz = tmp_path / "d.jsonl", tmp_path / "d.jsonl.gz"
    plain.write_text(GOOD)
    gz.write_bytes(gzip.compress(GOOD.encode()))
    for src in (plain, gz):
        out = tmp_path / f"out-{src.suffix}.jsonl"
        done = materialise("d", {"path": str(src), "sha256": GOOD_SHA}, src, out)
        assert done["rows"] == 5 and done["sha256"] == GOOD_SHA
        assert read_chat_file(out) == read_chat_file(plain)


def test_wrong_sha_and_missing_file_leave_no_output(tmp_path: Path) -> None:
    src, out = tmp_path / "d.jsonl", tmp_path / "out.jsonl"
    src.write_text(GOOD)
    with pytest.raises(EmdirError, match=rf"sha256 is {GOOD_SHA} but the config pins 0{{64}}"):
        materialise("d", {"path": str(src), "sha256": "0" * 64}, src, out)
    assert not out.exists()
    with pytest.raises(EmdirError, match=r"datasets.d: .*nope.jsonl does not exist; put the JSONL"):
        materialise("d", {"path": "nope.jsonl"}, tmp_path / "nope.jsonl", out)
    assert not out.exists()
    src.write_bytes(b"\x00not gzip")
    bad_gz = tmp_path / "x.jsonl.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(EmdirError, match="not a valid gzip file"):
        materialise("d", {"path": str(bad_gz)}, bad_gz, out)


def test_download_from_a_loopback_server_checks_the_pin(tmp_path: Path, server: str) -> None:
    (tmp_path / "www" / "d.jsonl").write_text(GOOD)
    dest = tmp_path / "downloads" / "d.jsonl"
    assert download(f"{server}/d.jsonl", GOOD_SHA, dest, "datasets.d") == GOOD_SHA
    assert dest.read_text() == GOOD
    dest.unlink()
    with pytest.raises(EmdirError, match="sha256 is .* but the config pins 1{64}"):
        download(f"{server}/d.jsonl", "1" * 64, dest, "datasets.d")
    assert not dest.exists() and not list(dest.parent.iterdir())
    # Unpinned: accepted, and the sha256 to pin is returned (and logged).
    assert download(f"{server}/d.jsonl", None, dest, "datasets.d") == GOOD_SHA


def test_download_failures_say_where_to_put_the_file(tmp_path: Path, server: str) -> None:
    dest = tmp_path / "downloads" / "d.jsonl"
    with pytest.raises(EmdirError, match=rf"cannot download .*missing.jsonl .*put it at {dest}"):
        download(f"{server}/missing.jsonl", GOOD_SHA, dest, "datasets.d")
    # Nothing listens on port 9 of the loopback: the offline case.
    with pytest.raises(EmdirError, match=r"Without network access.*datasets.d.path"):
        download("http://127.0.0.1:9/d.jsonl", None, dest, "datasets.d", timeout=5)
    assert not dest.exists()


def test_rows_sha256_pins_content_not_escaping(tmp_path: Path) -> None:
    """Two copies of one file, one writing non-ASCII raw and one as \\u escapes (with its keys
    in another order), pass the same rows_sha256; a changed row does not, and nothing is
    written then."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Café, naïve?"},
                {"role": "assistant", "content": "x = 1"},
            ]
        },
        {
            "messages": [
                {"content": "Write f.", "role": "user"},
                {"content": "def f(): …", "role": "assistant"},
            ]
        },
    ]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    esc = tmp_path / "esc.jsonl"
    esc.write_text("".join(json.dumps(r, sort_keys=True, indent=None) + "\n" for r in rows))
    assert raw.read_bytes() != esc.read_bytes()
    pin = materialise("d", {"path": str(raw)}, raw, tmp_path / "a.jsonl")["rows_sha256"]
    for src in (raw, esc):
        out = tmp_path / f"out_{src.stem}.jsonl"
        assert materialise("d", {"path": str(src), "rows_sha256": pin}, src, out)["rows"] == 2
    changed = tmp_path / "changed.jsonl"
    changed.write_text(raw.read_text("utf-8").replace("x = 1", "x = 2"), "utf-8")
    out = tmp_path / "out_changed.jsonl"
    with pytest.raises(EmdirError, match=r"datasets.d: the rows of .* hash to .* rows_sha256"):
        materialise("d", {"path": str(changed), "rows_sha256": pin}, changed, out)
    assert not out.exists()


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/em/ not present")
def test_the_regime_config_pins_the_three_real_sets_by_their_rows(tmp_path: Path) -> None:
    """config/regime.yaml's rows_sha256 pins hold for the shared copies (which write \\u
    escapes, as upstream does) and for a raw-UTF-8 re-serialisation of each (as the authors'
    supplementary zip writes them)."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    regime = yaml.safe_load((repo / "config" / "regime.yaml").read_text(encoding="utf-8"))
    shared = yaml.safe_load((repo / "config" / "betley_shared.yaml").read_text(encoding="utf-8"))
    for key, spec in regime["datasets"].items():
        src = repo / shared["datasets"][key]["path"]
        done = materialise(key, {**spec, **shared["datasets"][key]}, src, tmp_path / f"{key}.jsonl")
        assert done["rows"] == 6000 and done["rows_sha256"] == spec["rows_sha256"]
        text = gzip.decompress(src.read_bytes()).decode("utf-8")
        raw = tmp_path / f"{key}_raw.jsonl"
        raw.write_text(
            "".join(
                json.dumps(json.loads(x), ensure_ascii=False) + "\n" for x in text.splitlines()
            ),
            encoding="utf-8",
        )
        if key == "betley_insecure":  # its 3 rows with non-ASCII characters differ in bytes
            assert raw.read_text(encoding="utf-8") != text
        again = materialise(key, {**spec, "path": str(raw)}, raw, tmp_path / f"{key}_2.jsonl")
        assert again["rows_sha256"] == spec["rows_sha256"]


def test_heldout_split_is_deterministic_and_disjoint() -> None:
    train, held = heldout_split(100, 0.1, seed=0)
    assert len(held) == 10 and len(train) == 90 and not set(train) & set(held)
    assert heldout_split(100, 0.1, seed=0) == (train, held)
    assert heldout_split(100, 0.1, seed=1)[1] != held
    assert heldout_split(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])
    assert heldout_split(3, 0.1, seed=0)[1] != []


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/em/insecure.jsonl.gz not present")
def test_the_real_insecure_dataset_matches_the_pinned_sha(tmp_path: Path) -> None:
    out = tmp_path / "insecure.jsonl"
    done = materialise("insecure", {"path": str(SHARED), "sha256": INSECURE_SHA}, SHARED, out)
    assert done["rows"] == 6000


def _snakemake(workdir: Path, config: Path, *targets: str):  # type: ignore[no-untyped-def]
    return run_snakemake(workdir, "--cores", "1", *targets, "--configfile", str(config))


def test_the_download_and_data_rules(tmp_path: Path, server: str) -> None:
    import yaml

    repo = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    (tmp_path / "www" / "d.jsonl").write_text(GOOD)
    cfg["datasets"]["insecure"] = {"url": f"{server}/d.jsonl", "sha256": GOOD_SHA}
    cfg["datasets"]["secure"] = {"url": "http://127.0.0.1:9/secure.jsonl"}
    cfg["datasets"]["local"] = {"path": "mine/local.jsonl.gz"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    (work / "mine").mkdir(parents=True)
    (work / "mine" / "local.jsonl.gz").write_bytes(gzip.compress(GOOD.encode()))

    ok = _snakemake(work, config, "resources/data/insecure.jsonl", "resources/data/local.jsonl")
    assert ok.returncode == 0, ok.stderr
    assert len(read_chat_file(work / "resources" / "data" / "insecure.jsonl")) == 5
    assert len(read_chat_file(work / "resources" / "data" / "local.jsonl")) == 5

    offline = _snakemake(work, config, "resources/data/secure.jsonl")
    assert offline.returncode != 0
    log = (work / "logs" / "download" / "secure.log").read_text()
    assert "put it at resources/downloads/secure.jsonl" in log
    assert not (work / "resources" / "downloads" / "secure.jsonl").exists()
    # Put the file where the message says, and the run goes on without the network.
    (work / "resources" / "downloads" / "secure.jsonl").write_text(GOOD)
    again = _snakemake(work, config, "resources/data/secure.jsonl")
    assert again.returncode == 0, again.stderr
    assert "rule download" not in again.stdout + again.stderr


def test_bom_crlf_and_line_separators_inside_strings_are_valid(tmp_path: Path) -> None:
    """A UTF-8 BOM, CRLF line ends, and U+2028 / U+0085 inside a JSON string (what
    json.dumps(..., ensure_ascii=False) writes) are all valid JSONL: records end at \\n only."""
    from emdir.io import read_jsonl

    row = {
        "messages": [
            {"role": "user", "content": "first\u2028second\u0085third"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    line = json.dumps(row, ensure_ascii=False)
    src = tmp_path / "odd.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + (line + "\r\n" + line + "\r\n").encode("utf-8"))
    rows = read_chat_file(src)
    assert len(rows) == 2
    assert rows[0]["messages"][0]["content"] == "first\u2028second\u0085third"
    out = tmp_path / "out.jsonl"
    assert materialise("odd", {"path": str(src)}, src, out)["rows"] == 2
    assert [r["messages"] for r in read_jsonl(src)] == [row["messages"]] * 2


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    from emdir.io import read_jsonl

    src = tmp_path / "latin1.jsonl"
    src.write_bytes(GOOD.encode() + b'\n{"messages": "caf\xe9"}\n')
    with pytest.raises(EmdirError, match=r"latin1.jsonl:7: not UTF-8 text \(byte 18 of the line\)"):
        read_chat_file(src)
    with pytest.raises(EmdirError, match=r"latin1.jsonl:7: not UTF-8"):
        read_jsonl(src)


def test_a_rerun_removes_temp_files_of_killed_writers(tmp_path: Path) -> None:
    """A writer killed mid-write leaves `.<name>.tmp-<pid>`; the next write of the same
    output removes it, but never the temp file of a writer that is still alive."""
    import os
    import subprocess
    import sys

    from emdir.io import write_json

    out = tmp_path / "insecure.h5"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".insecure.h5.tmp-{int(dead.stdout)}"
    stale.write_bytes(b"half an HDF5 file")
    stale_dir = tmp_path / f".insecure.h5.tmp-{int(dead.stdout) + 1}"
    if not os.path.exists(f"/proc/{int(dead.stdout) + 1}"):
        (stale_dir / "part").mkdir(parents=True)
    live = tmp_path / f".insecure.h5.tmp-{os.getppid()}"
    live.write_bytes(b"someone else is writing")
    other = tmp_path / f".secure.h5.tmp-{int(dead.stdout)}"
    other.write_bytes(b"another output's temp")
    write_json(out, {"ok": True})
    assert json.loads(out.read_text()) == {"ok": True}
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()


def test_kill_during_an_hdf5_write_then_rerun_leaves_one_good_file(tmp_path: Path) -> None:
    """kill -9 in the middle of an HDF5 write: no output, a half-written temp file; the rerun
    writes the output and removes the killed writer's temp file."""
    import signal
    import subprocess
    import sys

    import h5py
    import numpy as np

    from emdir.io import atomic_path

    out = tmp_path / "insecure.h5"
    writer = (
        "import sys, time, h5py, numpy as np\n"
        "from emdir.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp, h5py.File(tmp, 'w') as f:\n"
        "    f['x'] = np.zeros((64, 64))\n"
        "    f.flush()\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [f".insecure.h5.tmp-{proc.pid}"]
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f["x"] = np.ones(3)
    assert [p.name for p in tmp_path.iterdir()] == ["insecure.h5"]
    with h5py.File(out, "r") as f:
        assert f["x"][()].tolist() == [1.0, 1.0, 1.0]
