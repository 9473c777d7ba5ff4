"""Rules judge, judge_steering, judge_transfer: score a generation file."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.judge import judge_file
from emdir.pipeline import setup_logging

setup_logging(snakemake.log[0])
judge_file(snakemake.input.src, snakemake.output.judged, snakemake.params.judge_cfg)
