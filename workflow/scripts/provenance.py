"""Rule provenance: results/provenance.json, what produced this run's final outputs."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.io import write_json
from emdir.logs import setup_logging
from emdir.provenance import run_summary

setup_logging(snakemake.log[0])
write_json(
    snakemake.output.json,
    run_summary(snakemake.config, list(snakemake.input), snakemake.params.config_files),
)
