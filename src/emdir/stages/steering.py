"""Steering stage: a fine-tune (or the base model) steered with the direction and its
matched-magnitude controls over the coefficient sweep (rules steering, steering_also, induce)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emdir.io import write_jsonl
from emdir.models.load import load_for_inference


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
    directions files for the `<ft>_direction` controls. Every vector x coefficient is
    sampled in shared batches (`sample_conditions`); a killed job resumes at its first
    unfinished batch (`emdir.resume`).
    """
    from emdir.analysis import directions as dm
    from emdir.analysis import steering as sm
    from emdir.analysis.activations import read_store
    from emdir.analysis.controls import resolve_layers, site_vectors
    from emdir.data.questions import load_questions
    from emdir.models.generate import SamplingParams, expand
    from emdir.resume import pieces_beside

    d = dm.read_directions(directions)
    st = read_store(store)
    sites = resolve_layers(st.layers, steer_cfg["layer"])
    others = {k: dm.read_directions(p) for k, p in (control_directions or {}).items()}
    vectors = {
        name: site_vectors(
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
    model, tok, spec = load_for_inference(base_dir, adapter_dir, threads)
    prompts = expand(load_questions(questions))
    sampling = SamplingParams(**sampling_cfg)
    pieces = pieces_beside(
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
    coefficients = list(steer_cfg["coefficients"])
    conditions = {
        f"{name} x{coef}": sm.interventions(
            name, vectors[name], scales, steer_cfg["op"], coef, steer_cfg["positions"]
        )
        for name in outs
        for coef in coefficients
    }
    drawn = sm.sample_conditions(
        model, tok, prompts, conditions, sampling, model_key, ft, f"{model_key}/{ft}", pieces
    )
    for name, path in outs.items():
        rows = [row for coef in coefficients for row in drawn[f"{name} x{coef}"]]
        for row in rows:
            row["question_set"] = Path(questions).stem
            row["direction_ft"] = str(d.attrs.get("ft", ""))
        write_jsonl(path, rows)
    pieces.finish()
