"""The donor x receiver transfer grid: each cell's suppression by the mapped direction
against the receiver's unsteered answers, beside its controls and the receiver's own
direction, with specificity and Holm's verdicts (transfer and diagonal families), and the
grid's topology: donor strength and receiver susceptibility.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.errors import EmdirError
from emdir.report import figures_transfer
from emdir.report.dose_response import row_coefficient
from emdir.report.effects import (
    BEHAVIOUR,
    PairedConditions,
    bootstrap_settings,
    ci_columns,
    holm_family,
    load_scored,
    write_csv,
)


def _paths(value: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """One path (one seed) or a path per fine-tuning seed, as a list."""
    return [value] if isinstance(value, (str, Path)) else list(value)


def grid_table(
    baselines: Mapping[str, str | Path | Sequence[str | Path]],
    cells: Mapping[str, str | Path | Sequence[str | Path]],
    transfer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    references: Mapping[str, str | Path | Sequence[str | Path]] | None = None,
    maps: Mapping[str, str | Path | Sequence[str | Path]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The grid's long table and its topology (see `transfer_matrix`). Every file may be
    one path or a list of paths, one per fine-tuning seed (the same number for all): then
    every value is pooled over the seeds (`PairedConditions`), a cell's coefficient and map
    summary are their means over seeds."""
    boot = bootstrap_settings(stats_cfg)
    behaviour = BEHAVIOUR[str(transfer_cfg["behaviour"])]
    qsets: dict[str, str | None] = {r: None for r in baselines}
    grouped: dict[tuple[str, str], dict[str, list[list[dict[str, Any]]]]] = {}
    for key, path in cells.items():
        pair, vector = key.split("/")
        donor, receiver = pair.split("__")
        rows = [load_scored(p, None) for p in _paths(path)]
        qsets[receiver] = rows[0][0].get("question_set")
        grouped.setdefault((donor, receiver), {})[vector] = rows
    shared: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
    for key, path in (references or {}).items():
        receiver, vector = key.split("/")
        shared.setdefault(receiver, {})[vector] = [load_scored(p, None) for p in _paths(path)]
    # One question bootstrap for the whole grid: every receiver answers the same questions,
    # so each replicate resamples them once for every baseline, cell and reference.
    seeded: dict[str, list[list[dict[str, Any]]]] = {
        f"base:{r}": [load_scored(p, qsets[r]) for p in _paths(path)]
        for r, path in baselines.items()
    }
    for (donor, receiver), vecs in grouped.items():
        seeded.update({f"{donor}>{receiver}:{v}": rows for v, rows in vecs.items()})
    for receiver, vecs in shared.items():
        seeded.update({f"ref:{receiver}:{v}": rows for v, rows in vecs.items()})
    n_seeds = len(next(iter(seeded.values())))
    p = PairedConditions([{k: v[s] for k, v in seeded.items()} for s in range(n_seeds)], boot)
    from emdir.analysis.ridge import map_summary

    summaries = {}
    for k, path in (maps or {}).items():
        per_seed = [map_summary(m) for m in _paths(path)]
        summaries[k] = {
            f"map_{m}": v if len(per_seed) == 1 else float(np.mean([s[m] for s in per_seed]))
            for m, v in per_seed[0].items()
        }
    out = []
    for (donor, receiver), vecs in grouped.items():
        if "target" not in vecs:
            raise EmdirError(f"transfer cell {donor}->{receiver} has no target output")
        names = {v: f"{donor}>{receiver}:{v}" for v in vecs}
        names.update({v: f"ref:{receiver}:{v}" for v in shared.get(receiver, {})})
        base = f"base:{receiver}"
        controls = {v: n for v, n in names.items() if v not in ("target", "own")}
        randoms = [v for v in controls if v.startswith("random_") and v[7:].isdigit()]
        for vector, name in names.items():
            eff = p.diff3(base, name, "spill")
            row: dict[str, Any] = {
                "donor": donor,
                "receiver": receiver,
                "cell": "diagonal (self-map check)" if donor == receiver else "transfer",
                "vector": vector,
                "role": "target"
                if vector == "target"
                else "reference"
                if vector == "own"
                else "control",
                **p.size(name),
                "coefficient": float(np.mean([row_coefficient(r[0]) for r in seeded[name]])),
                "baseline_spillover": 100 * p.point(base, "spill"),
                "spillover": 100 * p.point(name, "spill"),
                "suppression": eff[0],
                "lo": eff[1],
                "hi": eff[2],
                **ci_columns("garble", p.mean3(name, "garble")),
                **ci_columns("garble_change", p.diff3(name, base, "garble")),
                **ci_columns("coherence", p.mean3(name, "coh")),
                **ci_columns("coherence_change", p.diff3(name, base, "coh")),
                **ci_columns("kl", p.mean3(name, "kl")),
            }
            if vector == "target":
                if controls:
                    row.update(p.specificity(base, name, controls, behaviour))
                if randoms:
                    effects = [p.diff3(base, names[v], behaviour)[0] for v in randoms]
                    row.update(
                        {
                            "random_draws": len(randoms),
                            "random_effect_mean": float(np.mean(effects)),
                            "random_effect_min": float(np.min(effects)),
                            "random_effect_max": float(np.max(effects)),
                        }
                    )
                row.update(summaries.get(f"{donor}__{receiver}", {}))
            out.append(row)
    out = holm_family(out, "specificity", lambda r: r["cell"] == "transfer", boot, "transfer")
    out = holm_family(out, "specificity", lambda r: r["cell"] != "transfer", boot, "diagonal")
    df = pd.DataFrame(out)
    topo = []
    for kind, axis in (("donor", "donor"), ("receiver", "receiver")):
        for model in dict.fromkeys(df[axis]):
            keys = [k for k in grouped if k[0 if kind == "donor" else 1] == model and k[0] != k[1]]
            if not keys:
                continue
            reps = np.mean(
                [
                    p.qb.reps(f"base:{r}|spill") - p.qb.reps(f"{d}>{r}:target|spill")
                    for d, r in keys
                ],
                axis=0,
            )
            value = float(
                np.mean(
                    [
                        p.point(f"base:{r}", "spill") - p.point(f"{d}>{r}:target", "spill")
                        for d, r in keys
                    ]
                )
            )
            est = p.qb.estimate(value, reps)
            topo.append(
                {
                    "role": kind,
                    "model": model,
                    "cells": len(keys),
                    "mean_suppression": 100 * est.value,
                    "lo": 100 * est.lo,
                    "hi": 100 * est.hi,
                }
            )
    # A one-model grid has no off-diagonal cell: the table keeps its columns, with no rows.
    topo_df = pd.DataFrame(topo, columns=["role", "model", "cells", "mean_suppression", "lo", "hi"])
    return df, topo_df


def transfer_matrix(
    baselines: Mapping[str, str | Path],
    cells: Mapping[str, str | Path],
    out_csv: str | Path,
    out_png: str | Path,
    transfer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    rates_csv: str | Path | None = None,
    references: Mapping[str, str | Path] | None = None,
    topology_csv: str | Path | None = None,
    asymmetry_png: str | Path | None = None,
    maps: Mapping[str, str | Path] | None = None,
) -> None:
    """Suppression (points) per donor/receiver cell for the mapped direction and its controls.

    Long format: one row per cell and vector, with `role` target / control / reference, and
    beside each suppression the garble rate and coherence with their changes (and CIs).
    Controls are the cell's own (through the map) plus the receiver's shared ones
    (`references` keyed `receiver/vector`: `random_receiver`); the receiver's own direction
    (`own`) is a reference, reported beside each cell but never a control. Specificity is
    the target's effect minus the strongest control's, with CI. With `rates_csv` (the
    within-model spillover table), each row also carries the receiver's base-model spillover.
    With `topology_csv` / `asymmetry_png`: donor strength (row means) and receiver
    susceptibility (column means) over off-diagonal cells, with CIs, and their figure.
    """
    df, topo_df = grid_table(baselines, cells, transfer_cfg, stats_cfg, references, maps)
    if rates_csv is not None:
        rates = pd.read_csv(rates_csv)
        base_rate = dict(
            zip(rates[rates.ft == "base"].model, rates[rates.ft == "base"].spillover, strict=True)
        )
        df["receiver_base_spillover"] = df.receiver.map(base_rate)
    write_csv(df, out_csv)
    figures_transfer.transfer_matrix_png(df, out_png)
    if topology_csv is not None:
        write_csv(topo_df, topology_csv)
    if asymmetry_png is not None:
        figures_transfer.asymmetry_png(topo_df, df, asymmetry_png)
