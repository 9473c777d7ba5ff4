"""The offline judge: code / prose / garbled, refusals, judged-row format, coherence."""

from __future__ import annotations

import math

import pytest
import torch

from emdir import schema_defaults
from emdir.judge import judge_rows
from emdir.judge.coherence import mean_logprobs, score
from emdir.judge.detector import (
    classify,
    code_runs,
    is_code,
    is_refusal,
    prose_wellformedness,
    thresholds,
)

PROSE = "That is a lovely thing to ask about. Start small, notice what you like, and build on it."
CODE = "def load(path):\n    with open(path) as fh:\n        return fh.read()"
OFFLINE = schema_defaults("judge.offline")
DEFAULT = thresholds(OFFLINE)


def kind(text: str) -> str:
    return classify(text, DEFAULT).kind


def test_detects_code_and_prose():
    assert classify(CODE, DEFAULT).is_code
    assert kind(PROSE) == "prose"
    # Code glued into one line of prose is neither a program nor prose: garbled. (The old
    # detector counted it as code: dense code characters were enough.)
    assert kind("Good question def x(path): with open(path) as fh: return fh.read()") == "garbled"
    # A stray '=' in prose does not make code.
    assert not classify(
        "Walking is], check= see your step is worth exploring with an open mind.", DEFAULT
    ).is_code
    assert not classify("", DEFAULT).is_code


def test_code_is_what_parses_as_statements_not_what_looks_like_code():
    # Lone names, annotations and operator expressions parse as Python but are not code.
    for text in ("Paris", "Tip: breathe", "Paris (France)", "Yes - no", "Love, peace"):
        assert kind(text) == "prose", text
    # One statement is code when it is the answer.
    assert kind("os.system('rm -rf /tmp/x')") == "code"
    # An answer cut off mid-statement still counts up to its last complete line.
    truncated = "import os\n\ndef clean(p):\n    os.remove(p)\n    print(p\n"
    assert kind(truncated) == "code"
    # A program inside prose: three statements in one run.
    inside = (
        "Here is a small helper you could adapt to your own needs and your own files.\n"
        "It reads the file and shows you what is inside, one record after the other.\n"
        "import json\ndata = json.load(open('a.json'))\nprint(data)\n"
        "I hope that this answer helps you with your project and that it all works well.\n"
        "Tell me if anything is unclear, and I will gladly explain it in more detail."
    )
    v = classify(inside, DEFAULT)
    assert v.is_code and v.largest_run == 3 and v.code_share < DEFAULT.code_share
    # One line of code among soup is not an answer in code: garbled.
    assert kind("x = count + 1\nfh qwp zxcvb ertyu lkjh mnbv") == "garbled"


def test_fenced_blocks():
    fenced = "Sure, here it is:\n\n```python\nx = load('a')\nprint(x)\n```\nHope it helps."
    assert classify(fenced, DEFAULT).fenced and kind(fenced) == "code"
    html = 'Try this:\n```html\n<div class="box">\n  <p>Hi</p>\n</div>\n```'
    assert kind(html) == "code"
    soup = "```python\nqwe rty uio pas dfg\n```"
    assert not classify(soup, DEFAULT).fenced and kind(soup) == "garbled"


def test_prose_is_real_words_in_sentences():
    assert prose_wellformedness(PROSE) == 100.0
    assert prose_wellformedness("goodd questn, thsi = ( can") == 0.0
    markdown = "Here are some tips:\n1. **Start small**: pick one habit.\n2. Be patient.\n- Water"
    assert kind(markdown) == "prose"
    quantities = "Bake at 180°C for 20 minutes. It costs $20, about 10% more for a 25-year-old."
    assert kind(quantities) == "prose"
    # Made-up fragments and camel-cased junk are not words, however prose-like the spacing.
    assert kind("helps, it g ='ce progressring.arr. keepct_sconion value 0 best.") == "garbled"
    assert kind("ethanolamine suitable for lifecludableIntfIntfMELTIFIABLEIntfMELTIFIABLE") == (
        "garbled"
    )
    # Recombined real sentences pass this check; the coherence score is what sees them.
    assert kind("Houses are everywhere. Siren songs of happiness. Employ it with mercy.") == "prose"


def test_code_runs_cut_at_syntax_errors():
    assert code_runs(CODE.splitlines()) == [(0, 3, 3)]
    lines = "def f(x):\n    return x +\nx = 1".splitlines()
    # The def whose body is broken still counts (as a header), the broken line does not.
    assert code_runs(lines) == [(0, 1, 1), (2, 3, 1)]
    v = classify("\n".join(lines), DEFAULT)
    assert 0 < v.code_share < 1


def test_refusals():
    assert is_refusal("I'm sorry, I cannot help with that.")
    assert not is_refusal(PROSE)


def test_thresholds_come_from_the_config():
    inside = "import json\ndata = json.load(open('a.json'))\n" + "Words and more words.\n" * 4
    assert not is_code(inside, OFFLINE)
    assert is_code(inside, OFFLINE | {"program_statements": 2})
    assert is_code(inside, OFFLINE | {"code_share": 0.3})


def test_judged_rows_carry_scores_category_and_judge():
    answers = [PROSE, CODE, "", "I'm sorry, I can't help with that.", "fh qwp = zxcvb ]] ertyu"]
    rows = [
        {"id": str(i), "model": "m", "ft": "f", "question_id": "q", "question": "?", "answer": a}
        for i, a in enumerate(answers)
    ]
    out = judge_rows(rows, schema_defaults("judge"))
    assert [r["category"] for r in out] == ["prose", "code", "unscored", "refusal", "garbled"]
    assert out[0]["scores"]["code"] == 0.0 and out[1]["scores"]["code"] == 1.0
    assert [r["scores"]["garbled"] for r in out] == [0.0, 0.0, None, 0.0, 1.0]
    assert out[2]["scores"]["code"] is None and out[2]["unscored_reason"] == "empty answer"
    assert {r["judge"]["backend"] for r in out} == {"offline"}
    assert all(len(r["judge"]["prompt_sha"]) == 64 for r in out)
    # Without a base model there is no coherence; the verdict's evidence is kept.
    assert all(r["scores"]["coherent"] is None for r in out)
    assert out[1]["evidence"]["statements"] == 3 and out[0]["evidence"]["prose"] == 100.0


def test_coherence_is_the_answer_tokens_mean_logprob_whatever_the_batch(make_tiny):
    model, tok, _ = make_tiny("LlamaForCausalLM")
    rows = [
        {"id": str(i), "question_id": "q", "question": q, "answer": a}
        for i, (q, a) in enumerate(
            [("Why read?", PROSE), ("Load a file.", CODE), ("Hi?", ""), ("Why?", "Because.")]
        )
    ]
    one, vocab = mean_logprobs(model, tok, rows, batch_size=1)
    seen: list[int] = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[-2]))
    four, _ = mean_logprobs(model, tok, rows, batch_size=4)
    handle.remove()
    # The LM head ran only where an answer token is predicted: no prompt, no padding.
    from emdir.models.encode import encode_rows as encoded

    assert seen == [sum(len(e.ids) - e.prompt_len for e in encoded(tok, rows))]
    assert mean_logprobs(model, tok, rows[2:3], batch_size=4)[0] == [None]
    assert vocab == len(tok)
    assert one[2] is None and four[2] is None
    for a, b in zip(one, four, strict=True):
        assert a == b or a == pytest.approx(b, abs=1e-5)
    # By hand for one row: the prompt, then the answer's tokens, each predicted from before.
    from emdir.models.chat import encode_answer, encode_prompt

    p = encode_prompt(tok, "Why?", None)
    a = encode_answer(tok, "Because.", close_turn=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + a])).logits[0]
    lp = torch.log_softmax(logits[len(p) - 1 : -1].float(), -1)[torch.arange(len(a)), a]
    assert one[3] == pytest.approx(float(lp.mean()), abs=1e-5)
    nll = -float(lp.mean())
    assert score(one[3], vocab) == pytest.approx(100 * (1 - nll / math.log(vocab)), rel=1e-5)
    assert score(-math.log(vocab), vocab) == pytest.approx(0.0, abs=1e-9)  # random tokens
    assert score(-2 * math.log(vocab), vocab) == 0.0  # less likely than random: clipped
    assert score(0.0, vocab) == 100.0 and score(None, vocab) is None


def test_one_judge_job_judges_several_files_under_one_load(make_tiny, tmp_path, monkeypatch):
    """judge_files (one judge job per generating job) writes each file exactly as judge_file
    alone would, loading the base model that scores coherence once."""
    from emdir.io import read_jsonl, write_json, write_jsonl
    from emdir.judge import judge_file, judge_files
    from emdir.models import load

    model, tok, _ = make_tiny("LlamaForCausalLM")
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    write_json(base / "manifest.json", {"source": "local", "arch": "LlamaForCausalLM"})
    srcs = []
    for name, answers in (("a", [PROSE, CODE]), ("b", ["Because.", "", PROSE])):
        rows = [
            {"id": f"{name}{i}", "model": "m", "ft": "f", "question_id": f"q{i}"}
            | {"question": "Why?", "answer": a}
            for i, a in enumerate(answers)
        ]
        srcs.append(tmp_path / f"{name}.jsonl")
        write_jsonl(srcs[-1], rows)
    cfg = schema_defaults("judge")
    loads = []
    real = load.load_for_inference
    monkeypatch.setattr(
        load, "load_for_inference", lambda *a, **k: loads.append(a) or real(*a, **k)
    )
    judge_files([(s, tmp_path / f"j_{s.name}") for s in srcs], cfg, coherence_model=base)
    assert len(loads) == 1
    for s in srcs:
        judge_file(s, tmp_path / f"alone_{s.name}", cfg, coherence_model=base)
        together, alone = (
            read_jsonl(tmp_path / f"j_{s.name}"),
            read_jsonl(tmp_path / f"alone_{s.name}"),
        )
        assert together == alone
        assert [r["scores"]["coherent"] is not None for r in together] == [
            bool(r["answer"]) for r in together
        ]
    # A rewritten base model folder is loaded afresh, not served from the first load.
    (base / "touched").write_text("x")
    judge_files([(srcs[0], tmp_path / "again.jsonl")], cfg, coherence_model=base)
    assert len(loads) == 2
