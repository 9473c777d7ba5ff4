"""The steering experiment: control vectors, matched magnitudes, sites, and layer resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emdir.analysis.controls import control_fts, resolve_layers, site_vectors, unit_at, vector_names
from emdir.analysis.directions import Directions
from emdir.analysis.steering import interventions, layer_label, site_scales
from emdir.errors import EmdirError
from helpers import layer_output

D, L = 32, 2
NAMES = ["target", "random_0", "random_1", "orthogonal", "wrong_layer", "secure_direction"]


def _directions(seed: int, layers: list[int] | None = None) -> Directions:
    layers = layers if layers is not None else list(range(L))
    raw = np.random.default_rng(seed).standard_normal((len(layers), D)) * 3.0
    norm = np.linalg.norm(raw, axis=1)
    acc = np.full(len(layers), 0.8)
    return Directions(raw, raw / norm[:, None], norm, acc, acc, attrs={"layers": layers})


def test_vector_names_expand_random_seeds() -> None:
    controls = ["random", "orthogonal", "wrong_layer", "secure_direction"]
    assert vector_names(controls, 2) == NAMES
    assert vector_names([], 3) == ["target"]
    assert control_fts(controls + ["educational_direction"]) == ["secure", "educational"]


def test_resolve_layers() -> None:
    assert resolve_layers([0, 1, 2, 3], -1) == [3]
    assert resolve_layers([0, 1, 2, 3], [1, -1]) == [1, 3]
    with pytest.raises(EmdirError, match="not captured"):
        resolve_layers([0, 2], 1)
    with pytest.raises(EmdirError, match="out of range"):
        resolve_layers([0, 1], -3)
    with pytest.raises(EmdirError, match="twice"):
        resolve_layers([0, 1, 2, 3], [3, -1])


def test_controls_are_unit_and_what_they_claim() -> None:
    target, secure = _directions(0), _directions(1)
    vecs = {
        name: site_vectors(name, [1], target, {"secure": secure}, wrong_layer=0, seed=5)[1]
        for name in NAMES
    }
    for v in vecs.values():
        assert np.linalg.norm(v) == pytest.approx(1.0)
    np.testing.assert_allclose(vecs["target"], unit_at(target, 1))
    np.testing.assert_allclose(vecs["wrong_layer"], unit_at(target, 0))
    np.testing.assert_allclose(vecs["secure_direction"], unit_at(secure, 1))
    assert abs(vecs["orthogonal"] @ vecs["target"]) < 1e-12
    assert abs(vecs["random_0"] @ vecs["random_1"]) < 0.9  # different seeds, different vectors
    again = site_vectors("random_1", [1], target, seed=5)[1]
    np.testing.assert_array_equal(again, vecs["random_1"])


def test_control_errors_name_the_fix() -> None:
    target = _directions(0)
    with pytest.raises(EmdirError, match="wrong_layer"):
        site_vectors("wrong_layer", [0, 1], target, wrong_layer=0)
    with pytest.raises(EmdirError, match="'secure'"):
        site_vectors("secure_direction", [1], target, {})
    with pytest.raises(EmdirError, match="sideways"):
        site_vectors("sideways", [1], target)


def test_all_controls_at_one_site_apply_equal_norms(make_tiny) -> None:
    model, _, _ = make_tiny("LlamaForCausalLM")
    assert model.config.hidden_size == D
    target, secure = _directions(0), _directions(1)
    ids = torch.tensor([[3, 9, 27, 81, 12]])
    clean = layer_output(model, 1, ids)
    for mode, expected in (("absolute", 2.0), ("dim_norm", target.norm[1]), ("resid_norm", 7.5)):
        scales = site_scales(mode, [1], target, {1: 7.5}, absolute=2.0)
        for name in NAMES:
            vecs = site_vectors(name, [1], target, {"secure": secure}, wrong_layer=0)
            (iv,) = interventions(name, vecs, scales, "subtract", 0.5)
            assert iv.norm == pytest.approx(0.5 * expected)
            delta = (layer_output(model, 1, ids, [iv]) - clean)[0]
            norms = torch.linalg.vector_norm(delta, dim=-1)
            torch.testing.assert_close(
                norms, torch.full_like(norms, 0.5 * float(expected)), rtol=1e-4, atol=1e-4
            )


def test_several_sites_get_one_intervention_each() -> None:
    target = _directions(0, layers=[0, 1, 2])
    vecs = site_vectors("target", [1, 2], target)
    scales = site_scales("dim_norm", [1, 2], target, {1: 1.0, 2: 1.0})
    ivs = interventions("target", vecs, scales, "ablate", 1.0)
    assert [iv.layer for iv in ivs] == [1, 2]
    assert all(iv.norm is None for iv in ivs)
    assert layer_label([iv.to_record() for iv in ivs]) == "1+2"
    assert layer_label(ivs[0].to_record()) == "1"
