"""Training logs: one row per run (base-model chat training and every fine-tune) with its
first and final losses, the combined figure of every run, and one figure per fine-tune.

Training code only writes `train_log.csv` into its output directory; every figure of a
training run is drawn here, from those logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from emdir.errors import EmdirError
from emdir.report.effects import write_csv
from emdir.report.figures_training import training_curves_png, training_png


def training_curves(
    base_dirs: Mapping[str, str | Path],
    adapter_dirs: Mapping[str, str | Path],
    out_csv: str | Path,
    out_png: str | Path,
    finetunes_dir: str | Path,
) -> None:
    """Every training run's log in one figure and one row each: base-model chat training
    (tiny models only; a hub model has no log) and every fine-tune, keyed "model/ft". Each
    fine-tune's log is also drawn on its own, as `<finetunes_dir>/<model>/<ft>.png`."""
    logs: dict[str, dict[str, pd.DataFrame]] = {}
    rows = []
    runs = [(key, "base", Path(d)) for key, d in base_dirs.items()] + [
        (key.split("/", 1)[0], key.split("/", 1)[1], Path(d)) for key, d in adapter_dirs.items()
    ]
    for model, run, d in runs:
        path = d / "train_log.csv"
        if not path.exists():
            if run == "base":
                continue  # a hub model: nothing was trained here
            raise EmdirError(f"{path} is missing: rerun the fine-tune (delete {d} first)")
        df = pd.read_csv(path)
        if not {"step", "loss"} <= set(df.columns):
            raise EmdirError(f"{path} has no step/loss columns: rerun the training that wrote it")
        logs.setdefault(model, {})[run] = df
        evals = df[df["heldout_loss"].notna()] if "heldout_loss" in df else df.iloc[0:0]
        spills = df["eval_spillover"].dropna() if "eval_spillover" in df else pd.Series([])
        rows.append(
            {
                "model": model,
                "run": run,
                "steps": int(df["step"].max()),
                "first_loss": float(df["loss"].iloc[0]),
                "final_loss": float(df["loss"].iloc[-1]),
                "final_heldout_loss": float(evals["heldout_loss"].iloc[-1])
                if len(evals)
                else np.nan,
                "final_eval_spillover": float(spills.iloc[-1]) if len(spills) else np.nan,
            }
        )
    if not rows:
        raise EmdirError("no training logs: every model is a hub model and no fine-tune ran")
    write_csv(pd.DataFrame(rows), out_csv)
    training_curves_png(logs, out_png)
    for model, model_runs in logs.items():
        for ft, df in model_runs.items():
            if ft != "base":
                training_png(df, Path(finetunes_dir) / model / f"{ft}.png", title=f"{model} / {ft}")
