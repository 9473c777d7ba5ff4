#!/usr/bin/env bash
# A real SLURM for the workflow: start a one-node cluster on 127.0.0.1, run the small
# end-to-end config (tests/configs/e2e.yaml) through snakemake-executor-plugin-slurm and
# profiles/slurm to results/transfer_matrix.png, check that the cluster jobs went through
# sbatch and completed, and stop the daemons this script started.
#
#   sudo tests/slurm/run_slurm_test.sh            # or as root in a CI container
#
# Needs root (apt-get, and the daemons run as root) on Debian/Ubuntu. Installs slurm-wlm and
# munge with apt-get when slurmctld or munged is missing. Uses the repository's .venv (or the
# active virtualenv), which needs the `slurm` extra: pip install -e '.[slurm]'.
#
# Environment:
#   EMDIR_SLURM_WORKDIR  run here instead of a fresh temporary directory (its cluster/ and
#                        run/ are emptied first, and kept afterwards)
#   EMDIR_SLURM_KEEP=1   keep the temporary directory (it is kept anyway when the run fails)
#   EMDIR_SLURM_CONFIG   the workflow config to run (default tests/configs/e2e.yaml)
#   EMDIR_SLURM_TARGET   the target (default results/transfer_matrix.png)
#
# The test cluster differs from a real one in what profiles/slurm leaves to be edited:
# it has one partition ("emdir", holding the GPU and CPU jobs alike), no accounts and no
# accounting database (so job states come from squeue), and the node has as many fake GPUs
# as CPUs (GRES entries backed by plain files: SLURM schedules them, nothing uses them).
# The profile is copied with those values filled in and every mem_mb capped at the node's
# memory per CPU; everything else (gpu: 1, mem_mb growing with attempt, runtime) is as
# written in profiles/slurm/config.yaml.

set -euo pipefail

START=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONFIG=${EMDIR_SLURM_CONFIG:-$REPO/tests/configs/e2e.yaml}
TARGET=${EMDIR_SLURM_TARGET:-results/transfer_matrix.png}
PARTITION=emdir

say() { printf '[slurm-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get and the SLURM daemons need it)"

# ---------------------------------------------------------------- python environment

if [[ -z ${VIRTUAL_ENV:-} && -x $REPO/.venv/bin/python ]]; then
    export VIRTUAL_ENV=$REPO/.venv
fi
[[ -n ${VIRTUAL_ENV:-} ]] || die "no virtualenv: create $REPO/.venv or activate one"
# sbatch exports this environment to the jobs, which re-run Snakemake with this Python.
export PATH=$VIRTUAL_ENV/bin:$PATH
PY=$VIRTUAL_ENV/bin/python
"$PY" -c 'import snakemake_executor_plugin_slurm' 2>/dev/null ||
    die "snakemake-executor-plugin-slurm is not installed in $VIRTUAL_ENV: pip install -e '.[slurm]'"

# ---------------------------------------------------------------- packages

PATH=$PATH:/usr/sbin:/sbin
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# The jobs' own srun calls do not see SLURM_CONF (the plugin's job step drops SLURM_*
# variables), so they find the configuration the way compute nodes of a "configless"
# cluster do: in slurmd's cache, /run/slurm/conf. A configuration in /etc/slurm would win.
[[ ! -e /etc/slurm/slurm.conf ]] ||
    die "/etc/slurm/slurm.conf exists: this machine has a SLURM of its own; use one without"
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    die "slurmctld or slurmd already runs here; stop it first"
fi

# ---------------------------------------------------------------- working directory

if [[ -n ${EMDIR_SLURM_WORKDIR:-} ]]; then
    WORK=$EMDIR_SLURM_WORKDIR
    mkdir -p "$WORK"
    KEEP=1
else
    WORK=$(mktemp -d /tmp/emdir-slurm.XXXXXX)
    KEEP=${EMDIR_SLURM_KEEP:-0}
fi
WORK=$(cd "$WORK" && pwd)
CLUSTER=$WORK/cluster # slurm.conf, state, spool and logs: a fresh cluster every time
RUN=$WORK/run         # the workflow's working directory: every job runs anew
rm -rf "$CLUSTER" "$RUN"
mkdir -p "$CLUSTER"/{state,spool,log,gpu} "$RUN"
say "working directory $WORK"

# ---------------------------------------------------------------- cleanup

HAD_RUN_SLURM=0
[[ -e /run/slurm ]] && HAD_RUN_SLURM=1
STARTED_PIDS=() # daemons this script started, stopped in reverse order on exit
STARTED_NAMES=()

stop_daemons() {
    local i pid name
    if [[ ${#STARTED_PIDS[@]} -gt 0 && -n ${SLURM_CONF:-} ]]; then
        # Jobs a failed run left behind, on this test cluster only.
        scancel --user "$(id -un)" 2>/dev/null || true
    fi
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${STARTED_PIDS[i]}
        name=${STARTED_NAMES[i]}
        if kill -0 "$pid" 2>/dev/null; then
            say "stopping $name (pid $pid)"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        fi
    done
    STARTED_PIDS=()
    STARTED_NAMES=()
    # slurmd's link to its configuration cache.
    if [[ -L /run/slurm/conf && $(readlink /run/slurm/conf) == "$CLUSTER"/* ]]; then
        rm -f /run/slurm/conf
        [[ $HAD_RUN_SLURM == 1 ]] || rmdir /run/slurm 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    stop_daemons
    if [[ $rc -ne 0 ]]; then
        say "failed (exit $rc); logs kept in $WORK (cluster/log, run/snakemake.log, run/.snakemake/slurm_logs)"
    elif [[ $KEEP == 1 ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

remember() { # remember NAME PIDFILE
    local pid
    for _ in $(seq 50); do
        [[ -s $2 ]] && break
        sleep 0.2
    done
    [[ -s $2 ]] || die "$1 wrote no pid file $2"
    pid=$(cat "$2")
    STARTED_PIDS+=("$pid")
    STARTED_NAMES+=("$1")
    say "started $1 (pid $pid)"
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- munge

if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running; using it"
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    remember munged /run/munge/munged.pid
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n </dev/null | unmunge >/dev/null || die "munge does not work"
fi

# ---------------------------------------------------------------- slurm.conf

HOST=$(hostname -s)
CPUS=$(nproc)
# Total memory as slurmd sees it, in MB; offer 80% of what is available now.
MEM_TOTAL=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
MEM_AVAIL=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
MEM=$((MEM_AVAIL * 8 / 10))
((MEM <= MEM_TOTAL)) || MEM=$MEM_TOTAL
MEM_PER_JOB=$((MEM / CPUS))
GPUS=$CPUS
for ((i = 0; i < GPUS; i++)); do : >"$CLUSTER/gpu/fake$i"; done

CTLD_PORT=$(free_port)
export SLURM_CONF=$CLUSTER/slurm.conf
cat >"$SLURM_CONF" <<EOF
# Written by tests/slurm/run_slurm_test.sh: one node, this host, on 127.0.0.1.
ClusterName=emdirtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmctldParameters=enable_configless
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs stay listed by squeue this long: the executor polls squeue, the checks read it.
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
StateSaveLocation=$CLUSTER/state
SlurmdSpoolDir=$CLUSTER/spool
SlurmctldPidFile=$CLUSTER/slurmctld.pid
SlurmdPidFile=$CLUSTER/slurmd.pid
SlurmctldLogFile=$CLUSTER/log/slurmctld.log
SlurmdLogFile=$CLUSTER/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
# slurmctld serves gres.conf with slurm.conf. The files are not devices: slurmd logs an
# error for each and schedules them all the same.
cat >"$CLUSTER/gres.conf" <<EOF
NodeName=$HOST Name=gpu File=$CLUSTER/gpu/fake[0-$((GPUS - 1))]
EOF

# ---------------------------------------------------------------- slurm daemons

slurmctld -f "$SLURM_CONF"
remember slurmctld "$CLUSTER/slurmctld.pid"
# Configless: slurmd fetches slurm.conf and gres.conf from slurmctld and caches them.
env -u SLURM_CONF slurmd --conf-server "127.0.0.1:$CTLD_PORT"
remember slurmd "$CLUSTER/slurmd.pid"

say "waiting for node $HOST to be idle"
state=
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ $state != idle ]]; then
    sinfo -N -l || true
    tail -n 20 "$CLUSTER"/log/*.log || true
    die "node $HOST is '${state:-unknown}', not idle"
fi
sinfo -N -o '%N %T cpus=%c mem=%m gres=%G'
CLUSTER_UP=$(date +%s)

# ---------------------------------------------------------------- profile for this cluster

# profiles/slurm with the EDIT values replaced: the one partition, no account, mem_mb capped.
mkdir -p "$RUN/profile"
"$PY" - "$REPO/profiles/slurm/config.yaml" "$RUN/profile/config.yaml" "$PARTITION" "$MEM_PER_JOB" <<'EOF'
import sys

import yaml

src, dst, partition, cap = sys.argv[1:]
profile = yaml.safe_load(open(src))


def adapt(resources):
    resources.pop("slurm_account", None)
    if "slurm_partition" in resources:
        resources["slurm_partition"] = partition
    if "mem_mb" in resources:
        resources["mem_mb"] = f"min({resources['mem_mb']}, {cap})"


adapt(profile["default-resources"])
for resources in profile.get("set-resources", {}).values():
    adapt(resources)
yaml.safe_dump(profile, open(dst, "w"), sort_keys=False)
EOF
say "profile for the test cluster ($RUN/profile/config.yaml):"
sed 's/^/    /' "$RUN/profile/config.yaml"

# ---------------------------------------------------------------- the workflow

say "running $(basename "$CONFIG") to $TARGET through SLURM"
cd "$RUN"
set +e
# --slurm-no-account: the test cluster has no accounts. --slurm-status-command squeue:
# without accounting, sacct never reports a job finished.
snakemake "$TARGET" \
    --snakefile "$REPO/Snakefile" \
    --profile "$RUN/profile" \
    --workflow-profile none \
    --configfile "$CONFIG" \
    --replace-workflow-config \
    --slurm-no-account \
    --slurm-status-command squeue \
    --slurm-init-seconds-before-status-checks 5 \
    --slurm-keep-successful-logs \
    --slurm-delete-logfiles-older-than 0 \
    >"$RUN/snakemake.log" 2>&1
RC=$?
set -e
RUN_END=$(date +%s)
tail -n 30 "$RUN/snakemake.log"

# ---------------------------------------------------------------- checks

submitted=$(grep -c 'has been submitted with SLURM jobid' "$RUN/snakemake.log" || true)
say "snakemake exit $RC; $submitted jobs submitted with sbatch"
[[ $RC -eq 0 ]] || die "snakemake failed (exit $RC); see $RUN/snakemake.log"
((submitted > 0)) || die "no job was submitted with sbatch"
[[ -e $RUN/$TARGET ]] || die "$TARGET is missing"
if [[ $TARGET == *.png ]]; then
    [[ $(head -c 8 "$RUN/$TARGET" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
        die "$TARGET is not a PNG"
fi

# What SLURM itself recorded (MinJobAge keeps finished jobs listed): every job completed,
# and exactly the profile's GPU rules asked for a GPU, with the profile's memory.
scontrol --oneliner show job >"$RUN/jobs.txt"
if ! "$PY" - "$RUN/jobs.txt" "$RUN/profile/config.yaml" "$submitted" <<'EOF'; then
import sys

import yaml

table, profile, submitted = sys.argv[1], sys.argv[2], int(sys.argv[3])
profile = yaml.safe_load(open(profile))
gpu_rules = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
rows = [
    dict(field.split("=", 1) for field in line.split() if "=" in field)
    for line in open(table).read().splitlines()
    if line.startswith("JobId=")
]
problems = []
print(f"    {'job':>4}  {'state':<10} {'rule':<15} {'gpus':<14} {'mem':>7}  time limit")
for job in sorted(rows, key=lambda j: int(j["JobId"])):
    jobid, state = job["JobId"], job["JobState"]
    rule = job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
    gpus, mem = job.get("TresPerJob", "-"), job.get("MinMemoryNode", "?")
    print(f"    {jobid:>4}  {state:<10} {rule:<15} {gpus:<14} {mem:>7}  {job.get('TimeLimit')}")
    if state != "COMPLETED":
        problems.append(f"job {jobid} ({rule}) is {state}")
    if (rule in gpu_rules) != ("gpu" in gpus):
        problems.append(f"job {jobid} ({rule}) asked for GPUs {gpus!r}")
    if rule in gpu_rules:
        want = eval(str(profile["set-resources"][rule]["mem_mb"]), {"attempt": 1})
        if mem != f"{want}M":
            problems.append(f"job {jobid} ({rule}) has mem {mem}, the profile says {want}M")
if len(rows) != submitted:
    problems.append(f"snakemake submitted {submitted} jobs, SLURM lists {len(rows)}")
for p in problems:
    print("    PROBLEM:", p)
sys.exit(1 if problems else 0)
EOF
    die "the SLURM job table does not match the profile"
fi

END=$(date +%s)
say "OK: $TARGET written; $submitted jobs ran through sbatch"
say "elapsed: total $((END - START)) s (cluster start $((CLUSTER_UP - START)) s, workflow $((RUN_END - CLUSTER_UP)) s)"
