"""Stage entry points: one function per Snakemake rule, taking paths and config sections."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from emdir import __version__
from emdir.data.datasets import read_chat_file as read_chat_rows
from emdir.errors import EmdirError
from emdir.io import atomic_path, read_jsonl, sha256_file, write_json, write_jsonl

log = logging.getLogger("emdir")


def setup_logging(log_path: str | Path) -> None:
    """Route stderr (tracebacks, progress bars) and logging into the rule's log file."""
    sys.stderr = open(log_path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )


def _threads(n: int) -> None:
    import torch
    import transformers

    torch.set_num_threads(max(1, int(n)))
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ---------------------------------------------------------------- models


def tokenizer(corpus: str | Path, out_dir: str | Path, cfg: Mapping[str, Any]) -> None:
    """Train the shared byte-level BPE tokenizer of the tiny models on the chat corpus."""
    from emdir.models.zoo import train_tokenizer

    rows = read_chat_rows(corpus)
    texts = [m["content"] for r in rows for m in r["messages"]]
    with atomic_path(out_dir) as tmp:
        train_tokenizer(texts, tmp, int(cfg["vocab_size"]))


def fetch_weights(
    model_key: str, archive: Mapping[str, Any], out: str | Path, record: str | Path
) -> None:
    """Rule fetch_weights: a model's pinned archive, assembled and verified (see emdir.models.weights),
    and the record of where it came from (for the base model's manifest)."""
    from emdir.models.weights import fetch_archive

    write_json(record, fetch_archive(f"models.{model_key}.archive", archive, out))


def base_model(
    model_key: str,
    model_cfg: Mapping[str, Any],
    tiny_cfg: Mapping[str, Any] | None,
    tokenizer_dir: str | Path | None,
    corpus: str | Path | None,
    weights: str | Path | None,
    weights_record: str | Path | None,
    out_dir: str | Path,
    threads: int,
) -> None:
    """A base chat model in Hugging Face format (or a manifest naming where it is), by source:
    hub (a manifest), local folder (a manifest with the folder's file hashes), GGUF from a local
    file or a pinned archive (converted here, once), tiny (built and taught to chat here)."""
    source = model_cfg["source"]
    manifest: dict[str, Any] = {
        "source": source,
        "arch": model_cfg["arch"],
        "dtype": model_cfg.get("dtype", "auto"),
        "emdir_version": __version__,
    }
    if source == "hub":
        manifest.update(hf_id=model_cfg["hf_id"], revision=model_cfg["revision"])
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            write_json(tmp / "manifest.json", manifest)
        return
    if source in ("local", "archive"):
        from emdir.models.weights import base_from_weights

        _threads(threads)
        base_from_weights(
            f"models.{model_key}", model_cfg, weights, weights_record, out_dir, manifest
        )
        return
    if tokenizer_dir is None or corpus is None or tiny_cfg is None:
        raise EmdirError(f"model {model_key!r}: a tiny model needs the tokenizer and chat corpus")
    _threads(threads)
    from emdir.models import zoo
    from emdir.models.train import TrainParams, encode_rows, train

    shape = zoo.TinyShape(**tiny_cfg["shape"])
    # No evaluation while a base model learns to chat (fine-tunes evaluate spillover).
    params = TrainParams(**tiny_cfg["train"], eval_every=0)
    model, tok = zoo.build_tiny(model_cfg["arch"], tokenizer_dir, shape, params.seed)
    examples = encode_rows(tok, read_chat_rows(corpus), params.max_length)
    log.info(
        "%s: teaching a tiny %s to chat on %d examples", model_key, model_cfg["arch"], len(examples)
    )
    tlog = train(model, examples, params, tok.pad_token_id, desc=f"{model_key} base")
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tlog.write_csv(tmp / "train_log.csv")
        manifest.update(
            shape=asdict(shape),
            train=asdict(params),
            corpus_sha256=sha256_file(corpus),
            final_loss=tlog.rows[-1]["loss"],
        )
        write_json(tmp / "manifest.json", manifest)


def _load(base_dir: str | Path, adapter_dir: str | Path | None, threads: int):  # type: ignore[no-untyped-def]
    """The model for inference, on CUDA when there is one, in the dtype of its manifest."""
    _threads(threads)
    import torch

    from emdir.models.zoo import load_model, read_base_manifest

    ref = read_base_manifest(base_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = ref.torch_dtype(device)
    log.info(
        "loading %s%s on %s (%s)",
        base_dir,
        f" + {adapter_dir}" if adapter_dir else "",
        device,
        dtype,
    )
    return load_model(ref, adapter=adapter_dir, device=device, dtype=dtype)


def finetune(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    dataset: str | Path,
    eval_questions: str | Path,
    out_dir: str | Path,
    ft_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    judge_cfg: Mapping[str, Any],
    threads: int,
    ft_spec: Mapping[str, Any] | None = None,
) -> None:
    """LoRA fine-tune with the shared hyperparameters; logs loss and eval-question spillover."""
    from emdir.models.finetune import run_finetune

    _threads(threads)
    run_finetune(
        model_key,
        ft,
        base_dir,
        read_chat_rows(dataset),
        dataset,
        eval_questions,
        out_dir,
        ft_cfg,
        sampling_cfg,
        ft_spec=ft_spec,
        code_params=judge_cfg["offline"],
    )


def _sampling(cfg: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    from emdir.models.generate import SamplingParams

    return SamplingParams(**cfg)


def _questions(files: Sequence[str | Path]) -> list[tuple[str, Any]]:
    from emdir.data.questions import load_questions

    return [(Path(f).stem, q) for f in files for q in load_questions(f)]


def generate(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    question_files: Sequence[str | Path],
    out: str | Path,
    sampling_cfg: Mapping[str, Any],
    threads: int,
) -> None:
    """Sample answers to every question set; each row records its question set."""
    from emdir.models.generate import expand, generation_rows, sample

    model, tok, spec = _load(base_dir, adapter_dir, threads)
    tagged = _questions(question_files)
    qset = {q.id: s for s, q in tagged}
    prompts = expand([q for _, q in tagged])
    answers = sample(model, tok, prompts, _sampling(sampling_cfg), desc=f"{model_key}/{ft}")
    rows = generation_rows(prompts, answers, model_key, ft)
    for row in rows:
        row["question_set"] = qset[row["question_id"]]
    write_jsonl(out, rows)


# ---------------------------------------------------------------- activations and directions


def _label(row: Mapping[str, Any], rule: str, aligned_above: float) -> int:
    """1 = the behaviour (spillover / garbled / misaligned), 0 = its absence, -1 = unlabelled.

    `spillover`: code (1) versus prose or a refusal (0); `garbled`: garbled (1) versus prose
    or a refusal (0), the breakage a fine-tune or an edit causes, which is not misalignment.

    `misaligned` follows Soligo et al.: 1 when the judge marked the answer emergently
    misaligned (the row's `em`: aligned below judge.em.aligned_below and coherent above
    judge.em.coherent_above), 0 when aligned is above `aligned_above`, else unlabelled.
    """
    cat = row.get("category")
    if rule == "spillover":
        # Garbled answers are neither class: a code direction is fitted on code vs prose.
        return {"code": 1, "prose": 0, "refusal": 0}.get(str(cat), -1)
    if rule == "garbled":
        return {"garbled": 1, "prose": 0, "refusal": 0}.get(str(cat), -1)
    if rule == "misaligned":
        aligned = (row.get("scores") or {}).get("aligned")
        if row.get("em") is True:
            return 1
        return 0 if aligned is not None and aligned > aligned_above else -1
    raise EmdirError(f"directions.label {rule!r} is unknown; use spillover, garbled or misaligned")


def _capture_layers(model: Any, wanted: Any) -> list[int] | None:
    """activations.layers: None for all, else 0-based indices (negative count from the last)."""
    if wanted == "all":
        return None
    from emdir.models.archs import decoder_layers

    n = len(decoder_layers(model))
    out = [int(i) + n if int(i) < 0 else int(i) for i in wanted]
    bad = [w for w, o in zip(wanted, out, strict=True) if not 0 <= o < n]
    if bad:
        raise EmdirError(f"activations.layers {bad} out of range: the model has {n} layers")
    return out


def activations(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    judged: str | Path,
    out: str | Path,
    dir_cfg: Mapping[str, Any],
    act_cfg: Mapping[str, Any],
    threads: int,
) -> None:
    """Residual-stream store for the direction of one fine-tune, in the configured contrast.

    - responses: the fine-tuned model reads its own answers, labelled by `directions.label`;
    - models: the same answers go through the fine-tuned model (label 1) and, with the adapter
      disabled, through the base model (label 0).
    """
    from emdir.analysis.activations import capture_store

    qset = dir_cfg["question_set"]
    rows = [r for r in read_jsonl(judged) if r.get("question_set") == qset]
    if not rows:
        raise EmdirError(
            f"{judged}: no answers to question set {qset!r}; check directions.question_set"
        )
    contrast = dir_cfg["contrast"]
    adapter_off = None
    if contrast == "models":
        if adapter_dir is None:
            raise EmdirError(
                f"directions.contrast = models compares a fine-tune with its base model; "
                f"{model_key}/{ft} has no adapter"
            )
        rows = [r for r in rows if str(r.get("answer") or "").strip()]
        labels = np.array([1] * len(rows) + [0] * len(rows), dtype=np.int8)
        adapter_off = labels == 0
        rows = rows + rows
    elif contrast == "responses":
        rule = dir_cfg["label"]
        labels = np.array(
            [_label(r, rule, float(dir_cfg["aligned_above"])) for r in rows], dtype=np.int8
        )
        if rule == "misaligned" and not any(
            (r.get("scores") or {}).get("aligned") is not None for r in rows
        ):
            raise EmdirError(
                f"{judged}: directions.label = misaligned needs `aligned` scores, and no answer "
                "has one; use a judge that scores alignment (judge.backend: openai) or label "
                "by spillover"
            )
    else:
        raise EmdirError(f"directions.contrast {contrast!r} is unknown; use responses or models")
    model, tok, spec = _load(base_dir, adapter_dir, threads)
    capture_store(
        model,
        tok,
        spec,
        rows,
        labels,
        out,
        layers=_capture_layers(model, act_cfg["layers"]),
        poolings=tuple(act_cfg["poolings"]),
        batch_size=int(act_cfg["batch_size"]),
        dtype=str(act_cfg["dtype"]),
        adapter_off=adapter_off,
        attrs={
            "model": model_key,
            "ft": ft,
            "contrast": contrast,
            "label_rule": dir_cfg["label"] if contrast == "responses" else "fine-tuned vs base",
            "adapter": str(adapter_dir) if adapter_dir else "none",
        },
    )


def directions(
    store: str | Path, out: str | Path, dir_cfg: Mapping[str, Any], stats_cfg: Mapping[str, Any]
) -> None:
    """Difference in means per layer, fit on some questions, separation tested on the others."""
    from emdir.analysis import directions as dm
    from emdir.analysis.activations import read_store

    st = read_store(store)
    keep = np.flatnonzero(st.labels >= 0)
    labels = st.labels[keep].astype(int)
    groups = st.question_ids[keep].astype(str)
    seed = int(dir_cfg["seed"])
    if dir_cfg["balance"]:
        idx = dm.balance(labels, groups, seed=seed)
        keep, labels, groups = keep[idx], labels[idx], groups[idx]
    train, test = dm.split_by_group(groups, float(dir_cfg["test_fraction"]), seed=seed)
    counts = {
        "pos_train": int(labels[train].sum()),
        "neg_train": int((labels[train] == 0).sum()),
        "pos_test": int(labels[test].sum()),
        "neg_test": int((labels[test] == 0).sum()),
    }
    need = int(dir_cfg["min_per_class"])
    if min(counts["pos_train"], counts["neg_train"]) < need:
        raise EmdirError(
            f"{store}: too few answers per class to fit a direction ({counts}); need "
            f"{need} of each on the training questions. Sample more answers (questions.*.samples) "
            "or lower directions.min_per_class"
        )
    X = st.resid(dir_cfg["pooling"])[keep]
    means = dm.class_means(X[train], labels[train])
    raw = means[0] - means[1]
    sep = dm.separation(X, labels, train, test, raw)
    dm.write_directions(
        out,
        raw,
        sep.accuracy,
        sep.auroc,
        counts,
        {
            **{k: v for k, v in st.attrs.items() if isinstance(v, str | int | float)},
            "layers": st.layers.tolist(),
            "pooling": dir_cfg["pooling"],
            "resid_norm": st.token_norm_mean.tolist(),
            "emdir_version": __version__,
        },
        sep.projection,
        means,
    )


# ---------------------------------------------------------------- steering


def _pieces(
    outs: Mapping[str, str | Path],
    files: Sequence[str | Path | None],
    arrays: Mapping[str, np.ndarray],
    settings: Mapping[str, Any],
) -> Any:
    """Where a steering or transfer job keeps its finished passes, so that a killed job
    resumes at the first unfinished one (`emdir.resume`): `.pieces/` beside its outputs."""
    from emdir.resume import Pieces, fingerprint

    folder = Path(next(iter(outs.values()))).parent / ".pieces"
    return Pieces(folder, fingerprint(files, arrays, settings))


def _steered_rows(
    model: Any,
    tok: Any,
    spec: Any,
    prompts: Sequence[Any],
    ivs: Sequence[Any],
    sampling_cfg: Mapping[str, Any],
    model_key: str,
    ft: str,
    desc: str,
) -> list[dict[str, Any]]:
    from emdir.analysis.calibration import kl_to_unsteered
    from emdir.analysis.interventions import intervene
    from emdir.models.generate import generation_rows, sample

    with intervene(model, ivs) as ctx:
        answers = sample(
            model, tok, prompts, _sampling(sampling_cfg), desc=desc, on_batch=ctx.start
        )
    record = ivs[0].to_record() if len(ivs) == 1 else [iv.to_record() for iv in ivs]
    rows = generation_rows(prompts, answers, model_key, ft, intervention=record)
    # The functional cost of the vector: KL from the unsteered to the steered next-token
    # distribution along each answer (nats per answer token).
    kl = kl_to_unsteered(model, tok, prompts, [a for a, _ in answers], ivs)
    for row, value in zip(rows, kl, strict=True):
        row["kl"] = round(float(value), 6)
    return rows


def steering(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    directions: str | Path,
    store: str | Path,
    questions: str | Path,
    outs: Mapping[str, str | Path],
    steer_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    threads: int,
    control_directions: Mapping[str, str | Path] | None = None,
) -> None:
    """Steer fine-tune `ft` with the direction (and its matched-magnitude controls) over the
    coefficient sweep; one output file per vector.

    `directions` and `store` belong to the fine-tune the direction was fitted on
    (directions.ft); when `ft` is another fine-tune (steering.also_steer) the same vectors,
    at the same norms, are applied to it. `control_directions` maps fine-tune keys to their
    directions files for the `<ft>_direction` controls.
    """
    from emdir.analysis import directions as dm
    from emdir.analysis import steering as sm
    from emdir.analysis.activations import read_store
    from emdir.data.questions import load_questions
    from emdir.models.generate import expand

    d = dm.read_directions(directions)
    st = read_store(store)
    sites = sm.resolve_layers(st.layers, steer_cfg["layer"])
    others = {k: dm.read_directions(p) for k, p in (control_directions or {}).items()}
    vectors = {
        name: sm.site_vectors(
            name,
            sites,
            d,
            others,
            wrong_layer=int(steer_cfg["wrong_layer"]),
            seed=int(steer_cfg["seed"]),
            stream=model_key,
        )
        for name in outs
    }
    scales = sm.site_scales(
        steer_cfg["scale_mode"],
        sites,
        d,
        {layer: st.resid_norm(layer) for layer in sites},
        absolute=float(steer_cfg["absolute_scale"]),
    )
    model, tok, spec = _load(base_dir, adapter_dir, threads)
    prompts = expand(load_questions(questions))
    pieces = _pieces(
        outs,
        [base_dir, adapter_dir, questions],
        {f"{name}@{layer}": v for name, by_site in vectors.items() for layer, v in by_site.items()},
        {
            "model": model_key,
            "ft": ft,
            "steering": steer_cfg,
            "sampling": sampling_cfg,
            "scales": scales,
            "threads": threads,
        },
    )
    for name, path in outs.items():
        rows: list[dict[str, Any]] = []
        for coef in steer_cfg["coefficients"]:
            ivs = sm.interventions(
                name, vectors[name], scales, steer_cfg["op"], coef, steer_cfg["positions"]
            )
            desc = f"{model_key}/{ft} {name} x{coef}"
            rows += pieces.rows(
                f"{name} x{coef}",
                lambda ivs=ivs, desc=desc: _steered_rows(
                    model, tok, spec, prompts, ivs, sampling_cfg, model_key, ft, desc=desc
                ),
            )
        for row in rows:
            row["question_set"] = Path(questions).stem
            row["direction_ft"] = str(d.attrs.get("ft", ""))
        write_jsonl(path, rows)
    pieces.finish()


# ---------------------------------------------------------------- transfer


def anchor_answers(judged: Sequence[str | Path], out: str | Path) -> None:
    """Every model's non-empty answers as chat rows, deduplicated and in a fixed order: anchor
    texts that all models read (`transfer.anchor_source: answers`)."""
    from emdir.data.synthetic import chat_row

    keys = {
        (str(r.get("system") or ""), str(r["question"]), str(r["answer"]))
        for path in judged
        for r in read_jsonl(path, required=("question", "answer"))
    }
    rows = [chat_row(q, a, s or None) for s, q, a in keys if a.strip()]
    if len(rows) < 10:
        raise EmdirError(
            f"only {len(rows)} distinct answers to use as anchor texts; sample more answers or "
            "use transfer.anchor_source: dataset"
        )
    rows.sort(key=lambda r: [m["content"] for m in r["messages"]])
    write_jsonl(out, rows)


def text_rows(texts: str | Path, prefix: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Chat-format rows of a dataset file as the rows capture_store reads (id, question,
    system, answer), the first `limit` of them."""
    from emdir.models.chat import split_conversation

    rows = []
    for k, r in enumerate(read_chat_rows(texts)):
        if limit is not None and k >= limit:
            break
        question, system, answer = split_conversation(r["messages"])
        rows.append(
            {
                "id": f"{prefix}_{k}",
                "question_id": f"{prefix}_{k}",
                "question": question,
                "system": system,
                "answer": answer,
            }
        )
    return rows


def anchors(
    model_key: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    texts: str | Path,
    out: str | Path,
    threads: int,
) -> None:
    """The shared anchor texts through one model, pooled per text over the answer tokens."""
    from emdir.analysis.activations import capture_store

    rows = text_rows(texts, "anchor")
    model, tok, spec = _load(base_dir, adapter_dir, threads)
    capture_store(
        model,
        tok,
        spec,
        rows,
        np.full(len(rows), -1, dtype=np.int8),
        out,
        poolings=("answer_mean",),
        attrs={"model": model_key, "anchors": str(texts)},
    )


def fit_map(
    donor_anchors: str | Path,
    receiver_anchors: str | Path,
    out: str | Path,
    map_cfg: Mapping[str, Any],
    donor_layer: int,
    receiver_layer: int,
) -> None:
    """Ridge map from the donor's to the receiver's residual stream at their transfer layers."""
    from emdir.analysis.activations import read_store
    from emdir.analysis.ridge import fit_ridge, write_map
    from emdir.analysis.steering import resolve_layers

    src, dst = read_store(donor_anchors), read_store(receiver_anchors)
    if not np.array_equal(src.ids, dst.ids):
        raise EmdirError(
            f"{donor_anchors} and {receiver_anchors} hold different anchor texts; rerun both"
        )
    lx = resolve_layers(src.layers, int(donor_layer))[0]
    ly = resolve_layers(dst.layers, int(receiver_layer))[0]
    X = src.resid("answer_mean")[:, src.slot(lx)]
    Y = dst.resid("answer_mean")[:, dst.slot(ly)]
    rng = np.random.default_rng(int(map_cfg["seed"]))
    test = rng.random(len(X)) < float(map_cfg["test_fraction"])
    m = fit_ridge(
        X,
        Y,
        [float(a) for a in map_cfg["alphas"]],
        ~test,
        test,
        center=bool(map_cfg["center"]),
        standardize=bool(map_cfg["standardize"]),
        folds=int(map_cfg["cv_folds"]),
        widen=int(map_cfg["alpha_widen"]),
        seed=int(map_cfg["seed"]),
    )
    log.info(
        "map %s -> %s: alpha %g (%d-fold CV R^2 %.3f on train anchors), "
        "held-out R^2 %.3f, CKA %.3f",
        src.attrs.get("model"),
        dst.attrs.get("model"),
        m.alpha,
        m.cv_folds,
        m.r2_cv,
        m.r2_test,
        m.cka_test,
    )
    if m.alpha_at_edge:
        log.warning(
            "map %s -> %s: alpha %g is at the edge of the alphas tried (%s) after widening "
            "%d step(s); extend transfer.alphas or raise transfer.alpha_widen",
            src.attrs.get("model"),
            dst.attrs.get("model"),
            m.alpha,
            ", ".join(f"{a:g}" for a in m.alphas),
            m.alpha_widen,
        )
    write_map(
        out,
        m,
        {
            "donor": str(src.attrs.get("model")),
            "receiver": str(dst.attrs.get("model")),
            "donor_layer": lx,
            "receiver_layer": ly,
            "center": bool(map_cfg["center"]),
            "standardize": bool(map_cfg["standardize"]),
            "emdir_version": __version__,
        },
    )


def transfer_coefficient(transfer_cfg: Mapping[str, Any], read_strength: Any = None) -> float:
    """The grid's steering coefficient: `transfer.coefficient`, or with `read` the receiver's
    within-model read strength from its calibration file."""
    value = transfer_cfg["coefficient"]
    if value != "read":
        return float(value)
    if read_strength is None:
        raise EmdirError(
            "transfer.coefficient is `read` but no calibration file was given to this job"
        )
    data = json.loads(Path(read_strength).read_text())
    return float(data["read_coefficient"])


def _steer_receiver(
    receiver: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    store: Any,
    layer: int,
    questions: str | Path,
    vectors: Mapping[str, np.ndarray],
    outs: Mapping[str, str | Path],
    transfer_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    threads: int,
    extra: Mapping[str, Any],
    read_strength: str | Path | None = None,
) -> None:
    """Subtract each vector (normalised) at c x the receiver's mean residual norm at `layer`:
    the same magnitude for the mapped direction, its controls and the references. `extra`
    goes into every row; c comes from `transfer_coefficient`."""
    from emdir.analysis.interventions import Intervention
    from emdir.data.questions import load_questions
    from emdir.models.generate import expand

    unknown = sorted(set(outs) - set(vectors))
    if unknown:
        raise EmdirError(f"transfer outputs requested for unknown vectors {unknown}")
    scale = store.resid_norm(layer)
    coefficient = transfer_coefficient(transfer_cfg, read_strength)
    model, tok, spec = _load(base_dir, adapter_dir, threads)
    prompts = expand(load_questions(questions))
    pieces = _pieces(
        outs,
        [base_dir, adapter_dir, questions],
        {name: vectors[name] for name in outs},
        {
            "receiver": receiver,
            "layer": layer,
            "scale": scale,
            "coefficient": coefficient,
            "transfer": transfer_cfg,
            "sampling": sampling_cfg,
            "threads": threads,
            "extra": extra,
        },
    )
    for name, path in outs.items():
        iv = Intervention(
            layer=layer,
            vector=vectors[name],
            op="subtract",
            coefficient=coefficient,
            scale=scale,
            positions="all",
            name=name,
        )
        desc = f"{extra.get('donor', '')}->{receiver} {name}"
        rows = pieces.rows(
            name,
            lambda iv=iv, desc=desc: _steered_rows(
                model,
                tok,
                spec,
                prompts,
                [iv],
                sampling_cfg,
                receiver,
                str(transfer_cfg["ft"]),
                desc=desc,
            ),
        )
        for row in rows:
            row.update(extra)
            row["question_set"] = Path(questions).stem
        write_jsonl(path, rows)
    pieces.finish()


def transfer(
    donor: str,
    receiver: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    donor_directions: str | Path,
    receiver_store: str | Path,
    map_path: str | Path,
    questions: str | Path,
    outs: Mapping[str, str | Path],
    transfer_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    threads: int,
    donor_controls: Mapping[str, str | Path] | None = None,
    read_strength: str | Path | None = None,
) -> None:
    """Steer the receiver with the donor's mapped direction and with controls through the same
    map. `transfer.mapped`: `difference` maps the donor's difference in means; `class_means`
    maps each class mean through the affine map and subtracts. `donor_controls` maps
    fine-tune keys to the donor's directions files for `<ft>_direction` controls;
    `read_strength` is the receiver's calibration file when `transfer.coefficient` is `read`."""
    from emdir.analysis import directions as dm
    from emdir.analysis.activations import read_store
    from emdir.analysis.ridge import map_class_means, map_vector, read_map
    from emdir.analysis.steering import site_vectors, unit_at

    m = read_map(map_path)
    dd = dm.read_directions(donor_directions)
    st = read_store(receiver_store)
    lx, ly = int(m.attrs["donor_layer"]), int(m.attrs["receiver_layer"])
    donor_v = unit_at(dd, lx)
    mode = transfer_cfg["mapped"]
    if mode == "class_means":
        pos, neg = dd.class_means_at(lx)
        target = map_class_means(m, pos, neg)
    elif mode == "difference":
        target = map_vector(m, donor_v)
    else:
        raise EmdirError(f"transfer.mapped {mode!r} is unknown; use difference or class_means")
    # The same control registry as within-model steering, built in the donor's space at
    # the donor's layer, drawn afresh for this cell, and mapped through the same map.
    others = {k: dm.read_directions(p) for k, p in (donor_controls or {}).items()}
    vectors: dict[str, np.ndarray] = {"target": target}
    for name in outs:
        if name == "target":
            continue
        donor_space = site_vectors(
            name,
            [lx],
            dd,
            others,
            wrong_layer=int(transfer_cfg["wrong_layer"]),
            seed=int(transfer_cfg["seed"]),
            stream=f"{donor}->{receiver}",
        )[lx]
        vectors[name] = map_vector(m, donor_space)
    _steer_receiver(
        receiver,
        base_dir,
        adapter_dir,
        st,
        ly,
        questions,
        vectors,
        outs,
        transfer_cfg,
        sampling_cfg,
        threads,
        {"donor": donor},
        read_strength,
    )


def transfer_reference(
    receiver: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    receiver_directions: str | Path,
    receiver_store: str | Path,
    questions: str | Path,
    outs: Mapping[str, str | Path],
    layer: int,
    transfer_cfg: Mapping[str, Any],
    sampling_cfg: Mapping[str, Any],
    threads: int,
    read_strength: str | Path | None = None,
) -> None:
    """Per receiver, at the magnitude of the grid's cells: a random vector in the receiver's
    own space (`random_receiver`, a control shared by the receiver's column) and the
    receiver's own direction (`own`, the diagonal reference)."""
    from emdir.analysis import directions as dm
    from emdir.analysis.activations import read_store
    from emdir.analysis.steering import resolve_layers, stream_seed, unit_at

    rd = dm.read_directions(receiver_directions)
    st = read_store(receiver_store)
    ly = resolve_layers(st.layers, int(layer))[0]
    own = unit_at(rd, ly)
    vectors = {
        "random_receiver": dm.random_unit(
            own.size, [*stream_seed(int(transfer_cfg["seed"]), receiver), ly]
        ),
        "own": own,
    }
    _steer_receiver(
        receiver,
        base_dir,
        adapter_dir,
        st,
        ly,
        questions,
        vectors,
        outs,
        transfer_cfg,
        sampling_cfg,
        threads,
        {"donor": None, "reference": True},
        read_strength,
    )


# ---------------------------------------------------------------- aggregation
# Imported lazily: pandas and matplotlib would slow every other rule's start.


def within_model_summary(**kwargs: Any) -> None:
    """Spillover rates, steering effects with CIs and specificity, separation; CSVs and figures."""
    from emdir.report.aggregate import within_model_summary as run

    run(**kwargs)


def read_strength(**kwargs: Any) -> None:
    """One model's read strength (steering.read) as JSON, for the transfer grid."""
    from emdir.report.aggregate import read_strength as run

    run(**kwargs)


def transfer_matrix(**kwargs: Any) -> None:
    """The N x N donor/receiver grid: suppression with CIs, controls, specificity; CSV and PNG."""
    from emdir.report.aggregate import transfer_matrix as run

    run(**kwargs)


def training_curves(**kwargs: Any) -> None:
    """Base-model and fine-tune training logs: one figure and one CSV row per run."""
    from emdir.report.aggregate import training_curves as run

    run(**kwargs)
