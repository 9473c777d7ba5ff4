"""Difference-in-means directions, question-level splits, separation metrics, and their file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import ArrayLike

from emdir.analysis.controls import unit
from emdir.analysis.hdf5 import ROW_BLOCK, first_nonfinite, get_attrs, set_attrs
from emdir.errors import EmdirError
from emdir.io import atomic_path
from emdir.provenance import stamp


@dataclass(frozen=True, eq=False)
class Directions:
    """The contents of a directions file."""

    raw: np.ndarray
    unit: np.ndarray
    norm: np.ndarray
    accuracy: np.ndarray
    auroc: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    projection: Projections | None = None
    mean_pos: np.ndarray | None = None
    mean_neg: np.ndarray | None = None

    def class_means_at(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(class-1 mean, class-0 mean) at model layer `layer`."""
        if self.mean_pos is None or self.mean_neg is None:
            raise EmdirError("this directions file has no class means; rerun the directions rule")
        layers = [int(v) for v in self.attrs["layers"]]
        if layer not in layers:
            raise EmdirError(f"the directions file has no layer {layer} (layers: {layers})")
        i = layers.index(layer)
        return self.mean_pos[i], self.mean_neg[i]


@dataclass(frozen=True, eq=False)
class Projections:
    """Every labelled sample's projection onto the direction, per layer, and the fitted
    threshold: enough to redraw the class histograms and to bootstrap the held-out accuracy."""

    values: np.ndarray  # [N, L]
    label: np.ndarray  # [N] bool
    heldout: np.ndarray  # [N] bool
    threshold: np.ndarray  # [L]

    def heldout_correct(self, slot: int) -> np.ndarray:
        """1.0 where the threshold classifies a held-out sample at layer slot `slot` correctly."""
        test = self.heldout
        pred = self.values[test, slot] > self.threshold[slot]
        return (pred == self.label[test]).astype(np.float64)


@dataclass(frozen=True, eq=False)
class Separation:
    """Held-out separation per layer, with the projections it was computed from."""

    accuracy: np.ndarray
    auroc: np.ndarray
    projection: Projections


def class_means(X: Any, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(mean of X[label == 1], mean of X[label == 0]) per layer: [N, L, d] -> 2 x [L, d],
    accumulated in float64 over blocks of rows."""
    y = _labels(labels, "labels")
    if len(X.shape) != 3 or X.shape[0] != y.size:
        raise EmdirError(
            f"activations have shape {tuple(X.shape)} but {y.size} labels were given; "
            "expected [N, L, d] with one label per sample"
        )
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise EmdirError(
            f"difference in means needs both classes, got {n_pos} positive (misaligned) and "
            f"{n_neg} negative (aligned) samples; generate more samples or change the label "
            "threshold"
        )
    sum_pos = np.zeros(X.shape[1:], dtype=np.float64)
    sum_neg = np.zeros(X.shape[1:], dtype=np.float64)
    for start in range(0, y.size, ROW_BLOCK):
        block = np.asarray(X[start : start + ROW_BLOCK], dtype=np.float64)
        _require_finite(block, start)
        lab = y[start : start + ROW_BLOCK]
        sum_pos += block[lab].sum(axis=0)
        sum_neg += block[~lab].sum(axis=0)
    return sum_pos / n_pos, sum_neg / n_neg


def diff_in_means(X: Any, labels: ArrayLike) -> np.ndarray:
    """mean(X[label == 1]) - mean(X[label == 0]) per layer: [N, L, d] -> [L, d], in float64."""
    pos, neg = class_means(X, labels)
    return pos - neg


def balance(labels: ArrayLike, groups: ArrayLike | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices keeping every sample of the smaller class and as many of the larger.

    The larger class is subsampled at random (deterministic by `seed`); with `groups`, the kept
    samples are spread across groups as evenly as possible, so that no single question dominates.
    """
    y = _labels(labels, "labels")
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if pos.size == 0 or neg.size == 0:
        raise EmdirError(
            f"cannot balance classes: {pos.size} positive and {neg.size} negative samples; "
            "generate more samples or change the label threshold"
        )
    small, large = (pos, neg) if pos.size <= neg.size else (neg, pos)
    rng = np.random.default_rng(seed)
    order = rng.permutation(large)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise EmdirError(f"groups has shape {g.shape} but labels has shape {y.shape}")
        # Rank each sample within its group (in shuffled order) and keep the lowest ranks
        # first: a round-robin over groups.
        _, inverse = np.unique(g[order], return_inverse=True)
        by_group = np.argsort(inverse, kind="stable")
        sorted_groups = inverse[by_group]
        rank = np.empty(order.size, dtype=np.int64)
        rank[by_group] = np.arange(order.size) - np.searchsorted(sorted_groups, sorted_groups)
        order = order[np.argsort(rank, kind="stable")]
    return np.sort(np.concatenate([small, order[: small.size]]))


def split_by_group(
    groups: ArrayLike, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks that split by group (question id), never within a group.

    Deterministic for a given set of groups and seed, whatever the sample order.
    """
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise EmdirError("split_by_group needs a non-empty 1-D array of question ids")
    if not 0.0 < test_fraction < 1.0:
        raise EmdirError(f"test_fraction must be between 0 and 1 (e.g. 0.25), got {test_fraction}")
    uniq = np.unique(g)
    if uniq.size < 2:
        raise EmdirError(
            f"a held-out split by question needs at least 2 distinct questions, got {uniq.size}; "
            "add evaluation questions"
        )
    n_test = min(uniq.size - 1, max(1, round(test_fraction * uniq.size)))
    test_groups = np.random.default_rng(seed).permutation(uniq)[:n_test]
    test = np.isin(g, test_groups)
    return ~test, test


def project(X: Any, direction: np.ndarray) -> np.ndarray:
    """Per-layer projections onto the unit direction: [N, L, d] x [L, d] -> [N, L]."""
    u = unit(direction)
    if tuple(X.shape[1:]) != u.shape:
        raise EmdirError(
            f"direction has shape {u.shape} but activations have per-sample shape "
            f"{tuple(X.shape[1:])}; were they made from the same model?"
        )
    out = np.empty((X.shape[0], u.shape[0]))
    for start in range(0, X.shape[0], ROW_BLOCK):
        block = np.asarray(X[start : start + ROW_BLOCK], dtype=np.float64)
        _require_finite(block, start)
        out[start : start + ROW_BLOCK] = np.einsum("nld,ld->nl", block, u)
    return out


def separation(
    X: Any,
    labels: ArrayLike,
    train_mask: ArrayLike,
    test_mask: ArrayLike,
    direction: np.ndarray,
) -> Separation:
    """Held-out accuracy and AUROC per layer of a threshold on the projection onto `direction`.

    The direction's sign is kept (positive projection = label 1); the threshold is the midpoint
    between sorted train projections that maximises train accuracy. AUROC is computed on the
    test side from ranks (ties count one half) and is NaN when the test side lacks a class.
    """
    y = _labels(labels, "labels")
    train = np.asarray(train_mask, dtype=bool)
    test = np.asarray(test_mask, dtype=bool)
    if train.shape != y.shape or test.shape != y.shape:
        raise EmdirError(
            f"train/test masks have shapes {train.shape}, {test.shape}; expected {y.shape}"
        )
    if not test.any():
        raise EmdirError("the held-out (test) side is empty; raise test_fraction")
    if y[train].all() or not y[train].any():
        raise EmdirError(
            f"the train side has {int(y[train].sum())} positive and {int((~y[train]).sum())} "
            "negative samples; both classes are needed to choose a threshold "
            "(generate more samples or change the label threshold)"
        )
    proj = project(X, direction)
    n_layers = proj.shape[1]
    accuracy = np.empty(n_layers)
    auroc = np.empty(n_layers)
    threshold = np.empty(n_layers)
    for layer in range(n_layers):
        threshold[layer] = thr = _best_threshold(proj[train, layer], y[train])
        accuracy[layer] = np.mean((proj[test, layer] > thr) == y[test])
        auroc[layer] = auroc_from_ranks(proj[test, layer], y[test])
    keep = train | test
    return Separation(accuracy, auroc, Projections(proj[keep], y[keep], test[keep], threshold))


def auroc_from_ranks(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count one half); NaN if either class is absent."""
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class Fitted:
    """A direction fitted on some questions and tested on the others."""

    raw: np.ndarray  # [L, d] mean(behaviour) - mean(absence)
    means: tuple[np.ndarray, np.ndarray]  # class means (behaviour, absence), [L, d] each
    separation: Separation
    counts: dict[str, int]  # pos/neg x train/test


def fit_direction(
    X: Any,
    labels: ArrayLike,
    groups: ArrayLike,
    *,
    balance_classes: bool,
    test_fraction: float,
    min_per_class: int,
    seed: int,
    where: str,
) -> Fitted:
    """Difference in means per layer of the labelled rows of X [N, L, d] (label -1 is left
    out), fitted on a question-level split and its separation measured on held-out questions.

    With `balance_classes` the larger class is subsampled within questions first. Fewer than
    `min_per_class` training rows in a class is an error naming `where` (the store)."""
    y_all = np.asarray(labels)
    keep = np.flatnonzero(y_all >= 0)
    y = y_all[keep].astype(int)
    g = np.asarray(groups)[keep].astype(str)
    if balance_classes:
        idx = balance(y, g, seed=seed)
        keep, y, g = keep[idx], y[idx], g[idx]
    train, test = split_by_group(g, test_fraction, seed=seed)
    counts = {
        "pos_train": int(y[train].sum()),
        "neg_train": int((y[train] == 0).sum()),
        "pos_test": int(y[test].sum()),
        "neg_test": int((y[test] == 0).sum()),
    }
    if min(counts["pos_train"], counts["neg_train"]) < min_per_class:
        raise EmdirError(
            f"{where}: too few answers per class to fit a direction ({counts}); need "
            f"{min_per_class} of each on the training questions. Sample more answers "
            "(questions.*.samples) or lower directions.min_per_class"
        )
    Xk = X[keep]
    means = class_means(Xk[train], y[train])
    raw = means[0] - means[1]
    return Fitted(raw, means, separation(Xk, y, train, test, raw), counts)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of an [L, d] array (rows need not be unit)."""
    u = unit(vectors)
    return np.clip(u @ u.T, -1.0, 1.0)


def write_directions(
    path: str | Path,
    raw: np.ndarray,
    accuracy: np.ndarray,
    auroc: np.ndarray,
    counts: Mapping[str, int],
    attrs: Mapping[str, Any],
    projection: Projections | None = None,
    means: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write a directions file atomically: /dim/{raw,unit,norm}, /separation/*, /counts, attrs,
    with `projection` /projection/{values,label,heldout} and /separation/threshold, and with
    `means` /dim/mean_pos and /dim/mean_neg (the class means the difference was taken of)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2:
        raise EmdirError(f"directions must be [L, d], got shape {raw.shape}")
    acc = np.asarray(accuracy, dtype=np.float64)
    auc = np.asarray(auroc, dtype=np.float64)
    if acc.shape != (raw.shape[0],) or auc.shape != (raw.shape[0],):
        raise EmdirError(
            f"separation metrics have shapes {acc.shape}, {auc.shape}; expected ({raw.shape[0]},)"
        )
    u = unit(raw)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["dim/raw"] = raw
        f["dim/unit"] = u
        f["dim/norm"] = np.linalg.norm(raw, axis=-1)
        f["separation/accuracy"] = acc
        f["separation/auroc"] = auc
        set_attrs(f.create_group("counts"), {k: int(v) for k, v in counts.items()})
        if means is not None:
            f["dim/mean_pos"], f["dim/mean_neg"] = means
        if projection is not None:
            f["separation/threshold"] = projection.threshold
            f["projection/values"] = projection.values
            f["projection/label"] = projection.label
            f["projection/heldout"] = projection.heldout
        set_attrs(f, {**stamp(), **attrs})


def read_directions(path: str | Path) -> Directions:
    """Read a file written by `write_directions`."""
    p = Path(path)
    if not p.exists():
        raise EmdirError(f"{p}: directions file not found; run the directions rule first")
    with h5py.File(p, "r") as f:
        try:
            return Directions(
                raw=f["dim/raw"][()],
                unit=f["dim/unit"][()],
                norm=f["dim/norm"][()],
                accuracy=f["separation/accuracy"][()],
                auroc=f["separation/auroc"][()],
                counts={k: int(v) for k, v in get_attrs(f["counts"]).items()},
                attrs=get_attrs(f),
                projection=Projections(
                    values=f["projection/values"][()],
                    label=f["projection/label"][()].astype(bool),
                    heldout=f["projection/heldout"][()].astype(bool),
                    threshold=f["separation/threshold"][()],
                )
                if "projection" in f
                else None,
                mean_pos=f["dim/mean_pos"][()] if "dim/mean_pos" in f else None,
                mean_neg=f["dim/mean_neg"][()] if "dim/mean_neg" in f else None,
            )
        except KeyError as exc:
            raise EmdirError(
                f"{p}: not a complete directions file ({exc}); delete it and rerun"
            ) from None


def _require_finite(block: np.ndarray, start: int) -> None:
    # Activation stores are checked when read (`ActivationStore.resid`); this catches arrays
    # from elsewhere, where a NaN would otherwise score as a silent misclassification.
    hit = first_nonfinite(block)
    if hit is not None:
        raise EmdirError(
            f"activations at row {start + hit[0]}, layer slot {hit[1]} are NaN or inf; "
            "check where the array came from (a float16 overflow, a corrupt store)"
        )


def _labels(labels: ArrayLike, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise EmdirError(f"{name}: expected a 1-D array, got shape {y.shape}")
    if y.dtype != bool:
        if not np.all(np.isin(y, (0, 1))):
            raise EmdirError(f"{name}: expected booleans or 0/1 values")
        y = y.astype(bool)
    return y


def _best_threshold(proj: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(proj, kind="stable")
    s, ys = proj[order], y[order]
    n = s.size
    # Cutting before sorted position i predicts 0 for s[:i] and 1 for s[i:]; i = 0 and i = n
    # are the all-1 and all-0 rules.
    neg_below = np.concatenate([[0], np.cumsum(~ys)])
    pos_above = int(ys.sum()) - np.concatenate([[0], np.cumsum(ys)])
    correct = neg_below + pos_above
    # A cut between equal values cannot separate them, so only distinct neighbours are valid.
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        return -np.inf
    if i == n:
        return np.inf
    return float((s[i - 1] + s[i]) / 2.0)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    s = x[order]
    # Tied values share the mean of the 1-based ranks their run occupies.
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    ends = np.concatenate([starts[1:], [s.size]])
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks
