"""Rule base_model: build and teach a tiny model to chat, or write a hub model's manifest."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.pipeline import base_model, setup_logging

setup_logging(snakemake.log[0])
base_model(
    model_key=snakemake.wildcards.model,
    model_cfg=snakemake.params.model_cfg,
    tiny_cfg=snakemake.params.tiny_cfg,
    tokenizer_dir=snakemake.input.get("tokenizer"),
    corpus=snakemake.input.get("corpus"),
    out_dir=snakemake.output.base,
    threads=snakemake.threads,
)
