"""Rule induce: the direction (and random controls) added to the base chat model."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.steering import steering

setup_logging(snakemake.log[0])
steering(
    model_key=snakemake.wildcards.model,
    ft="base",
    base_dir=snakemake.input.base,
    adapter_dir=None,
    directions=snakemake.input.directions,
    store=snakemake.input.store,
    questions=snakemake.input.questions,
    outs=dict(zip(snakemake.params.vectors, snakemake.output.vectors, strict=True)),
    steer_cfg=snakemake.params.steer_cfg,
    sampling_cfg=snakemake.params.sampling_cfg,
    threads=snakemake.threads,
)
