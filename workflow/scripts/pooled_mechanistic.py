"""Rule pooled_mechanistic: one model's mechanistic tables pooled over the fine-tuning seeds."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import pooled_mechanistic

setup_logging(snakemake.log[0])
pooled_mechanistic(
    seeds=snakemake.params.seeds,
    model=snakemake.wildcards.model,
    baselines=snakemake.params.baselines,
    ablation=snakemake.params.ablation,
    induce=snakemake.params.induce,
    directions=snakemake.params.directions,
    summaries=list(snakemake.input.summaries),
    convergence=list(snakemake.input.convergence),
    outs=dict(snakemake.output.items()),
    question_set=snakemake.params.question_set,
    stats_cfg=snakemake.params.stats_cfg,
)
