"""The training-budget sweep (issue 30): where along its training each fine-tune answers the
monitor questions with code, and whether it still writes language while it does.

Every fine-tune evaluates the `finetune.eval_questions` set every `eval_every` steps (the
spillover monitor: code and garbled shares of its sampled answers). With a constant learning
rate and no warmup the model at step s of a longer run is the model an s-step run ends with,
so one run per learning rate and batch size draws the whole steps axis. This reads those
logs into one table, every evaluation a row with Wilson intervals, marks the points in the
regime (code spillover inside `regime.spillover`, garble below `regime.garble_below`) and
names, per model and fine-tune, the first step in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.errors import EmdirError
from emdir.report.effects import write_csv

_Z95 = 1.959963984540054


def wilson(k: float, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """A proportion k / n in percent with its Wilson score interval (NaNs when n is 0)."""
    if n <= 0:
        return math.nan, math.nan, math.nan
    if level != 0.95:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
    else:
        z = _Z95
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * p, 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def sweep_table(
    adapter_dirs: Mapping[str, str | Path],
    train_cfgs: Mapping[str, Mapping[str, Any]],
    regime: Mapping[str, Any],
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per evaluation of every sweep run (`adapter_dirs` keyed "model/run"; its
    train settings in `train_cfgs[run]`): step, rows seen, code spillover and garble with
    Wilson intervals over the evaluation's answers, and whether the point is in the regime."""
    lo, hi = (float(v) for v in regime["spillover"])
    garble_below = float(regime["garble_below"])
    rows = []
    for key, d in adapter_dirs.items():
        model, run = key.split("/", 1)
        path = Path(d) / "train_log.csv"
        if not path.exists():
            raise EmdirError(f"{path} is missing: rerun the fine-tune (delete {d} first)")
        log = pd.read_csv(path)
        needed = {"step", "eval_spillover", "eval_garble", "eval_n"}
        if not needed <= set(log.columns):
            raise EmdirError(
                f"{path} has no {', '.join(sorted(needed - set(log.columns)))} columns: it was "
                "written before the monitor counted garble, or finetune.eval_every is 0; "
                "rerun the fine-tune (delete its folder) with eval_every > 0"
            )
        evals = log[log["eval_n"].notna()]
        train = train_cfgs[run]
        for _, e in evals.iterrows():
            n = int(e["eval_n"])
            spill = wilson(round(e["eval_spillover"] * n), n, level)
            garble = wilson(round(e["eval_garble"] * n), n, level)
            rows.append(
                {
                    "model": model,
                    "run": run,
                    "lr": float(train["lr"]),
                    "batch_size": int(train["batch_size"]),
                    "step": int(e["step"]),
                    "rows_seen": int(e["step"]) * int(train["batch_size"]),
                    "n_answers": n,
                    **dict(zip(("spillover", "spillover_lo", "spillover_hi"), spill, strict=True)),
                    **dict(zip(("garble", "garble_lo", "garble_hi"), garble, strict=True)),
                    "in_regime": bool(lo <= spill[0] <= hi and garble[0] < garble_below),
                }
            )
    if not rows:
        raise EmdirError("no evaluations in any training log; set finetune.eval_every > 0")
    return pd.DataFrame(rows)


def first_in_regime(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and run: the first step in the regime and the steps it stays there
    (NaN where it never enters: the last evaluation's rates say which side it is on)."""
    out = []
    for (model, run), g in table.groupby(["model", "run"], sort=False):
        inside = g[g["in_regime"]]
        last = g.iloc[-1]
        out.append(
            {
                "model": model,
                "run": run,
                "lr": last["lr"],
                "batch_size": last["batch_size"],
                "first_step_in_regime": int(inside["step"].min()) if len(inside) else np.nan,
                "last_step_in_regime": int(inside["step"].max()) if len(inside) else np.nan,
                "steps_evaluated": int(g["step"].max()),
                "final_spillover": last["spillover"],
                "final_garble": last["garble"],
            }
        )
    return pd.DataFrame(out)


def budget_sweep(
    adapter_dirs: Mapping[str, str | Path],
    train_cfgs: Mapping[str, Mapping[str, Any]],
    regime: Mapping[str, Any],
    out_csv: str | Path,
    out_summary: str | Path,
    out_png: str | Path,
    level: float = 0.95,
) -> None:
    """The sweep's table (every evaluation), its summary (first step in the regime per
    model and fine-tune) and its figure."""
    from emdir.report.figures_training import sweep_png

    table = sweep_table(adapter_dirs, train_cfgs, regime, level)
    write_csv(table, out_csv)
    write_csv(first_in_regime(table), out_summary)
    sweep_png(table, regime, out_png)
