"""Rule base_model: a base model folder from its source (tiny, hub, local folder or GGUF, archive)."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.models import base_model

setup_logging(snakemake.log[0])
base_model(
    model_key=snakemake.wildcards.model,
    model_cfg=snakemake.params.model_cfg,
    tiny_cfg=snakemake.params.tiny_cfg,
    tokenizer_dir=snakemake.input.get("tokenizer"),
    corpus=snakemake.input.get("corpus"),
    weights=snakemake.input.get("weights"),
    weights_record=snakemake.input.get("record"),
    out_dir=snakemake.output.base,
    threads=snakemake.threads,
)
