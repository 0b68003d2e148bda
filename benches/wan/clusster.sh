# shellcheck shell=bash
# clusster.sh: the clusster QUIC transfer between clw-a and clw-b, sourced by run.sh.
#
# Functions (run.sh's helpers record, snap, wire, now, elapsed, fail, tree_digest must exist):
#   clu_setup PROFILE          a federation of two sites (a = 10.77.0.1, b = 10.77.0.2) with a
#                              [[link]] sized from the profile, site a's daemon started and the
#                              data sets loaded into its buckets orig, mut, ins (and small)
#   clu_fresh_b                site b's daemon on an empty data dir with empty buckets "tree"
#                              and "small", shared with site a
#                              (and "small"): what a cold transfer starts from
#   run_clusster PROFILE DATASET RUN
#                              one timed push A→B (see run.sh), verified and recorded
#   clu_teardown               stops both daemons
#
# Each site keeps its S3 gateway and admin API on 127.0.0.1 of its own namespace; only QUIC
# crosses linkem. Loading A is not measured. A's daemon is restarted after loading so that its
# peak RSS (VmHWM) covers the transfers, not the S3 uploads.
# Environment: CLUSSTER (the binary; default target/release/clusster), CLUSSTER_CC (bbr),
# CLUSSTER_STREAMS (8), CLUSSTER_CONNECTIONS (connections_per_peer; default: the daemon's),
# CLUSSTER_TIMEOUT (900 s per push).

CLUSSTER_CC=${CLUSSTER_CC:-bbr}
CLUSSTER_STREAMS=${CLUSSTER_STREAMS:-8}
CLUSSTER_TIMEOUT=${CLUSSTER_TIMEOUT:-900}
CLU_PIDS=() # indexed by site: CLU_PIDS[0] = a, CLU_PIDS[1] = b
CLU_PROC=   # per-push process figures, appended by run_clusster

clu_link_args() { # PROFILE -> "bandwidth_mbps rtt_ms" for the federation's [[link]]
  case "$1" in
    P1) echo "1000 40" ;;
    P2) echo "1000 2" ;;
    veth) echo "1500 1" ;; # linkem unlimited carries ~1.5 Gbit/s (README.md)
    1g) echo "1000 1" ;;
    *) return 1 ;;
  esac
}

clu_idx() { [ "$1" = a ] && echo 0 || echo 1; }

clu_start() { # SITE: starts the daemon in clw-SITE and waits for its ready line
  local site=$1 dir=$CLU/$1 i
  : >"$dir.out"
  # `ip netns exec` directly so that $! is the daemon itself.
  ip netns exec "clw-$site" "$CLUSSTER" serve --config "$CLU/$site.toml" --data-dir "$dir" \
    >"$dir.out" 2>>"$dir.log" &
  CLU_PIDS[$(clu_idx "$site")]=$!
  for i in $(seq 1 300); do
    grep -q '"quic"' "$dir.out" && return 0
    kill -0 "$!" 2>/dev/null || fail "clusster serve at site $site exited" "$dir.log"
    sleep 0.1
  done
  fail "clusster serve at site $site not ready after 30 s" "$dir.log"
}

clu_stop() { # SITE
  local i pid
  i=$(clu_idx "$1")
  pid=${CLU_PIDS[$i]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  CLU_PIDS[$i]=
}

clu_key() { # SITE: a fresh S3 key for project p, as rclone's environment in $CLU/SITE.rclone
  ip netns exec "clw-$1" "$CLUSSTER" key create --project p --json --data-dir "$CLU/$1" >"$CLU/$1.key" ||
    fail "clusster key create at site $1" "$CLU/$1.log"
  python3 - "$CLU/$1.key" >"$CLU/$1.rclone" <<'EOF'
import json, sys
k = json.load(open(sys.argv[1]))
print(f"RCLONE_CONFIG_S_ACCESS_KEY_ID={k['access_key_id']}")
print(f"RCLONE_CONFIG_S_SECRET_ACCESS_KEY={k['secret_access_key']}")
EOF
}

clu_rclone() { # SITE ARGS...: rclone in clw-SITE against that site's S3 gateway (remote "s:")
  local site=$1
  shift
  # AWS_CA_BUNDLE (set on this machine) makes rclone's S3 backend refuse to start.
  # shellcheck disable=SC2046 # one VAR=value word per line
  env -u AWS_CA_BUNDLE RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S_TYPE=s3 RCLONE_CONFIG_S_PROVIDER=Other \
    RCLONE_CONFIG_S_ENDPOINT=http://127.0.0.1:9000 $(cat "$CLU/$site.rclone") \
    ip netns exec "clw-$site" rclone --exclude '.*' "$@"
}

clu_config() { # SITE IP
  cat >"$CLU/$1.toml" <<EOF
[site]
name = "$1"

[federation]
file = "$CLU/fed/federation.toml"
tls_dir = "$CLU/$1-tls"
quic_listen = "$2:7444"

[s3]
listen = "127.0.0.1:9000"

[admin]
listen = "127.0.0.1:9470"

[transfer]
congestion_controller = "$CLUSSTER_CC"
streams_per_transfer = $CLUSSTER_STREAMS
EOF
  if [ -n "${CLUSSTER_CONNECTIONS:-}" ]; then
    echo "connections_per_peer = $CLUSSTER_CONNECTIONS" >>"$CLU/$1.toml"
  fi
}

clu_setup() { # PROFILE
  local profile=$1 link bucket
  CLU=$CLW_RUN/clusster
  CLUSSTER=${CLUSSTER:-$REPO/target/release/clusster}
  [ -x "$CLUSSTER" ] || fail "CLUSSTER=$CLUSSTER is not an executable: cargo build --release -p transfer-daemon --bin clusster"
  rm -rf "$CLU"
  mkdir -p "$CLU"
  link=$(clu_link_args "$profile")
  {
    "$CLUSSTER" federation init --dir "$CLU/fed" --name wan-bench
    "$CLUSSTER" site init a --federation "$CLU/fed" --out "$CLU/a-tls" --quic 10.77.0.1:7444
    "$CLUSSTER" site init b --federation "$CLU/fed" --out "$CLU/b-tls" --quic 10.77.0.2:7444
  } >"$CLU/init.log" 2>&1 || fail "clusster federation/site init" "$CLU/init.log"
  # The link table sizes the QUIC windows per peer: the profile's rate and RTT.
  printf '\n[[link]]\na = "a"\nb = "b"\nbandwidth_mbps = %s\nrtt_ms = %s\n' $link >>"$CLU/fed/federation.toml"
  clu_config a 10.77.0.1
  clu_config b 10.77.0.2
  clu_start a
  clu_key a
  echo "  clusster: loading the data sets into site a (not timed)" >&2
  for bucket in orig mut ins; do
    clu_rclone a mkdir "s:$bucket" && clu_rclone a sync --transfers 8 "$CLW_DATA/$bucket" "s:$bucket" ||
      fail "loading $bucket into site a" "$CLU/a.log"
  done
  if [ "${SKIP_SMALL:-0}" != 1 ]; then
    clu_rclone a mkdir s:small && clu_rclone a sync --transfers 32 "$SMALL" s:small ||
      fail "loading small into site a" "$CLU/a.log"
  fi
  clu_stop a
  clu_start a
}

clu_fresh_b() {
  clu_stop b
  rm -rf "$CLU/b"
  mkdir -p -m 700 "$CLU/b"
  clu_start b
  clu_key b
  clu_rclone b mkdir s:tree && clu_rclone b mkdir s:small || fail "creating buckets at site b" "$CLU/b.log"
  # Buckets are shared with no site until told: let a push into them.
  for bucket in tree small; do
    ip netns exec clw-b "$CLUSSTER" bucket share "$bucket" --site a --read --write --data-dir "$CLU/b" >/dev/null ||
      fail "sharing $bucket at site b with a" "$CLU/b.log"
  done
}

clu_cpu_s() { # PID -> user + system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"
}
clu_hwm_mib() { # PID -> peak resident set, MiB
  awk '$1 == "VmHWM:" {printf "%.0f", $2 / 1024}' "/proc/$1/status"
}

# run_clusster PROFILE DATASET RUN: DATASET cold (orig → b's empty "tree"), overwrite (mut over
# orig), resend (mut again), revert (orig over mut: brings b back to orig for the insert step,
# recorded under its own name), insert (ins over orig), small (100,000 files to an empty "small").
run_clusster() {
  local profile=$1 dataset=$2 run=$3 src bucket dest kind
  case "$dataset" in
    cold) src=$ORIG bucket=orig dest=tree kind=tree ;;
    overwrite | resend) src=$MUT bucket=mut dest=tree kind=- ;;
    revert) src=$ORIG bucket=orig dest=tree kind=- ;;
    insert) src=$INS bucket=ins dest=tree kind=- ;;
    small) src=$SMALL bucket=small dest=small kind=files ;;
    *) fail "run_clusster: unknown data set $dataset" ;;
  esac
  local log=$CLU/push-$profile-$dataset-$run.json before after t0 t1 seconds verified value pa pb ca cb cl
  pa=${CLU_PIDS[0]} pb=${CLU_PIDS[1]}
  local drops_b
  ca=$(clu_cpu_s "$pa") cb=$(clu_cpu_s "$pb") cl=$(linkem_cpu_s) drops_b=$(clu_udp_drops b)
  before=$(snap)
  t0=$(now)
  ip netns exec clw-a timeout "$CLUSSTER_TIMEOUT" "$CLUSSTER" transfer push b "$bucket" "$dest" --wait --json \
    --data-dir "$CLU/a" >"$log" 2>"$log.err" || fail "clusster push $dataset on $profile (logs: $CLU/a.log, b.log)" "$log.err"
  t1=$(now)
  after=$(snap)
  # CPU and RSS now, before the check below makes b serve every object back over S3.
  local ca1 cb1 cl1 hwm_a hwm_b drops_b1
  ca1=$(clu_cpu_s "$pa") cb1=$(clu_cpu_s "$pb") cl1=$(linkem_cpu_s) drops_b1=$(clu_udp_drops b)
  hwm_a=$(clu_hwm_mib "$pa") hwm_b=$(clu_hwm_mib "$pb")
  seconds=$(elapsed "$t0" "$t1")
  local fields
  fields=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); p = s["progress"]
assert s["state"] == "done", s
print(p["wire_bytes"], p["bytes_wanted"], p["chunks_wanted"], p["chunks_delta"], p["chunks_offered"], "%.3f" % s["elapsed_secs"])
' "$log") || fail "clusster push $dataset on $profile: unexpected status" "$log"
  # shellcheck disable=SC2086 # six numbers
  set -- $fields
  local wire_tool=$1 wanted=$2 chunks_wanted=$3 chunks_delta=$4 chunks_offered=$5 status_secs=$6
  # B's objects against the source, byte for byte (--download reads every object back).
  if clu_rclone b check --download --one-way=false "$src" "s:$dest" >"$log.check" 2>&1; then
    verified=yes
  else
    verified=NO
  fi
  [ "$verified" = yes ] || fail "clusster $dataset on $profile: b's copy differs from $src" "$log.check"
  case "$kind" in
    tree) value=$(awk -v s="$seconds" -v b="$GIB" 'BEGIN {printf "%.1f", b / s / 1e6}') ;;
    files) value=$(awk -v s="$seconds" 'BEGIN {printf "%.0f", 100000 / s}') ;;
    -) value="" ;;
  esac
  record "$profile" "clusster-$dataset" "$run" "$seconds" "$(wire "$before" "$after" 1)" \
    "$(wire "$before" "$after" 2)" "$wire_tool" "$value" "$verified"
  # CPU seconds each process spent on this push, and the daemons' peak RSS so far.
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$dataset" "$run" "$seconds" "$status_secs" \
    "$(awk -v a="$ca" -v b="$ca1" 'BEGIN {printf "%.2f", b - a}')" \
    "$(awk -v a="$cb" -v b="$cb1" 'BEGIN {printf "%.2f", b - a}')" \
    "$(awk -v a="$cl" -v b="$cl1" 'BEGIN {printf "%.1f", b - a}')" \
    "$hwm_a" "$hwm_b" "$wanted" "$chunks_wanted/$chunks_offered" "$chunks_delta" $((drops_b1 - drops_b)) \
    >>"$CLW_RUN/clusster-proc.tsv"
}

clu_udp_drops() { # SITE -> UDP datagrams the kernel in clw-SITE dropped for a full receive buffer
  ip netns exec "clw-$1" awk '$1 == "Udp:" && !h {h = 1; for (i = 1; i <= NF; i++) c[$i] = i; next}
    $1 == "Udp:" {print $c["RcvbufErrors"]}' /proc/net/snmp
}

clu_teardown() { # PROFILE: stops both daemons and keeps their logs and the push statuses
  clu_stop a
  clu_stop b
  mkdir -p "$CLW_RUN/logs/$1"
  cp "$CLU"/*.log "$CLU"/push-* "$CLU"/*.toml "$CLU/fed/federation.toml" "$CLW_RUN/logs/$1/"
}
