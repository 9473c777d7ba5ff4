"""Rule pooled_finetunes: the fine-tunes' rates and contrasts pooled over the seeds."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import pooled_finetunes

setup_logging(snakemake.log[0])
pooled_finetunes(
    seeds=snakemake.params.seeds,
    generations=snakemake.params.generations,
    spillover=list(snakemake.input.spillover),
    outs=dict(snakemake.output.items()),
    question_set=snakemake.params.question_set,
    stats_cfg=snakemake.params.stats_cfg,
    direction_ft=snakemake.params.direction_ft,
)
