"""Rule fit_map: ridge map from a donor's anchor activations to a receiver's."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.transfer import fit_map

setup_logging(snakemake.log[0])
fit_map(
    snakemake.input.donor,
    snakemake.input.receiver,
    snakemake.output.map,
    snakemake.params.map_cfg,
    donor_layer=snakemake.params.donor_layer,
    receiver_layer=snakemake.params.receiver_layer,
)
