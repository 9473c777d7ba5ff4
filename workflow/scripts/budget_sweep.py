"""Rule budget_sweep: the training-budget sweep's table, summary and figure."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import budget_sweep

setup_logging(snakemake.log[0])
budget_sweep(
    adapter_dirs=snakemake.params.adapters,
    train_cfgs=snakemake.params.train_cfgs,
    regime=snakemake.params.regime,
    out_csv=snakemake.output.csv,
    out_summary=snakemake.output.summary,
    out_png=snakemake.output.png,
    level=snakemake.params.level,
)
