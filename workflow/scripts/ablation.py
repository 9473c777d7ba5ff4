"""Rule ablation: generate from a fine-tune with donor directions (and random controls)
projected out at every layer, layer-wise and as one direction."""

# ruff: noqa: F821  (`snakemake` is injected by the script directive)
from emdir.logs import setup_logging
from emdir.stages.mechanistic import ablation

setup_logging(snakemake.log[0])
ablation(
    model_key=snakemake.wildcards.model,
    receiver=snakemake.wildcards.ft,
    base_dir=snakemake.input.base,
    adapter_dir=snakemake.input.adapter,
    donor_directions=snakemake.params.donors,
    questions=snakemake.input.questions,
    outs=dict(zip(snakemake.params.variants, snakemake.output.variants, strict=True)),
    single_layer=snakemake.params.layer,
    sampling_cfg=snakemake.params.sampling_cfg,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
