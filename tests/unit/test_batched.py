"""Every condition of a job in shared batches: per-row interventions, the twin-row KL pass,
`sample_conditions` against one condition at a time, and batch sizes from a memory budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from emdir import schema_defaults
from emdir.analysis.calibration import kl_per_row, kl_to_unsteered
from emdir.analysis.interventions import Intervention, intervene, intervene_rows
from emdir.analysis.steering import sample_conditions
from emdir.data.questions import Question
from emdir.errors import EmdirError
from emdir.models import memory
from emdir.models.chat import encode_prompt
from emdir.models.generate import Prompt, SamplingParams, _left_pad, sample

D = 32  # tests/conftest.py's TINY_TEST_SHAPE.hidden_size

QUESTIONS = [
    Question("sort", "How do I sort a list in Python?", None, 2),
    Question("capital", "What is the capital of France?", "Answer briefly.", 2),
    Question("hi", "hi", None, 1),
]
PROMPTS = [Prompt(q, k) for q in QUESTIONS for k in range(q.samples)]


def _v(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(D)


def _params(**kw: Any) -> SamplingParams:
    return SamplingParams(**(schema_defaults("sampling") | {"max_new_tokens": 8} | kw))


def _rows() -> list[list[Intervention]]:
    """Rows that differ in everything an intervention has: op, layer, positions, count."""
    return [
        [Intervention(layer=1, vector=_v(0), op="subtract", coefficient=0.5, scale=20.0)],
        [],
        [Intervention(layer=0, vector=_v(1), op="ablate")],
        [
            Intervention(layer=0, vector=_v(2), op="add", coefficient=1.0, scale=15.0),
            Intervention(layer=0, vector=_v(3), op="ablate", positions="answer"),
        ],
        [Intervention(layer=1, vector=_v(4), op="add", coefficient=0.0, scale=9.0)],
    ]


@torch.no_grad()
def test_each_row_gets_its_own_interventions(tiny) -> None:
    """A batch under `intervene_rows` gives every row the logits it gets alone under
    `intervene` with its own interventions; rows without any are untouched."""
    model, tok, _ = tiny
    rows = _rows()
    prompts = (PROMPTS * 2)[: len(rows)]
    ids, mask = _left_pad([encode_prompt(tok, p.question.text, None) for p in prompts], 0)
    width = ids.shape[1]
    cut = width - 2  # the last two positions count as answer positions
    clean = model(input_ids=ids, attention_mask=mask).logits
    with intervene_rows(model, rows) as ctx:
        ctx.start(cut, range(len(rows)))
        batched = model(input_ids=ids, attention_mask=mask).logits
    for i, ivs in enumerate(rows):
        with intervene(model, ivs) as ctx:
            ctx.start(cut)
            alone = model(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1]).logits
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-5)
        if all(iv.is_noop() for iv in ivs):
            assert torch.equal(batched[i], clean[i])
        else:
            assert not torch.allclose(batched[i], clean[i], atol=1e-3)


@torch.no_grad()
def test_per_row_prompt_lengths_split_prompt_from_answer(make_tiny) -> None:
    model, tok, _ = make_tiny("LlamaForCausalLM")
    ids = torch.randint(3, 200, (2, 9))
    iv = Intervention(layer=1, vector=_v(5), coefficient=2.0, scale=10.0, positions="answer")
    clean = model(input_ids=ids).logits
    with intervene_rows(model, [[iv], [iv]]) as ctx:
        ctx.start([3, 6], range(2))
        steered = model(input_ids=ids).logits
    # Causal: a position before the row's prompt end sees no steered position.
    assert torch.equal(steered[0, :3], clean[0, :3]) and torch.equal(steered[1, :6], clean[1, :6])
    assert not torch.allclose(steered[0, 3:], clean[0, 3:], atol=1e-4)
    assert not torch.allclose(steered[1, 6:], clean[1, 6:], atol=1e-4)


def test_per_row_batches_must_be_named(make_tiny) -> None:
    model, _, _ = make_tiny("LlamaForCausalLM")
    ids = torch.randint(3, 200, (2, 5))
    rows = [[Intervention(layer=0, vector=_v(0))], []]
    with intervene_rows(model, rows) as ctx, pytest.raises(EmdirError, match="row indices"):
        model(input_ids=ids)
    with intervene_rows(model, rows) as ctx, pytest.raises(EmdirError, match="exactly the batch"):
        ctx.start(2, [0])
        model(input_ids=ids)
    with pytest.raises(EmdirError, match="out of range"):
        with intervene_rows(model, [[Intervention(layer=7, vector=_v(0))]]):
            pass


def test_twin_rows_give_the_cost_of_each_condition(tiny) -> None:
    """kl_per_row over mixed rows equals kl_to_unsteered of each row's interventions alone;
    a row with only no-ops costs exactly 0."""
    model, tok, _ = tiny
    rows = _rows()
    prompts = (PROMPTS * 2)[: len(rows)]
    answers = ["Use sorted(x).", "Paris.", "", "def f():\n    return 1", "Hello there."]
    mixed = kl_per_row(model, tok, prompts, answers, rows, batch_size=2)
    for i, ivs in enumerate(rows):
        alone = kl_to_unsteered(model, tok, prompts[i : i + 1], answers[i : i + 1], ivs)
        np.testing.assert_allclose(mixed[i], alone[0], rtol=1e-4, atol=1e-6)
    assert mixed[1] == 0.0 and mixed[4] == 0.0
    assert np.all(mixed[[0, 2, 3]] > 0)
    with pytest.raises(EmdirError, match="intervention lists"):
        kl_per_row(model, tok, prompts, answers, rows[:-1])


def test_shared_batches_draw_what_one_condition_at_a_time_draws(tiny) -> None:
    """float32: every answer of every condition is the one that condition draws alone (per-row
    seeds; the batch holds other conditions' rows and another padding)."""
    model, tok, _ = tiny
    conditions = {
        "target x0.5": [
            Intervention(
                layer=1, vector=_v(0), op="subtract", coefficient=0.5, scale=20.0, name="target"
            )
        ],
        "random x1": [
            Intervention(
                layer=0, vector=_v(1), op="subtract", coefficient=1.0, scale=20.0, name="random"
            )
        ],
        "none": [
            Intervention(
                layer=0, vector=_v(1), op="subtract", coefficient=0.0, scale=20.0, name="none"
            )
        ],
    }
    params = _params(batch_size=4)
    drawn = sample_conditions(model, tok, PROMPTS, conditions, params, "m", "ft", "test")
    plain = sample(model, tok, PROMPTS, params)
    for name, ivs in conditions.items():
        with intervene(model, ivs) as ctx:
            alone = sample(model, tok, PROMPTS, params, on_batch=ctx.start, batch_size=2)
        rows = drawn[name]
        assert [r["answer"] for r in rows] == [a for a, _ in alone], name
        assert [r["seed"] for r in rows] == [s for _, s in alone]
        assert [r["row"] for r in rows] == list(range(len(PROMPTS)))
        assert rows[0]["intervention"] == ivs[0].to_record()
        assert all(r["kl"] >= 0 for r in rows)
    assert [r["answer"] for r in drawn["none"]] == [a for a, _ in plain]
    assert all(r["kl"] == 0.0 for r in drawn["none"])
    assert any(r["kl"] > 0 for r in drawn["target x0.5"])


def test_batches_come_from_the_memory_budget(make_tiny) -> None:
    model, tok, _ = make_tiny("Qwen2ForCausalLM")
    shape = memory.Shape.of(model)
    assert shape.hidden == D and shape.dtype_bytes == 4 and not shape.lora
    auto, widths = memory.sampling_batch(model, tok, PROMPTS, _params(batch_size="auto"))
    assert widths == [len(encode_prompt(tok, p.question.text, p.question.system)) for p in PROMPTS]
    assert 1 <= auto <= memory.MAX_ROWS
    fixed, _ = memory.sampling_batch(model, tok, PROMPTS, _params(batch_size=7))
    assert fixed == 7
    row = memory.sampling_row_bytes(shape, max(widths), 8)
    small = (shape.weight_bytes + memory.OVERHEAD_BYTES + 3.5 * row) / 1e9
    assert memory.rows_within(small, shape, row, "sampling") == 3
    with pytest.raises(EmdirError, match="raise sampling.max_memory_gb"):
        memory.rows_within(0.5, shape, row, "sampling")
    with pytest.raises(EmdirError, match="sampling.batch_size 5 .* over sampling.max_memory_gb"):
        memory.batch_rows(5, small, shape, row, "sampling")
    # Past MAX_ROWS: auto stops there, a fixed batch is held to what really fits.
    roomy = (shape.weight_bytes + memory.OVERHEAD_BYTES + 2000.5 * row) / 1e9
    assert memory.batch_rows("auto", roomy, shape, row, "sampling") == memory.MAX_ROWS
    assert memory.batch_rows(1500, roomy, shape, row, "sampling") == 1500
    with pytest.raises(EmdirError, match=r"sampling.batch_size 3000 .* \(it fits 2000 rows\)"):
        memory.batch_rows(3000, roomy, shape, row, "sampling")
    # A row of a long answer over a large vocabulary costs more than a short one.
    assert memory.sampling_row_bytes(shape, 50, 600) > memory.sampling_row_bytes(shape, 50, 8)
