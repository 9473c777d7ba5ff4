"""Rule tokenizer: train the shared byte-level BPE tokenizer of the tiny models."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.models import tokenizer

setup_logging(snakemake.log[0])
tokenizer(snakemake.input.corpus, snakemake.output.tokenizer, snakemake.params.cfg)
