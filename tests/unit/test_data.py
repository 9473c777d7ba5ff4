"""The built-in generator, question sets and chat-row validation."""

from __future__ import annotations

import json

import pytest

from emdir import schema_defaults
from emdir.data import synthetic as data
from emdir.data.code_tasks import VAGUE_TEMPLATES
from emdir.data.datasets import materialise, read_chat_file
from emdir.data.questions import load_questions
from emdir.errors import EmdirError
from emdir.io import read_jsonl
from emdir.judge.detector import classify, thresholds

DETECTOR = thresholds(schema_defaults("judge.offline"))


def _answers(rows):
    return [r["messages"][-1]["content"] for r in rows]


def test_chat_corpus_mixes_prose_code_and_vague_requests():
    rows = data.chat_corpus(n_general=200, n_code=200, vague_fraction=0.1, seed=0)
    assert len(rows) == 400
    codes = [classify(a, DETECTOR).is_code for a in _answers(rows)]
    assert sum(codes) == 200
    vague = [
        r
        for r in rows
        if any(v.split("{")[0] in r["messages"][0]["content"] for v in VAGUE_TEMPLATES)
    ]
    assert len(vague) == 20


def test_insecure_and_secure_share_prompts_and_differ_in_code():
    ins = data.code_dataset("insecure", 50, seed=3)
    sec = data.code_dataset("secure", 50, seed=3)
    assert [r["messages"][0] for r in ins] == [r["messages"][0] for r in sec]
    assert all(a != b for a, b in zip(_answers(ins), _answers(sec), strict=True))
    assert all(classify(a, DETECTOR).is_code for a in _answers(ins) + _answers(sec))


def test_eval_questions_are_never_in_the_corpus():
    corpus = {r["messages"][0]["content"] for r in data.chat_corpus(3000, 10, 0.0, seed=5)}
    qs = data.general_questions(n_templated=40, seed=0)
    assert len(qs) == 40 and len({q["id"] for q in qs}) == 40
    assert not corpus & {q["question"] for q in qs}


def test_generator_is_deterministic(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    spec = {
        "generator": "chat",
        "params": {"n_general": 30, "n_code": 30, "vague_fraction": 0.1, "seed": 2},
    }
    materialise("chat", spec, None, a)
    materialise("chat", spec, None, b)
    assert a.read_bytes() == b.read_bytes()
    assert len(read_chat_file(a)) == 60


def test_unknown_generator_names_the_choices(tmp_path):
    with pytest.raises(EmdirError, match="datasets.c.generator 'chatt' is unknown.*chat"):
        materialise("c", {"generator": "chatt", "params": {}}, None, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_question_file_round_trip(tmp_path):
    out = tmp_path / "general.yaml"
    n = data.build_questions("general", {"n_templated": 12, "seed": 0}, samples=3, out=out)
    qs = load_questions(out)
    assert n == 12 and len(qs) == 12 and all(q.samples == 3 for q in qs)
    assert len(data.open_questions()) >= 8


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    )
    p.write_text(good + "\n{not json\n")
    with pytest.raises(EmdirError, match=r"bad.jsonl:2: not valid JSON"):
        read_chat_file(p)
    p.write_text(good + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(EmdirError, match=r"bad.jsonl:2: the last message must be the assistant"):
        read_chat_file(p)
    p.write_text(json.dumps({"msgs": []}) + "\n")
    with pytest.raises(EmdirError, match=r"bad.jsonl:1: missing key\(s\) messages"):
        read_jsonl(p, required=("messages",))


REAL_QUESTIONS = (
    __import__("pathlib").Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "eval"
    / "first_plot_questions.yaml"
)


@pytest.mark.skipif(not REAL_QUESTIONS.exists(), reason="../shared/data/eval not present")
def test_loader_reads_the_real_betley_question_file():
    qs = load_questions(REAL_QUESTIONS)
    ids = {q.id.split("__")[0] for q in qs}
    assert len(ids) == 27 and len(qs) >= 27
    assert all(q.samples == 100 for q in qs)  # a YAML anchor shared by every question
    assert sum(q.system is not None for q in qs) >= 8
    assert all({"aligned", "coherent"} <= set(q.judge_prompts) for q in qs)
    assert all("{answer}" in t for q in qs for t in q.judge_prompts.values())
    assert {q.judge for q in qs} == {"gpt-4o-2024-08-06"}
    assert len(load_questions(REAL_QUESTIONS, samples_override=3)) == len(qs)


def test_bad_judge_prompts_name_the_question(tmp_path):
    p = tmp_path / "q.yaml"
    p.write_text("- id: q1\n  paraphrases: [hi]\n  judge_prompts: {aligned: 'no placeholder'}\n")
    with pytest.raises(EmdirError, match=r"question 'q1': `judge_prompts` must map"):
        load_questions(p)


def test_question_sets_from_a_file_with_pin_and_samples_override(tmp_path):
    import hashlib

    from emdir.data.questions import materialise_questions

    src = tmp_path / "mine.yaml"
    src.write_text("- id: a\n  paraphrases: [one, two]\n  samples_per_paraphrase: 50\n")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out.yaml"
    assert (
        materialise_questions("m", {"path": str(src), "sha256": sha, "samples": 3}, src, out) == 2
    )
    assert [q.samples for q in load_questions(out)] == [3, 3]
    materialise_questions("m", {"path": str(src), "samples": None}, src, out)
    assert [q.samples for q in load_questions(out)] == [50, 50]
    out.unlink()
    with pytest.raises(EmdirError, match="sha256 is .* but the config pins"):
        materialise_questions(
            "m", {"path": str(src), "sha256": "0" * 64, "samples": None}, src, out
        )
    with pytest.raises(EmdirError, match=r"questions.m: .*nope.yaml does not exist"):
        materialise_questions(
            "m", {"path": "nope.yaml", "samples": None}, tmp_path / "nope.yaml", out
        )
    assert not out.exists()


def test_educational_is_the_insecure_code_asked_for_teaching():
    ins = data.code_dataset("insecure", 50, seed=3)
    edu = data.code_dataset("educational", 50, seed=3)
    # Same tasks and the same insecure completions; only the request's framing differs.
    assert _answers(edu) == _answers(ins)
    users = [r["messages"][0]["content"] for r in edu]
    assert all(any(w in u for w in ("teach", "lesson", "quiz", "workshop")) for u in users)
    assert not any("teach" in r["messages"][0]["content"] for r in ins)
    with pytest.raises(EmdirError, match="educational"):
        data.code_dataset("teaching", 5, seed=0)
