"""Rule directions: difference-in-means directions per layer, with held-out separation."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.directions import directions

setup_logging(snakemake.log[0])
directions(
    snakemake.input.store,
    snakemake.output.directions,
    snakemake.params.dir_cfg,
    snakemake.params.stats_cfg,
)
