"""Rule activations: the residual stream of judged answers, every layer."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.directions import activations

setup_logging(snakemake.log[0])
activations(
    model_key=snakemake.wildcards.model,
    ft=snakemake.wildcards.ft,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.get("adapter"),
    judged=snakemake.input.judged,
    out=snakemake.output.store,
    dir_cfg=snakemake.params.dir_cfg,
    act_cfg=snakemake.params.act_cfg,
    threads=snakemake.threads,
)
