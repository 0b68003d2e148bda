#!/usr/bin/env bash
# run.sh PROFILE...: the WAN benchmark of issue 4 on an emulated link (see README.md here).
#
# Profiles: P1 (1 Gbit/s, 40 ms RTT, 0.1 % loss), P2 (1 Gbit/s, 2 ms RTT, no loss),
# veth (linkem with no delay, loss or limit: the emulator's own ceiling), 1g (the 1 Gbit/s
# limit alone).
# For each profile, in the same run and on the same link: iperf3 TCP with 1 and 8 streams,
# rsync (daemon mode) of the 1 GiB tree cold, after a 1 % overwrite, re-sent unchanged, after
# insertions (all but the re-send RUNS times), and of 100,000 × 10 KiB files; then the
# clusster transfer (clusster.sh: `clusster transfer push` of the same data sets, RUNS times,
# with the daemons' CPU time and peak RSS).
# Every copy is verified by checksums; bytes on the wire are linkem's A→B (and B→A) counters.
#
# Environment: RUNS (3: repeats of iperf3 and of the rsync cold, overwrite and insert steps),
# IPERF_SECONDS (20), CLW_DATA (/tmp/clw-data: data sets, ~4.3 GB, kept between runs),
# CLW_RUN (/tmp/clw-run: receiver side and logs, deleted at the end), LINKEM (a built linkem;
# default: cargo build --release),
# RESULTS (where the Markdown table goes; default /tmp/clw-results-DATE.md),
# SKIP_SMALL=1 (no 100,000-file step), IPERF_ONLY=1 (no rsync steps), IPERF_CC (iperf3's
# congestion control, e.g. cubic, set per socket with -C; default: the kernel's default, bbr
# here. A namespace cannot change its own default to one outside the host's
# tcp_allowed_congestion_control, "reno bbr" here, so rsync always runs with that default),
# CLUSSTER_ONLY=1 (no iperf3 or rsync steps), CLUSSTER (the clusster binary; default
# target/release/clusster), CLUSSTER_CC (bbr or cubic), CLUSSTER_STREAMS (8: streams_per_transfer).
# Exit codes: 0 done, 1 a step failed (its log is printed) or another run holds the lock,
# 2 bad usage.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MKDATA="$REPO/../shared/bench/lib/mkdata.py"
[ -f "$MKDATA" ] || MKDATA=/work/shared/bench/lib/mkdata.py
RUNS=${RUNS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-20}
CLW_DATA=${CLW_DATA:-/tmp/clw-data}
CLW_RUN=${CLW_RUN:-/tmp/clw-run}
RESULTS=${RESULTS:-/tmp/clw-results-$(date +%Y%m%d-%H%M%S).md}
# Per-tool time limits, s: generous for P1 (a cold 1 GiB rsync takes ~30 s there).
RSYNC_TIMEOUT=${RSYNC_TIMEOUT:-900}
GIB=1073741824
SERVER_PIDS=()

usage() {
  echo "usage: $0 PROFILE... (P1 = 1 Gbit/s 40 ms 0.1 % loss, P2 = 1 Gbit/s 2 ms, veth = no impairment," \
    "1g = 1 Gbit/s only)" >&2
  exit 2
}

profile_args() { # PROFILE -> linkem arguments
  case "$1" in
    P1) echo "--rate 1g --rtt-ms 40 --loss-pct 0.1" ;;
    P2) echo "--rate 1g --rtt-ms 2" ;;
    veth) echo "" ;;
    1g) echo "--rate 1g" ;; # the rate limit alone: can linkem shape 1 Gbit/s here?
    *) return 1 ;;
  esac
}

[ $# -gt 0 ] || usage
for p in "$@"; do
  profile_args "$p" >/dev/null || {
    echo "unknown profile $p" >&2
    usage
  }
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS=$RUNS must be a positive integer" >&2; exit 2; }
[[ "$IPERF_SECONDS" =~ ^[1-9][0-9]*$ ]] || { echo "IPERF_SECONDS=$IPERF_SECONDS must be a positive integer" >&2; exit 2; }
case "${CLUSSTER_CC:-bbr}" in
  bbr | cubic | newreno) ;;
  *) echo "CLUSSTER_CC=$CLUSSTER_CC must be bbr, cubic or newreno" >&2; exit 2 ;;
esac
[[ "${CLUSSTER_STREAMS:-8}" =~ ^[1-9][0-9]*$ ]] ||
  { echo "CLUSSTER_STREAMS=$CLUSSTER_STREAMS must be a positive integer" >&2; exit 2; }
CLUSSTER=${CLUSSTER:-$REPO/target/release/clusster}
[ -x "$CLUSSTER" ] ||
  { echo "CLUSSTER=$CLUSSTER is not an executable: cargo build --release -p transfer-daemon --bin clusster" >&2; exit 2; }
command -v rclone >/dev/null || { echo "rclone is missing (the clusster steps load and check data with it)" >&2; exit 2; }
if [ "$(id -u)" -ne 0 ]; then
  echo "run.sh creates network namespaces: run it as root" >&2
  exit 2
fi
for tool in ip ethtool ping ss iperf3 rsync python3 sha256sum timeout; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-bench-deps" >&2; exit 2; }
done

# shellcheck source=netns.sh
source "$HERE/netns.sh"

# One run at a time: a second run's setup would delete the first one's namespaces mid-step.
exec 9>/run/clw-wan-bench.lock
if ! flock -n 9; then
  echo "another benches/wan/run.sh is running (lock /run/clw-wan-bench.lock): wait for it to finish" >&2
  exit 1
fi

# $CLW_RUN is deleted at the end and the data set dirs are (re)written: refuse directories
# this script did not make, so that a mistyped path cannot cost anyone's files.
if [ -e "$CLW_RUN" ] && [ ! -f "$CLW_RUN/.clw-run" ]; then
  echo "CLW_RUN=$CLW_RUN exists and was not made by run.sh; it is deleted at the end: choose a new path" >&2
  exit 2
fi
for d in orig mut ins small; do
  if [ -e "$CLW_DATA/$d" ] && [ ! -f "$CLW_DATA/$d/.manifest" ]; then
    echo "$CLW_DATA/$d exists but holds no data set made by mkdata.py/insert.py: set CLW_DATA to another directory" >&2
    exit 2
  fi
done

# The receiver's data lives under $CLW_RUN; the namespaces go whatever happens.
cleanup() {
  clw_down
  rm -rf "$CLW_RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${LINKEM:-}" ]; then
  (cd "$REPO" && cargo build --release --locked -p benches --bin linkem)
  LINKEM="${CARGO_TARGET_DIR:-$REPO/target}/release/linkem"
fi
[ -x "$LINKEM" ] || { echo "LINKEM=$LINKEM is not an executable" >&2; exit 2; }

# ---- data sets (deterministic; made once, reused by later runs) ----
ORIG=$CLW_DATA/orig    # 64 × 16 MiB random files
MUT=$CLW_DATA/mut      # the same after overwriting 1 % of the bytes at 256 places
INS=$CLW_DATA/ins      # the same as orig with 256 insertions of 1..4096 bytes
SMALL=$CLW_DATA/small  # 100,000 × 10 KiB files
make_data() {
  mkdir -p "$CLW_DATA"
  python3 "$MKDATA" tree "$ORIG" 64 16M 1
  if [ ! -f "$MUT/.mutated" ]; then
    rm -rf "$MUT"
    cp -a "$ORIG" "$MUT"
    # cp -a keeps orig's times: a file mutated within the same second as orig was written
    # would keep its size and mtime, and rsync's quick check would skip it.
    sleep 1
    python3 "$MKDATA" mutate "$MUT" 1 >"$MUT/.mutated"
  fi
  python3 "$HERE/insert.py" "$ORIG" "$INS" 4 4096 3 >/dev/null
  [ "${SKIP_SMALL:-0}" = 1 ] || python3 "$MKDATA" tree "$SMALL" 100000 10K 1
}

tree_digest() { # DIR -> one digest over every (name, content) except dot files
  (cd "$1" && find . -type f ! -name '.*' -print0 | sort -z | xargs -0 -r sha256sum | sha256sum | cut -c1-64)
}

# ---- measurement helpers ----
RAW=$CLW_RUN/raw.tsv # profile step run seconds wire_ab wire_ba tool_bytes value verified
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
counter() { awk -v k="$1" '$1 == k {print $2}' "$CLW_RUN/counters"; }
snap() { clw_counters >"$CLW_RUN/counters"; echo "$(counter a_to_b.bytes_forwarded) $(counter b_to_a.bytes_forwarded)"; }

fail() {
  echo "FAILED: $1" >&2
  [ -f "${2:-}" ] && tail -20 "$2" >&2
  exit 1
}

start_servers() {
  mkdir -p "$CLW_RUN/dst"
  cat >"$CLW_RUN/rsyncd.conf" <<EOF
pid file = $CLW_RUN/rsyncd.pid
use chroot = no
[dst]
path = $CLW_RUN/dst
read only = no
uid = root
gid = root
EOF
  # `ip netns exec` directly (not clw_ns, a function that would run in a subshell), so that
  # $! is the server itself and stop_servers can end exactly it.
  ip netns exec clw-b rsync --daemon --no-detach --address=10.77.0.2 --config="$CLW_RUN/rsyncd.conf" \
    --log-file="$CLW_RUN/rsyncd.log" &
  SERVER_PIDS=($!)
  ip netns exec clw-b iperf3 -s -B 10.77.0.2 >"$CLW_RUN/iperf3-server.log" 2>&1 &
  SERVER_PIDS+=($!)
  local i
  for i in $(seq 1 50); do
    if clw_ns clw-a timeout 2 rsync rsync://10.77.0.2/ >/dev/null 2>&1 &&
      clw_ns clw-b ss -ltn | grep -q ':5201 '; then
      return 0
    fi
    sleep 0.1
  done
  fail "rsync daemon or iperf3 server did not start in clw-b" "$CLW_RUN/rsyncd.log"
}

stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
}

linkem_cpu_s() { # user + system CPU seconds linkem has used so far
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$(cat "$CLW_RUN/linkem.pid")/stat"
}

iperf() { # PROFILE STREAMS RUN
  local out="$CLW_RUN/iperf3-$1-$2-$3.json" before after t0 t1 mbit
  before=$(snap)
  t0=$(now)
  clw_ns clw-a timeout $((IPERF_SECONDS + 30)) iperf3 -c 10.77.0.2 -t "$IPERF_SECONDS" -P "$2" \
    ${IPERF_CC:+-C "$IPERF_CC"} -J >"$out" ||
    fail "iperf3 -P $2 on $1" "$out"
  t1=$(now)
  after=$(snap)
  mbit=$(python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' "$out")
  set -- "$1" "$2" "$3" "$before" "$after" "$t0" "$t1" "$mbit"
  record "$1" "iperf3-tcp-$2" "$3" "$(elapsed "$6" "$7")" "$(wire "$4" "$5" 1)" "$(wire "$4" "$5" 2)" "" "$8" "n/a"
}

wire() { # BEFORE AFTER FIELD -> bytes forwarded in between (field 1 = A→B, 2 = B→A)
  echo $(($(echo "$2" | cut -d' ' -f"$3") - $(echo "$1" | cut -d' ' -f"$3")))
}

rsync_push() { # PROFILE STEP RUN SRC DSTNAME VALUE_KIND: pushes SRC/ to dst/DSTNAME/ from A to B
  local profile=$1 step=$2 run=$3 src=$4 name=$5 kind=$6
  local log="$CLW_RUN/rsync-$profile-$step-$run.log" before after t0 t1 seconds sent verified value
  before=$(snap)
  t0=$(now)
  clw_ns clw-a timeout "$RSYNC_TIMEOUT" rsync -a --stats --exclude='.*' "$src/" "rsync://10.77.0.2/dst/$name/" \
    >"$log" 2>&1 || fail "rsync $step on $profile" "$log"
  t1=$(now)
  after=$(snap)
  seconds=$(elapsed "$t0" "$t1")
  sent=$(awk -F': ' '/^Total bytes sent/ {gsub(",", "", $2); print $2}' "$log")
  if [ "$(tree_digest "$src")" = "$(tree_digest "$CLW_RUN/dst/$name")" ]; then verified=yes; else verified=NO; fi
  [ "$verified" = yes ] || fail "rsync $step on $profile: the copy differs from $src" "$log"
  case "$kind" in
    tree) value=$(awk -v s="$seconds" -v b="$GIB" 'BEGIN {printf "%.1f", b / s / 1e6}') ;; # MB/s of the 1 GiB tree
    files) value=$(awk -v s="$seconds" 'BEGIN {printf "%.0f", 100000 / s}') ;;          # files/s
    -) value="" ;;
    *) fail "rsync_push: unknown figure kind $kind" ;;
  esac
  record "$profile" "$step" "$run" "$seconds" "$(wire "$before" "$after" 1)" "$(wire "$before" "$after" 2)" \
    "$sent" "$value" "$verified"
}

rsync_over_orig() { # PROFILE STEP SRC LABEL: RUNS pushes of SRC, B's copy reset to ORIG before each
  local run
  for run in $(seq 1 "$RUNS"); do
    echo "  rsync $4 run $run" >&2
    rm -rf "$CLW_RUN/dst/tree"
    cp -a "$ORIG" "$CLW_RUN/dst/tree"
    rsync_push "$1" "rsync-$2" "$run" "$3" tree -
  done
}

# ==== the clusster transfer: benches/wan/clusster.sh (run_clusster and its setup) ==========
# shellcheck source=clusster.sh
source "$HERE/clusster.sh"

clusster_steps() { # PROFILE: cold, overwrite, re-send, insertions (RUNS times), small files
  local profile=$1 run
  clu_setup "$profile"
  for run in $(seq 1 "$RUNS"); do
    echo "  clusster run $run: cold, overwrite, re-send, insertions" >&2
    # b starts empty each run, so every cold push is cold; the later steps send a new version
    # of the same keys over the previous one, which is what deltas are made against.
    clu_fresh_b
    run_clusster "$profile" cold "$run"
    run_clusster "$profile" overwrite "$run"
    run_clusster "$profile" resend "$run"
    run_clusster "$profile" revert "$run"
    run_clusster "$profile" insert "$run"
  done
  if [ "${SKIP_SMALL:-0}" != 1 ]; then
    echo "  clusster: 100,000 small files" >&2
    clu_fresh_b
    run_clusster "$profile" small 1
  fi
  clu_teardown "$profile"
}
# ============================================================================================

run_profile() {
  local profile=$1 run profile_t0
  profile_t0=$(now)
  echo "== $profile: linkem $(profile_args "$profile")" >&2
  clw_up
  # shellcheck disable=SC2046 # the profile's arguments are words
  clw_start_linkem $(profile_args "$profile") --seed 1
  start_servers
  if [ "${CLUSSTER_ONLY:-0}" = 1 ]; then
    clusster_steps "$profile"
    finish_profile "$profile" "$profile_t0"
    return 0
  fi
  for run in $(seq 1 "$RUNS"); do
    echo "  iperf3 run $run" >&2
    iperf "$profile" 1 "$run"
    iperf "$profile" 8 "$run"
  done
  if [ "${IPERF_ONLY:-0}" = 1 ]; then
    stop_servers
    clw_stop_linkem
    cp "$CLW_RUN/linkem.stats" "$CLW_RUN/linkem-$profile.stats"
    echo "linkem CPU n/a (iperf3 only)" >"$CLW_RUN/linkem-$profile.cpu"
    clw_down
    return 0
  fi
  for run in $(seq 1 "$RUNS"); do
    echo "  rsync cold run $run" >&2
    rm -rf "$CLW_RUN/dst/tree"
    rsync_push "$profile" rsync-cold "$run" "$ORIG" tree tree
  done
  # The delta steps run against the original tree each time: B's copy is reset to it locally
  # (cp -a keeps the times rsync compares), so the link carries only the delta. Their time is
  # mostly both sides reading and checksumming 1 GiB, so it moves with the machine's load:
  # repeat them like the cold copy.
  rsync_over_orig "$profile" overwrite "$MUT" "after the 1 % overwrite"
  echo "  rsync re-send" >&2
  rsync_push "$profile" rsync-resend 1 "$MUT" tree -
  rsync_over_orig "$profile" insert "$INS" "after insertions"
  if [ "${SKIP_SMALL:-0}" != 1 ]; then
    echo "  rsync of 100,000 small files" >&2
    rm -rf "$CLW_RUN/dst/small"
    rsync_push "$profile" rsync-small 1 "$SMALL" small files
    rm -rf "$CLW_RUN/dst/small"
  fi
  rm -rf "$CLW_RUN/dst"
  clusster_steps "$profile"
  finish_profile "$profile" "$profile_t0"
}

finish_profile() { # PROFILE T0
  stop_servers
  echo "linkem CPU $(linkem_cpu_s) s in $(elapsed "$2" "$(now)") s" >"$CLW_RUN/linkem-$1.cpu"
  clw_stop_linkem
  cp "$CLW_RUN/linkem.stats" "$CLW_RUN/linkem-$1.stats"
  cp "$CLW_RUN/linkem.log" "$CLW_RUN/linkem-$1.log"
  clw_down
}

make_data
INSERTED=$(awk '{print $2}' "$INS/.inserted")
rm -rf "$CLW_RUN"
mkdir -p "$CLW_RUN"
touch "$CLW_RUN/.clw-run"
: >"$RAW"
: >"$CLW_RUN/clusster-proc.tsv"
# The machine is shared: the load around the run says how much the figures may have suffered.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for profile in "$@"; do run_profile "$profile"; done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "### WAN run $(date -u +%Y-%m-%dT%H:%MZ): $*"
  echo
  echo "linkem: $LINKEM; RUNS=$RUNS, IPERF_SECONDS=$IPERF_SECONDS; TCP congestion control:" \
    "$(sysctl -n net.ipv4.tcp_congestion_control) (iperf3: ${IPERF_CC:-the same}); inserted bytes: $INSERTED;" \
    "load average before: $LOAD_BEFORE, after: $LOAD_AFTER ($(nproc) CPUs)"
  echo
  python3 "$HERE/summarize.py" "$RAW" "$INSERTED"
  echo
  echo "clusster: congestion_controller=$CLUSSTER_CC, streams_per_transfer=$CLUSSTER_STREAMS; CPU seconds" \
    "during each push and the daemons' peak RSS (VmHWM) so far:"
  echo
  python3 "$HERE/summarize.py" --proc "$CLW_RUN/clusster-proc.tsv"
  for profile in "$@"; do
    echo
    echo "$profile: $(cat "$CLW_RUN/linkem-$profile.cpu"); linkem counters at the end:" \
      "$(tr '\n' ' ' <"$CLW_RUN/linkem-$profile.stats")"
  done
} | tee "$RESULTS"
cp "$RAW" "${RESULTS%.md}.tsv"
cp "$CLW_RUN/clusster-proc.tsv" "${RESULTS%.md}.proc.tsv"
[ ! -d "$CLW_RUN/logs" ] || cp -r "$CLW_RUN/logs" "${RESULTS%.md}.logs"
echo "results: $RESULTS (raw rows: ${RESULTS%.md}.tsv)" >&2
