"""A run checked against published numbers: the reference tables committed under
docs/reference/<config>/ (copies of a run's CSVs, the README's numbers come from them) read
beside the run's own, effect by effect.

For every effect both tables have (a rate, a steering effect, a grid cell's suppression, a
specificity) it says whether the two are identical (same machine, same config: they should
be, byte for byte), whether each lies inside the other's interval (what another CPU, BLAS or
seed can promise), and whether the verdicts after Holm are the same.

    python -m emdir.report.reference results docs/reference/default
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdir.errors import EmdirError
from emdir.report.effects import write_csv

# table -> (path under results/, key columns, (value, lo, hi) per effect, verdict column)
TABLES: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str, str], ...], str | None]] = {
    "spillover_rates": (
        "spillover_rates.csv",
        ("model", "ft"),
        (("spillover", "lo", "hi"), ("garble", "garble_lo", "garble_hi")),
        None,
    ),
    "within_model": (
        "within_model/summary.csv",
        ("model", "ft", "vector", "coefficient"),
        (
            ("effect_points", "effect_lo", "effect_hi"),
            ("garble_change", "garble_change_lo", "garble_change_hi"),
            ("specificity_points", "spec_lo", "spec_hi"),
        ),
        "verdict_holm",
    ),
    "transfer_matrix": (
        "transfer_matrix.csv",
        ("donor", "receiver", "vector"),
        (("suppression", "lo", "hi"), ("specificity", "spec_lo", "spec_hi")),
        "verdict_holm",
    ),
    "finetune_contrasts": (
        "within_model/finetune_contrasts.csv",
        ("model", "ft", "versus"),
        (
            ("difference", "lo", "hi"),
            ("garble_difference", "garble_difference_lo", "garble_difference_hi"),
        ),
        None,
    ),
}
# The tables pooled over fine-tuning seeds (results/pooled/, only with more than one seed):
# the same effects, every seed's rows and the pooled ones, so `seed` joins the key.
TABLES.update(
    {
        f"pooled_{table}": (f"pooled/{rel}", (*keys, "seed"), effects, verdict)
        for table, (rel, keys, effects, verdict) in list(TABLES.items())
    }
)
COLUMNS = [
    "table",
    "key",
    "effect",
    "run",
    "run_lo",
    "run_hi",
    "reference",
    "reference_lo",
    "reference_hi",
    "identical",
    "inside",
    "verdict_run",
    "verdict_reference",
    "verdict_equal",
]


def _read(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise EmdirError(f"{path}: no {what} table; run the workflow (or name the right folder)")
    return pd.read_csv(path, dtype={"coefficient": str, "seed": str})


def _inside(v: float, lo: float, hi: float) -> bool:
    return bool(np.isfinite(v) and np.isfinite(lo) and np.isfinite(hi) and lo <= v <= hi)


def _same(a: float, b: float) -> bool:
    return bool((np.isnan(a) and np.isnan(b)) or a == b)


def compare(run_dir: str | Path, reference_dir: str | Path) -> pd.DataFrame:
    """One row per effect found in both a run's tables (`run_dir`, a results/ folder) and the
    reference's (`reference_dir`, the same layout). A table the reference lacks is skipped, and
    so is a pooled table a one-seed run lacks; any other table the run lacks, or no effect in
    common at all, is an error naming the folders."""
    run_dir, reference_dir = Path(run_dir), Path(reference_dir)
    rows: list[dict[str, Any]] = []
    for table, (rel, keys, effects, verdict) in TABLES.items():
        if not (reference_dir / rel).exists():
            continue
        if table.startswith("pooled_") and not (run_dir / rel).exists():
            continue
        ref = _read(reference_dir / rel, table).set_index(list(keys))
        run = _read(run_dir / rel, table).set_index(list(keys))
        for key in ref.index.intersection(run.index, sort=False):
            a, b = run.loc[key], ref.loc[key]
            if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
                raise EmdirError(f"{table}: the key {key} is not unique; is this a pooled table?")
            for value, lo, hi in effects:
                if value not in ref.columns or value not in run.columns:
                    continue
                r = [float(a[value]), float(a[lo]), float(a[hi])]
                f = [float(b[value]), float(b[lo]), float(b[hi])]
                if np.isnan(r[0]) and np.isnan(f[0]):
                    continue
                v_run = a.get(verdict) if verdict and value.startswith("spec") else None
                v_ref = b.get(verdict) if verdict and value.startswith("spec") else None
                judged = isinstance(v_run, str) or isinstance(v_ref, str)
                rows.append(
                    {
                        "table": table,
                        "key": "/".join(
                            str(k) for k in (key if isinstance(key, tuple) else (key,))
                        ),
                        "effect": value,
                        "run": r[0],
                        "run_lo": r[1],
                        "run_hi": r[2],
                        "reference": f[0],
                        "reference_lo": f[1],
                        "reference_hi": f[2],
                        "identical": all(_same(x, y) for x, y in zip(r, f, strict=True)),
                        "inside": _inside(r[0], f[1], f[2]) and _inside(f[0], r[1], r[2]),
                        "verdict_run": v_run if judged else None,
                        "verdict_reference": v_ref if judged else None,
                        "verdict_equal": (str(v_run) == str(v_ref)) if judged else None,
                    }
                )
    if not rows:
        raise EmdirError(
            f"no effect of {run_dir} is in the reference {reference_dir}: the reference is for "
            "another config (docs/reference/<config>/README.md says which)"
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(df: pd.DataFrame, reference: str | Path, listed: int = 10) -> str:
    """A few lines: how many effects are identical, inside each other's intervals, with equal
    verdicts, and the ones that moved (largest first)."""
    n = len(df)
    judged = df[df["verdict_equal"].notna()]
    lines = [
        f"reference check against {reference}: {n} effects compared "
        f"({', '.join(dict.fromkeys(df['table']))})",
        f"  identical: {int(df['identical'].sum())} of {n}",
        f"  inside each other's intervals: {int(df['inside'].sum())} of {n}",
        f"  verdicts after Holm equal: {int(judged['verdict_equal'].astype(bool).sum())} of "
        f"{len(judged)}",
    ]
    moved = df[~df["inside"].astype(bool)].copy()
    if len(moved):
        moved["shift"] = (moved["run"] - moved["reference"]).abs()
        lines.append("  moved (outside each other's intervals), largest first:")
        for _, r in moved.sort_values("shift", ascending=False).head(listed).iterrows():
            lines.append(
                f"    {r['table']} {r['key']} {r['effect']}: {r['run']:.4g} "
                f"[{r['run_lo']:.4g}, {r['run_hi']:.4g}] vs reference {r['reference']:.4g} "
                f"[{r['reference_lo']:.4g}, {r['reference_hi']:.4g}]"
            )
    changed = judged[~judged["verdict_equal"].astype(bool)]
    for _, r in changed.head(listed).iterrows():
        lines.append(
            f"  verdict changed: {r['table']} {r['key']}: {r['verdict_run']} "
            f"(reference: {r['verdict_reference']})"
        )
    return "\n".join(lines)


def check(
    run_dir: str | Path, reference_dir: str | Path, out_csv: str | Path, out_txt: str | Path
) -> str:
    """Compare, write the table and the summary, and return the summary."""
    df = compare(run_dir, reference_dir)
    write_csv(df, out_csv)
    text = summary(df, reference_dir)
    Path(out_txt).write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="the run's results/ folder")
    ap.add_argument("reference", help="a reference folder, e.g. docs/reference/default")
    args = ap.parse_args(argv)
    try:
        df = compare(args.run, args.reference)
    except EmdirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(df, args.reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
