"""Rule generate: sample answers to every question set from a base or fine-tuned model."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.sampling import generate

setup_logging(snakemake.log[0])
generate(
    model_key=snakemake.wildcards.model,
    ft=snakemake.wildcards.ft,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.get("adapter"),
    question_files=list(snakemake.input.questions),
    out=snakemake.output.jsonl,
    sampling_cfg=snakemake.params.sampling_cfg,
    threads=snakemake.threads,
)
