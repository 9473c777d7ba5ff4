"""The README's default numbers are the committed reference tables' (docs/reference/default),
not hand copies: its garble-rate row and its read-strength row are checked against them."""

from __future__ import annotations

import re
from itertools import takewhile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference" / "default"
MODELS = ["gemma2", "llama", "ministral3", "qwen2"]


def _row(label: str) -> list[str]:
    """The README table row that starts with `label`, as its cells after the label."""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| {label}"):
            return [c.strip() for c in line.strip("|").split("|")[1:]]
    raise AssertionError(f"the README has no row {label!r}")


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell.replace("**", ""))]


def test_the_readme_quotes_the_reference_tables() -> None:
    rates = pd.read_csv(REFERENCE / "spillover_rates.csv").set_index(["model", "ft"])
    cells = _row("garbled: base / insecure / secure (%)")
    assert len(cells) == len(MODELS)
    for model, cell in zip(MODELS, cells, strict=True):
        want = [rates.loc[(model, ft), "garble"] for ft in ("base", "insecure", "secure")]
        assert _numbers(cell) == want, (model, cell, want)
    summary = pd.read_csv(REFERENCE / "within_model" / "summary.csv")
    read = summary[(summary.vector == "target") & (summary.ft == "insecure") & summary.read]
    cells = _row("target at the read strength: garble change [CI]")
    for model, cell in zip(MODELS, cells, strict=True):
        r = read[read.model == model].iloc[0]
        want = [r.garble_change, r.garble_change_lo, r.garble_change_hi]
        assert _numbers(cell) == want, (model, cell, want)


REGIME = REPO / "docs" / "reference" / "regime"
# The regime study's first draws, on an AMD EPYC: seed 0's steering and three seeds' fine-tunes
EPYC = REGIME / "epyc"


def _section_rows(heading: str, header: str | None = None) -> dict[str, list[str]]:
    """The table rows of one README section (from `heading` to the next `## `), by label: the
    first row of each label, or with `header` only the rows of the table whose header line
    starts with it."""
    text = (REPO / "README.md").read_text(encoding="utf-8").split(f"\n{heading}", 1)[1]
    rows: dict[str, list[str]] = {}
    inside = header is None
    for line in text.split("\n## ", 1)[0].splitlines():
        if header is not None and not line.startswith("|"):
            inside = False
        elif header is not None and line.startswith(header):
            inside = True
            continue
        if inside and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


LABELS = {"base": "none (base)", "insecure": "insecure", "secure": "secure"}
LABELS["educational"] = "educational"
# The 1.5B's seed 1: its insecure and secure fine-tunes (config/without_educational.yaml),
# carried (rule carry_finetunes).
SEED1_1P5B = REGIME / "qwen15coder" / "seeds" / "seed1"
SEED2_1P5B = REGIME / "qwen15coder" / "seeds" / "seed2"
# The fine-tunes the 1.5B's seeds run (config/without_educational.yaml leaves one out).
PAIR = [ft for ft in LABELS if ft != "educational"]


@pytest.mark.parametrize(
    ("header", "folder", "model", "fts"),
    [
        ("| fine-tune (EPYC, seed 0) | code spillover (%) |", EPYC, "qwen25coder", LABELS),
        (
            "| fine-tune (1.5B, seed 0) | code spillover (%) |",
            REGIME / "qwen15coder",
            "qwen15coder",
            LABELS,
        ),
        (
            "| fine-tune (1.5B, seed 1) | code spillover (%) |",
            SEED1_1P5B,
            "qwen15coder",
            PAIR,
        ),
        (
            "| fine-tune (1.5B, seed 2) | code spillover (%) |",
            SEED2_1P5B,
            "qwen15coder",
            PAIR,
        ),
    ],
    ids=["epyc", "1p5b", "1p5b-seed1", "1p5b-seed2"],
)
def test_the_regime_section_quotes_its_reference_tables(
    header: str, folder: Path, model: str, fts: list[str]
) -> None:
    """One seed's fine-tunes (the EPYC's seed 0 of the 0.5B; the 1.5B's seeds 0, 1 and 2): each
    fine-tune's spillover and garble with their intervals and its difference from the insecure
    fine-tune, as the folder's tables have them (to one decimal)."""
    rows = _section_rows("## The paper's regime on real weights", header)
    assert sorted(rows) == sorted(LABELS[ft] for ft in fts)
    rates = pd.read_csv(folder / "spillover_rates.csv").set_index(["model", "ft"])
    assert sorted(rates.loc[model].index) == sorted(fts)
    contrasts = pd.read_csv(folder / "within_model" / "finetune_contrasts.csv")
    contrasts = contrasts.set_index(["model", "ft", "versus"])
    for ft in fts:
        label = LABELS[ft]
        cells = rows[label]
        r = rates.loc[(model, ft)]
        want = [r.spillover, r.lo, r.hi]
        assert _numbers(cells[0]) == [round(x, 1) for x in want], (label, cells[0], want)
        want = [r.garble, r.garble_lo, r.garble_hi]
        assert _numbers(cells[1]) == [round(x, 1) for x in want], (label, cells[1], want)
        if ft in ("secure", "educational"):
            c = contrasts.loc[(model, "insecure", ft)]
            # the table gives the control minus insecure: the contrast's sign flipped
            want = [-c.difference, -c.hi, -c.lo]
            assert _numbers(cells[2]) == [round(x, 1) for x in want], (label, cells[2], want)


def _check_steering_rows(
    rows: dict[str, list[str]], summary_csv: Path, seed: str | None = None
) -> None:
    """A steering table's rows against a summary (with `seed`, a pooled one's rows of that
    seed): per coefficient, the target's and the secure direction's reduction with their
    intervals, and the controls' reductions."""
    summary = pd.read_csv(summary_csv, dtype={"seed": str})
    if seed is not None:
        summary = summary[summary.seed == seed]
    summary = summary[summary.ft == "insecure"].set_index(["vector", "coefficient"])
    for coef in (0.05, 0.1, 0.25, 0.5):
        label = next(k for k in rows if k.replace("*", "").split(" ")[0] == f"{coef:g}")
        cells = rows[label]
        for cell, vector in zip(cells[:2], ("target", "secure_direction"), strict=True):
            r = summary.loc[(vector, coef)]
            want = [r.effect_points, r.effect_lo, r.effect_hi]
            assert _numbers(cell) == [round(x, 1) for x in want], (coef, vector, cell, want)
        controls = [["random_0", "random_1"], ["orthogonal"], ["wrong_layer"]]
        for cell, vectors in zip(cells[2:5], controls, strict=True):
            want = [round(summary.loc[(v, coef)].effect_points, 1) for v in vectors]
            assert _numbers(cell) == want, (coef, vectors, cell, want)


def test_the_regime_steering_table_quotes_its_reference_summary() -> None:
    """The EPYC seed 0's steering sweep: the target's and the secure direction's reduction
    with their intervals, per coefficient, as docs/reference/regime/epyc's summary has them."""
    rows = _section_rows("## The paper's regime on real weights", "| coefficient (EPYC, seed 0) |")
    assert len(rows) == 4
    _check_steering_rows(rows, EPYC / "within_model" / "summary.csv")


def test_the_pooled_steering_table_quotes_the_pooled_reference_summary() -> None:
    """The three seeds' steering sweep pooled: the pooled rows of
    docs/reference/regime/pooled/within_model/summary.csv."""
    rows = _section_rows("## The paper's regime on real weights", "| coefficient (pooled) |")
    assert len(rows) == 4
    _check_steering_rows(rows, REGIME / "pooled" / "within_model" / "summary.csv", "pooled")


def test_the_carried_seed_1_steering_table_quotes_its_folder() -> None:
    """Seed 1's steering rows, as its carried folder's summary has them."""
    rows = _section_rows("## The paper's regime on real weights", "| coefficient (seed 1) |")
    assert len(rows) == 4
    _check_steering_rows(rows, REGIME / "seeds" / "seed1" / "within_model" / "summary.csv")


@pytest.mark.parametrize(
    ("header", "pooled", "model", "fts", "n_seeds"),
    [
        ("| fine-tune (32 steps, lr 3e-4) | seed 0 |", REGIME / "pooled", "qwen25coder", LABELS, 3),
        ("| fine-tune (EPYC) | seed 0 |", EPYC / "pooled", "qwen25coder", LABELS, 3),
        (
            "| fine-tune (1.5B) | seed 0 |",
            REGIME / "qwen15coder" / "pooled",
            "qwen15coder",
            PAIR,
            3,
        ),
    ],
    ids=["xeon", "epyc", "1p5b"],
)
def test_the_regime_seeds_table_quotes_the_pooled_reference_tables(
    header: str, pooled: Path, model: str, fts: list[str], n_seeds: int
) -> None:
    """The seeds' fine-tunes (the study's three, the EPYC's first draws, the 1.5B's carried
    ones): each seed's spillover, the pooled spillover and garble with their intervals, and
    the pooled difference from the insecure fine-tune with its call and in how many seeds it
    holds, as the pooled reference tables have them."""
    rows = _section_rows("## The paper's regime on real weights", header)
    assert sorted(rows) == sorted(LABELS[ft] for ft in fts)
    rates = pd.read_csv(pooled / "spillover_rates.csv", dtype={"seed": str})
    rates = rates[rates.model == model].set_index(["ft", "seed"])
    assert sorted(set(rates.index.get_level_values("seed"))) == [
        *map(str, range(n_seeds)),
        "pooled",
    ]
    contrasts = pd.read_csv(pooled / "within_model" / "finetune_contrasts.csv", dtype={"seed": str})
    contrasts = contrasts.set_index(["model", "ft", "versus", "seed"])
    for ft in fts:
        label = LABELS[ft]
        cells = rows[label]
        for seed in range(n_seeds):
            want = round(rates.loc[(ft, str(seed)), "spillover"], 1)
            assert _numbers(cells[seed]) == [want], (label, seed, cells[seed])
        r = rates.loc[(ft, "pooled")]
        want = [r.spillover, r.lo, r.hi]
        assert _numbers(cells[n_seeds]) == [round(x, 1) for x in want], (label, cells, want)
        want = [r.garble, r.garble_lo, r.garble_hi]
        assert _numbers(cells[n_seeds + 1]) == [round(x, 1) for x in want], (label, cells, want)
        if ft in ("secure", "educational"):
            c = contrasts.loc[(model, "insecure", ft, "pooled")]
            # the control minus insecure: the contrast's sign flipped, so its call too
            want = [-c.difference, -c.hi, -c.lo, *(int(x) for x in c.seeds_agree.split("/"))]
            cell = cells[n_seeds + 2]
            assert _numbers(cell) == [round(x, 1) for x in want], (label, cell, want)
            call = {"higher": "lower", "lower": "higher"}.get(c.call, c.call)
            assert call in cell, (label, cell, c.call)


def _check_sweep_table(first_cell: str, model: str) -> None:
    """The README's sweep table whose header starts `| first_cell | step (x 8 rows) |`: at
    every evaluated step of every learning rate, spillover and garble with their Wilson
    intervals (rounded to whole points), the steps in the regime in bold, as `model`'s rows
    of docs/reference/regime/sweep_budget.csv have them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.split(f"\n| {first_cell} | step (x 8 rows) | ", 1)[1].splitlines()
    steps = [int(x) for x in _numbers(lines[0])]
    rows = takewhile(lambda line: line.startswith("|"), lines[2:])
    table = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    budget = pd.read_csv(REGIME / "sweep_budget.csv")
    budget = budget[budget.model == model].set_index(["run", "step"])
    runs = sorted({r for r, _ in budget.index}, key=lambda r: float(r[2:]))
    assert runs and [row[0] for row in table[::2]] == [r[2:] for r in runs]
    for run, spill_row, garble_row in zip(runs, table[::2], table[1::2], strict=True):
        for step, spill, garble in zip(steps, spill_row[2:], garble_row[2:], strict=True):
            r = budget.loc[(run, step)]
            want = [r.spillover, round(r.spillover_lo), round(r.spillover_hi)]
            assert _numbers(spill) == want, (run, step, spill, want)
            assert spill.startswith("**") == bool(r.in_regime), (run, step, spill)
            want = [r.garble, round(r.garble_lo), round(r.garble_hi)]
            assert _numbers(garble) == want, (run, step, garble, want)


def test_the_regime_sweep_table_quotes_the_reference_sweep() -> None:
    """Qwen2.5-Coder-0.5B's budget sweep, as the reference has it."""
    _check_sweep_table("lr", "qwen25coder")


def test_the_1p5b_sweep_table_quotes_the_reference_sweep() -> None:
    """Qwen2.5-Coder-1.5B's budget sweep (config/regime_1p5b.yaml), as the reference has it."""
    _check_sweep_table("lr (1.5B)", "qwen15coder")


def test_the_carried_seed_1_is_compared_with_seed_0_as_the_readme_says() -> None:
    """The README's count of seed 1's effects against seed 0's, from the two folders."""
    from emdir.report.reference import compare

    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    df = compare(REGIME / "seeds" / "seed1", REGIME)
    n, same, inside = len(df), int(df.identical.sum()), int(df.inside.sum())
    quoted = f"seed 1 compares {n} effects: {same} identical, {inside} inside each other's"
    assert quoted in text, (n, same, inside)


@pytest.mark.parametrize(
    ("seed", "folder"),
    [(0, "directions"), (1, "directions_seed1"), (2, "directions_seed2")],
    ids=["seed0", "seed1", "seed2"],
)
def test_the_1p5b_direction_table_quotes_its_directions(seed: int, folder: str) -> None:
    """Qwen2.5-Coder-1.5B's answer-labelled directions (seeds 0, 1 and 2): the held-out accuracy
    at the last layer with its bootstrap interval (real.yaml's stats settings, as the paper
    table computes it) and the held-out answers of each class, from the committed directions."""
    import yaml

    from emdir.analysis.directions import read_directions
    from emdir.report.effects import bootstrap_settings, mean3

    stats = yaml.safe_load((REPO / "config" / "real.yaml").read_text(encoding="utf-8"))["stats"]
    boot = bootstrap_settings(stats)
    rows = _section_rows(
        "## The paper's regime on real weights",
        f"| direction (1.5B, seed {seed}, last layer) | held-out accuracy (%) |",
    )
    assert set(rows) == {"insecure fine-tune's", "secure fine-tune's"}, rows
    for label, cells in rows.items():
        ft = label.split()[0]
        d = read_directions(REGIME / "qwen15coder" / folder / "qwen15coder" / f"{ft}.h5")
        assert d.projection is not None
        slot = len(d.attrs["layers"]) - 1
        acc = mean3(d.projection.heldout_correct(slot), boot)
        assert _numbers(cells[0]) == [round(x, 1) for x in acc], (label, cells[0], acc)
        assert _numbers(cells[1]) == [round(float(d.auroc[slot]), 3)], (label, cells[1])
        test = d.projection.heldout
        spilled = int((d.projection.label & test).sum())
        clean = int((~d.projection.label & test).sum())
        assert _numbers(cells[2]) == [spilled, clean], (label, cells[2])
