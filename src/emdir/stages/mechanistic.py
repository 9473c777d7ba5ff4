"""Stage entry points of the mechanistic extensions (SCIENCE.md sections 2-3), one per rule.

All outputs live under results/mechanistic/{model}/:

- `base_directions`: the base model's difference-in-means direction on a fine-tune's own
  labelled answers (same sequences, same labels), for the base-vs-fine-tuned cosine;
- `convergence`: cosines per layer between the directions of the model's fine-tunes, and
  between each fine-tune's direction and the base model's on the same sequences;
- `ablation`: Soligo et al.'s transfer ablation: fine-tune A's direction projected out of
  fine-tune B at every layer, layer-wise (each layer its own direction) or as one direction
  (A's direction at `steering.layer`) at all layers, next to random unit directions ablated
  the same way;
- `induce`: the direction added to the base chat model over a coefficient sweep, with random
  vectors of the same magnitude;
- `rank1`: the rank-1 fine-tune's adapters read out: B-vector cosines with the directions at
  their layers, the scalars A.x per answer token, and a cross-validated logistic regression
  on them predicting the label (spillover / misaligned) of the answer;
- `sae`: the direction decomposed into sparse-autoencoder features (decoder cosine; encoder
  activation difference between the classes), the features that differ between the two
  training datasets, and the overlap of those feature sets;
- `summary` (emdir.report.mechanistic): effects with CIs, self-correction, figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.analysis.controls import SINGLE, split_variant
from emdir.errors import EmdirError
from emdir.io import atomic_path, read_jsonl, write_json, write_jsonl
from emdir.models.load import load_for_inference
from emdir.stages.directions import activations, directions

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- model rules


def base_directions(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    judged: str | Path,
    store_out: str | Path,
    directions_out: str | Path,
    dir_cfg: Mapping[str, Any],
    act_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    threads: int,
) -> None:
    """The base model reads fine-tune `ft`'s answers, labelled as the fine-tune's are
    (`directions.label`), and gets its own difference-in-means direction per layer."""
    cfg = {**dir_cfg, "contrast": "responses"}
    activations(model_key, ft, base_dir, None, judged, store_out, cfg, act_cfg, threads)
    directions(store_out, directions_out, cfg, stats_cfg)


def ablation(
    model_key: str,
    receiver: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    donor_directions: Mapping[str, str | Path],
    questions: str | Path,
    outs: Mapping[str, str | Path],
    single_layer: int,
    sampling_cfg: Mapping[str, Any],
    seed: int,
    threads: int,
) -> None:
    """Generate with each variant's directions projected out at every captured layer: a donor
    fine-tune's direction, or a random control from the control registry drawn in the stream
    "<model>/ablation" (the same random vectors for every receiver of the model)."""
    from emdir.analysis import directions as dm
    from emdir.analysis.controls import resolve_layers, site_vectors
    from emdir.analysis.interventions import Intervention
    from emdir.analysis.steering import sample_conditions
    from emdir.data.questions import load_questions
    from emdir.models.generate import SamplingParams, expand

    donors = {ft: dm.read_directions(p) for ft, p in donor_directions.items()}
    if not donors:
        raise EmdirError("mechanistic.ablation.donors is empty: name at least one fine-tune")
    first = next(iter(donors.values()))
    layers = [int(v) for v in first.attrs["layers"]]
    single = resolve_layers(layers, single_layer)[0]
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    prompts = expand(load_questions(questions))
    conditions = {}
    for name in outs:
        source, mode = split_variant(name)
        if source in donors:
            # The donor's direction is the "target" its own registry entry returns.
            target, vector = donors[source], "target"
        elif source.startswith("random_"):
            target, vector = first, source
        else:
            raise EmdirError(f"ablation variant {name!r}: no directions for fine-tune {source!r}")
        at = site_vectors(
            vector,
            [single] if mode == SINGLE else layers,
            target,
            seed=seed,
            stream=f"{model_key}/ablation",
        )
        # single: the vector of the steering layer at every layer; layerwise: each its own.
        vecs = {layer: at[single] if mode == SINGLE else at[layer] for layer in layers}
        conditions[name] = [
            Intervention(layer=layer, vector=v, op="ablate", coefficient=1.0, name=name)
            for layer, v in vecs.items()
        ]
    drawn = sample_conditions(
        model,
        tok,
        prompts,
        conditions,
        SamplingParams(**sampling_cfg),
        model_key,
        receiver,
        f"{model_key}/{receiver} ablate",
    )
    for name, path in outs.items():
        rows = drawn[name]
        for row in rows:
            row["question_set"] = Path(questions).stem
            row["variant"] = name
        write_jsonl(path, rows)


def rank1(
    model_key: str,
    ft: str,
    base_dir: str | Path,
    adapter_dir: str | Path,
    judged: str | Path,
    direction_files: Mapping[str, str | Path],
    out_csv: str | Path,
    out_json: str | Path,
    out_png: str | Path,
    rank_cfg: Mapping[str, Any],
    dir_cfg: Mapping[str, Any],
    batch_size: int,
    threads: int,
) -> None:
    """Read the rank-1 fine-tune: B cosines, per-answer A.x scalars, and a CV probe on them."""
    from emdir.analysis import directions as dm
    from emdir.analysis.labels import labels as label_rows
    from emdir.mechanistic import rank1 as r1
    from emdir.mechanistic.probe import logistic_cv
    from emdir.report import figures_mechanistic as plots

    qset = dir_cfg["question_set"]
    rows = [r for r in read_jsonl(judged) if r.get("question_set") == qset]
    labels = label_rows(rows, dir_cfg["label"], float(dir_cfg["aligned_above"]))
    keep = labels >= 0
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    labels = labels[keep]
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    sites = r1.adapter_sites(model)
    table = pd.DataFrame(
        {
            "adapter": [s.name for s in sites],
            "layer": [s.layer for s in sites],
            "module": [s.module for s in sites],
            "b_norm": [float(np.linalg.norm(s.b)) for s in sites],
        }
    )
    for label, path in direction_files.items():
        d = dm.read_directions(path)
        by_layer = {int(layer): d.unit[i] for i, layer in enumerate(d.attrs["layers"])}
        cos = r1.b_cosines(sites, by_layer)
        table[f"cosine_{label}"] = [c["cosine"] for c in cos]
    rec = r1.record_scalars(model, tok, spec, rows, batch_size=batch_size)
    ok = ~rec.empty
    X, y = rec.per_answer_mean[ok], labels[ok]
    probe = logistic_cv(
        X, y, folds=int(rank_cfg["folds"]), l2=float(rank_cfg["l2"]), seed=int(dir_cfg["seed"])
    )
    table["coef"] = probe.coef
    table["scalar_mean_pos"] = X[y == 1].mean(axis=0)
    table["scalar_mean_neg"] = X[y == 0].mean(axis=0)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_json(
        out_json,
        {
            "model": model_key,
            "ft": ft,
            "label_rule": dir_cfg["label"],
            "question_set": qset,
            "n_pos": int((y == 1).sum()),
            "n_neg": int((y == 0).sum()),
            "n_empty_skipped": int((~ok).sum()),
            "folds": probe.folds,
            "l2": float(rank_cfg["l2"]),
            "accuracy": probe.accuracy,
            "fold_accuracy": probe.fold_accuracy,
            "auroc": probe.auroc,
            "majority_baseline": probe.majority_baseline,
        },
    )
    plots.rank1_png(table, probe.accuracy, probe.majority_baseline, out_png, f"{model_key}/{ft}")


def sae(
    model_key: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    store: str | Path,
    directions_file: str | Path,
    datasets: Mapping[str, str | Path],
    out_dir: str | Path,
    out_csv: str | Path,
    out_json: str | Path,
    out_png: str | Path,
    sae_cfg: Mapping[str, Any],
    dir_cfg: Mapping[str, Any],
    threads: int,
) -> None:
    """Decompose the direction at one layer into SAE features and compare them with the
    features that differ between the two training datasets."""
    import tempfile

    from emdir.analysis import directions as dm
    from emdir.analysis.activations import capture_store, read_store, text_rows
    from emdir.analysis.controls import resolve_layers
    from emdir.mechanistic import sae as sm
    from emdir.report import figures_mechanistic as plots

    st = read_store(store)
    layer = resolve_layers(st.layers, int(sae_cfg["layer"]))[0]
    pooling = dir_cfg["pooling"]
    X = st.resid(pooling)[:, st.slot(layer)].astype(np.float32)
    labelled = st.labels >= 0
    X_pos, X_neg = X[st.labels == 1], X[st.labels == 0]
    d = dm.read_directions(directions_file)
    layers = [int(v) for v in d.attrs["layers"]]
    v = d.raw[layers.index(layer)]
    names = list(datasets)
    if len(names) != 2:
        raise EmdirError(f"mechanistic.sae.datasets must name two datasets, not {names}")
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    train_X = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows = text_rows(datasets[name], name, int(sae_cfg["training_examples"]))
            path = Path(tmp) / f"{name}.h5"
            capture_store(
                model,
                tok,
                spec,
                rows,
                np.full(len(rows), -1, dtype=np.int8),
                path,
                layers=[layer],
                poolings=(pooling,),
                attrs={"model": model_key, "dataset": name},
            )
            train_X[name] = read_store(path).resid(pooling)[:, 0].astype(np.float32)
    source = sae_cfg["source"]
    train_log: list[dict[str, Any]] = []
    if source == "pretrained":
        if not sae_cfg["release"] or not sae_cfg["sae_id"]:
            raise EmdirError("mechanistic.sae.source = pretrained needs `release` and `sae_id`")
        model_sae = sm.load_pretrained(str(sae_cfg["release"]), str(sae_cfg["sae_id"]), "cpu")
    else:
        model_sae = sm.build_sae(X.shape[1], int(sae_cfg["d_sae"]), int(sae_cfg["seed"]))
        if source == "train":
            pool = np.concatenate([X[labelled], *train_X.values()])
            train_log = sm.train_sae(
                model_sae,
                pool,
                steps=int(sae_cfg["steps"]),
                batch_size=int(sae_cfg["batch_size"]),
                lr=float(sae_cfg["lr"]),
                l1=float(sae_cfg["l1"]),
                seed=int(sae_cfg["seed"]),
            )
    sm.save_sae(model_sae, out_dir)
    k = int(sae_cfg["top_k"])
    dec = sm.decompose_direction(model_sae, v, None, None, X_pos, X_neg, k)
    diff = sm.feature_difference(model_sae, train_X[names[0]], train_X[names[1]], k)
    rows_out = (
        [
            ("direction_decoder_cosine", f, s)
            for f, s in zip(dec.by_decoder, dec.decoder_cosine, strict=True)
        ]
        + [
            ("direction_activation_diff", f, s)
            for f, s in zip(dec.by_activation, dec.activation_diff, strict=True)
        ]
        + [
            (f"training_{names[0]}_minus_{names[1]}", f, s)
            for f, s in zip(diff.features, diff.diff, strict=True)
        ]
    )
    table = pd.DataFrame(rows_out, columns=["ranking", "feature", "score"])
    table.insert(1, "rank", table.groupby("ranking").cumcount() + 1)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    summary = {
        "model": model_key,
        "layer": layer,
        "pooling": pooling,
        "source": source,
        "d_sae": int(np.asarray(model_sae.W_dec.shape)[0]),
        "top_k": k,
        "n_pos": int(len(X_pos)),
        "n_neg": int(len(X_neg)),
        "training_examples": {n: int(len(a)) for n, a in train_X.items()},
        "final_train_fvu": train_log[-1]["fvu"] if train_log else None,
        "train_steps": len(train_log),
        "overlap_decoder_vs_activation": sm.overlap(dec.by_decoder, dec.by_activation),
        "overlap_decoder_vs_training": sm.overlap(dec.by_decoder, diff.features),
        "overlap_activation_vs_training": sm.overlap(dec.by_activation, diff.features),
    }
    if source == "pretrained":
        summary.update(release=sae_cfg["release"], sae_id=sae_cfg["sae_id"])
    write_json(out_json, summary)
    plots.sae_png(table, summary, out_png, f"{model_key} layer {layer}")
