#!/usr/bin/env bash
# The reference S3 workload (../shared/bench/s3-throughput.sh: rclone and the AWS CLI,
# every download verified) against clusster and Garage side by side in one run (issue 15).
# Each round starts every server fresh, one after the other, the order reversed from
# round to round; nothing else of ours runs meanwhile. Rows go to OUT (one table row per
# phase, labelled by server); benches/s3-vs-garage-summary.py turns them into medians and
# ratios to Garage.
#
#   cargo build --release --locked -p transfer-daemon --bin clusster
#   cp target/release/clusster /tmp/clusster-bench    # so no build replaces it mid-run
#   BIN=/tmp/clusster-bench benches/s3-vs-garage.sh [ROUNDS] [OUT]
#   python3 benches/s3-vs-garage-summary.py OUT
# Several clusster binaries at once (labels must not be "garage"):
#   BINS="before=/tmp/a/clusster after=/tmp/b/clusster" benches/s3-vs-garage.sh 3
#
# Garage: `cargo install garage --locked` (2.5.0), or GARAGE=path.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
OUT=${2:-/tmp/s3-vs-garage.md}
BINS=${BINS:-clusster=${BIN:-$PWD/target/release/clusster}}
SHARED=${SHARED:-$PWD/../shared/bench}
WORK=${WORK:-/var/tmp/clusster-s3-vs-garage}
export OUT

run_clusster() { # ROUND LABEL BINARY
  local label=$2 BIN=$3
  local dir=$WORK/site
  rm -rf "$dir"
  mkdir -p -m 700 "$dir"
  "$BIN" serve --data-dir "$dir" --s3-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$WORK/listeners" 2>"$WORK/serve.log" &
  local pid=$!
  trap "kill $pid 2>/dev/null || true" EXIT
  until python3 -c 'import json,sys; json.load(open(sys.argv[1]))["s3"]' "$WORK/listeners" 2>/dev/null; do
    kill -0 $pid || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
  done
  local key
  key=$(RUST_LOG=warn "$BIN" key create --project bench --data-dir "$dir" --json)
  python3 - "$WORK/listeners" "$key" "$pid" >"$WORK/clusster.env" <<'EOF'
import json, sys
listeners, key = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
print(f"S3_ENDPOINT={listeners['s3']}")
print(f"AWS_ACCESS_KEY_ID={key['access_key_id']}")
print(f"AWS_SECRET_ACCESS_KEY={key['secret_access_key']}")
print("S3_BUCKET=bench")
print(f"SERVER_PID={sys.argv[3]}")
EOF
  set -a; . "$WORK/clusster.env"; set +a
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_DEFAULT_REGION=us-east-1 \
    /usr/bin/aws --endpoint-url "$S3_ENDPOINT" s3 mb s3://bench >/dev/null
  echo "=== $label round $1 ===" >>"$OUT"
  "$SHARED/s3-throughput.sh" "$WORK/clusster.env" "$label"
  kill $pid
  wait $pid || true
}

run_all() { # ROUND, then each server of the round in order
  local round=$1
  shift
  for server in "$@"; do
    case $server in
      garage) run_garage "$round" ;;
      *) run_clusster "$round" "${server%%=*}" "${server#*=}" ;;
    esac
  done
}

run_garage() {
  "$SHARED/peers/garage-up.sh" 3900 >"$WORK/garage.env" 2>"$WORK/garage-up.log"
  echo "=== garage round $1 ===" >>"$OUT"
  "$SHARED/s3-throughput.sh" "$WORK/garage.env" garage
  "$SHARED/peers/garage-down.sh" "$WORK/garage.env"
}

mkdir -p "$WORK"
echo "# s3-vs-garage $(date -u +%FT%TZ) $BINS rounds=$ROUNDS" >>"$OUT"
read -r -a servers <<<"$BINS garage"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    run_all "$round" "${servers[@]}"
  else
    reversed=()
    for ((i = ${#servers[@]} - 1; i >= 0; i--)); do reversed+=("${servers[i]}"); done
    run_all "$round" "${reversed[@]}"
  fi
done
