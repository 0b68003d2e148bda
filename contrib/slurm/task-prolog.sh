#!/usr/bin/env bash
# task-prolog.sh: gives a job staged by prolog.sh its CLUSSTER_* variables (optional).
# slurm.conf: TaskProlog=/path/to/task-prolog.sh (run by slurmstepd as the job's user before
# each task; each `export NAME=value` line it prints is set in the task's environment, each
# `print ...` line goes to the task's output). Keep clusster-directives.sh beside it.
# Reads <state_dir>/<job id>/exports, written by prolog.sh: CLUSSTER_STAGE_IN_COUNT,
# CLUSSTER_STAGE_IN_<n>, CLUSSTER_DATASET_<n>, CLUSSTER_VERSION_<n>, CLUSSTER_STAGE_OUT_COUNT,
# CLUSSTER_STAGE_OUT_<n>. state_dir comes from the site config if this user may read it, else
# the default (/var/spool/clusster-slurm). If the stage-in failed, the job is being cancelled:
# this says so in the job's output and sets CLUSSTER_STAGE_IN_FAILED.
set -uo pipefail
HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
# shellcheck source=clusster-directives.sh
. "$HERE/clusster-directives.sh"
clusster_load_conf optional >/dev/null 2>&1 || true
dir="${CL_CONF[state_dir]}/${SLURM_JOB_ID:-none}"
if [ -r "$dir/failed" ]; then
  echo "print clusster: stage-in failed: $(tr '\n' ' ' <"$dir/failed")"
  echo "export CLUSSTER_STAGE_IN_FAILED=1"
fi
[ -r "$dir/exports" ] || exit 0
while IFS= read -r line; do
  [[ $line =~ ^CLUSSTER_[A-Z_0-9]+= ]] && printf 'export %s\n' "$line"
done <"$dir/exports"
exit 0
