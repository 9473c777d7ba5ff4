"""Rule data: write one dataset (generated, local or downloaded) as validated JSONL."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
import logging

from emdir.data.datasets import materialise
from emdir.logs import setup_logging

setup_logging(snakemake.log[0])
done = materialise(
    snakemake.wildcards.dataset,
    snakemake.params.spec,
    snakemake.input.get("source"),
    snakemake.output.jsonl,
)
logging.getLogger("emdir").info("wrote %s: %s", snakemake.output.jsonl, done)
