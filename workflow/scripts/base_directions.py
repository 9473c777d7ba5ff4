"""Rule base_directions: the base model's direction on a fine-tune's labelled answers."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.mechanistic import base_directions

setup_logging(snakemake.log[0])
base_directions(
    model_key=snakemake.wildcards.model,
    ft=snakemake.wildcards.ft,
    base_dir=snakemake.input.base,
    judged=snakemake.input.judged,
    store_out=snakemake.output.store,
    directions_out=snakemake.output.directions,
    dir_cfg=snakemake.params.dir_cfg,
    act_cfg=snakemake.params.act_cfg,
    stats_cfg=snakemake.params.stats_cfg,
    threads=snakemake.threads,
)
