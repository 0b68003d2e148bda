#!/usr/bin/env bash
# prolog.sh: clusster stage-in for Slurm sites without the burst_buffer/lua plugin.
# slurm.conf: Prolog=/path/to/prolog.sh (run by slurmd as root on each node of a job, before
# the job starts). Keep clusster-directives.sh beside it. docs/staging.md has the whole story.
#
# On the job's batch host only: reads the job's script (`scontrol write batch_script`), expands
# its #CLUSSTER stage_in directives (variables: SLURM_JOB_ID, SLURM_JOB_UID, SLURM_JOB_GID,
# SLURM_JOB_USER, USER, HOME, SLURM_JOB_WORK_DIR and the site config's env.NAME; a prolog does
# not see the job's own environment) and runs `clusster stage-in` for each, as the job's user.
# It saves the plan for epilog.sh and the variables task-prolog.sh gives the job in
# <state_dir>/<job id>/. Logs go to <log_dir>/<job id>.log.
#
# A job without directives (or without a batch script: srun, salloc) is left alone; so is a job
# that uses the burst-buffer plugin (a `#BB_LUA` line), when both are installed.
# If a stage-in fails, with on_stage_in_failure = cancel (the default) the prolog still exits 0,
# so that the node is not drained for a user's mistake: it records the message in the job's
# AdminComment and cancels the job (the batch script may start for an instant before the cancel
# lands). With on_stage_in_failure = drain it exits 1: Slurm drains the node and requeues the job.
set -uo pipefail

HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
# shellcheck source=clusster-directives.sh
. "$HERE/clusster-directives.sh"

JOB="${SLURM_JOB_ID:-${SLURM_JOBID:-}}"
[ -n "$JOB" ] || exit 0
export PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}:/usr/sbin:/usr/bin:/sbin:/bin"

if ! clusster_load_conf required; then
  logger -t clusster-prolog "job $JOB: $CL_ERR" 2>/dev/null || true
  echo "clusster prolog: $CL_ERR" >&2
  exit 0
fi

script="$(mktemp)"
trap 'rm -f "$script"' EXIT
# No batch script (an interactive job): nothing to stage.
scontrol write batch_script "$JOB" - >"$script" 2>/dev/null || exit 0
grep -q '^#CLUSSTER\|^#BB_LUA' "$script" || exit 0
# The burst-buffer plugin handles jobs with #BB_LUA lines where it is enabled.
if grep -q '^#BB_LUA' "$script" && scontrol show config 2>/dev/null | grep -q '^BurstBufferType *= *burst_buffer/lua'; then
  exit 0
fi

info="$(scontrol -o show job "$JOB" 2>/dev/null || true)"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $info"; }
# Multi-node jobs: stage once, on the node that runs the batch script.
batch_host="$(field BatchHost)"
if [ -n "$batch_host" ] && [ -n "${SLURMD_NODENAME:-}" ] && [ "$batch_host" != "$SLURMD_NODENAME" ]; then
  exit 0
fi
uid="${SLURM_JOB_UID:-$(field UserId | sed 's/.*(\([0-9]*\))/\1/')}"
gid="${SLURM_JOB_GID:-$(field GroupId | sed 's/.*(\([0-9]*\))/\1/')}"
workdir="${SLURM_JOB_WORK_DIR:-$(field WorkDir)}"

fail() {
  local msg="$1"
  CL_VARS[SLURM_JOB_ID]="$JOB"
  clusster_log "prolog: $msg"
  logger -t clusster-prolog "job $JOB: $msg" 2>/dev/null || true
  echo "clusster prolog: job $JOB: $msg" >&2
  mkdir -p "$dir" 2>/dev/null && printf '%s\n' "$msg" >"$dir/failed"
  if [ "${CL_CONF[on_stage_in_failure]}" = drain ]; then exit 1; fi
  scontrol update JobId="$JOB" AdminComment="clusster: ${msg//$'\n'/ }" >/dev/null 2>&1 || true
  scancel "$JOB" >/dev/null 2>&1 || true
  exit 0
}

dir="${CL_CONF[state_dir]}/$JOB"
mkdir -p "${CL_CONF[state_dir]}" && chmod 0711 "${CL_CONF[state_dir]}"
if ! { rm -rf "$dir" && mkdir -m 0711 "$dir"; }; then fail "cannot create $dir"; fi

clusster_job_vars "$JOB" "$uid" "$gid" "$workdir" || fail "$CL_ERR"
clusster_parse "$script" "${CL_VARS[SLURM_JOB_WORK_DIR]}" || fail "directive $CL_ERR"

# The plan, for the epilog: uid, gid and the expanded directives, one per line, fields
# separated by the ASCII unit separator (a tab would merge empty fields when read back).
{
  printf 'job\x1f%s\x1f%s\x1f%s\n' "$uid" "$gid" "${CL_VARS[SLURM_JOB_WORK_DIR]}"
  for i in "${!CL_KIND[@]}"; do
    printf '%s\x1f%s\x1f%s\x1f%s\x1f%s\n' "${CL_KIND[i]}" "${CL_DATASET[i]}" "${CL_PATH[i]}" "${CL_TAG[i]}" "${CL_RULE[i]}"
  done
} >"$dir/plan"
chmod 0600 "$dir/plan"

exports="" n_in=0 n_out=0
for i in "${!CL_KIND[@]}"; do
  if [ "${CL_KIND[i]}" = out ]; then
    n_out=$((n_out + 1))
    exports+="CLUSSTER_STAGE_OUT_$n_out=${CL_PATH[i]}"$'\n'
    continue
  fi
  n_in=$((n_in + 1))
  clusster_log "prolog: clusster stage-in ${CL_DATASET[i]} ${CL_PATH[i]}"
  out="$(clusster_cli_as_user stage-in --json --job "$JOB" --timeout "${CL_CONF[stage_in_timeout]}" \
    --pin-for "${CL_CONF[pin_for]}" -- "${CL_DATASET[i]}" "${CL_PATH[i]}" 2>"$dir/err")"
  code=$?
  clusster_log "prolog: exit $code $out $(cat "$dir/err")"
  if [ "$code" != 0 ]; then
    fail "clusster stage-in ${CL_DATASET[i]} ${CL_PATH[i]} failed (exit $code, $(clusster_exit_meaning "$code")): $(tr '\n' ' ' <"$dir/err")"
  fi
  version="$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' <<<"$out")"
  exports+="CLUSSTER_STAGE_IN_$n_in=${CL_PATH[i]}"$'\n'
  exports+="CLUSSTER_DATASET_$n_in=${CL_DATASET[i]}"$'\n'
  exports+="CLUSSTER_VERSION_$n_in=$version"$'\n'
done
rm -f "$dir/err"
exports+="CLUSSTER_STAGE_IN_COUNT=$n_in"$'\n'"CLUSSTER_STAGE_OUT_COUNT=$n_out"$'\n'
# For task-prolog.sh, which runs as the job's user.
printf '%s' "$exports" >"$dir/exports"
chown "$uid:$gid" "$dir/exports" && chmod 0400 "$dir/exports"
exit 0
