"""Rule reference_check: this run's tables against a reference folder, effect by effect."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.errors import EmdirError
from emdir.logs import setup_logging
from emdir.report.reference import check

setup_logging(snakemake.log[0])
if snakemake.params.reference is None:
    raise EmdirError(
        "the config names no reference folder; set `reference` (e.g. docs/reference/default "
        "for the embedded default) to check this run against it"
    )
print(
    check(
        snakemake.params.run_dir,
        snakemake.params.reference,
        snakemake.output.csv,
        snakemake.output.txt,
    )
)
