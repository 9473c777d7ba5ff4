"""Rule read_strength: one model's read strength, the coefficient its controls stay coherent at."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import read_strength

setup_logging(snakemake.log[0])
read_strength(
    baseline=snakemake.input.baseline,
    steering=snakemake.params.steering,
    out=snakemake.output.json,
    steer_cfg=snakemake.params.steer_cfg,
    stats_cfg=snakemake.params.stats_cfg,
)
