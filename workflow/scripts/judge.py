"""Rules judge, judge_steering, judge_transfer, judge_reference, judge_mechanistic: judge a
generation file (verdicts, and with the offline backend coherence under the base model)."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
import logging

from emdir.judge import judge_file
from emdir.logs import setup_logging

setup_logging(snakemake.log[0])
# The HTTP client logs every request at INFO; keep the job log to the judge's own summary.
for name in ("httpx", "httpx2", "openai"):
    logging.getLogger(name).setLevel(logging.WARNING)
judge_file(
    snakemake.input.src,
    snakemake.output.judged,
    snakemake.params.judge_cfg,
    cache_path=snakemake.params.cache,
    question_files=snakemake.input.questions,
    coherence_model=snakemake.input.get("coherence_model"),
)
