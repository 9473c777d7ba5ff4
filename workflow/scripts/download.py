"""Rules download, download_questions: fetch one pinned URL and check its sha256."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.data.datasets import download
from emdir.logs import setup_logging

setup_logging(snakemake.log[0])
download(
    snakemake.params.url,
    snakemake.params.sha256,
    snakemake.output[0],
    snakemake.params.key,
)
