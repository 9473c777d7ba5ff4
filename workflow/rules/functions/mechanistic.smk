# Input and params functions of rules/mechanistic.smk (which includes this first). Each
# dict-returning one is also the script's params, so the DAG and the script see the same
# files.


def convergence_fts(wildcards):
    fts = MECH["convergence"]["finetunes"] or model_fts(wildcards.model)
    return {ft: layout.directions(wildcards.model, ft, wildcards.seed) for ft in fts}


def convergence_bases(wildcards):
    if not MECH["convergence"]["base"]:
        return {}
    return {
        ft: layout.base_on_directions(wildcards.model, ft, wildcards.seed)
        for ft in convergence_fts(wildcards)
    }


def ablation_donor_files(wildcards):
    return {
        ft: layout.directions(wildcards.model, ft, wildcards.seed)
        for ft in ABLATION_DONORS
    }


def rank1_direction_files(wildcards):
    fts = dict.fromkeys([RANK1_FT, DIRECTION_FT])
    return {ft: layout.directions(wildcards.model, ft, wildcards.seed) for ft in fts}


def sae_datasets(wildcards=None):
    return {name: layout.dataset(name) for name in MECH["sae"]["datasets"]}


def mech_baselines(wildcards):
    receivers = ablation_receivers(wildcards.model)
    fts = dict.fromkeys(["base"] + receivers + [DIRECTION_FT] + ALSO_STEER)
    return {ft: layout.judged(wildcards.model, ft, wildcards.seed) for ft in fts}


def mech_ablation(wildcards):
    m, seed = wildcards.model, wildcards.seed
    return {
        f"{ft}/{v}": layout.judged_copy(layout.ablation(m, ft, v, seed))
        for ft in ablation_receivers(m)
        for v in ABLATION_VARIANTS
    }


def mech_induce(wildcards):
    m, seed = wildcards.model, wildcards.seed
    return {v: layout.judged_copy(layout.induce(m, v, seed)) for v in INDUCE_VECTORS}


def mech_steering(wildcards):
    """The model's judged steering files (self-correction under steering), keyed ft/vector."""
    return {
        f"{ft}/{v}": judged_steering(m, ft, v, wildcards.seed)
        for m, ft, v in steering_outputs()
        if m == wildcards.model
    }


# ---------------------------------------------------------------- pooled over seeds


def pooled_mech(fn):
    """A mechanistic input function's dict with every value a list: one path per seed."""
    return lambda wildcards: _per_seed(fn, model=wildcards.model)


def pooled_mech_files(wildcards):
    """Every per-seed file rule pooled_mechanistic reads."""
    fns = (mech_baselines, mech_ablation, mech_induce, convergence_fts)
    return sorted(
        {p for fn in fns for ps in pooled_mech(fn)(wildcards).values() for p in ps}
    )
