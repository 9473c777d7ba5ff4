import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# ---------------------------------------------------------------- the jobs' environment
# The only changes the workflow makes to its environment, all here:
# - emdir comes from this checkout. This Snakefile imports it at parse time (config checks,
#   paths, vector names: light imports only, no torch, no h5py), and every job imports it,
#   in the venv and in the per-rule conda envs alike (Snakemake copies env files into
#   .snakemake/conda/, so a relative `pip: -e` cannot work). PYTHONPATH is set, never
#   required, so no `envvars:` directive; a cluster job re-parses this and sets it.
# - Every job stamps its result files with the sha of the config it ran under
#   (EMDIR_CONFIG_SHA, set below once the config is checked).
EMDIR_SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, EMDIR_SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (EMDIR_SRC, os.getenv("PYTHONPATH")) if p)
)

from emdir.config import prepare_config
from emdir.errors import EmdirError
from emdir.io import config_sha
from emdir.provenance import CONFIG_SHA_ENV

# A --configfile names a whole experiment (config/paper.yaml, a test config) and replaces
# the embedded default; without one the default runs. --config KEY=VALUE still overrides.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


# The config is validated against config/schema.yaml (filling in defaults), put in canonical
# key order and cross-checked (emdir.config): a problem stops the run here, with one short
# message naming the key and the fix.
try:
    prepare_config(config, f"{workflow.basedir}/config/schema.yaml")
except EmdirError as err:
    raise WorkflowError(str(err)) from None
os.environ[CONFIG_SHA_ENV] = config_sha(config)


report: "workflow/report/workflow.rst"


# common.smk: the names, wildcard constraints and helpers all the stages use. Each stage's
# file includes its own input and params functions (workflow/rules/functions/<stage>.smk)
# above its rules. Every path comes from emdir.layout.
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
include: "workflow/rules/sweep.smk"


# A missing LLM-judge key stops the run before any job, not after all the generation
# (check_judge_key: workflow/rules/functions/judge.smk).
onstart:
    check_judge_key()


rule all:
    default_target: True
    input:
        FINAL_OUTPUTS,
        layout.PROVENANCE,
