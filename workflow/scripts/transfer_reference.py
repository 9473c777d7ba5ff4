"""Rule transfer_reference: steer a receiver with receiver-space controls and its own direction."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.transfer import transfer_reference

setup_logging(snakemake.log[0])
transfer_reference(
    receiver=snakemake.wildcards.receiver,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    receiver_directions=snakemake.input.receiver_directions,
    receiver_store=snakemake.input.receiver_store,
    questions=snakemake.input.questions,
    outs=dict(zip(snakemake.params.vectors, snakemake.output.vectors, strict=True)),
    layer=snakemake.params.layer,
    transfer_cfg=snakemake.params.transfer_cfg,
    sampling_cfg=snakemake.params.sampling_cfg,
    threads=snakemake.threads,
    read_strength=snakemake.input.get("read_strength"),
)
