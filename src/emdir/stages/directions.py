"""Activation and direction stages: a fine-tune's residual stream in HDF5 and its
difference-in-means direction per layer (rules activations, directions)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emdir import __version__
from emdir.errors import EmdirError
from emdir.io import read_jsonl
from emdir.models.load import load_for_inference


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
    """Residual-stream store for the direction of one fine-tune, in the configured contrast
    (`emdir.analysis.labels.contrast`)."""
    from emdir.analysis.activations import capture_layers, capture_store
    from emdir.analysis.labels import contrast

    qset = dir_cfg["question_set"]
    rows = [r for r in read_jsonl(judged) if r.get("question_set") == qset]
    if not rows:
        raise EmdirError(
            f"{judged}: no answers to question set {qset!r}; check directions.question_set"
        )
    kind = dir_cfg["contrast"]
    rows, labels, adapter_off = contrast(
        rows,
        kind,
        dir_cfg["label"],
        float(dir_cfg["aligned_above"]),
        adapter_dir is not None,
        f"{model_key}/{ft}",
        str(judged),
    )
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    capture_store(
        model,
        tok,
        spec,
        rows,
        labels,
        out,
        layers=capture_layers(model, act_cfg["layers"]),
        poolings=tuple(act_cfg["poolings"]),
        batch_size=int(act_cfg["batch_size"]),
        dtype=str(act_cfg["dtype"]),
        adapter_off=adapter_off,
        attrs={
            "model": model_key,
            "ft": ft,
            "contrast": kind,
            "label_rule": dir_cfg["label"] if kind == "responses" else "fine-tuned vs base",
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
    fit = dm.fit_direction(
        st.resid(dir_cfg["pooling"]),
        st.labels,
        st.question_ids,
        balance_classes=bool(dir_cfg["balance"]),
        test_fraction=float(dir_cfg["test_fraction"]),
        min_per_class=int(dir_cfg["min_per_class"]),
        seed=int(dir_cfg["seed"]),
        where=str(store),
    )
    dm.write_directions(
        out,
        fit.raw,
        fit.separation.accuracy,
        fit.separation.auroc,
        fit.counts,
        {
            **{k: v for k, v in st.attrs.items() if isinstance(v, str | int | float)},
            "layers": st.layers.tolist(),
            "pooling": dir_cfg["pooling"],
            "resid_norm": st.token_norm_mean.tolist(),
            "emdir_version": __version__,
        },
        fit.separation.projection,
        fit.means,
    )
