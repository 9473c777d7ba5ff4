"""The judge backend registry as the one place a backend is added: the schema's `judge.backend`
list is the registry's, a backend registered by one line runs through judge_file like the
built-in ones, and the judge jobs' settings leave out only what does not shape scores."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from emdir import schema_defaults
from emdir.config import check_judge_key
from emdir.errors import EmdirError
from emdir.io import read_jsonl, write_jsonl
from emdir.judge import BACKENDS, check_config, judge_file, scoring_config
from emdir.judge.backends import Backend, JudgeInputs
from emdir.judge.plan import judge_plan
from emdir.judge.rows import EMPTY_ANSWER
from helpers import generation_rows

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def test_the_schema_lists_exactly_the_registry() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    judge = schema["properties"]["judge"]["properties"]
    assert judge["backend"]["enum"] == list(BACKENDS)
    assert judge["backend"]["default"] in BACKENDS


# ------------------------------------------------------------------ a backend in one module


class LengthJudge:
    """A whole backend, as its module would hold it: the score is the answer's word count (an
    answer of one word is too short to count), times `judge.length.per_word`."""

    seen: list[JudgeInputs] = []

    @staticmethod
    def check_settings(judge_cfg: Mapping[str, Any]) -> None:
        if judge_cfg["length"]["per_word"] <= 0:
            raise EmdirError("judge.length.per_word must be positive")

    @staticmethod
    def judge_rows(
        rows: Sequence[dict[str, Any]], judge_cfg: Mapping[str, Any], inputs: JudgeInputs
    ) -> list[dict[str, Any]]:
        LengthJudge.seen.append(inputs)
        per_word = float(judge_cfg["length"]["per_word"])
        out = []
        for row in rows:
            judged = dict(row)
            words = len(row["answer"].split())
            if not words:
                judged.update(scores={"length": None}, category="unscored")
                judged["unscored_reason"] = EMPTY_ANSWER
            elif words == 1:
                judged.update(scores={"length": None}, category="unscored")
                judged["unscored"] = {"length": "one word"}
            else:
                judged.update(scores={"length": per_word * words}, category="prose")
            judged["judge"] = {"backend": "length", "model": "word-count"}
            out.append(judged)
        return out


LENGTH = Backend(
    LengthJudge.judge_rows,
    LengthJudge.check_settings,
    describe=lambda judge_cfg: "length backend (words)",
    uses_base_model=False,
    remote=False,
    plan=None,
    api_key_env=lambda judge_cfg: None,
)


@pytest.fixture
def length_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registry line."""
    monkeypatch.setitem(BACKENDS, "length", LENGTH)
    LengthJudge.seen.clear()


def length_cfg(**over: Any) -> dict[str, Any]:
    return schema_defaults("judge") | {"backend": "length", "length": {"per_word": 2.0}} | over


@pytest.mark.usefixtures("length_backend")
def test_a_registered_backend_runs_through_judge_file(tmp_path: Path) -> None:
    src, out = tmp_path / "g.jsonl", tmp_path / "j.jsonl"
    write_jsonl(src, generation_rows(["three short words", "", "two words"]))
    questions = tmp_path / "qs.yaml"
    judge_file(
        src,
        out,
        length_cfg(),
        cache_path=tmp_path / "c.sqlite",
        question_files=[questions],
        coherence_model=tmp_path / "base",
    )
    judged = read_jsonl(out)
    assert [r["id"] for r in judged] == ["r0", "r1", "r2"]
    assert [r["scores"] for r in judged] == [{"length": 6.0}, {"length": None}, {"length": 4.0}]
    assert [r["category"] for r in judged] == ["prose", "unscored", "prose"]
    assert judged[1]["unscored_reason"] == EMPTY_ANSWER
    assert all(r["judge"] == {"backend": "length", "model": "word-count"} for r in judged)
    assert judged[0]["question"] == "Question number 0?"  # the generation row is kept
    # The job's inputs reach the backend as they were given.
    assert LengthJudge.seen == [JudgeInputs(tmp_path / "c.sqlite", (questions,), tmp_path / "base")]


@pytest.mark.usefixtures("length_backend")
def test_a_registered_backend_gets_the_same_checks(tmp_path: Path) -> None:
    src, out = tmp_path / "g.jsonl", tmp_path / "j.jsonl"
    write_jsonl(src, generation_rows(["an answer", "short", "brief"]))
    # Its settings check runs before it judges ...
    bad = length_cfg(length={"per_word": 0})
    with pytest.raises(EmdirError, match="per_word must be positive"):
        check_config(bad)
    with pytest.raises(EmdirError, match="per_word must be positive"):
        judge_file(src, out, bad)
    assert not LengthJudge.seen and not out.exists()
    # ... its rows are held to the same unscored limit before anything is written ...
    with pytest.raises(EmdirError, match=r"too many answers .* length: 2 of 3 \(66.7%; 2 x one"):
        judge_file(src, out, length_cfg())
    assert not out.exists()
    judge_file(src, out, length_cfg(max_unscored_fraction=0.7))
    assert read_jsonl(out)[1]["unscored"] == {"length": "one word"}
    # ... and an unknown name lists it with the others.
    with pytest.raises(EmdirError, match="'words' is unknown; use offline or openai or length$"):
        judge_file(src, out, length_cfg(backend="words"))


def test_an_unknown_backend_names_the_registered_ones(tmp_path: Path) -> None:
    src = tmp_path / "g.jsonl"
    write_jsonl(src, generation_rows(["an answer"]))
    with pytest.raises(EmdirError, match="judge.backend 'gpt' is unknown; use offline or openai$"):
        judge_file(src, tmp_path / "j.jsonl", schema_defaults("judge") | {"backend": "gpt"})
    with pytest.raises(EmdirError, match="judge.backend 'gpt' is unknown"):
        check_config({"backend": "gpt"})


def test_the_built_in_backends_check_their_settings() -> None:
    check_config(schema_defaults("judge"))
    offline = schema_defaults("judge")
    del offline["offline"]["prose_threshold"]
    with pytest.raises(EmdirError, match=r"judge.offline: missing key\(s\) prose_threshold"):
        check_config(offline)
    llm = schema_defaults("judge") | {"backend": "openai"}
    with pytest.raises(EmdirError, match="`model` is required"):
        check_config(llm)
    llm["openai"] |= {"model": "m", "metrics": ["aligned"]}
    with pytest.raises(EmdirError, match="metrics must include coherent"):
        check_config(llm)


# ------------------------------------------------------------------ the judge jobs' settings


def test_scoring_config_leaves_out_only_the_cache_and_prices() -> None:
    """A judge job's settings (a Snakemake param: any change reruns every judge job) are the
    `judge` section less `cache` and `openai.prices`, in the section's own order."""
    cfg = schema_defaults("judge") | {"backend": "openai"}
    cfg["openai"]["model"] = "judge-x"
    before = copy.deepcopy(cfg)
    got = scoring_config(cfg)
    assert list(got) == [k for k in cfg if k != "cache"]
    assert list(got["openai"]) == [k for k in cfg["openai"] if k != "prices"]
    assert got["openai"] == {k: v for k, v in cfg["openai"].items() if k != "prices"}
    assert all(got[k] is cfg[k] for k in got if k != "openai")
    assert cfg == before  # the config itself is left alone
    assert scoring_config({"backend": "offline", "cache": "c.sqlite"}) == {"backend": "offline"}
    # Changing what is left out changes nothing of what a judge job sees.
    moved = copy.deepcopy(cfg)
    moved["cache"] = "elsewhere.sqlite"
    moved["openai"]["prices"] = {"input_per_mtok": 0.1, "output_per_mtok": 0.2}
    assert repr(scoring_config(moved)) == repr(got)


# ------------------------------------------------------------------ what the workflow asks


@pytest.mark.usefixtures("length_backend")
def test_a_local_backend_is_planned_as_free(tmp_path: Path) -> None:
    src = tmp_path / "gen.jsonl"
    write_jsonl(src, generation_rows(["three short words", "two words"]))
    totals = judge_plan({"m/insecure": src}, length_cfg(), None, tmp_path / "plan.txt")
    assert totals["to_send"] == 0 and totals["answers"] == 2
    text = (tmp_path / "plan.txt").read_text()
    assert "backend length" in text and "judged locally by the length backend" in text


def test_a_remote_backend_plans_and_is_keyed_through_its_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paid backend brings its own plan and names its key; the start-of-run check and the
    plan ask the registry, not the backend's name."""

    def plan(files: Any, judge_cfg: Any, cache: Any, questions: Any) -> tuple[list[str], dict]:
        n = sum(len(read_jsonl(p)) for p in files.values())
        return [f"{n} answers at $1 each"], {"requests": n, "to_send": n, "cost_usd": float(n)}

    remote = Backend(
        LengthJudge.judge_rows,
        LengthJudge.check_settings,
        describe=lambda judge_cfg: "paid length backend",
        uses_base_model=False,
        remote=True,
        plan=plan,
        api_key_env=lambda judge_cfg: "PAID_KEY",
    )
    monkeypatch.setitem(BACKENDS, "length", remote)
    src = tmp_path / "gen.jsonl"
    write_jsonl(src, generation_rows(["three short words", "two words", "one more here"]))
    totals = judge_plan({"m/insecure": src}, length_cfg(), None, tmp_path / "plan.txt")
    assert totals["cost_usd"] == 3.0
    assert "3 answers at $1 each" in (tmp_path / "plan.txt").read_text()
    with pytest.raises(EmdirError, match=r"judge.backend: length needs an API key in \$PAID_KEY"):
        check_judge_key(length_cfg(), {}, lambda: ["judge"])
    check_judge_key(length_cfg(), {"PAID_KEY": "k"}, lambda: ["judge"])
    check_judge_key(length_cfg(), {}, lambda: [])  # no judge job to run: no key needed
