"""Rule convergence: cosines between fine-tune directions, and base vs fine-tuned."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.report.mechanistic import convergence

setup_logging(snakemake.log[0])
convergence(
    ft_directions=snakemake.params.fts,
    base_directions=snakemake.params.bases,
    out_csv=snakemake.output.csv,
    out_png=snakemake.output.png,
    model=snakemake.wildcards.model,
)
