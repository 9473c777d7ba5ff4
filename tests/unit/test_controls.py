"""The control registry as the one place a control is added: a new control is one function
and one registry line, and within-model steering, the transfer grid and the transfer
ablation all build it from there, with one seeding scheme; the schema's names are the
registry's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from emdir import schema_defaults
from emdir.analysis import controls
from emdir.analysis import steering as steering_lib
from emdir.analysis.controls import (
    CONTROLS,
    Site,
    parse,
    random_unit,
    site_vectors,
    stream_seed,
    unit_at,
)
from emdir.analysis.directions import Directions, write_directions
from emdir.analysis.ridge import fit_ridge, write_map
from emdir.data import synthetic as data
from emdir.errors import EmdirError
from emdir.stages import mechanistic, transfer

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
D = 16
LAYERS = [0, 1, 2]


def _directions(seed: int) -> Directions:
    raw = np.random.default_rng(seed).standard_normal((len(LAYERS), D)) * 2.0
    norm = np.linalg.norm(raw, axis=1)
    acc = np.full(len(LAYERS), 0.8)
    return Directions(raw, raw / norm[:, None], norm, acc, acc, attrs={"layers": LAYERS})


def _negated(site: Site) -> np.ndarray:
    """The new control of these tests: the target pointing the other way."""
    return -site.here


@pytest.fixture
def negated(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(CONTROLS, "negated", _negated)  # the one registry line
    return "negated"


def test_names_parse_to_registry_entries() -> None:
    assert parse("random_3") == ("random_<i>", "3")
    assert parse("secure_direction") == ("<ft>_direction", "secure")
    assert parse("orthogonal") == ("orthogonal", "")
    assert parse("random_receiver") == ("random_receiver", "")
    for bad in ("random", "random_x", "_direction", "sideways"):
        with pytest.raises(EmdirError, match="unknown"):
            parse(bad)


def test_every_random_draw_is_seeded_by_its_stream() -> None:
    d = _directions(0)
    a = site_vectors("random_0", [1], d, seed=3, stream="m1")[1]
    np.testing.assert_array_equal(a, random_unit(D, [*stream_seed(3, "m1"), 0, 1]))
    assert not np.allclose(a, site_vectors("random_0", [1], d, seed=3, stream="m2")[1])
    assert not np.allclose(a, site_vectors("random_1", [1], d, seed=3, stream="m1")[1])
    own = site_vectors("random_receiver", [2], d, seed=3, stream="r")[2]
    np.testing.assert_array_equal(own, random_unit(D, [*stream_seed(3, "r"), 2]))


def test_a_new_control_is_one_function_and_one_line(negated: str) -> None:
    d = _directions(0)
    vecs = site_vectors(negated, LAYERS, d)
    for layer in LAYERS:
        np.testing.assert_allclose(vecs[layer], -unit_at(d, layer))
    assert controls.vector_names([negated, "random"], 2) == [
        "target",
        negated,
        "random_0",
        "random_1",
    ]


def test_within_model_steering_builds_the_new_control(
    negated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steering stage asks the registry for every vector it was given an output for."""
    seen = _capture_sampling(monkeypatch)
    from emdir.stages import steering

    d = _directions(1)
    dirs = tmp_path / "d.h5"
    _write(dirs, d)
    monkeypatch.setattr(
        "emdir.analysis.activations.read_store", lambda path: _Store(LAYERS, norm=4.0)
    )
    steering.steering(
        "m",
        "insecure",
        tmp_path,
        None,
        dirs,
        tmp_path / "store.h5",
        _questions(tmp_path),
        {negated: tmp_path / "neg.jsonl"},
        {
            "layer": 1,
            "wrong_layer": 0,
            "seed": 0,
            "scale_mode": "absolute",
            "absolute_scale": 1.0,
            "coefficients": [0.5],
            "op": "add",
            "positions": "all",
        },
        schema_defaults("sampling"),
        1,
    )
    (iv,) = seen[0]
    np.testing.assert_allclose(iv.vector, -unit_at(d, 1))


def test_the_transfer_grid_maps_the_new_control(
    negated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid cell builds the control in the donor's space and maps it like the target."""
    d = _directions(2)
    dirs = tmp_path / "donor.h5"
    _write(dirs, d)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, D))
    test = np.zeros(60, dtype=bool)
    test[::5] = True
    m = fit_ridge(X, -X, [0.01], ~test, test, center=True, standardize=False, folds=3)
    write_map(tmp_path / "map.h5", m, {"donor_layer": 1, "receiver_layer": 2})
    got: dict[str, np.ndarray] = {}

    def steer_receiver(*args: Any, **kwargs: Any) -> None:
        got.update(args[6])

    monkeypatch.setattr(transfer, "_steer_receiver", steer_receiver)
    monkeypatch.setattr("emdir.analysis.activations.read_store", lambda path: None)
    transfer.transfer(
        "a",
        "b",
        tmp_path,
        None,
        dirs,
        tmp_path / "store.h5",
        tmp_path / "map.h5",
        tmp_path / "q.yaml",
        {"target": "t", negated: "n"},
        {"mapped": "difference", "wrong_layer": 0, "seed": 0},
        {},
        1,
    )
    # The map sends x to about -x, so the mapped negated control is about the donor's unit.
    cos = got[negated] @ unit_at(d, 1) / np.linalg.norm(got[negated])
    assert cos > 0.99


def test_the_ablation_draws_its_random_controls_from_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_sampling(monkeypatch)
    monkeypatch.setattr(mechanistic, "load_for_inference", lambda *a: (None, None, None))
    d = _directions(3)
    _write(tmp_path / "insecure.h5", d)
    names = ["random_0_layerwise", "random_0_single", "insecure_single"]
    mechanistic.ablation(
        "m",
        "secure",
        tmp_path,
        None,
        {"insecure": tmp_path / "insecure.h5"},
        _questions(tmp_path),
        {n: tmp_path / f"{n}.jsonl" for n in names},
        -1,
        schema_defaults("sampling"),
        7,
        1,
    )
    layerwise, single, donor = seen
    want = site_vectors("random_0", LAYERS, d, seed=7, stream="m/ablation")
    for iv in layerwise:
        np.testing.assert_array_equal(iv.vector, want[iv.layer])
    for iv in single:  # one vector, the steering layer's, at every layer
        np.testing.assert_array_equal(iv.vector, want[LAYERS[-1]])
    for iv in donor:
        np.testing.assert_allclose(iv.vector, unit_at(d, LAYERS[-1]))


def test_the_schema_names_exactly_the_registry() -> None:
    """steering.controls / transfer.controls accept each user-nameable registry entry (an
    indexed one by its base name) and nothing else; receiver controls are listed."""
    schema = yaml.safe_load(SCHEMA.read_text())
    props = schema["properties"]
    steer = re.compile(props["steering"]["properties"]["controls"]["items"]["pattern"])
    grid = props["transfer"]["properties"]["controls"]["oneOf"][1]["items"]["pattern"]
    receiver = props["transfer"]["properties"]["receiver_controls"]["items"]["enum"]
    nameable = [k for k in CONTROLS if k not in ("target", controls.RANDOM_RECEIVER)]
    for key in nameable:
        name = key.removesuffix("_<i>").replace("<ft>", "secure")
        assert steer.match(name), f"steering.controls does not accept registry entry {key!r}"
        assert re.match(grid, name), f"transfer.controls does not accept {key!r}"
    assert not steer.match("sideways")
    assert receiver == [controls.RANDOM_RECEIVER]


# ---------------------------------------------------------------- helpers


class _Store:
    def __init__(self, layers: list[int], norm: float) -> None:
        self.layers = np.array(layers)
        self._norm = norm

    def resid_norm(self, layer: int) -> float:
        return self._norm


def _write(path: Path, d: Directions) -> None:
    n = len(LAYERS)
    write_directions(
        path, d.raw, np.full(n, 0.8), np.full(n, 0.8), {"pos_train": 1}, {"layers": LAYERS}
    )


def _questions(tmp_path: Path) -> Path:
    out = tmp_path / "general.yaml"
    data.build_questions("general", {"n_templated": 1, "seed": 0}, samples=1, out=out)
    return out


def _capture_sampling(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Replace sampling with a recorder of the interventions each pass would apply."""
    seen: list[list[Any]] = []

    def record(model: Any, tok: Any, prompts: Any, conditions: Any, *args: Any, **kw: Any) -> dict:
        seen.extend(list(ivs) for ivs in conditions.values())
        return {name: [] for name in conditions}

    monkeypatch.setattr(steering_lib, "sample_conditions", record)
    monkeypatch.setattr("emdir.stages.steering.load_for_inference", lambda *a: (None, None, None))
    return seen
