"""Rule mechanistic_summary: ablation and inducing effects with CIs, self-correction."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.report.mechanistic import summary

setup_logging(snakemake.log[0])
summary(
    model=snakemake.wildcards.model,
    baselines=snakemake.params.baselines,
    ablation=snakemake.params.ablation,
    induce=snakemake.params.induce,
    steering=snakemake.params.steering,
    question_set=snakemake.params.question_set,
    out_csv=snakemake.output.csv,
    self_correction_csv=snakemake.output.self_correction,
    ablation_png=snakemake.output.ablation,
    induce_png=snakemake.output.induce,
    self_correction_png=snakemake.output.self_correction_png,
    stats_cfg=snakemake.params.stats_cfg,
    sc_cfg=snakemake.params.sc_cfg,
)
