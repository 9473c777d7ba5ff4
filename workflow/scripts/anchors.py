"""Rule anchors: the shared anchor texts through one fine-tuned model."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.stages.pipeline import anchors, setup_logging

setup_logging(snakemake.log[0])
anchors(
    model_key=snakemake.wildcards.model,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    texts=snakemake.input.texts,
    out=snakemake.output.anchors,
    threads=snakemake.threads,
)
