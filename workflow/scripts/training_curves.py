"""Rule training_curves: every base-model and fine-tune training log in one figure and CSV,
and each fine-tune's log in its own figure."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import training_curves

setup_logging(snakemake.log[0])
training_curves(
    base_dirs=snakemake.params.bases,
    adapter_dirs=snakemake.params.adapters,
    out_csv=snakemake.output.csv,
    out_png=snakemake.output.png,
    finetunes_dir=snakemake.output.finetunes,
)
