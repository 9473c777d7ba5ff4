"""Report stages: the fine-tunes' rates, the within-model summary, read strength, the
transfer grid and the training curves (rules finetune_summary, within_model_summary,
read_strength, transfer_matrix, training_curves), their pooled tables and a carried seed
(rules pooled_*, carry_seed). Imported lazily: pandas and matplotlib would slow every other
rule's start.
"""

from __future__ import annotations

from typing import Any


def finetune_summary(**kwargs: Any) -> None:
    """Spillover rates per model x fine-tune and the fine-tunes against each other (CSVs)."""
    from emdir.report.within_model import finetune_summary as run

    run(**kwargs)


def within_model_summary(**kwargs: Any) -> None:
    """Steering effects with CIs and specificity, separation; CSVs and figures."""
    from emdir.report.within_model import within_model_summary as run

    run(**kwargs)


def read_strength(**kwargs: Any) -> None:
    """One model's read strength (steering.read) as JSON, for the transfer grid."""
    from emdir.report.dose_response import read_strength as run

    run(**kwargs)


def transfer_matrix(**kwargs: Any) -> None:
    """The N x N donor/receiver grid: suppression with CIs, controls, specificity; CSV and PNG."""
    from emdir.report.transfer import transfer_matrix as run

    run(**kwargs)


def training_curves(**kwargs: Any) -> None:
    """Base-model and fine-tune training logs: one CSV row per run, the curves of all runs
    and one figure per fine-tune."""
    from emdir.report.training import training_curves as run

    run(**kwargs)


def pooled_finetunes(**kwargs: Any) -> None:
    """The fine-tunes' rates and contrasts pooled over fine-tuning seeds (per seed and pooled)."""
    from emdir.report.pooled import pooled_finetunes as run

    run(**kwargs)


def carry_seed(**kwargs: Any) -> None:
    """One seed's inputs to the pooled within-model tables, without the answers' text, with
    a manifest naming the code and packages that made them (emdir.carry)."""
    from emdir.carry import export_seed
    from emdir.provenance import git_commit, package_versions

    export_seed(**kwargs, made_with={"git_commit": git_commit(), "packages": package_versions()})


def pooled_within_model(**kwargs: Any) -> None:
    """The within-model tables pooled over fine-tuning seeds (per seed and pooled rows)."""
    from emdir.report.pooled import pooled_within_model as run

    run(**kwargs)


def pooled_transfer_matrix(**kwargs: Any) -> None:
    """The transfer grid pooled over fine-tuning seeds (per seed and pooled rows, figure)."""
    from emdir.report.pooled import pooled_transfer_matrix as run

    run(**kwargs)


def pooled_mechanistic(**kwargs: Any) -> None:
    """One mechanistic model's ablation, inducing and convergence tables pooled over seeds."""
    from emdir.report.pooled import pooled_mechanistic as run

    run(**kwargs)


def budget_sweep(**kwargs: Any) -> None:
    """The training-budget sweep: every evaluation of every run, the first step in the
    regime per model and run, and the figure."""
    from emdir.report.sweep import budget_sweep as run

    run(**kwargs)
