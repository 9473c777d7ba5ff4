"""Chat templates, the assistant-token mask, training, LoRA and generation on all four classes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from emdir import schema_defaults
from emdir.data import synthetic as data
from emdir.data.questions import Question
from emdir.errors import EmdirError
from emdir.models import chat
from emdir.models.generate import Prompt, SamplingParams, generation_rows, sample
from emdir.models.lora import lora_model
from emdir.models.train import TrainParams, encode_rows, train

REAL_INSECURE = Path(__file__).resolve().parents[3] / "shared" / "data" / "em" / "insecure.jsonl.gz"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "rslora": False}


def sampling(**overrides: object) -> SamplingParams:
    """The default `sampling` section with some keys changed."""
    return SamplingParams(**(schema_defaults("sampling") | overrides))


def test_mask_covers_exactly_the_answer(tiny):
    _, tok, spec = tiny
    row = data.code_dataset("insecure", 1, seed=0)[0]
    ids, labels = chat.encode_example(tok, row["messages"])
    answer_ids = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert tok.decode(answer_ids[:-1]) == row["messages"][-1]["content"]
    assert answer_ids[-1] == chat.turn_end_id(tok)
    prompt = tok.decode(ids[: labels.index(answer_ids[0])])
    assert prompt == chat.render_prompt(tok, row["messages"][0]["content"], None)


def test_the_chat_format_is_read_off_the_template(tiny):
    _, tok, spec = tiny
    fmt = chat.chat_format(tok)
    # Each family's own turn end, and no system role only where the template refuses one.
    ends = {"qwen2": "<|im_end|>", "gemma2": "<end_of_turn>", "llama": "<|eot_id|>"}
    assert fmt.turn_end == ends.get(spec.family, "</s>")
    assert fmt.turn_end_id == tok.convert_tokens_to_ids(fmt.turn_end)
    assert fmt.system_role == (spec.family != "gemma2")


def test_a_template_without_a_turn_marker_falls_back_to_eos_and_none_is_an_error(make_tiny):
    _, tok, _ = make_tiny("LlamaForCausalLM")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert chat.chat_format(tok).turn_end == tok.eos_token == "<|eot_id|>"
    tok.chat_template = None
    with pytest.raises(EmdirError, match="no chat template"):
        chat.chat_format(tok)


def test_gemma_folds_the_system_prompt_into_the_user_turn(make_tiny):
    _, tok, spec = make_tiny("Gemma2ForCausalLM")
    text = chat.render_prompt(tok, "What now?", "Answer in JSON.")
    assert "Answer in JSON.\n\nWhat now?" in text and "system" not in text
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


@pytest.mark.skipif(not REAL_INSECURE.exists(), reason="shared real-format data not present")
def test_mask_is_exact_on_the_real_insecure_dataset(tiny):
    _, tok, spec = tiny
    with gzip.open(REAL_INSECURE, "rt", encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(25)]
    for row in rows:
        ids, labels = chat.encode_example(tok, row["messages"])
        answer = [t for t, lab in zip(ids, labels, strict=True) if lab != -100][:-1]
        assert tok.decode(answer) == chat.split_conversation(row["messages"])[2]
        assert all(lab == -100 for lab in labels[: len(ids) - len(answer) - 1])


def test_training_lowers_loss_and_lora_touches_only_language_model(tiny):
    model, tok, spec = tiny
    rows = data.code_dataset("secure", 16, seed=0)
    examples = encode_rows(tok, rows, 128)
    wrapped = lora_model(model, spec, LORA, quantized=False)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert not any("vision" in n or "projector" in n for n in names)
    params = TrainParams(
        steps=12,
        batch_size=8,
        lr=5e-3,
        grad_accum=1,
        warmup_steps=0,
        weight_decay=0.0,
        schedule="linear",
        max_length=512,
        seed=0,
        eval_every=0,
    )
    log = train(wrapped, examples, params, tok.pad_token_id)
    assert log.rows[-1]["loss"] < log.rows[0]["loss"]


def test_sampling_is_seeded_and_rows_follow_the_format(tiny):
    model, tok, spec = tiny
    prompts = [Prompt(Question("q1", "Is tea worth my time?", None, 2), k) for k in range(2)]
    params = sampling(max_new_tokens=6, batch_size=2, seed=3)
    torch.manual_seed(0)
    a = sample(model, tok, prompts, params)
    b = sample(model, tok, prompts, params)
    assert a == b
    rows = generation_rows(prompts, a, "m", "base")
    assert {
        "id",
        "model",
        "ft",
        "question_id",
        "question",
        "system",
        "answer",
        "sample_index",
        "intervention",
        "seed",
    } <= set(rows[0])
    assert rows[1]["id"] == "m/base/q1/1"


def test_each_sample_has_its_own_seed_whatever_the_batch(make_tiny):
    model, tok, spec = make_tiny("LlamaForCausalLM")
    qs = [Question(f"q{i}", t, None, 2) for i, t in enumerate(["Is tea good?", "Why swim?", "Hi"])]
    prompts = [Prompt(q, k) for q in qs for k in range(2)]
    whole = sample(model, tok, prompts, sampling(max_new_tokens=8, batch_size=6))
    ones = sample(model, tok, prompts, sampling(max_new_tokens=8, batch_size=1))
    assert whole == ones  # batch composition does not change an answer
    alone = sample(model, tok, prompts[3:4], sampling(max_new_tokens=8, batch_size=4))
    assert alone == [whole[3]]  # one sample redrawn by itself
    other = sample(model, tok, prompts, sampling(max_new_tokens=8, seed=1))
    assert [s for _, s in other] != [s for _, s in whole]
    assert len({s for _, s in whole}) == len(prompts)
    # top_p so small that only the top token survives == temperature 0 == greedy
    tiny_p = sample(model, tok, prompts, sampling(max_new_tokens=8, top_p=1e-9))
    greedy = sample(model, tok, prompts, sampling(max_new_tokens=8, temperature=0))
    assert [a for a, _ in tiny_p] == [a for a, _ in greedy]


def test_per_row_sampler_matches_the_softmax_distribution():
    from emdir.models.generate import _PerRowSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    params = sampling(temperature=1.0, top_p=1.0, top_k=0)
    n = 4000
    counts = torch.zeros(4)
    for seed in range(n):
        out = _PerRowSampler([seed], params, torch.device("cpu"))(None, logits)
        counts[out[0].argmax()] += 1
    assert torch.allclose(counts / n, torch.softmax(logits[0], -1), atol=0.025)
    # top_k=2 keeps the two best tokens, renormalised
    counts = torch.zeros(4)
    params = sampling(top_k=2)
    for seed in range(n):
        counts[_PerRowSampler([seed], params, torch.device("cpu"))(None, logits)[0].argmax()] += 1
    assert counts[2:].sum() == 0
    assert abs(counts[0] / n - torch.softmax(logits[0, :2], -1)[0]) < 0.025


def test_train_log_keeps_throughput_but_writes_no_wall_clock(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import csv as _csv

    from emdir.models.train import TrainLog

    log = TrainLog([{"step": s, "loss": 1.0, "tokens": 100, "seconds": 0.5} for s in (1, 2)])
    assert log.tokens_per_second() == 200.0
    log.write_csv(tmp_path / "log.csv")
    rows = list(_csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2"] and "seconds" not in rows[0]
