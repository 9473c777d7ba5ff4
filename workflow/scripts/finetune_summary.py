"""Rule finetune_summary: spillover per model x fine-tune and the fine-tunes' contrasts."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import finetune_summary

setup_logging(snakemake.log[0])
finetune_summary(
    generations=snakemake.params.generations,
    outs=dict(snakemake.output.items()),
    question_set=snakemake.params.question_set,
    stats_cfg=snakemake.params.stats_cfg,
    direction_ft=snakemake.params.direction_ft,
    code_sets=snakemake.params.code_sets,
)
