"""Within-model results pooled over fine-tuning seeds (issue 29): every effect per seed and
pooled, with an interval that includes the seed variance (`emdir.analysis.replicates`), the
spread across seeds, verdicts from the pooled interval (Holm across models at the pooled
read strength, as each seed's table does) and in how many seeds the per-seed call agrees.

Each seed's own tables (results/[seed<n>/]...) are read back for the per-seed rows, so a
pooled table repeats them beside its `pooled` rows: one CSV with a `seed` column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.carry import without_text
from emdir.io import sha256_text
from emdir.report import figures_steering
from emdir.report.dose_response import series_name, steering_rows
from emdir.report.effects import (
    PairedConditions,
    bootstrap_settings,
    ci_columns,
    holm_family,
    load_scored,
    write_csv,
)

POOLED = "pooled"
# Rows of one effect across the tables: (model, fine-tune, vector, coefficient).
KEY = ["model", "ft", "vector", "coefficient"]


def _call(lo: float, hi: float) -> str:
    """Which side of zero an interval lies on: up, down, or neither."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "none"
    return "up" if lo > 0 else "down" if hi < 0 else "none"


def _per_seed(paths: Sequence[str | Path], seeds: Sequence[int]) -> pd.DataFrame:
    return pd.concat(
        [pd.read_csv(p).assign(seed=str(s)) for p, s in zip(paths, seeds, strict=True)],
        ignore_index=True,
    )


def _key(values: Any) -> tuple[str, ...]:
    """A row's key, with floats (NaN too) written the same way wherever they were read."""
    return tuple(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _agreement(
    pooled: pd.DataFrame,
    per_seed: pd.DataFrame,
    key: Sequence[str] = KEY,
    effect: tuple[str, str, str] = ("effect_points", "effect_lo", "effect_hi"),
) -> pd.DataFrame:
    """Per pooled row: the spread of the per-seed effects and in how many seeds the per-seed
    effect interval makes the pooled interval's call (up, down, neither), and the per-seed
    specificity verdict (unadjusted, at the same coefficient) the pooled one."""
    value, lo, hi = effect
    seeds: dict[tuple[str, ...], list[int]] = {}
    for i, k in enumerate(zip(*(per_seed[c] for c in key), strict=True)):
        seeds.setdefault(_key(k), []).append(i)
    out = []
    for _, row in pooled.iterrows():
        group = per_seed.iloc[seeds[_key(row[k] for k in key)]]
        n = len(group)
        call = _call(row[lo], row[hi])
        same = sum(_call(a, b) == call for a, b in zip(group[lo], group[hi], strict=True))
        extra: dict[str, Any] = {
            "n_seeds": n,
            "effect_seed_sd": float(group[value].std(ddof=1)) if n > 1 else np.nan,
            "effect_seed_min": float(group[value].min()),
            "effect_seed_max": float(group[value].max()),
            "effect_seeds_agree": f"{same}/{n}",
        }
        if isinstance(row.get("verdict"), str) and "verdict" in group:
            agree = int((group["verdict"] == row["verdict"]).sum())
            extra["verdict_seeds_agree"] = f"{agree}/{n}"
        out.append(extra)
    return pd.concat([pooled.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def load_draws(
    generations: Mapping[str, Sequence[str | Path]], question_set: str
) -> dict[str, list[list[dict[str, Any]]]]:
    """Each key's scored answers per seed, every file read once: a draw shared by every seed
    (the base model's answers) is the same list in each seed's place, whether the seeds name
    one file or copies of it (a carried seed's, without the answers' text: emdir.carry)."""
    loaded: dict[str, list[dict[str, Any]]] = {}
    draws: dict[str, list[dict[str, Any]]] = {}

    def read(path: str | Path) -> list[dict[str, Any]]:
        if str(path) not in loaded:
            rows = load_scored(path, question_set)
            scored = json.dumps([without_text(r) for r in rows], sort_keys=True)
            loaded[str(path)] = draws.setdefault(sha256_text(scored), rows)
        return loaded[str(path)]

    return {key: [read(p) for p in paths] for key, paths in generations.items()}


def pooled_rates(
    answers: Mapping[str, Sequence[list[dict[str, Any]]]],
    per_seed: Sequence[str | Path],
    seeds: Sequence[int],
    boot: Mapping[str, Any],
) -> pd.DataFrame:
    """Spillover, garble and coherence per model x fine-tune (`answers` as `load_draws`
    gives them): each seed's rows and a pooled row. The base models' answers are one draw
    shared by every seed, so their pooled row is that draw's (no seed variance to add)."""
    rows = []
    for key, per in answers.items():
        model, ft = key.split("/")
        draws = list({id(d): d for d in per}.values())
        p = PairedConditions([{"x": d} for d in draws], boot)
        rows.append(
            {
                "model": model,
                "ft": ft,
                "seed": POOLED,
                "n_seeds": len(draws),
                **dict(zip(("spillover", "lo", "hi"), p.mean3("x", "spill"), strict=True)),
                **ci_columns("garble", p.mean3("x", "garble")),
                **ci_columns("coherence", p.mean3("x", "coh")),
            }
        )
    return pd.concat([_per_seed(per_seed, seeds), pd.DataFrame(rows)], ignore_index=True)


def pooled_finetunes(
    seeds: Sequence[int],
    generations: Mapping[str, Sequence[str | Path]],
    spillover: Sequence[str | Path],
    outs: Mapping[str, str | Path],
    question_set: str,
    stats_cfg: Mapping[str, Any],
    direction_ft: str,
) -> None:
    """The fine-tunes' pooled tables, from their answers alone: `outs["spillover"]` (rates,
    `pooled_rates`) and `outs["contrasts"]` (the fine-tunes against each other,
    `pooled_contrasts`). `generations` keys as `finetune_summary`'s, each value one path per
    seed in `seeds`' order; `spillover` the seeds' own rate tables."""
    boot = bootstrap_settings(stats_cfg)
    answers = load_draws(generations, question_set)
    write_csv(pooled_rates(answers, spillover, seeds, boot), outs["spillover"])
    write_csv(pooled_contrasts(answers, seeds, boot, direction_ft), outs["contrasts"])


def pooled_within_model(
    seeds: Sequence[int],
    generations: Mapping[str, Sequence[str | Path]],
    steering: Mapping[str, Sequence[str | Path]],
    directions: Mapping[str, Sequence[str | Path]],
    summaries: Sequence[str | Path],
    rates: str | Path,
    outs: Mapping[str, str | Path],
    steer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    direction_ft: str,
    config_label: str = "",
) -> None:
    """The pooled within-model tables: `outs["summary"]` (the dose-response: every seed's
    rows and the pooled ones, with the spread and agreement columns), `outs["steering"]`
    (the dose-response figure with every seed's points) and `outs["comparison"]` /
    `outs["comparison_png"]` (the paper comparison read off the pooled rows). Keys as
    `within_model_summary`'s, each value one path per seed in `seeds`' order; `summaries`
    are the seeds' own tables, `rates` `pooled_finetunes`' spillover table."""
    from emdir.analysis import directions as dm
    from emdir.report.within_model import paper_comparison

    qset = str(steer_cfg["question_set"])
    boot = bootstrap_settings(stats_cfg)
    dirs = {key: [dm.read_directions(p) for p in paths] for key, paths in directions.items()}
    answers = load_draws(generations, qset)
    grouped: dict[tuple[str, str], dict[str, list[list[dict[str, Any]]]]] = {}
    for key, paths in steering.items():
        model, ft, vector = key.split("/")
        grouped.setdefault((model, ft), {})[vector] = [load_scored(p, qset) for p in paths]
    pooled: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    for (model, ft), steered in grouped.items():
        rows, points, _ = steering_rows(
            model,
            ft,
            steered,
            answers[f"{model}/{ft}"],
            dirs.get(f"{model}/{direction_ft}") or [None] * len(seeds),
            direction_ft,
            steer_cfg,
            boot,
        )
        pooled += rows
        curve += points
    pooled = holm_family(
        pooled, "specificity_points", lambda r: bool(r.get("read")), boot, "models at read"
    )
    per_seed = _per_seed(summaries, seeds)
    table = _agreement(pd.DataFrame(pooled).assign(seed=POOLED), per_seed)
    write_csv(pd.concat([per_seed, table], ignore_index=True), outs["summary"])
    comparison = paper_comparison(dirs, direction_ft, table, boot, config_label)
    write_csv(comparison.assign(seed=POOLED, n_seeds=len(seeds)), outs["comparison"])
    figures_steering.paper_comparison_png(comparison, outs["comparison_png"])
    figures_steering.steering_png(
        pd.DataFrame(curve),
        outs["steering"],
        seed_points(per_seed, pd.read_csv(rates, dtype={"seed": str}), direction_ft),
    )


def pooled_contrasts(
    answers: Mapping[str, Sequence[list[dict[str, Any]]]],
    seeds: Sequence[int],
    boot: Mapping[str, Any],
    direction_ft: str,
) -> pd.DataFrame:
    """`finetune_contrasts` per seed and pooled over the seeds (`answers` as `load_draws`
    gives them; the pooled difference is the mean of the seeds', its interval the two-level
    bootstrap's), with in how many seeds the per-seed call is the pooled one
    (`seeds_agree`)."""
    from emdir.report.within_model import finetune_contrasts

    per_seed = pd.concat(
        [
            finetune_contrasts({k: [draws[i]] for k, draws in answers.items()}, direction_ft, boot)
            .drop(columns="n_seeds")
            .assign(seed=str(seed))
            for i, seed in enumerate(seeds)
        ],
        ignore_index=True,
    )
    pooled = finetune_contrasts(answers, direction_ft, boot).assign(seed=POOLED)
    key = ["model", "ft", "versus"]
    calls = per_seed.groupby(key)["call"].apply(list)
    pooled["seeds_agree"] = [
        f"{sum(c == row['call'] for c in calls[tuple(row[k] for k in key)])}/{len(seeds)}"
        for _, row in pooled.iterrows()
    ]
    return pd.concat([per_seed, pooled], ignore_index=True)


def seed_points(summary: pd.DataFrame, rates: pd.DataFrame, direction_ft: str) -> pd.DataFrame:
    """The dose-response's per-seed points: each seed's value of every metric per series
    and coefficient (its own summary rows), and at coefficient 0 each seed's unsteered
    answers (its rates rows), series named as `steering_rows` names them."""
    metrics = ["spillover", "garble", "coherence", "misalignment"]
    rows = summary[summary["seed"].astype(str) != POOLED]
    series = [
        series_name(v, ft, direction_ft) for v, ft in zip(rows["vector"], rows["ft"], strict=True)
    ]
    steered = rows.assign(series=series)[["model", "ft", "series", "seed", "coefficient"]]
    steered = steered.join(rows.reindex(columns=metrics))
    unsteered = (
        steered[["model", "ft", "series", "seed"]]
        .drop_duplicates()
        .merge(
            rates[rates["seed"].astype(str) != POOLED].reindex(
                columns=["model", "ft", "seed", *metrics]
            ),
            on=["model", "ft", "seed"],
        )
        .assign(coefficient=0.0)
    )
    return pd.concat([unsteered, steered], ignore_index=True)


def pooled_transfer_matrix(
    seeds: Sequence[int],
    baselines: Mapping[str, Sequence[str | Path]],
    cells: Mapping[str, Sequence[str | Path]],
    references: Mapping[str, Sequence[str | Path]],
    maps: Mapping[str, Sequence[str | Path]],
    per_seed: Sequence[str | Path],
    out_csv: str | Path,
    out_png: str | Path,
    transfer_cfg: Mapping[str, Any],
    stats_cfg: Mapping[str, Any],
    out_topology: str | Path | None = None,
) -> None:
    """The grid pooled over seeds: every seed's rows (its own transfer_matrix.csv) and the
    pooled ones (suppression and specificity with seed-and-question intervals, Holm across
    the pooled cells, the spread and agreement columns), and the pooled grid's figure, each
    cell with the number of seeds whose own suppression interval agrees; with
    `out_topology`, donor strength and receiver susceptibility pooled the same way."""
    from emdir.report import figures_transfer
    from emdir.report.transfer import grid_table

    df, topology = grid_table(baselines, cells, transfer_cfg, stats_cfg, references, maps)
    if out_topology is not None:
        write_csv(topology.assign(seed=POOLED, n_seeds=len(seeds)), out_topology)
    own = _per_seed(per_seed, seeds)
    pooled = _agreement(
        df.assign(seed=POOLED), own, ("donor", "receiver", "vector"), ("suppression", "lo", "hi")
    )
    write_csv(pd.concat([own, pooled], ignore_index=True), out_csv)
    figures_transfer.transfer_matrix_png(pooled, out_png)


def pooled_mechanistic(
    seeds: Sequence[int],
    model: str,
    baselines: Mapping[str, Sequence[str | Path]],
    ablation: Mapping[str, Sequence[str | Path]],
    induce: Mapping[str, Sequence[str | Path]],
    directions: Mapping[str, Sequence[str | Path]],
    summaries: Sequence[str | Path],
    convergence: Sequence[str | Path],
    outs: Mapping[str, str | Path],
    question_set: str,
    stats_cfg: Mapping[str, Any],
) -> None:
    """One mechanistic model's tables pooled over seeds. `outs["summary"]`: the ablation and
    inducing effects, every seed's rows (its own summary.csv) and pooled ones (intervals
    over seeds and questions; spread and agreement of the spillover change). Keys as
    `mechanistic_summary`'s, each value one path per seed. `outs["convergence"]`: every
    seed's cosines, their mean over seeds (with spread), and the cosine of each convergence
    fine-tune's direction between every two seeds (`directions`: ft -> one file per seed),
    whether the direction itself is reproducible across draws."""
    from emdir.report.mechanistic import effect_rows

    boot = bootstrap_settings(stats_cfg)
    base_rows = load_draws(baselines, question_set)
    df = effect_rows(model, base_rows, ablation, induce, question_set, boot)
    own = _per_seed(summaries, seeds)
    key = ("model", "experiment", "ft", "vector", "mode", "coefficient")
    change = ("spillover_change", "spillover_change_lo", "spillover_change_hi")
    table = _agreement(df.assign(seed=POOLED), own, key, change) if len(df) else df
    write_csv(pd.concat([own, table], ignore_index=True), outs["summary"])
    write_csv(_pooled_convergence(seeds, directions, convergence), outs["convergence"])


def _pooled_convergence(
    seeds: Sequence[int],
    directions: Mapping[str, Sequence[str | Path]],
    convergence: Sequence[str | Path],
) -> pd.DataFrame:
    from emdir.report.mechanistic import layer_units

    own = _per_seed(convergence, seeds)
    pooled = _cosine_mean(own).assign(n_seeds=own.groupby(COS_KEY, sort=False).size().to_numpy())
    across = []
    for ft, paths in directions.items():
        units = [layer_units(path) for path in paths]
        for i, a in enumerate(units):
            for j in range(i + 1, len(units)):
                for layer in sorted(set(a) & set(units[j])):
                    across.append(
                        {
                            "kind": "across seeds",
                            "a": ft,
                            "b": ft,
                            "layer": layer,
                            "cosine": float(a[layer] @ units[j][layer]),
                            "seed": f"{seeds[i]} vs {seeds[j]}",
                        }
                    )
    pairs = pd.DataFrame(across)
    if len(pairs):
        pairs = pd.concat(
            [pairs, _cosine_mean(pairs).assign(n_seeds=len(seeds))], ignore_index=True
        )
    return pd.concat([own, pooled, pairs], ignore_index=True)


COS_KEY = ["kind", "a", "b", "layer"]


def _cosine_mean(rows: pd.DataFrame) -> pd.DataFrame:
    """Per comparison and layer: the mean cosine over `rows` (seeds, or pairs of seeds) and
    its spread, as a `pooled` row."""
    stats = rows.groupby(COS_KEY, sort=False)["cosine"]
    return (
        stats.mean()
        .rename("cosine")
        .reset_index()
        .assign(
            seed=POOLED,
            cosine_seed_sd=stats.std(ddof=1).to_numpy(),
            cosine_seed_min=stats.min().to_numpy(),
            cosine_seed_max=stats.max().to_numpy(),
        )
    )
