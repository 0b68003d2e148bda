#!/usr/bin/env bash
# Client and server CPU of the reference workload's large phases (rclone and the AWS CLI,
# 16 x 64 MiB, 8 at once, as ../shared/bench/s3-throughput.sh runs them), against
# clusster and Garage in turn: shows which side fills the two cores (issue 15). Prints one
# line per phase and server: wall seconds, client user+sys seconds, server seconds.
#
#   BIN=/tmp/clusster-bench benches/s3-client-cpu.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
BIN=${BIN:-$PWD/target/release/clusster}
SHARED=${SHARED:-$PWD/../shared/bench}
WORK=${WORK:-/var/tmp/clusster-s3-client-cpu}
DATA=${DATA:-/tmp/bench-data}
mkdir -p "$WORK"
python3 "$SHARED/lib/mkdata.py" tree "$DATA/large16x64M" 16 64M 3 >/dev/null
unset AWS_CA_BUNDLE

start_clusster() {
  rm -rf "$WORK/site"
  mkdir -p -m 700 "$WORK/site"
  "$BIN" serve --data-dir "$WORK/site" --s3-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$WORK/listeners" 2>"$WORK/serve.log" &
  SERVER_PID=$!
  until python3 -c 'import json,sys; json.load(open(sys.argv[1]))["s3"]' "$WORK/listeners" 2>/dev/null; do sleep 0.1; done
  S3_ENDPOINT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["s3"])' "$WORK/listeners")
  local key
  key=$(RUST_LOG=warn "$BIN" key create --project bench --data-dir "$WORK/site" --json)
  AWS_ACCESS_KEY_ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_key_id"])' "$key")
  AWS_SECRET_ACCESS_KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret_access_key"])' "$key")
  S3_REGION=us-east-1 S3_BUCKET=bench
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  AWS_CONFIG_FILE=/dev/null AWS_DEFAULT_REGION=$S3_REGION /usr/bin/aws --endpoint-url "$S3_ENDPOINT" s3 mb s3://bench >/dev/null
}

start_garage() {
  "$SHARED/peers/garage-up.sh" 3900 >"$WORK/garage.env" 2>/dev/null
  set -a; . "$WORK/garage.env"; set +a
}

measure() { # LABEL
  export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other RCLONE_CONFIG_BENCH_ENDPOINT="$S3_ENDPOINT" \
    RCLONE_CONFIG_BENCH_REGION="$S3_REGION" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true RCLONE_CONFIG=/dev/null
  printf '[default]\ns3 =\n  addressing_style = path\n  max_concurrent_requests = 8\n' >"$WORK/aws.cfg"
  local rc="rclone --transfers 8 --checkers 16" aws="/usr/bin/aws --endpoint-url $S3_ENDPOINT s3"
  export AWS_CONFIG_FILE=$WORK/aws.cfg AWS_DEFAULT_REGION=$S3_REGION
  rm -rf "$WORK/get" "$WORK/awsget"
  run "$1" "rclone PUT" $rc copy "$DATA/large16x64M" "bench:$S3_BUCKET/large" --exclude .manifest
  run "$1" "rclone GET" $rc copy "bench:$S3_BUCKET/large" "$WORK/get"
  run "$1" "aws PUT" $aws cp --recursive --only-show-errors --exclude .manifest "$DATA/large16x64M" "s3://$S3_BUCKET/aws/"
  run "$1" "aws GET" $aws cp --recursive --only-show-errors "s3://$S3_BUCKET/aws/" "$WORK/awsget/"
}

run() { # LABEL PHASE CMD...
  local label=$1 phase=$2
  shift 2
  local s0 s1
  s0=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" >/dev/null
  s1=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  read -r wall user sys <"$WORK/time"
  python3 -c "print('%-8s %-10s wall %.2f s  client %.2f s  server %.2f s' % ('$label', '$phase', $wall, $user + $sys, ($s1 - $s0) / 100))"
}

for _ in $(seq 1 "$ROUNDS"); do
  start_clusster
  measure clusster
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  start_garage
  measure garage
  "$SHARED/peers/garage-down.sh" "$WORK/garage.env"
done
