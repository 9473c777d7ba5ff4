# Input and params functions of rules/aggregate.smk (which includes this first). Each
# returns a dict for the script (passed as params) whose values are also the rule's inputs,
# so the DAG and the script see the same files.

from pathlib import Path
from types import SimpleNamespace


def summary_generations(wildcards):
    return {
        f"{m}/{ft}": layout.judged(m, ft, wildcards.seed)
        for m in MODELS
        for ft in ["base"] + model_fts(m)
    }


def summary_steering(wildcards):
    return {
        f"{m}/{ft}/{v}": judged_steering(m, ft, v, wildcards.seed)
        for m, ft, v in steering_outputs()
    }


def summary_directions(wildcards):
    """Directions of directions.ft and of the control fine-tunes, keyed model/ft."""
    fts = [DIRECTION_FT] + CONTROL_FTS
    return {
        f"{m}/{ft}": layout.directions(m, ft, wildcards.seed)
        for m in MODELS
        for ft in fts
    }


def code_question_sets():
    return [q for q, s in config["questions"].items() if s.get("generator") == "code"]


def model_steering(wildcards):
    """Vector -> one model's judged steering output (directions.ft), for its read strength."""
    return {
        v: judged_steering(wildcards.model, DIRECTION_FT, v, wildcards.seed)
        for v in STEERING_VECTORS
    }


def matrix_baselines(wildcards):
    return {r: layout.judged(r, TRANSFER_FT, wildcards.seed) for r in MODELS}


def matrix_cells(wildcards):
    seed = wildcards.seed
    return {
        f"{layout.pair(d, r)}/{v}": layout.judged_copy(layout.transfer(d, r, v, seed))
        for d, r in PAIRS
        for v in TRANSFER_VECTORS
    }


def matrix_references(wildcards):
    seed = wildcards.seed
    return {
        f"{r}/{v}": layout.judged_copy(layout.transfer_reference(r, v, seed))
        for r in MODELS
        for v in REFERENCE_VECTORS
    }


def matrix_maps(wildcards):
    return {layout.pair(d, r): layout.ridge_map(d, r, wildcards.seed) for d, r in PAIRS}


def training_bases(wildcards=None):
    return {m: layout.base_model(m) for m in MODELS}


def training_adapters(wildcards):
    return {
        f"{m}/{ft}": layout.adapter(m, ft, wildcards.seed)
        for m in MODELS
        for ft in model_fts(m)
    }


# ---------------------------------------------------------------- pooled over seeds
# Each is the per-seed function's dict with every value a list: one path per seed. The
# within-model ones read a carried seed's files in its folder (CARRIED_SEEDS, emdir.carry).


def _carried(path, seed):
    """A seed's file: in its carried folder when finetune.carried has the seed."""
    if seed not in CARRIED_SEEDS:
        return path
    return carried_path(path, layout.replicate(seed), CARRIED_SEEDS[seed])


def _per_seed(fn, carried=False, **wildcards):
    seeds = [
        {
            key: _carried(path, s) if carried else path
            for key, path in fn(SimpleNamespace(seed=d, **wildcards)).items()
        }
        for s, d in zip(SEEDS, SEED_DIRS)
    ]
    return {key: [s[key] for s in seeds] for key in seeds[0]}


def per_seed_table(pattern):
    """A per-seed table's path for every seed (a carried seed's in its folder)."""
    return [_carried(pattern.format(seed=d), s) for s, d in zip(SEEDS, SEED_DIRS)]


def pooled_generations(wildcards=None):
    return _per_seed(summary_generations, carried=True)


def _whole_seeds():
    """The carried seeds hold what the pooled within-model tables read: a seed carried by
    rule carry_finetunes (its fine-tunes only) cannot be pooled there."""
    short = FINETUNES_ONLY
    if short:
        folders = ", ".join(CARRIED_SEEDS[s] for s in short)
        which = (
            f"carries seed {short[0]}'s"
            if len(short) == 1
            else f"carry seeds {', '.join(map(str, short))}'s"
        )
        raise WorkflowError(
            f"finetune.carried: {folders} {which} fine-tunes only (rule carry_finetunes), not "
            "the directions and steering the pooled within-model tables read: pool the "
            f"fine-tunes alone ({layout.POOLED['spillover']}), or run those seeds' steering "
            "sweeps and carry them whole (results/carried/seed<n>)"
        )


def pooled_steering(wildcards=None):
    _whole_seeds()
    return _per_seed(summary_steering, carried=True)


def pooled_directions(wildcards=None):
    _whole_seeds()
    return _per_seed(summary_directions, carried=True)


# A carried seed's own tables: what the pooled rules read of it (its rates and summary),
# and the rest of its within-model tables, so that the reference check compares it whole.
CARRIED_TABLES = ("spillover", "contrasts", "summary", "calibration", "comparison")


def _carry(target, n, tables, fns):
    """Seed n's `tables` (WITHIN_MODEL keys) and the paths of the per-seed functions `fns`."""
    n = int(n)
    if n not in SEEDS:
        raise WorkflowError(
            f"{target.format(n=n)}: seed {n} is not in finetune.seeds {SEEDS}; add it "
            "(e.g. --configfile ... config/seeds.yaml) to carry it"
        )
    seed = SimpleNamespace(seed=layout.replicate(n))
    paths = [layout.WITHIN_MODEL[k].format(seed=seed.seed) for k in tables]
    return sorted({*paths, *(p for fn in fns for p in fn(seed).values())})


def carry_files(wildcards):
    """What pooled_finetunes and pooled_within_model read of seed n, and its other
    within-model tables (rule carry_seed)."""
    fns = (summary_generations, summary_steering, summary_directions)
    return _carry(layout.CARRIED, wildcards.n, CARRIED_TABLES, fns)


def carry_finetune_files(wildcards):
    """What pooled_finetunes reads of seed n, and its fine-tune contrasts (rule
    carry_finetunes)."""
    tables = ("spillover", "contrasts")
    return _carry(layout.CARRIED_FINETUNES, wildcards.n, tables, (summary_generations,))


def pooled_baselines(wildcards=None):
    return _per_seed(matrix_baselines)


def pooled_cells(wildcards=None):
    return _per_seed(matrix_cells)


def pooled_references(wildcards=None):
    return _per_seed(matrix_references)


def pooled_maps(wildcards=None):
    return _per_seed(matrix_maps)


def flat(fn):
    """Input function listing every path of a dict-of-lists-returning input function."""

    def inputs(wildcards):
        return sorted({p for paths in fn(wildcards).values() for p in paths})

    return inputs


# ---------------------------------------------------------------- reference check


def reference_dir():
    """The config's reference folder, relative to the repository when not absolute (None
    when the config names none)."""
    ref = config["reference"]
    if ref is None:
        return None
    path = Path(ref)
    return str(path if path.is_absolute() else Path(workflow.basedir) / path)


def reference_tables(wildcards):
    """The reference folder's CSVs, so that a changed reference reruns the check."""
    ref = reference_dir()
    return (
        sorted(str(p) for p in Path(ref).rglob("*.csv"))
        if ref and Path(ref).is_dir()
        else []
    )
