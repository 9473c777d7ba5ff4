"""Sparse-autoencoder features of a direction: sae-lens SAEs built, briefly trained, loaded and read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from emdir.errors import EmdirError
from emdir.io import atomic_path

if TYPE_CHECKING:
    from sae_lens import SAE

# sae-lens is imported inside the functions that need it: `import sae_lens` pulls in
# transformer_lens and takes several seconds, which every importer of this module (the
# Snakefile's helpers among them) would otherwise pay.


@dataclass(frozen=True, eq=False)
class DirectionDecomposition:
    """A direction read in SAE features, ranked two ways.

    `by_decoder` are the features whose decoder rows are most aligned with the direction
    (by |cosine|), `by_activation` those whose mean activation differs most between the
    positive and the negative class (by |difference|, sign kept). `activation_source` says
    whether the difference came from per-sample encodings ("samples") or from encoding the
    two class means ("class_means"). The `_all` arrays hold every feature's score [d_sae].
    """

    by_decoder: list[int]
    decoder_cosine: np.ndarray
    by_activation: list[int]
    activation_diff: np.ndarray
    activation_source: str
    decoder_cosine_all: np.ndarray
    activation_diff_all: np.ndarray


@dataclass(frozen=True, eq=False)
class FeatureDiff:
    """The features whose mean activation differs most between sets a and b.

    `mean_a`, `mean_b` and `diff` (= mean_a - mean_b) are aligned with `features`; the
    `_all` arrays hold every feature's mean [d_sae].
    """

    features: list[int]
    mean_a: np.ndarray
    mean_b: np.ndarray
    diff: np.ndarray
    mean_a_all: np.ndarray
    mean_b_all: np.ndarray


def build_sae(d_in: int, d_sae: int, seed: int) -> SAE:
    """A randomly initialised standard (ReLU) sae-lens SAE, float32 on the CPU.

    The initialisation is sae-lens's own, drawn under `seed` without touching the global
    torch RNG; decoder rows are then scaled to unit norm with the encoder compensating, so
    the SAE computes the same function and decoder cosines are plain dot products.
    """
    from sae_lens import StandardSAE, StandardSAEConfig

    if d_in < 1 or d_sae < 1:
        raise EmdirError(f"SAE sizes must be positive (got d_in={d_in}, d_sae={d_sae})")
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = StandardSAE(cfg)
    sae.fold_W_dec_norm()
    return sae


def train_sae(
    sae: SAE,
    X: np.ndarray,
    steps: int,
    batch_size: int,
    lr: float,
    l1: float,
    seed: int,
) -> list[dict[str, float]]:
    """Train `sae` in place on activations `X` [N, d_in]; return one log row per step.

    Loss = MSE + l1 * sum of feature activations weighted by decoder-row norms, the
    sparsity term of sae-lens's StandardTrainingSAE; MSE is summed over d_in and averaged
    over the batch, as sae-lens does. Adam; batches drawn with replacement under `seed`.

    Inputs are rescaled so the mean row norm is sqrt(d_in) (sae-lens's
    "expected_average_only_in"), so one `l1` suits models whose residual norms differ by
    orders of magnitude; the scale is folded into the weights at the end, and the
    returned SAE reads raw activations. A fresh SAE (b_dec all zero) starts with b_dec at
    the data mean. After each step decoder rows are brought back to unit norm with the
    encoder compensating (sae-lens's fold_W_dec_norm).

    Log rows: step (1-based), mse and loss (in the rescaled units), fvu (mse over the
    batch's total variance), l0 (mean number of active features per row).
    """
    data = _check_rows(X, sae.cfg.d_in, "training activations")
    if steps < 1 or batch_size < 1:
        raise EmdirError(
            f"SAE training needs steps >= 1 and batch_size >= 1 (got {steps}, {batch_size})"
        )
    if not lr > 0 or not l1 >= 0:
        raise EmdirError(f"SAE training needs lr > 0 and l1 >= 0 (got lr={lr}, l1={l1})")
    x_all = torch.as_tensor(data, dtype=torch.float32)
    scale = _norm_scale(x_all)
    x_all = (x_all * scale).to(device=sae.device, dtype=sae.dtype)
    sae.fold_activation_norm_scaling_factor(1.0 / scale)
    sae.fold_W_dec_norm()
    with torch.no_grad():
        if not sae.b_dec.any():
            sae.b_dec.copy_(x_all.mean(0))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    rows: list[dict[str, float]] = []
    try:
        for step in tqdm(range(1, steps + 1), desc="SAE training", mininterval=2):
            idx = torch.randint(0, x_all.shape[0], (batch_size,), generator=gen)
            row = _train_step(sae, opt, x_all[idx.to(x_all.device)], l1)
            rows.append({"step": step, **row})
    finally:
        sae.fold_activation_norm_scaling_factor(scale)
        sae.fold_W_dec_norm()
    return rows


def _norm_scale(x: torch.Tensor) -> float:
    """The factor that makes the mean row norm of `x` equal to sqrt(d_in)."""
    mean_norm = float(x.norm(dim=1).mean())
    if not mean_norm > 0:
        raise EmdirError("SAE training activations are all zero; check the activation store")
    return x.shape[1] ** 0.5 / mean_norm


def _train_step(
    sae: SAE, opt: torch.optim.Optimizer, x: torch.Tensor, l1: float
) -> dict[str, float]:
    """One Adam step on batch `x`; the step's mse, fvu, l0 and loss."""
    acts = sae.encode(x)
    err = (sae.decode(acts) - x).pow(2).sum(-1)
    mse = err.mean()
    sparsity = (acts * sae.W_dec.norm(dim=1)).sum(-1).mean()
    loss = mse + l1 * sparsity
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sae.fold_W_dec_norm()
    with torch.no_grad():
        total = (x - x.mean(0)).pow(2).sum(-1).sum().clamp_min(1e-12)
        fvu = err.sum() / total
        l0 = (acts > 0).sum(-1).float().mean()
    return {"mse": mse.item(), "fvu": fvu.item(), "l0": l0.item(), "loss": loss.item()}


def load_pretrained(release: str, sae_id: str, device: str = "cpu") -> SAE:
    """A pretrained SAE through sae-lens's registry, e.g. Gemma Scope's
    ("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")."""
    import httpx
    from huggingface_hub.errors import EntryNotFoundError
    from sae_lens import SAE

    what = f"SAE {sae_id!r} of sae-lens release {release!r}"
    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except (OSError, EntryNotFoundError, httpx.HTTPError) as exc:
        raise EmdirError(
            f"could not fetch the {what} ({type(exc).__name__}: {exc}). Its files must be in "
            "the Hugging Face cache (HF_HOME) or the Hub must be reachable: download it once "
            "on a machine with network access, or unset HF_HUB_OFFLINE"
        ) from exc
    except ValueError as exc:
        raise EmdirError(
            f"sae-lens does not know the {what}: {exc} Pick a release and id listed in "
            "sae-lens's pretrained_saes.yaml (https://decoderesearch.github.io/SAELens/latest/pretrained_saes/)"
        ) from exc


def save_sae(sae: SAE, out_dir: str | Path) -> None:
    """Write `sae` with sae-lens's save_model into `out_dir`, replacing it atomically."""
    with atomic_path(out_dir) as tmp:
        sae.save_model(tmp)


def load_sae(out_dir: str | Path, device: str = "cpu") -> SAE:
    """An SAE that `save_sae` (or sae-lens's save_model) wrote to `out_dir`."""
    from sae_lens import SAE
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    path = Path(out_dir)
    missing = [
        name for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME) if not (path / name).is_file()
    ]
    if missing:
        raise EmdirError(
            f"{path}: not a saved SAE (missing {', '.join(missing)}); rerun the rule that trains it"
        )
    return SAE.load_from_disk(path, device=device)


def decoder_cosines(sae: SAE, v: np.ndarray) -> np.ndarray:
    """Cosine of `v` [d_in] with every decoder row; [d_sae] float64 (0 for a zero row)."""
    vec = _check_vector(v, sae.cfg.d_in, "direction")
    if not vec.any():
        raise EmdirError("the direction is all zeros; it has no SAE decomposition")
    w_dec = _decoder(sae)
    norms = np.linalg.norm(w_dec, axis=1) * np.linalg.norm(vec)
    return (w_dec @ vec) / np.maximum(norms, np.finfo(np.float64).tiny)


def top_features(scores: np.ndarray, k: int, by_abs: bool = True) -> list[int]:
    """Indices of the `k` highest scores (of |scores| if `by_abs`); ties go to the lower index."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise EmdirError(f"feature scores must be one-dimensional (got shape {s.shape})")
    if k < 0:
        raise EmdirError(f"the number of top features must be >= 0 (got {k})")
    if np.isnan(s).any():
        raise EmdirError("feature scores contain NaN; check the SAE and the activations for NaN")
    key = np.abs(s) if by_abs else s
    order = np.lexsort((np.arange(s.size), -key))
    return [int(i) for i in order[:k]]


def encode_mean(sae: SAE, X: Any, batch_size: int = 256) -> np.ndarray:
    """Mean feature activation over the rows of `X` [N, d_in]; [d_sae] float64.

    `X` may be an h5py dataset: it is read `batch_size` rows at a time.
    """
    n = _check_shape(X, sae.cfg.d_in, "activations")
    if batch_size < 1:
        raise EmdirError(f"encode batch_size must be >= 1 (got {batch_size})")
    total = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    starts = range(0, n, batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="SAE encode", mininterval=2, disable=len(starts) < 50):
            block = torch.as_tensor(np.asarray(X[start : start + batch_size]))
            acts = sae.encode(block.to(device=sae.device, dtype=sae.dtype))
            total += acts.double().sum(0).cpu()
    return (total / n).numpy()


def decompose_direction(
    sae: SAE,
    v: np.ndarray,
    mean_pos: np.ndarray | None,
    mean_neg: np.ndarray | None,
    X_pos: Any | None,
    X_neg: Any | None,
    k: int,
) -> DirectionDecomposition:
    """The top-`k` SAE features of direction `v`, by decoder cosine and by activation.

    The activation ranking uses the mean encodings of the samples `X_pos` and `X_neg`
    when both are given; otherwise the encodings of the class means `mean_pos` and
    `mean_neg` (cheaper, but not the same: the encoder is non-linear).
    """
    cos_all = decoder_cosines(sae, v)
    diff_all, source = _class_feature_diff(sae, mean_pos, mean_neg, X_pos, X_neg)
    by_decoder = top_features(cos_all, k)
    by_activation = top_features(diff_all, k)
    return DirectionDecomposition(
        by_decoder=by_decoder,
        decoder_cosine=cos_all[by_decoder],
        by_activation=by_activation,
        activation_diff=diff_all[by_activation],
        activation_source=source,
        decoder_cosine_all=cos_all,
        activation_diff_all=diff_all,
    )


def _class_feature_diff(
    sae: SAE,
    mean_pos: np.ndarray | None,
    mean_neg: np.ndarray | None,
    X_pos: Any | None,
    X_neg: Any | None,
) -> tuple[np.ndarray, str]:
    """Positive-minus-negative feature activations [d_sae] and where they came from."""
    if (X_pos is None) != (X_neg is None):
        raise EmdirError("pass both X_pos and X_neg (or neither, to use the class means)")
    if X_pos is not None:
        return encode_mean(sae, X_pos) - encode_mean(sae, X_neg), "samples"
    if mean_pos is None or mean_neg is None:
        raise EmdirError("decomposing a direction needs X_pos and X_neg, or mean_pos and mean_neg")
    pos = _check_vector(mean_pos, sae.cfg.d_in, "mean_pos")
    neg = _check_vector(mean_neg, sae.cfg.d_in, "mean_neg")
    return encode_mean(sae, pos[None]) - encode_mean(sae, neg[None]), "class_means"


def feature_difference(sae: SAE, X_a: Any, X_b: Any, k: int) -> FeatureDiff:
    """The top-`k` features by |mean activation on X_a - mean activation on X_b|."""
    mean_a = encode_mean(sae, X_a)
    mean_b = encode_mean(sae, X_b)
    features = top_features(mean_a - mean_b, k)
    return FeatureDiff(
        features=features,
        mean_a=mean_a[features],
        mean_b=mean_b[features],
        diff=mean_a[features] - mean_b[features],
        mean_a_all=mean_a,
        mean_b_all=mean_b,
    )


def overlap(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """Shared features of two lists: n_shared, shared (sorted) and Jaccard index (0 if both empty)."""
    sa, sb = {int(i) for i in a}, {int(i) for i in b}
    shared = sorted(sa & sb)
    union = len(sa | sb)
    return {
        "n_shared": len(shared),
        "shared": shared,
        "jaccard": len(shared) / union if union else 0.0,
    }


def _decoder(sae: SAE) -> np.ndarray:
    """W_dec [d_sae, d_in] as float64 numpy."""
    return sae.W_dec.detach().to("cpu", torch.float64).numpy()


def _check_vector(v: np.ndarray, d_in: int, what: str) -> np.ndarray:
    """`v` as a finite float64 vector of length d_in."""
    vec = np.asarray(v, dtype=np.float64)
    if vec.shape != (d_in,):
        raise EmdirError(
            f"{what} has shape {vec.shape}, the SAE expects ({d_in},); use the SAE's layer and model"
        )
    if not np.isfinite(vec).all():
        raise EmdirError(f"{what} contains NaN or inf; recompute it")
    return vec


def _check_shape(X: Any, d_in: int, what: str) -> int:
    """The number of rows of `X` [N, d_in], N >= 1."""
    shape = tuple(getattr(X, "shape", np.shape(X)))
    if len(shape) != 2 or shape[1] != d_in:
        raise EmdirError(
            f"{what} have shape {shape}, the SAE expects [N, {d_in}]; use the SAE's layer and model"
        )
    if shape[0] < 1:
        raise EmdirError(f"{what} have no rows")
    return int(shape[0])


def _check_rows(X: np.ndarray, d_in: int, what: str) -> np.ndarray:
    """`X` [N, d_in] as a finite float32 array."""
    _check_shape(X, d_in, what)
    data = np.asarray(X, dtype=np.float32)
    if not np.isfinite(data).all():
        raise EmdirError(f"{what} contain NaN or inf; check the activation store")
    return data
