from snakemake.utils import min_version

min_version("9.0")


# A --configfile names a whole experiment (config/paper.yaml, a test config) and replaces
# the embedded default; without one the default runs. --config KEY=VALUE still overrides.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


# common.smk first validates the config against config/schema.yaml (filling in defaults)
# and checks its cross-references, each failure one short message naming the key.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/directions.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/anchors.smk"
include: "workflow/rules/maps.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/mechanistic.smk"


# A missing LLM-judge key stops the run before any job, not after all the generation.
onstart:
    check_judge_key()


rule all:
    default_target: True
    input:
        FINAL_OUTPUTS,
        "results/provenance.json",
