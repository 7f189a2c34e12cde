#!/usr/bin/env bash
# A local 3-member etcd cluster on 127.0.0.1 for `kvctl bench --client etcd`, the baseline that
# BENCHMARKS.md compares kvstore's unary path with (issue 17). Needs Debian's etcd-server
# (apt-get install etcd-server: etcd 3.4, the version issue 17 measured). Not used by CI or tests.
#
# usage: scripts/etcd-cluster.sh start DIR   starts the members with data in DIR (must not exist),
#                                            waits until they serve, prints ENDPOINTS= and PIDS=
#        scripts/etcd-cluster.sh stop DIR    stops the members started in DIR (by their pid files)
# e.g.   eval "$(scripts/etcd-cluster.sh start /tmp/etcd-bench)"
#        node dist/src/cli/kvctl.js --consistency quorum bench put --client etcd --endpoints "$ENDPOINTS" \
#          --server-pids "$PIDS" --concurrency 128 --connections 6 --duration 10 --keys 100000 --value-bytes 100
#        scripts/etcd-cluster.sh stop /tmp/etcd-bench
set -euo pipefail
# Client ports 22379, 22389, 22399; peer ports one above each (below the ephemeral range).
members=3
client_port() { echo $((22379 + 10 * ($1 - 1))); }
peer_port() { echo $(($(client_port "$1") + 1)); }

case "${1:-}" in
start)
  dir=${2:?usage: $0 start DIR}
  command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
  [ ! -e "$dir" ] || { echo "$dir exists: give a new directory" >&2; exit 1; }
  mkdir -p "$dir"
  cluster=""
  for i in $(seq 1 $members); do cluster+="${cluster:+,}e$i=http://127.0.0.1:$(peer_port "$i")"; done
  endpoints="" pids=""
  for i in $(seq 1 $members); do
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-client-urls "http://127.0.0.1:$(client_port "$i")" --advertise-client-urls "http://127.0.0.1:$(client_port "$i")" \
      --listen-peer-urls "http://127.0.0.1:$(peer_port "$i")" --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token kvstore-bench \
      --logger zap --log-level error >"$dir/e$i.log" 2>&1 &
    echo $! >"$dir/e$i.pid"
    endpoints+="${endpoints:+,}127.0.0.1:$(client_port "$i")"
    pids+="${pids:+,}$!"
  done
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
      echo "ENDPOINTS=$endpoints"
      echo "PIDS=$pids"
      exit 0
    fi
    sleep 0.2
  done
  echo "etcd did not become healthy within 20 s; logs in $dir" >&2
  "$0" stop "$dir"
  exit 1
  ;;
stop)
  dir=${2:?usage: $0 stop DIR}
  pids=()
  for f in "$dir"/e*.pid; do
    [ -e "$f" ] || continue
    pids+=("$(cat "$f")")
    kill "${pids[-1]}" 2>/dev/null || true
    rm -f "$f"
  done
  # Wait until they are gone, so their ports are free for the next start.
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  # A member still there after 10 s is killed (only the pids this script started).
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  ;;
*)
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
