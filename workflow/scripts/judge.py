"""Rules judge, judge_steering, judge_steering_also, judge_transfer, judge_reference,
judge_mechanistic, judge_induce: judge the answer files of one generating job (verdicts, and
with the offline backend coherence under the base model), each into its judged copy."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
import logging

from emdir.judge import judge_files
from emdir.logs import setup_logging

setup_logging(snakemake.log[0])
# The HTTP client logs every request at INFO; keep the job log to the judge's own summary.
for name in ("httpx", "httpx2", "openai"):
    logging.getLogger(name).setLevel(logging.WARNING)


def as_list(files):
    """A named input or output of one file is a string, of several a list."""
    return [files] if isinstance(files, str) else list(files)


judge_files(
    list(zip(as_list(snakemake.input.src), as_list(snakemake.output.judged), strict=True)),
    snakemake.params.judge_cfg,
    cache_path=snakemake.params.cache,
    question_files=snakemake.input.questions,
    coherence_model=snakemake.input.get("coherence_model"),
)
