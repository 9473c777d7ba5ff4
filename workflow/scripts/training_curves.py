"""Rule training_curves: every base-model and fine-tune training log in one figure and CSV."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.stages.pipeline import setup_logging, training_curves

setup_logging(snakemake.log[0])
training_curves(
    base_dirs=snakemake.params.bases,
    adapter_dirs=snakemake.params.adapters,
    out_csv=snakemake.output.csv,
    out_png=snakemake.output.png,
)
