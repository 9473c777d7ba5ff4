"""Rule pooled_within_model: the within-model tables pooled over the fine-tuning seeds."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.io import config_sha
from emdir.logs import setup_logging
from emdir.stages.report import pooled_within_model

setup_logging(snakemake.log[0])
pooled_within_model(
    seeds=snakemake.params.seeds,
    generations=snakemake.params.generations,
    steering=snakemake.params.steering,
    directions=snakemake.params.directions,
    summaries=list(snakemake.input.summaries),
    rates=snakemake.input.rates,
    outs=dict(snakemake.output.items()),
    steer_cfg=snakemake.params.steer_cfg,
    stats_cfg=snakemake.params.stats_cfg,
    direction_ft=snakemake.params.direction_ft,
    config_label=f"{' + '.join(snakemake.params.config_files)} "
    f"(resolved config sha256 {config_sha(snakemake.config)[:12]})",
)
