"""Rule questions: write one evaluation question set (Betley YAML format)."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.data import build_questions
from emdir.pipeline import setup_logging

setup_logging(snakemake.log[0])
build_questions(
    snakemake.params.kind,
    snakemake.params.params,
    snakemake.params.samples,
    snakemake.output.yaml,
)
