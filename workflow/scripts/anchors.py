"""Rule anchors: the shared anchor texts through one fine-tuned model."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.transfer import anchors

setup_logging(snakemake.log[0])
anchors(
    model_key=snakemake.wildcards.model,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    texts=snakemake.input.texts,
    out=snakemake.output.anchors,
    threads=snakemake.threads,
)
