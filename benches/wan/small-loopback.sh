#!/usr/bin/env bash
# small-loopback.sh: 100,000 small files pushed between two clusster daemons with no link
# emulator in the path: on loopback, or with NET=veth (root) between two network namespaces
# joined by a veth pair (the issue's "veth without delay"; no linkem on the same cores).
#
#   benches/wan/small-loopback.sh [RUNS]
#   NET=veth benches/wan/small-loopback.sh [RUNS]
#
# Makes the files with ../shared/bench/lib/mkdata.py (tree small 100000 10K 1) unless
# SMALL names a directory of them, loads them into site a over S3 with rclone (not timed),
# then pushes a -> b RUNS times (default 3), each into a fresh site b, and prints per run:
# the wall time of `transfer push --wait`, files/s, both daemons' CPU seconds during the
# push and their peak RSS. PERF=1 records a cpu-clock profile of both (perf.a, perf.b).
# Environment: CLUSSTER (default target/release/clusster), WORK (default /tmp/clsmall).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CLUSSTER=${CLUSSTER:-$REPO/target/release/clusster}
WORK=${WORK:-/tmp/clsmall}
RUNS=${1:-3}
MKDATA=$REPO/../shared/bench/lib/mkdata.py
SMALL=${SMALL:-$WORK/small}
NET=${NET:-loopback}
case "$NET" in loopback | veth) ;; *) echo "NET=$NET: loopback or veth" >&2; exit 2 ;; esac
[ -x "$CLUSSTER" ] || { echo "no $CLUSSTER: cargo build --release -p transfer-daemon --bin clusster" >&2; exit 1; }
command -v rclone >/dev/null || { echo "rclone is missing: scripts/install-bench-deps" >&2; exit 1; }
mkdir -p "$WORK"
[ -d "$SMALL" ] || python3 "$MKDATA" tree "$SMALL" 100000 10K 1 >&2

R=$WORK/run
PIDS=()
# With NET=veth each site runs in its own namespace (cls-a, cls-b, veth va <-> vb): QUIC
# crosses the veth pair, S3 and the admin API stay on each namespace's loopback.
declare -A NS=([a]="" [b]="") ADDR=([a]=127.0.0.1 [b]=127.0.0.1)
netns_down() { for ns in cls-a cls-b; do ip netns del "$ns" 2>/dev/null || true; done; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "$NET" = veth ]; then sleep 0.5; netns_down; fi
}
trap cleanup EXIT
if [ "$NET" = veth ]; then
  netns_down
  for s in a b; do
    ip netns add "cls-$s"
    ip -n "cls-$s" link set lo up
    NS[$s]="ip netns exec cls-$s"
  done
  ip -n cls-a link add va type veth peer name vb netns cls-b
  ip -n cls-a addr add 10.79.0.1/24 dev va
  ip -n cls-b addr add 10.79.0.2/24 dev vb
  ip -n cls-a link set va up
  ip -n cls-b link set vb up
  ADDR=([a]=10.79.0.1 [b]=10.79.0.2)
fi
at() { # SITE CMD...: CMD in SITE's namespace (or here, on loopback)
  local s=$1
  shift
  ${NS[$s]} "$@"
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A QUIC S3 ADMIN
setup() {
  rm -rf "$R"
  mkdir -p "$R"
  "$CLUSSTER" federation init --dir "$R/fed" --name small-loopback >/dev/null
  for s in a b; do
    QUIC[$s]=$(port) S3[$s]=$(port) ADMIN[$s]=$(port)
    "$CLUSSTER" site init "$s" --federation "$R/fed" --out "$R/$s-tls" --quic "${ADDR[$s]}:${QUIC[$s]}" >/dev/null
  done
  printf '\n[[link]]\na = "a"\nb = "b"\nbandwidth_mbps = 10000\nrtt_ms = 1\n' >>"$R/fed/federation.toml"
  for s in a b; do
    cat >"$R/$s.toml" <<EOF
[site]
name = "$s"
[federation]
file = "$R/fed/federation.toml"
tls_dir = "$R/$s-tls"
quic_listen = "${ADDR[$s]}:${QUIC[$s]}"
[s3]
listen = "127.0.0.1:${S3[$s]}"
[admin]
listen = "127.0.0.1:${ADMIN[$s]}"
EOF
  done
}

declare -A PID
start() { # SITE
  local s=$1 i
  mkdir -p -m 700 "$R/$s"
  : >"$R/$s.out"
  # Not through `at`: $! must be the daemon's pid (`ip netns exec` execs it in place).
  ${NS[$s]} "$CLUSSTER" serve --config "$R/$s.toml" --data-dir "$R/$s" >"$R/$s.out" 2>>"$R/$s.log" &
  PID[$s]=$!
  PIDS+=("$!")
  for i in $(seq 300); do
    grep -q '"quic"' "$R/$s.out" && return 0
    sleep 0.1
  done
  echo "site $s did not start: $R/$s.log" >&2
  exit 1
}
stop() { # SITE, if it runs
  local pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

rclone_at() { # SITE ARGS...: rclone against SITE's gateway with a fresh key (remote "s:")
  local s=$1 key
  shift
  key=$(at "$s" "$CLUSSTER" key create --project p --json --data-dir "$R/$s")
  at "$s" env -u AWS_CA_BUNDLE RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S_TYPE=s3 RCLONE_CONFIG_S_PROVIDER=Other \
    RCLONE_CONFIG_S_ENDPOINT="http://127.0.0.1:${S3[$s]}" \
    RCLONE_CONFIG_S_ACCESS_KEY_ID="$(jq -r .access_key_id <<<"$key")" \
    RCLONE_CONFIG_S_SECRET_ACCESS_KEY="$(jq -r .secret_access_key <<<"$key")" \
    rclone --exclude '.*' "$@"
}

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
hwm_mib() { awk '$1 == "VmHWM:" {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

setup
start a
echo "loading $SMALL into site a (not timed)" >&2
rclone_at a mkdir s:small
rclone_at a copy --transfers 32 "$SMALL" s:small
# Restart so that a's peak RSS covers the pushes, not the uploads.
stop a
start a
echo "network: $NET"
echo "run | wall s | files/s | CPU s a | CPU s b | peak RSS a MiB | peak RSS b MiB"
for run in $(seq "$RUNS"); do
  stop b
  rm -rf "$R/b"
  start b
  rclone_at b mkdir s:small
  at b "$CLUSSTER" bucket share small --site a --read --write --data-dir "$R/b" >/dev/null
  a=${PID[a]} b=${PID[b]}
  if [ "${PERF:-0}" = 1 ]; then
    perf record -e cpu-clock -F 499 -g -p "$a" -o "$WORK/perf.a" 2>/dev/null &
    pa=$!
    perf record -e cpu-clock -F 499 -g -p "$b" -o "$WORK/perf.b" 2>/dev/null &
    pb=$!
    sleep 1
  fi
  ca=$(cpu_s "$a") cb=$(cpu_s "$b")
  t0=$(date +%s.%N)
  at a "$CLUSSTER" transfer push b small small --wait --json --data-dir "$R/a" >"$R/push-$run.json"
  t1=$(date +%s.%N)
  ca1=$(cpu_s "$a") cb1=$(cpu_s "$b")
  [ "${PERF:-0}" = 1 ] && { kill -INT "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true; }
  state=$(jq -r '.state + " " + (.progress.objects | tostring)' "$R/push-$run.json")
  [ "$state" = "done 100000" ] || { echo "push $run ended: $state" >&2; exit 1; }
  awk -v r="$run" -v t0="$t0" -v t1="$t1" -v ca="$ca" -v ca1="$ca1" -v cb="$cb" -v cb1="$cb1" \
    -v ha="$(hwm_mib "$a")" -v hb="$(hwm_mib "$b")" \
    'BEGIN {w = t1 - t0; printf "%d | %.2f | %.0f | %.2f | %.2f | %s | %s\n", r, w, 100000 / w, ca1 - ca, cb1 - cb, ha, hb}'
done
