"""Rules steering / steering_also: generate with the direction and its controls, one file per vector."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.steering import steering

setup_logging(snakemake.log[0])
steering(
    model_key=snakemake.wildcards.model,
    ft=snakemake.wildcards.ft,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.get("adapter"),
    directions=snakemake.input.directions,
    store=snakemake.input.store,
    questions=snakemake.input.questions,
    outs=dict(zip(snakemake.params.vectors, snakemake.output.vectors, strict=True)),
    steer_cfg=snakemake.params.steer_cfg,
    sampling_cfg=snakemake.params.sampling_cfg,
    threads=snakemake.threads,
    control_directions=snakemake.params.control_directions,
)
