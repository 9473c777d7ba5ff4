"""Rule pooled_transfer_matrix: the donor x receiver grid pooled over the fine-tuning seeds."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import pooled_transfer_matrix

setup_logging(snakemake.log[0])
pooled_transfer_matrix(
    seeds=snakemake.params.seeds,
    baselines=snakemake.params.baselines,
    cells=snakemake.params.cells,
    references=snakemake.params.references,
    maps=snakemake.params.maps,
    per_seed=list(snakemake.input.per_seed),
    out_csv=snakemake.output.csv,
    out_png=snakemake.output.png,
    transfer_cfg=snakemake.params.transfer_cfg,
    stats_cfg=snakemake.params.stats_cfg,
    out_topology=snakemake.output.topology,
)
