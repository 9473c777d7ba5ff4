"""Rule rank1_reading: B cosines, A.x scalars and a CV probe for the rank-1 fine-tune."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.mechanistic import rank1

setup_logging(snakemake.log[0])
rank1(
    model_key=snakemake.wildcards.model,
    ft=snakemake.params.ft,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    judged=snakemake.input.judged,
    direction_files=snakemake.params.directions,
    out_csv=snakemake.output.csv,
    out_json=snakemake.output.json,
    out_png=snakemake.output.png,
    rank_cfg=snakemake.params.rank_cfg,
    dir_cfg=snakemake.params.dir_cfg,
    batch_size=snakemake.params.batch_size,
    threads=snakemake.threads,
)
