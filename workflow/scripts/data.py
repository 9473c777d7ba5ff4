"""Rule data: write one dataset with its built-in generator."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.data import build_dataset
from emdir.pipeline import setup_logging

setup_logging(snakemake.log[0])
build_dataset(snakemake.params.kind, snakemake.params.params, snakemake.output.jsonl)
