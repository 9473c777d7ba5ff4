"""Transfer stages: anchor texts through every model, ridge maps between residual streams,
and each receiver steered with a donor's mapped direction, its controls through the same map
and its own references (rules anchor_answers, anchors, fit_map, transfer, transfer_reference).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emdir import __version__
from emdir.errors import EmdirError
from emdir.io import read_jsonl, write_jsonl
from emdir.models.load import load_for_inference

log = logging.getLogger(__name__)


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


def anchors(
    model_key: str,
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    texts: str | Path,
    out: str | Path,
    threads: int,
) -> None:
    """The shared anchor texts through one model, pooled per text over the answer tokens."""
    from emdir.analysis.activations import capture_store, text_rows

    rows = text_rows(texts, "anchor")
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
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
    from emdir.analysis.controls import resolve_layers
    from emdir.analysis.ridge import anchor_split, fit_ridge, write_map

    src, dst = read_store(donor_anchors), read_store(receiver_anchors)
    if not np.array_equal(src.ids, dst.ids):
        raise EmdirError(
            f"{donor_anchors} and {receiver_anchors} hold different anchor texts; rerun both"
        )
    lx = resolve_layers(src.layers, int(donor_layer))[0]
    ly = resolve_layers(dst.layers, int(receiver_layer))[0]
    X = src.resid("answer_mean")[:, src.slot(lx)]
    Y = dst.resid("answer_mean")[:, dst.slot(ly)]
    test = anchor_split(len(X), float(map_cfg["test_fraction"]), int(map_cfg["seed"]))
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
    goes into every row; c comes from `transfer_coefficient`. The vectors are sampled in shared
    batches (`sample_conditions`); a killed job resumes at its first unfinished batch
    (`emdir.resume`)."""
    from emdir.analysis.interventions import Intervention
    from emdir.analysis.steering import sample_conditions
    from emdir.data.questions import load_questions
    from emdir.models.generate import SamplingParams, expand
    from emdir.resume import pieces_beside

    unknown = sorted(set(outs) - set(vectors))
    if unknown:
        raise EmdirError(f"transfer outputs requested for unknown vectors {unknown}")
    scale = store.resid_norm(layer)
    coefficient = transfer_coefficient(transfer_cfg, read_strength)
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    prompts = expand(load_questions(questions))
    sampling = SamplingParams(**sampling_cfg)
    pieces = pieces_beside(
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
    conditions = {
        name: [
            Intervention(
                layer=layer,
                vector=vectors[name],
                op="subtract",
                coefficient=coefficient,
                scale=scale,
                positions="all",
                name=name,
            )
        ]
        for name in outs
    }
    desc = f"{extra.get('donor', '')}->{receiver}"
    drawn = sample_conditions(
        model, tok, prompts, conditions, sampling, receiver, str(transfer_cfg["ft"]), desc, pieces
    )
    for name, path in outs.items():
        rows = drawn[name]
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
    from emdir.analysis.controls import TARGET, site_vectors, unit_at
    from emdir.analysis.ridge import map_class_means, map_vector, read_map

    m = read_map(map_path)
    dd = dm.read_directions(donor_directions)
    st = read_store(receiver_store)
    lx, ly = int(m.attrs["donor_layer"]), int(m.attrs["receiver_layer"])
    mode = transfer_cfg["mapped"]
    if mode == "class_means":
        pos, neg = dd.class_means_at(lx)
        target = map_class_means(m, pos, neg)
    elif mode == "difference":
        target = map_vector(m, unit_at(dd, lx))
    else:
        raise EmdirError(f"transfer.mapped {mode!r} is unknown; use difference or class_means")
    # The controls are built in the donor's space at the donor's layer, drawn afresh for this
    # cell, and mapped through the same map.
    others = {k: dm.read_directions(p) for k, p in (donor_controls or {}).items()}
    vectors: dict[str, np.ndarray] = {TARGET: target}
    for name in outs:
        if name == TARGET:
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
    from emdir.analysis.controls import RANDOM_RECEIVER, TARGET, resolve_layers, site_vectors

    rd = dm.read_directions(receiver_directions)
    st = read_store(receiver_store)
    ly = resolve_layers(st.layers, int(layer))[0]
    seed = int(transfer_cfg["seed"])
    vectors = {
        RANDOM_RECEIVER: site_vectors(RANDOM_RECEIVER, [ly], rd, seed=seed, stream=receiver)[ly],
        "own": site_vectors(TARGET, [ly], rd)[ly],
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
