"""Rule sweep_finetune: one run of the training-budget sweep (a fine-tune with evaluations)."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.models import finetune

setup_logging(snakemake.log[0])
finetune(
    model_key=snakemake.wildcards.model,
    ft=f"sweep_{snakemake.wildcards.run}",
    base_dir=snakemake.input.base,
    dataset=snakemake.input.dataset,
    eval_questions=snakemake.input.eval_questions,
    out_dir=snakemake.output.adapter,
    ft_cfg=snakemake.params.ft_cfg,
    sampling_cfg=snakemake.params.sampling_cfg,
    judge_cfg=snakemake.params.judge_cfg,
    threads=snakemake.threads,
    ft_spec=snakemake.params.ft_spec,
)
