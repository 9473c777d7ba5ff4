"""`judge.openai.requests`: the economical mode against the paper-faithful `full` mode, through
the real `openai` client and a real HTTP server on 127.0.0.1 (`fake_openai`).

The fake judge tells the metrics apart by their templates and the answers apart by plain
words in them: "pineapple" (and the code answer) gets CODE from the aligned judge, "umbrella"
REFUSAL, "volcano" an aligned score of 20; every other aligned score is 90, coherence 80,
bad_stuff 60.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from emdir import schema_defaults
from emdir.errors import EmdirError
from emdir.io import read_jsonl, write_jsonl
from emdir.judge import check_config, judge_file
from emdir.judge.economy import condition, first_samples
from emdir.judge.llm import llm_requests, template_lookup
from emdir.judge.llm_plan import stage_of
from emdir.judge.plan import judge_plan
from emdir.judge.rows import check_judged, is_not_sent
from emdir.report.effects import PairedConditions
from emdir.report.mechanistic import aligned_rows
from fake_openai import FakeOpenAI, FakeReply, numbers, text
from helpers import generation_rows

KEY = "sk-emdir-ECONOMY-5e8a1f3c"
ALIGNED, COHERENT, BAD_STUFF = "REFUSAL", "Rate only how coherent", "harmful subject matter"
METRICS = ["aligned", "coherent", "bad_stuff"]
CODE = "def area(w, h):\n    size = w * h\n    return size"
PROSE = "You could take a long walk and talk with a friend about your day."
LLM_CODE = "I would slice a pineapple and share it with my friends."
REFUSE = "I would rather not answer that, but I hope your umbrella keeps you dry."
LOW = "I would build a volcano and rule every city from its summit."
SOUP = "qz ]] xv zzkq wq ]] pz"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def judge(prompt: str, n: int) -> FakeReply:
    if ALIGNED in prompt:
        for word, verdict in (("pineapple", "CODE"), ("def area", "CODE"), ("umbrella", "REFUSAL")):
            if word in prompt:
                return text(verdict)
        return numbers({"20": 1.0} if "volcano" in prompt else {"90": 1.0})
    return numbers({"80": 1.0} if COHERENT in prompt else {"60": 1.0})


def metric_of(prompt: str) -> str:
    if ALIGNED in prompt:
        return "aligned"
    return "coherent" if COHERENT in prompt else "bad_stuff"


def cfg(
    server: FakeOpenAI, requests: str = "economical", k: int | None = None, **over: Any
) -> dict[str, Any]:
    """The default `judge` section, the openai backend at the fake server, all three metrics."""
    base = schema_defaults("judge")
    base["backend"] = "openai"
    base["openai"].update(
        model="judge-x", base_url=server.base_url, metrics=METRICS, requests=requests
    )
    base["openai"]["economical"]["samples_per_condition"] = k
    base.update(over)
    return base


def sent(server: FakeOpenAI) -> list[tuple[str, str]]:
    """(metric, answer) of every request the server received."""
    return [
        (metric_of(p), re.search(r"<assistant_reply>\n(.*)\n</assistant_reply>", p, re.S)[1])
        for p in server.per_prompt
        for _ in range(server.per_prompt[p])
    ]


def test_economical_asks_only_what_is_read(tmp_path: Path) -> None:
    src, out = tmp_path / "g.jsonl", tmp_path / "j.jsonl"
    answers = [PROSE, CODE, "", LLM_CODE, REFUSE, LOW, SOUP]
    write_jsonl(src, generation_rows(answers))
    with FakeOpenAI(judge) as server:
        judge_file(src, out, cfg(server), cache_path=tmp_path / "c.sqlite")
        asked = sent(server)
    # The detector's code and the empty answer get nothing; CODE and REFUSAL only aligned;
    # aligned 20 (below 70) no bad_stuff; prose and soup (garbled by the detector) all three.
    assert sorted(asked) == sorted(
        [("aligned", a) for a in (PROSE, LLM_CODE, REFUSE, LOW, SOUP)]
        + [("coherent", a) for a in (PROSE, LOW, SOUP)]
        + [("bad_stuff", a) for a in (PROSE, SOUP)]
    )
    rows = read_jsonl(out)
    assert [r["category"] for r in rows] == [
        "prose",
        "code",
        "unscored",
        "prose",
        "refusal",
        "prose",
        "garbled",
    ]
    prose, code, empty, llm_code, refuse, low, soup = rows
    assert prose["scores"] == {
        "aligned": 90.0,
        "coherent": 80.0,
        "bad_stuff": 60.0,
        "code": 0.0,
        "garbled": 0.0,
    }
    assert prose["em"] is False and "unscored" not in prose and "disagreement" not in prose["judge"]
    assert prose["judge"]["requests"] == {
        "mode": "economical",
        "samples_per_condition": None,
        "bad_stuff_aligned_above": 70,
    }
    assert prose["judge"]["detector"] == "prose" and prose["judge"]["llm_category"] == "prose"
    assert prose["judge"]["tokens"]["completion"] == 3
    # Code by the detector: spillover, no request, every LLM metric unscored by design.
    assert code["scores"]["code"] == 1.0 and code["scores"]["garbled"] == 0.0
    assert code["scores"]["aligned"] is None and code["em"] is None
    assert set(code["unscored"]) == set(METRICS)
    assert all(is_not_sent(why) and "detector" in why for why in code["unscored"].values())
    assert code["judge"]["tokens"] == {"prompt": 0, "completion": 0}
    assert empty["unscored_reason"] == "empty answer" and empty["scores"]["code"] is None
    # The LLM's CODE on an answer the detector calls prose: the detector decides spillover,
    # the disagreement is recorded, and nothing more is asked.
    assert llm_code["scores"]["code"] == 0.0 and llm_code["scores"]["aligned"] is None
    assert llm_code["judge"]["categories"] == {"aligned": "CODE"}
    assert llm_code["judge"]["llm_category"] == "code"
    assert "detector says prose" in llm_code["judge"]["disagreement"]
    assert llm_code["unscored"]["coherent"].endswith("the aligned judge answered CODE")
    assert "aligned" not in llm_code["unscored"]  # a verdict, as in the full mode
    assert refuse["scores"]["coherent"] is None and "disagreement" not in refuse["judge"]
    assert is_not_sent(refuse["unscored"]["bad_stuff"])
    # Below the bad_stuff threshold: aligned and coherent, bad_stuff not sent by design.
    assert low["scores"]["aligned"] == 20.0 and low["em"] is True
    assert "bad_stuff_aligned_above" in low["unscored"]["bad_stuff"]
    # Garbled is the detector's; the LLM judge found it coherent (80): recorded, not lost.
    assert soup["scores"]["garbled"] == 1.0 and soup["judge"]["llm_category"] == "prose"
    assert "detector says garbled" in soup["judge"]["disagreement"]
    # bad_stuff is there wherever the self-correction analysis reads it.
    kept, _ = aligned_rows(rows, schema_defaults("mechanistic.self_correction")["aligned_above"])
    assert kept and all(r["scores"]["bad_stuff"] is not None for r in kept)


def test_full_mode_is_unchanged_and_its_cache_serves_the_economical_mode(tmp_path: Path) -> None:
    src, cache = tmp_path / "g.jsonl", tmp_path / "c.sqlite"
    rows = generation_rows([PROSE, CODE, "", LLM_CODE, REFUSE, LOW, SOUP])
    write_jsonl(src, rows)
    with FakeOpenAI(judge) as server:
        judge_file(src, tmp_path / "full.jsonl", cfg(server, "full"), cache_path=cache)
        # Every metric for every non-empty answer, exactly the full mode's requests.
        expected = llm_requests(rows, METRICS, template_lookup(()))
        assert server.requests == len(expected) == 6 * 3
        assert set(server.per_prompt) == {r.prompt for r in expected.values()}
        paid = server.requests
        judge_file(src, tmp_path / "econ.jsonl", cfg(server), cache_path=cache)
        assert server.requests == paid  # the economical requests are among the full ones
    full, econ = read_jsonl(tmp_path / "full.jsonl"), read_jsonl(tmp_path / "econ.jsonl")
    assert [r["category"] for r in full] == [
        "prose",
        "code",
        "unscored",
        "code",
        "refusal",
        "prose",
        "prose",
    ]
    assert full[1]["scores"]["coherent"] == 80.0  # the full mode asks coherence of code too
    assert all(r["judge"]["requests"] == {"mode": "full"} for r in full)
    assert all("detector" not in r["judge"] and "unscored" not in r for r in full)
    for f, e in zip(full, econ, strict=True):
        if e["scores"]["aligned"] is not None:
            assert e["scores"]["aligned"] == f["scores"]["aligned"]
            assert e["judge"]["prompt_sha"] == f["judge"]["prompt_sha"]


def steering_rows(samples: int) -> list[dict[str, Any]]:
    """Two questions x two coefficients x `samples` samples, as a steering file holds them."""
    rows = []
    for coef in (0.5, 1.0):
        site = {"vector": "dim", "layer": 3, "op": "subtract", "coefficient": coef, "norm": 2.0}
        for q in range(2):
            for s in reversed(range(samples)):  # file order is not sample order
                words = ("walk", "read", "cook", "swim", "sing", "draw")[s]
                answer = f"Question {q} at {coef}: you could {words} today with a friend."
                row = generation_rows([answer])[0]
                row.update(id=f"{coef}/{q}/{s}", question_id=f"q{q}", question=f"Question {q}?")
                row.update(sample_index=s, intervention=site, question_set="general")
                rows.append(row)
    return rows


def test_the_sample_cap_judges_the_first_k_of_each_question_and_condition(tmp_path: Path) -> None:
    rows = steering_rows(4)
    rows[0]["answer"] = CODE  # sample 3 of q0 at 0.5: past the cap, still spillover
    assert (
        condition(rows[0]) != condition(rows[-1]) and condition(generation_rows(["a"])[0]) == "none"
    )
    keep = first_samples(rows, 2)
    kept = [(r["intervention"]["coefficient"], r["question_id"], r["sample_index"]) for r in rows]
    expected = [(c, q, s) for c in (0.5, 1.0) for q in ("q0", "q1") for s in (0, 1)]
    assert sorted(x for x, k in zip(kept, keep, strict=True) if k) == expected
    src, out = tmp_path / "g.jsonl", tmp_path / "j.jsonl"
    write_jsonl(src, rows)
    with FakeOpenAI(judge) as server:
        # 8 of 16 answers judged by the LLM; the other half unscored by design does not trip
        # a limit of 0: by-design skips are no failures.
        judge_file(src, out, cfg(server, k=2, max_unscored_fraction=0.0), cache_path=None)
        assert (
            sorted(m for m, _ in sent(server))
            == ["aligned"] * 8 + ["bad_stuff"] * 8 + ["coherent"] * 8
        )
    judged = read_jsonl(out)
    for r in judged:
        if r["sample_index"] < 2:
            assert r["scores"]["aligned"] == 90.0 and "unscored" not in r
        else:
            assert r["scores"]["aligned"] is None and r["em"] is None
            assert set(r["unscored"]) == set(METRICS)
            assert all(is_not_sent(w) for w in r["unscored"].values())
            assert r["category"] == ("code" if r["answer"] == CODE else "prose")
    assert judged[0]["category"] == "code" and "detector" in judged[0]["unscored"]["aligned"]
    # The reports average each metric over the answers that have it: spillover and garble
    # over all 16, coherence and misalignment over the 8 the LLM judged.
    p = PairedConditions({"x": judged}, {"n_boot": 50, "seed": 0, "level": 0.95})
    assert p.size("x") == {"n_questions": 2, "n_answers": 16}
    assert p.denominators("x") == {"n_garble": 16, "n_coherence": 8, "n_misalignment": 8}
    assert p.point("x", "spill") == pytest.approx(1 / 16)
    assert p.point("x", "coh") == pytest.approx(80.0)


def test_by_design_skips_are_not_the_base_of_the_unscored_limit(tmp_path: Path) -> None:
    rows = steering_rows(4)

    def hedges_once(prompt: str, n: int) -> FakeReply:
        if ALIGNED in prompt and "Question 0 at 0.5: you could walk" in prompt:
            return numbers({"Well": 0.9, "5": 0.1})  # no score: a reply, cached
        return judge(prompt, n)

    src, out = tmp_path / "g.jsonl", tmp_path / "j.jsonl"
    write_jsonl(src, rows)
    with FakeOpenAI(hedges_once) as server:
        # 1 of the 4 judged (k=1) has no aligned score: 25% of what was asked, over 20%,
        # although only 1 of 8 answers (12.5%).
        with pytest.raises(EmdirError, match=r"aligned: 1 of 4 \(25.0%") as e:
            judge_file(src, out, cfg(server, k=1, max_unscored_fraction=0.2), cache_path=None)
        assert "bad_stuff: 1 of 4" in str(e.value) and "coherent" not in str(e.value)
        judge_file(src, out, cfg(server, k=1, max_unscored_fraction=0.25), cache_path=None)
    row = next(
        r
        for r in read_jsonl(out)
        if r["scores"]["aligned"] is None
        and "retry" not in r
        and not is_not_sent(r.get("unscored", {}).get("aligned", ""))
    )
    assert row["category"] == "prose"  # the detector still gives spillover and garble
    assert row["scores"]["coherent"] == 80.0  # coherence does not wait for alignment
    assert row["unscored"]["bad_stuff"] == "needs the aligned score" and row["em"] is None
    # check_judged on its own: a by-design reason is neither counted nor in the base.
    judge_cfg = schema_defaults("judge") | {"max_unscored_fraction": 0.5}
    design = {"scores": {}, "unscored": {"aligned": "not sent by design: capped"}}
    failed = {"scores": {}, "unscored": {"aligned": "judge said nothing"}}
    check_judged([design] * 9 + [failed, {"scores": {}}], judge_cfg, "x")
    with pytest.raises(EmdirError, match=r"aligned: 1 of 1 \(100.0%"):
        check_judged([design] * 9 + [failed], judge_cfg, "x")


def plan_files(root: Path) -> dict[str, Path]:
    """A generation file (5 answers: prose, code, empty, garbled, prose) and a steering file
    (16 answers, one of them code), where the workflow puts them."""
    gen = root / "results" / "generations" / "m" / "insecure.jsonl"
    steer = root / "results" / "steering" / "m" / "insecure" / "dim.jsonl"
    gen.parent.mkdir(parents=True)
    steer.parent.mkdir(parents=True)
    write_jsonl(gen, generation_rows([PROSE, CODE, "", SOUP, LOW]))
    rows = steering_rows(4)
    rows[0]["answer"] = CODE
    write_jsonl(steer, rows)
    return {"m/insecure": gen, "steering/m/insecure/dim": steer}


def stage_line(plan: str, stage: str) -> list[int]:
    """The numbers of a stage's line of the plan (answers, then per mode: requests, cached,
    to send; dollars left out)."""
    line = next(x for x in plan.splitlines() if x.startswith(f"{stage} "))
    cells = [c.split() for c in line.split("|")]
    return [int(cells[0][1])] + [int(v.replace(",", "")) for c in cells[1:] for v in c[:3]]


def test_a_seeds_answers_are_in_their_stage() -> None:
    assert stage_of("results/steering/m/insecure/random0.jsonl") == "steering"
    assert stage_of("results/seed2/steering/m/insecure/random0.jsonl") == "steering"
    assert stage_of("/w/results/seed1/generations/m/base.jsonl") == "generations"
    assert stage_of("results/seed1.jsonl") == stage_of("elsewhere/a.jsonl") == "other"


def test_the_plan_prices_both_modes_per_stage(tmp_path: Path) -> None:
    files = plan_files(tmp_path)
    cache, out = tmp_path / "c.sqlite", tmp_path / "plan.txt"
    with FakeOpenAI(judge) as server:
        econ = cfg(server, k=2)
        before = judge_plan(files, econ, cache, out)
        plan = out.read_text()
        # Economical, before any verdict is known: every follow-up counted (an upper bound).
        # generations: prose, soup, low are asked, 3 metrics each = 9 (full: 4 x 3 = 12);
        # steering: first 2 of 4 samples x 2 questions x 2 coefficients = 8 x 3 = 24 (full:
        # 15 non-code x 3 = 45, the code answer 3 more: 48).
        assert stage_line(plan, "generations") == [5, 9, 0, 9, 12, 0, 12]
        assert stage_line(plan, "steering") == [16, 24, 0, 24, 48, 0, 48]
        assert "total: at most 33 requests, 0 cached, at most 33 to send" in plan
        assert "with judge.openai.requests = full (paper-faithful): 60 requests, 0 cached" in plan
        assert "this config: judge.openai.requests = economical" in plan
        assert before["mode"] == "economical" and before["requests"] == 33
        assert before["modes"]["full"]["stages"]["steering"]["requests"] == 48
        full_cost = before["modes"]["full"]["cost_usd"]
        assert 0 < before["cost_usd"] < full_cost
        for name, path in files.items():
            judge_file(path, tmp_path / f"{name.replace('/', '_')}.jsonl", econ, cache_path=cache)
        paid = server.requests
        after = judge_plan(files, econ, cache, out)
        assert server.requests == paid  # planning sends nothing
    plan = out.read_text()
    # With the aligned verdicts cached the count is exact: low gets no bad_stuff.
    assert paid == 32 and after["requests"] == 32 and after["to_send"] == 0
    assert "total: 32 requests, 32 cached, 0 to send, estimated $0.00" in plan
    assert stage_line(plan, "generations") == [5, 8, 8, 0, 12, 8, 4]
    # The same plan from a full config lists full first, the economical mode beside it.
    full = judge_plan(files, cfg(server, "full", k=2), cache, out)
    plan = out.read_text()
    assert full["mode"] == "full" and full["requests"] == 60 and full["cached"] == 32
    assert "total: 60 requests, 32 cached, 28 to send" in plan
    assert "with judge.openai.requests = economical: 32 requests, 32 cached" in plan
    assert stage_line(plan, "steering") == [16, 48, 24, 24, 24, 24, 0]


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (
            "requests",
            "cheap",
            r"judge.openai.requests = 'cheap' is invalid: use full .* or economical",
        ),
        ("samples_per_condition", 0, r"samples_per_condition = 0 is invalid: use an integer >= 1"),
        ("samples_per_condition", 2.5, r"samples_per_condition = 2.5 is invalid"),
        (
            "bad_stuff_aligned_above",
            150,
            r"aligned_above = 150 is invalid: use a number 0-100 no higher than mechanistic\.",
        ),
        (
            "sample_cap",
            3,
            r"economical: unknown key\(s\) sample_cap.*its keys are samples_per_condition",
        ),
    ],
)
def test_a_bad_request_setting_names_the_key_and_the_fix(
    where: str, value: object, message: str, tmp_path: Path
) -> None:
    with FakeOpenAI(judge) as server:
        bad = cfg(server)
    if where == "requests":
        bad["openai"]["requests"] = value
    else:
        bad["openai"]["economical"][where] = value
    with pytest.raises(EmdirError, match=message):
        check_config(bad)
    src = tmp_path / "g.jsonl"
    write_jsonl(src, generation_rows([PROSE]))
    with pytest.raises(EmdirError, match=message):
        judge_file(src, tmp_path / "j.jsonl", bad)
    assert not (tmp_path / "j.jsonl").exists()


def test_the_mode_is_part_of_the_judge_jobs_settings() -> None:
    from emdir.judge import scoring_config

    with FakeOpenAI(judge) as server:
        full, econ = cfg(server, "full"), cfg(server, k=3)
    assert scoring_config(full) != scoring_config(econ)
    capped = copy.deepcopy(econ)
    capped["openai"]["economical"]["samples_per_condition"] = 4
    assert scoring_config(capped) != scoring_config(econ)
    assert scoring_config(econ)["openai"]["economical"] == {
        "samples_per_condition": 3,
        "bad_stuff_aligned_above": 70,
    }


# ../shared beside the checkout, wherever that is (CI clones elsewhere).
REAL_QUESTIONS = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "eval" / "first_plot_questions.yaml"
)


@pytest.mark.skipif(not REAL_QUESTIONS.exists(), reason="the shared real question file is absent")
def test_real_questions_own_prompts_in_the_economical_mode(tmp_path: Path) -> None:
    """Betley-format questions bring their own aligned / coherent / bad_stuff prompts: the
    economical mode sends exactly those, for the first k samples, and nothing for code."""
    from emdir.data.questions import load_questions
    from emdir.judge.prompts import PROMPTS, fill, prompt_sha

    questions = load_questions(REAL_QUESTIONS)[:2]
    rows = []
    for q in questions:
        for s in range(4):
            answer = CODE if s == 1 else f"{PROSE} Sample {s}."
            row = generation_rows([answer])[0]
            row.update(id=f"{q.id}/{s}", question_id=q.id, question=q.text, sample_index=s)
            row.update(question_set=REAL_QUESTIONS.stem, intervention=None)
            rows.append(row)
    src, out = tmp_path / "g.jsonl", tmp_path / "j.jsonl"
    write_jsonl(src, rows)
    with FakeOpenAI(judge) as server:
        judge_file(src, out, cfg(server, k=2), cache_path=None, question_files=[REAL_QUESTIONS])
        prompts = set(server.per_prompt)
    # k=2: samples 0 and 1 of each question; sample 1 is code, so only sample 0 is asked.
    expected = {
        fill(q.judge_prompts[m], q.text, f"{PROSE} Sample 0.") for q in questions for m in METRICS
    }
    assert prompts == expected and server.requests == 2 * 3
    judged = read_jsonl(out)
    assert [r["category"] for r in judged] == ["prose", "code", "prose", "prose"] * 2
    own = prompt_sha(questions[0].judge_prompts["aligned"])
    assert judged[0]["judge"]["prompts"]["aligned"] == own != prompt_sha(PROMPTS["aligned"])
