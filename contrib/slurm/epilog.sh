#!/usr/bin/env bash
# epilog.sh: clusster stage-out for Slurm sites without the burst_buffer/lua plugin.
# slurm.conf: Epilog=/path/to/epilog.sh (run by slurmd as root on each node when a job ends).
# Keep clusster-directives.sh beside it. docs/staging.md has the whole story.
#
# Runs `clusster stage-out` as the job's user for each #CLUSSTER stage_out directive that
# prolog.sh expanded and saved (<state_dir>/<job id>/plan), in order, then removes the job's
# state. Only when the job succeeded: SLURM_JOB_EXIT_CODE (else the ExitCode scontrol shows) must
# be 0 with no signal; stage_out_on_failure = yes in the site config stages out whatever the
# outcome. Nothing is staged out if the stage-in failed.
# The epilog always exits 0 (an epilog's failure drains the node): a failed stage-out is logged
# in <log_dir>/<job id>.log, syslog, and the job's AdminComment (scontrol show job).
set -uo pipefail

HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
# shellcheck source=clusster-directives.sh
. "$HERE/clusster-directives.sh"

JOB="${SLURM_JOB_ID:-${SLURM_JOBID:-}}"
[ -n "$JOB" ] || exit 0
export PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}:/usr/sbin:/usr/bin:/sbin:/bin"
clusster_load_conf required || { echo "clusster epilog: $CL_ERR" >&2; exit 0; }

dir="${CL_CONF[state_dir]}/$JOB"
[ -f "$dir/plan" ] || exit 0
trap 'rm -rf "$dir"' EXIT

note() {
  clusster_log "epilog: $1"
  logger -t clusster-epilog "job $JOB: $1" 2>/dev/null || true
}

if [ -f "$dir/failed" ]; then
  note "stage-out skipped: the stage-in failed"
  exit 0
fi

# The plan: a "job" line (uid, gid, working directory), then the directives.
CL_KIND=() CL_DATASET=() CL_PATH=() CL_TAG=() CL_RULE=()
while IFS=$'\x1f' read -r kind a b c d; do
  case "$kind" in
    job) uid="$a" gid="$b" workdir="$c" ;;
    in | out) CL_KIND+=("$kind") CL_DATASET+=("$a") CL_PATH+=("$b") CL_TAG+=("$c") CL_RULE+=("$d") ;;
  esac
done <"$dir/plan"
clusster_job_vars "$JOB" "${uid:?}" "${gid:?}" "${workdir:-}" || { note "$CL_ERR"; exit 0; }

code="${SLURM_JOB_EXIT_CODE:-}"
if [ -z "$code" ]; then
  code="$(scontrol -o show job "$JOB" 2>/dev/null | sed -n 's/.* ExitCode=\([^ ]*\).*/\1/p')"
fi
case "$code" in 0 | 0:0) ok=1 ;; *) ok=0 ;; esac
if [ "$ok" = 0 ] && [ "${CL_CONF[stage_out_on_failure]}" != yes ]; then
  note "stage-out skipped: the job ended with exit code ${code:-unknown}"
  exit 0
fi

for i in "${!CL_KIND[@]}"; do
  [ "${CL_KIND[i]}" = out ] || continue
  clusster_stage_out_args "$i"
  args=("${CL_WORDS[@]}")
  out="$(clusster_cli_as_user "${args[0]}" --json --job "$JOB" "${args[@]:1}" 2>"$dir/err")"
  rc=$?
  note "clusster ${args[*]} -> exit $rc $out $(tr '\n' ' ' <"$dir/err")"
  if [ "$rc" != 0 ]; then
    msg="stage-out ${CL_PATH[i]} ${CL_DATASET[i]} failed (exit $rc, $(clusster_exit_meaning "$rc")): $(tr '\n' ' ' <"$dir/err")"
    scontrol update JobId="$JOB" AdminComment="clusster: $msg" >/dev/null 2>&1 || true
    echo "clusster epilog: job $JOB: $msg" >&2
    exit 0
  fi
done
exit 0
