"""SAE features of a direction: decomposition, feature differences, brief training, files."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from sae_lens import SAE

from emdir.errors import EmdirError
from emdir.mechanistic.sae import (
    build_sae,
    decoder_cosines,
    decompose_direction,
    encode_mean,
    feature_difference,
    load_pretrained,
    load_sae,
    overlap,
    save_sae,
    top_features,
    train_sae,
)

# Random unit rows in 512 dimensions have cosines of about +-0.04, so a direction made of
# three rows with weights 3, 2, 1 ranks them first (in 200 seeds, 199 times in that order).
D_IN, D_SAE = 512, 256


@pytest.fixture(scope="module")
def sae() -> SAE:
    return build_sae(D_IN, D_SAE, seed=0)


def _w_dec(sae: SAE) -> np.ndarray:
    return sae.W_dec.detach().numpy().astype(np.float64)


def _gaussian(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D_IN)).astype(np.float32)


def test_build_sae_is_deterministic_and_has_unit_decoder_rows(sae: SAE) -> None:
    again = build_sae(D_IN, D_SAE, seed=0)
    assert type(sae).__name__ == "StandardSAE"
    assert sae.W_dec.shape == (D_SAE, D_IN) and sae.W_dec.dtype == torch.float32
    assert torch.equal(sae.W_dec, again.W_dec) and torch.equal(sae.W_enc, again.W_enc)
    assert not torch.equal(sae.W_dec, build_sae(D_IN, D_SAE, seed=1).W_dec)
    np.testing.assert_allclose(np.linalg.norm(_w_dec(sae), axis=1), 1.0, atol=1e-5)


def test_decoder_ranking_finds_the_rows_a_direction_is_made_of(sae: SAE) -> None:
    i, j, k = (int(x) for x in np.random.default_rng(7).choice(D_SAE, 3, replace=False))
    # An encoder unrelated to the decoder: the ranking must read the decoder alone.
    sae = build_sae(D_IN, D_SAE, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(build_sae(D_IN, D_SAE, seed=1).W_enc)
    w = _w_dec(sae)
    v = 3 * w[i] + 2 * w[j] + 1 * w[k]
    out = decompose_direction(sae, v, None, None, _gaussian(64, 1), _gaussian(64, 2), k=3)
    assert out.by_decoder == [i, j, k]
    np.testing.assert_allclose(out.decoder_cosine, decoder_cosines(sae, v)[[i, j, k]])
    assert out.decoder_cosine[0] > out.decoder_cosine[1] > out.decoder_cosine[2] > 0.2
    # Cosines are of -v too, with the sign; the ranking is by magnitude.
    assert decompose_direction(
        sae, -v, None, None, _gaussian(8, 1), _gaussian(8, 2), 3
    ).by_decoder == [i, j, k]


def test_activation_ranking_finds_planted_features_with_their_sign(sae: SAE) -> None:
    p, q, n = 11, 200, 57
    w = _w_dec(sae)
    X_neg = _gaussian(300, 3) + 5 * w[n]
    X_pos = _gaussian(300, 4) + 6 * w[p] + 4 * w[q]
    # A direction unrelated to the planted features: the ranking must read the samples alone.
    v = _gaussian(1, 10)[0]
    out = decompose_direction(sae, v, None, None, X_pos, X_neg, k=3)
    assert out.activation_source == "samples"
    assert out.by_activation == [p, n, q]
    assert out.by_decoder != out.by_activation
    assert out.activation_diff[0] > 0 and out.activation_diff[1] < 0 and out.activation_diff[2] > 0
    expected = encode_mean(sae, X_pos) - encode_mean(sae, X_neg)
    np.testing.assert_allclose(out.activation_diff_all, expected)


def test_class_means_stand_in_when_samples_are_absent(sae: SAE) -> None:
    w = _w_dec(sae)
    mean_neg = _gaussian(1, 5)[0]
    mean_pos = mean_neg + 6 * w[3] + 4 * w[90]
    out = decompose_direction(sae, _gaussian(1, 10)[0], mean_pos, mean_neg, None, None, k=2)
    assert out.activation_source == "class_means"
    assert out.by_activation == [3, 90]
    with pytest.raises(EmdirError, match="X_pos and X_neg"):
        decompose_direction(sae, mean_pos, mean_pos, mean_neg, _gaussian(4, 0), None, k=2)
    with pytest.raises(EmdirError, match=r"shape \(3,\).*\(512,\)"):
        decompose_direction(sae, np.ones(3), mean_pos, mean_neg, None, None, k=2)


def test_encode_mean_matches_encoding_all_rows_at_once(sae: SAE) -> None:
    X = _gaussian(70, 6)
    with torch.no_grad():
        whole = sae.encode(torch.from_numpy(X)).double().mean(0).numpy()
    np.testing.assert_allclose(encode_mean(sae, X, batch_size=16), whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(EmdirError, match=r"\[N, 512\]"):
        encode_mean(sae, X[:, :10])


def test_feature_difference_finds_planted_features(sae: SAE) -> None:
    w = _w_dec(sae)
    X_a = _gaussian(200, 7) + 5 * w[42]
    X_b = _gaussian(200, 8) + 5 * w[9] + 3 * w[120]
    diff = feature_difference(sae, X_a, X_b, k=3)
    assert diff.features == [42, 9, 120]
    np.testing.assert_allclose(diff.diff, diff.mean_a - diff.mean_b)
    np.testing.assert_allclose(diff.mean_a, encode_mean(sae, X_a)[[42, 9, 120]])
    assert diff.diff[0] > 0 > diff.diff[1]


def test_top_features_orders_by_magnitude_and_breaks_ties_by_index() -> None:
    scores = np.array([0.5, -2.0, 2.0, 0.1, -0.5])
    assert top_features(scores, 3) == [1, 2, 0]
    assert top_features(scores, 3, by_abs=False) == [2, 0, 3]
    assert top_features(scores, 10) == [1, 2, 0, 4, 3]
    assert top_features(scores, 0) == []
    many_ties = np.tile([1.0, -1.0, 0.5], 400)
    assert top_features(many_ties, 800) == [i for i in range(1200) if i % 3 != 2]
    with pytest.raises(EmdirError, match="NaN"):
        top_features(np.array([1.0, np.nan]), 1)


def test_overlap_counts_shared_features_and_jaccard() -> None:
    assert overlap([5, 1, 3, 3], [3, 7, 5]) == {"n_shared": 2, "shared": [3, 5], "jaccard": 0.5}
    assert overlap([1], [2]) == {"n_shared": 0, "shared": [], "jaccard": 0.0}
    assert overlap([], []) == {"n_shared": 0, "shared": [], "jaccard": 0.0}


def _sparse_data(n: int = 2048, d_in: int = 32, n_true: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Rows made of about 3 of 16 unit directions with positive weights, plus a little noise."""
    rng = np.random.default_rng(0)
    true = rng.standard_normal((n_true, d_in))
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    coef = (rng.random((n, n_true)) < 3 / n_true) * rng.uniform(0.5, 1.5, (n, n_true))
    X = coef @ true + 0.01 * rng.standard_normal((n, d_in))
    return X.astype(np.float32), true


def _train(X: np.ndarray) -> tuple[SAE, list[dict[str, float]]]:
    sae = build_sae(X.shape[1], 64, seed=0)
    return sae, train_sae(sae, X, steps=200, batch_size=128, lr=1e-2, l1=1.0, seed=0)


def test_train_sae_learns_sparse_data_deterministically_at_any_scale() -> None:
    X, true = _sparse_data()
    sae, log = _train(X)
    assert [r["step"] for r in log] == list(range(1, 201))
    first, last = log[0], log[-20:]
    last_fvu = np.mean([r["fvu"] for r in last])
    assert last_fvu < 0.15 and last_fvu < 0.05 * first["fvu"]
    assert np.mean([r["mse"] for r in last]) < 0.05 * first["mse"]
    assert np.mean([r["l0"] for r in last]) < 0.5 * first["l0"]
    # The rescaling is folded back: the SAE reconstructs raw rows as well as the log says.
    with torch.no_grad():
        x = torch.from_numpy(X)
        raw_fvu = float((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert raw_fvu == pytest.approx(last_fvu, abs=0.03)
    np.testing.assert_allclose(np.linalg.norm(_w_dec(sae), axis=1), 1.0, atol=1e-5)
    assert np.median(np.abs(true @ _w_dec(sae).T).max(1)) > 0.8

    again, log_again = _train(X)
    assert log_again == log
    assert torch.equal(again.W_dec, sae.W_dec) and torch.equal(again.b_enc, sae.b_enc)

    # Residual norms differ by orders of magnitude across models; training does not care.
    scaled, log_scaled = _train(100 * X)
    np.testing.assert_allclose([r["fvu"] for r in log_scaled], [r["fvu"] for r in log], rtol=1e-3)
    np.testing.assert_allclose(_w_dec(scaled), _w_dec(sae), atol=1e-3)


def test_train_sae_rejects_activations_of_the_wrong_width() -> None:
    sae = build_sae(8, 16, seed=0)
    with pytest.raises(EmdirError, match=r"\[N, 8\]"):
        train_sae(sae, np.zeros((10, 9), np.float32), 5, 4, 1e-3, 0.1, 0)
    with pytest.raises(EmdirError, match="all zero"):
        train_sae(sae, np.zeros((10, 8), np.float32), 5, 4, 1e-3, 0.1, 0)


def test_save_load_round_trip_is_exact(sae: SAE, tmp_path: Path) -> None:
    out = tmp_path / "sae"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    save_sae(sae, out)
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    back = load_sae(out)
    assert type(back) is type(sae)
    assert torch.equal(back.W_dec, sae.W_dec)
    X = torch.from_numpy(_gaussian(16, 9))
    with torch.no_grad():
        assert torch.equal(back.encode(X), sae.encode(X))
    with pytest.raises(EmdirError, match="missing cfg.json"):
        load_sae(tmp_path / "nowhere")


def test_load_pretrained_offline_names_release_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE and the cache location at import time.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    release, sae_id = "gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical"
    with pytest.raises(EmdirError, match=f"{release}.*Hugging Face cache") as info:
        load_pretrained(release, sae_id, "cpu")
    assert sae_id in str(info.value)
    with pytest.raises(EmdirError, match="layer_99.*pretrained_saes.yaml"):
        load_pretrained(release, "layer_99/width_16k/canonical", "cpu")
