"""Rule anchor_answers: every model's answers, pooled into one set of anchor texts."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.transfer import anchor_answers

setup_logging(snakemake.log[0])
anchor_answers(list(snakemake.input.judged), snakemake.output.texts)
