#!/usr/bin/env bash
# Starts (or stops) a local 3-master Redis Cluster on loopback for the cluster tests and benchmarks.
# Usage: scripts/redis-cluster.sh start [first-port]   |   scripts/redis-cluster.sh stop [first-port]
# Prints the seed nodes as "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" on start. Nothing is persisted.
set -euo pipefail
cmd="${1:-start}"
base="${2:-7101}"
ports=("$base" "$((base + 1))" "$((base + 2))")
dir="/tmp/factorial-cluster-$base"

if [ "$cmd" = "stop" ]; then
  pids=()
  for p in "${ports[@]}"; do
    [ -f "$dir/$p.pid" ] && pids+=("$(cat "$dir/$p.pid")")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A server writes its log until it exits: removing the directory before that races with it (ENOTEMPTY).
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  done
  rm -rf "$dir"
  exit 0
fi

if redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then
  echo "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
for p in "${ports[@]}"; do
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$dir/nodes-$p.conf" \
    --cluster-node-timeout 2000 --save "" --appendonly no --dir "$dir" --daemonize yes \
    --pidfile "$dir/$p.pid" --logfile "$dir/$p.log"
done
for p in "${ports[@]}"; do
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
  --cluster-replicas 0 --cluster-yes >/dev/null
# Every node, not only the first: a client's first CLUSTER INFO may go to any of them, and a node that still
# says cluster_state:fail right after the create makes it wait for a reconnect.
for p in "${ports[@]}"; do
  for _ in $(seq 100); do
    redis-cli -p "$p" cluster info | grep -q "cluster_state:ok" && break
    sleep 0.1
  done
done
echo "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
