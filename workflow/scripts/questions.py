"""Rule questions: write one evaluation question set (Betley YAML format)."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
import logging

from emdir.data.questions import materialise_questions
from emdir.logs import setup_logging

setup_logging(snakemake.log[0])
n = materialise_questions(
    snakemake.wildcards.qset,
    snakemake.params.spec,
    snakemake.input.get("source"),
    snakemake.output.yaml,
)
logging.getLogger("emdir").info("wrote %s: %d questions", snakemake.output.yaml, n)
