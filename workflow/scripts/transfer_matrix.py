"""Rule transfer_matrix: the N x N donor/receiver grid with specificity, and its topology."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import transfer_matrix

setup_logging(snakemake.log[0])
transfer_matrix(
    baselines=snakemake.params.baselines,
    cells=snakemake.params.cells,
    references=snakemake.params.references,
    maps=snakemake.params.maps,
    rates_csv=snakemake.input.rates,
    out_csv=snakemake.output.csv,
    out_png=snakemake.output.png,
    topology_csv=snakemake.output.topology,
    asymmetry_png=snakemake.output.asymmetry,
    transfer_cfg=snakemake.params.transfer_cfg,
    stats_cfg=snakemake.params.stats_cfg,
)
