"""Rule within_model_summary: spillover, steering effects and separation for every model."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.pipeline import setup_logging, within_model_summary

setup_logging(snakemake.log[0])
within_model_summary(
    generations=snakemake.params.generations,
    steering=snakemake.params.steering,
    directions=snakemake.params.directions,
    out_csv=snakemake.output.summary,
    spill_csv=snakemake.output.spillover,
    steer_png=snakemake.output.steering,
    sep_png=snakemake.output.separation,
    steer_cfg=snakemake.params.steer_cfg,
    stats_cfg=snakemake.params.stats_cfg,
    code_sets=snakemake.params.code_sets,
)
