"""Rule judge_plan: requests, cache hits and estimated cost of judging, before paying."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.judge.plan import judge_plan
from emdir.logs import setup_logging

setup_logging(snakemake.log[0])
judge_plan(
    snakemake.params.files,
    snakemake.params.judge_cfg,
    snakemake.params.cache,
    snakemake.output.plan,
    question_files=snakemake.input.questions,
)
