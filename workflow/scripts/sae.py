"""Rule sae: the direction decomposed into SAE features, against training-data features."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.mechanistic import sae

setup_logging(snakemake.log[0])
sae(
    model_key=snakemake.wildcards.model,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    store=snakemake.input.store,
    directions_file=snakemake.input.directions,
    datasets=snakemake.params.datasets,
    out_dir=snakemake.output.model,
    out_csv=snakemake.output.csv,
    out_json=snakemake.output.json,
    out_png=snakemake.output.png,
    sae_cfg=snakemake.params.sae_cfg,
    dir_cfg=snakemake.params.dir_cfg,
    threads=snakemake.threads,
)
