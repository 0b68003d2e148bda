#!/usr/bin/env bash
# Job staging against `cp -r` on the same disk, side by side in one run (issue 14):
#   stage-out of a 64 x 16 MiB tree (1 GiB, incompressible, ../shared/bench/lib/mkdata.py)
#   into a fresh site; stage-in of it, complete at the site, into a fresh directory; then
#   1 % of every file changed and staged out again (bytes sent and stored).
# Each timed step runs with a cold destination; the page cache is left as it is for both
# (dropping it needs root and hides nothing the comparison is about: both read the same
# source the same way). Prints one JSON line per round; run several rounds, quote medians.
#
#   cargo build --release --locked -p transfer-daemon --bin clusster
#   benches/stage.sh [ROUNDS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
WORK=${2:-/tmp/clusster-stage-bench}
BIN=${BIN:-$PWD/target/release/clusster}
MKDATA=${MKDATA:-$PWD/../shared/bench/lib/mkdata.py}
mkdir -p "$WORK"
# (its .manifest, a few bytes, is staged and copied like the rest)
python3 "$MKDATA" tree "$WORK/src" 64 16M 1 >/dev/null

now() { date +%s.%N; }
cpu_of() { # user+system seconds of a pid, from /proc
  awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"
}

for _ in $(seq 1 "$ROUNDS"); do
  site="$WORK/site"
  rm -rf "$site" "$WORK/cp" "$WORK/in" "$WORK/src2" "$WORK/listeners"
  mkdir -p "$site"
  chmod 700 "$site"
  "$BIN" serve --data-dir "$site" --admin-listen 127.0.0.1:0 --s3-listen 127.0.0.1:0 >"$WORK/listeners" 2>"$WORK/serve.log" &
  daemon=$!
  trap 'kill $daemon 2>/dev/null || true' EXIT
  until python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/listeners" 2>/dev/null; do sleep 0.1; done
  admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$WORK/listeners")
  export CLUSSTER_ENDPOINT="http://$admin"
  CLUSSTER_TOKEN=$(env -u CLUSSTER_TOKEN "$BIN" token create --project bench --scope stage --json --data-dir "$site" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  export CLUSSTER_TOKEN

  sync
  t=$(now); cp -r "$WORK/src" "$WORK/cp"; sync; cp_secs=$(echo "$(now) - $t" | bc)
  rm -rf "$WORK/cp"

  sync
  t=$(now)
  out=$(/usr/bin/time -f "%U %S" -o "$WORK/client-out" "$BIN" stage-out "$WORK/src" local.bench/tree --tag v1 --job bench --json)
  sync; out_secs=$(echo "$(now) - $t" | bc)
  daemon_cpu_out=$(cpu_of $daemon)

  t=$(now)
  /usr/bin/time -f "%U %S" -o "$WORK/client-in" "$BIN" stage-in local.bench/tree@v1 "$WORK/in" --job bench --json >/dev/null
  sync; in_secs=$(echo "$(now) - $t" | bc)
  daemon_cpu_in=$(echo "$(cpu_of $daemon) - $daemon_cpu_out" | bc)
  cmp <(cd "$WORK/src" && find . -type f | sort | xargs sha256sum) <(cd "$WORK/in" && find . -type f | sort | xargs sha256sum)

  cp -r "$WORK/src" "$WORK/src2"
  python3 "$MKDATA" mutate "$WORK/src2" 1 7 >/dev/null
  packs_before=$(du -sb "$site/chunks" | cut -f1)
  again=$("$BIN" stage-out "$WORK/src2" local.bench/tree --tag v2 --job bench --json)
  sync
  packs_after=$(du -sb "$site/chunks" | cut -f1)

  python3 - "$cp_secs" "$out_secs" "$in_secs" "$daemon_cpu_out" "$daemon_cpu_in" "$out" "$again" \
    "$packs_before" "$packs_after" "$(cat "$WORK/client-out")" "$(cat "$WORK/client-in")" <<'EOF'
import json, sys
cp, out_s, in_s, cpu_out, cpu_in = map(float, sys.argv[1:6])
client_out, client_in = (sum(map(float, a.split())) for a in sys.argv[10:12])
first, again = json.loads(sys.argv[6]), json.loads(sys.argv[7])
before, after = int(sys.argv[8]), int(sys.argv[9])
total = 64 * 16 << 20
print(json.dumps({
    "cp_r_s": round(cp, 2), "stage_out_s": round(out_s, 2), "stage_in_s": round(in_s, 2),
    "stage_in_vs_cp": round(cp / in_s, 2), "stage_out_vs_cp": round(cp / out_s, 2),
    "daemon_cpu_s": {"stage_out": cpu_out, "stage_in": cpu_in},
    "client_cpu_s": {"stage_out": round(client_out, 2), "stage_in": round(client_in, 2)},
    "first_sent_bytes": first.get("bytes_sent"),
    "changed_1pct_sent_pct": round(100 * again.get("bytes_sent", 0) / total, 2),
    "changed_1pct_stored_pct": round(100 * (after - before) / total, 2),
}))
EOF
  kill $daemon; wait $daemon 2>/dev/null || true
  trap - EXIT
done
