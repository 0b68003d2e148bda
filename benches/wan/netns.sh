# shellcheck shell=bash
# netns.sh: the emulated WAN link, sourced by run.sh (or by hand: `source netns.sh; clw_up; ...`).
#
#   clw-a  [va 10.77.0.1/24] ──veth── [la]  clw-link  [lb] ──veth── [vb 10.77.0.2/24]  clw-b
#                                       └── linkem forwards frames la <-> lb ──┘
#
# Functions:
#   clw_up                      namespaces, veths, addresses, offloads off, per-netns TCP buffers
#   clw_down                    stops what clw_* started and deletes the namespaces (idempotent)
#   clw_start_linkem ARGS...    starts linkem in clw-link (ARGS: --rtt-ms, --loss-pct, --rate...)
#                               and waits until A reaches B through it
#   clw_stop_linkem             stops linkem; its final counters stay in $CLW_RUN/linkem.stats
#   clw_counters                linkem's counters now, "name value" lines (a_to_b.bytes_forwarded ...)
#
# Everything lives in the three namespaces: nothing is created or changed in the host namespace
# (veths are created inside clw-link with their peer placed straight into clw-a / clw-b).
# Needs root, iproute2 and ethtool. LINKEM (path of the binary) and CLW_RUN (a scratch dir)
# must be set before clw_start_linkem.

CLW_NAMESPACES=(clw-a clw-link clw-b)
CLW_RUN=${CLW_RUN:-/tmp/clw-run}
# TCP autotuning ceiling inside A and B: 32 MiB covers 2.5 BDPs of 1 Gbit/s × 40 ms plus the
# queue. tcp_rmem/tcp_wmem are per network namespace; net.core.rmem_max/wmem_max (4 MiB here)
# are read-only outside the host namespace, which only caps explicit SO_RCVBUF/SO_SNDBUF
# (iperf3 -w), not autotuning, so no tool here sets them.
CLW_TCP_MEM="4096 131072 33554432"

clw_ns() { ip netns exec "$@"; }

clw_down() {
  if [ -f "$CLW_RUN/linkem.pid" ]; then
    kill -TERM "$(cat "$CLW_RUN/linkem.pid")" 2>/dev/null || true
    rm -f "$CLW_RUN/linkem.pid"
  fi
  local ns pid
  for ns in "${CLW_NAMESPACES[@]}"; do
    if ip netns list | grep -qw "^$ns"; then
      # Servers left by a crashed run (iperf3 -s, rsync --daemon) would keep the namespace's
      # network alive in the background: stop exactly the processes inside it.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
      sleep 0.2
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns"
    fi
  done
}

clw_offloads_off() { # NS DEV
  # No TSO/GSO/GRO: frames stay ≤ MTU so linkem sees (and paces) real packets. No tx checksum
  # offload: a veth frame otherwise leaves A with its checksum unfilled (CHECKSUM_PARTIAL),
  # and after the trip through a packet socket B would drop it as corrupt.
  clw_ns "$1" ethtool -K "$2" tso off gso off gro off tx off >/dev/null 2>&1 ||
    clw_ns "$1" ip link set dev "$2" gso_max_size 1500 gro_max_size 1500
}

clw_up() {
  clw_down
  mkdir -p "$CLW_RUN"
  local ns
  for ns in "${CLW_NAMESPACES[@]}"; do
    ip netns add "$ns"
    clw_ns "$ns" ip link set lo up
    # No IPv6: router solicitations and MLD reports would cross the link and blur the
    # bytes-on-the-wire counters.
    clw_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip -n clw-link link add la type veth peer name va netns clw-a
  ip -n clw-link link add lb type veth peer name vb netns clw-b
  clw_offloads_off clw-a va
  clw_offloads_off clw-link la
  clw_offloads_off clw-link lb
  clw_offloads_off clw-b vb
  ip -n clw-a link set va mtu 1500 up
  ip -n clw-b link set vb mtu 1500 up
  ip -n clw-link link set la mtu 1500 up
  ip -n clw-link link set lb mtu 1500 up
  ip -n clw-a addr add 10.77.0.1/24 dev va
  ip -n clw-b addr add 10.77.0.2/24 dev vb
  for ns in clw-a clw-b; do
    clw_ns "$ns" sysctl -qw net.ipv4.tcp_rmem="$CLW_TCP_MEM" net.ipv4.tcp_wmem="$CLW_TCP_MEM"
  done
}

clw_start_linkem() {
  : "${LINKEM:?set LINKEM to the linkem binary}"
  rm -f "$CLW_RUN/linkem.stats"
  # Not through clw_ns: a function in the background runs in a subshell, and $! must be
  # linkem itself for the signals below.
  ip netns exec clw-link "$LINKEM" --a la --b lb --stats-file "$CLW_RUN/linkem.stats" "$@" \
    2>"$CLW_RUN/linkem.log" &
  echo $! >"$CLW_RUN/linkem.pid"
  # Ready when A reaches B through it (ARP and one ICMP echo crossing both directions).
  local i
  for i in $(seq 1 50); do
    if clw_ns clw-a ping -c 1 -W 1 -q 10.77.0.2 >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$CLW_RUN/linkem.pid")" 2>/dev/null; then
      echo "linkem exited: $(cat "$CLW_RUN/linkem.log")" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "A cannot reach B through linkem after 5 s; linkem says: $(cat "$CLW_RUN/linkem.log")" >&2
  return 1
}

clw_stop_linkem() {
  [ -f "$CLW_RUN/linkem.pid" ] || return 0
  local pid
  pid=$(cat "$CLW_RUN/linkem.pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$CLW_RUN/linkem.pid"
}

clw_counters() { # asks linkem for fresh counters (SIGUSR1) and prints them, "name value" lines
  local pid seq_before seq i
  pid=$(cat "$CLW_RUN/linkem.pid")
  seq_before=$(awk '$1 == "seq" {print $2}' "$CLW_RUN/linkem.stats" 2>/dev/null || true)
  kill -USR1 "$pid"
  for i in $(seq 1 200); do
    seq=$(awk '$1 == "seq" {print $2}' "$CLW_RUN/linkem.stats" 2>/dev/null || true)
    if [ -n "$seq" ] && [ "$seq" != "${seq_before:-}" ]; then
      cat "$CLW_RUN/linkem.stats"
      return 0
    fi
    sleep 0.01
  done
  echo "linkem did not write its counters within 2 s" >&2
  return 1
}
