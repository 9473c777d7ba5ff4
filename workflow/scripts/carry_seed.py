"""Rules carry_seed and carry_finetunes: one seed's inputs to the pooled tables, without text."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.report import carry_seed

setup_logging(snakemake.log[0])
carry_seed(
    files=list(snakemake.input),
    seed=int(snakemake.wildcards.n),
    seed_dir=snakemake.params.seed_dir,
    out=snakemake.output[0],
    study=snakemake.params.study,
    scope=snakemake.params.scope,
)
