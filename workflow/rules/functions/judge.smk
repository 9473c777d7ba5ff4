# Input and params functions of rules/judge.smk (which includes this first), and the
# Snakefile's onstart check of the LLM judge's API key.

import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

import emdir.config
from emdir.errors import EmdirError


def judge_cache(wildcards):
    return config["judge"]["cache"]


def judge_backend_label():
    """How judging is done, for job messages (dry-runs show it)."""
    return JUDGE.describe(config["judge"])


def judge_plan_files(wildcards=None):
    """Every answers file a judge job reads, of every fine-tuning seed, keyed by where it is
    (model/ft for a model's own answers, else its path under results/; seed<n>/ first for
    seed n's; the base models' answers once, shared by every seed)."""
    files = {f"{m}/base": layout.generations(m, "base") for m in MODELS}
    for seed in SEED_DIRS:
        files.update(
            {
                f"{seed}{m}/{ft}": layout.generations(m, ft, seed)
                for m in MODELS
                for ft in model_fts(m)
            }
        )
        sources = [layout.steering(m, ft, v, seed) for m, ft, v in steering_outputs()]
        sources += [
            layout.transfer(d, r, v, seed) for d, r in PAIRS for v in TRANSFER_VECTORS
        ]
        sources += [
            layout.transfer_reference(r, v, seed)
            for r in MODELS
            for v in REFERENCE_VECTORS
        ]
        for m in MECH_MODELS:
            sources += [
                layout.ablation(m, ft, v, seed)
                for ft in ablation_receivers(m)
                for v in ABLATION_VARIANTS
            ]
            sources += [layout.induce(m, v, seed) for v in INDUCE_VECTORS]
        files.update(
            {s.removeprefix("results/").removesuffix(".jsonl"): s for s in sources}
        )
    return files


# The Snakefile's onstart check: a missing LLM-judge key stops the run before any job.


def judge_rules_to_run():
    """judge and every `use rule judge as ...` (judge_steering, ...) with jobs to run."""
    jobs = workflow.dag.needrun_jobs()
    return sorted(
        {j.rule.name for j in jobs if Path(j.rule.script or "").name == "judge.py"}
    )


def check_judge_key():
    """The onstart check (emdir.config.check_judge_key): the LLM judge's API key, before
    any job runs when a judge job is to run."""
    if workflow.touch:  # --touch runs no job
        return
    try:
        emdir.config.check_judge_key(config["judge"], os.environ, judge_rules_to_run)
    except EmdirError as err:
        raise WorkflowError(str(err)) from None
