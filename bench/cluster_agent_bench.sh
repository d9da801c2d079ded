#!/bin/sh
# cluster_agent_bench.sh - Redis round trips and commands per 10,000 messages
# the cluster agents grant (issue 22; bench/RESULTS.md, "Cluster agent").
#
#   bench/cluster_agent_bench.sh [BUILD_DIR] [NODES] [DESTINATIONS] [RATE] [SECONDS]
#
# Starts a redis-server of its own on a free loopback port (nothing saved),
# runs cluster-agent-bench against it, and counts the commands Redis itself
# executed (INFO commandstats) as an independent check of the agents' count.
set -eu
build=${1:-build}
nodes=${2:-3}
destinations=${3:-100}
rate=${4:-50}
seconds=${5:-10}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/volley-cluster-bench-XXXXXX)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  --logfile "$dir/redis.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
i=0
until redis-cli -p "$port" ping >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "redis-server did not start" >&2; exit 1; }
  sleep 0.05
done
"$build/bench/cluster-agent-bench" "127.0.0.1:$port" "$nodes" "$destinations" "$rate" "$seconds" \
  | tee "$dir/out"
messages=$(sed -n 's/^messages //p' "$dir/out")
redis-cli -p "$port" info commandstats | tr -d '\r' | awk -F'[:=,]' -v m="$messages" '
  /^cmdstat_evalsha:/ { e = $3 }
  /^cmdstat_script\|load:/ { l = $3 }
  END { printf "redis-server counted: %d EVALSHA, %d SCRIPT LOAD; EVALSHA per 10,000 messages: %.0f\n",
        e, l, (m > 0 ? 1e4 * e / m : 0) }'
