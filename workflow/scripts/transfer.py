"""Rule transfer: steer a receiver with a donor's mapped direction and its controls."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.transfer import transfer

setup_logging(snakemake.log[0])
transfer(
    donor=snakemake.wildcards.donor,
    receiver=snakemake.wildcards.receiver,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    donor_directions=snakemake.input.donor_directions,
    receiver_store=snakemake.input.receiver_store,
    map_path=snakemake.input.map,
    questions=snakemake.input.questions,
    outs=dict(zip(snakemake.params.vectors, snakemake.output.vectors, strict=True)),
    transfer_cfg=snakemake.params.transfer_cfg,
    sampling_cfg=snakemake.params.sampling_cfg,
    threads=snakemake.threads,
    donor_controls=snakemake.params.donor_controls,
    read_strength=snakemake.input.get("read_strength"),
)
