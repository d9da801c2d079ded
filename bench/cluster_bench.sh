#!/usr/bin/env bash
# cluster_bench.sh - one volleyd with [cluster] (Redis on loopback) against one without, side by side
#
# SYNOPSIS
#   bench/cluster_bench.sh
#   ROUNDS=5 MESSAGES=200000 bench/cluster_bench.sh
#
# DESCRIPTION
#   Issue 22's third proof: Redis is not on the per-message path, so a node that
#   shares its limits through Redis delivers within 10% of one that does not.
#
#   One redis-server (foreground, a free 127.0.0.1 port, no persistence) and one
#   volley-sink on SINK_ADDRESSES (one port: one destination per address), as
#   compare_bench.sh's scenario 1: MESSAGES personalised messages (one recipient per
#   transaction) of SIZE bytes over DOMAINS domains, routed by `volley-load routes`.
#   Each round runs two fresh volleyds on empty queues, one after the other, the
#   order swapped every round so that neither always gets the quieter or the warmer
#   machine:
#     cluster  [cluster] redis = the Redis above, node = "bench-cluster", the
#              contract's defaults otherwise (batch 100ms, timeout 200ms)
#     plain    no [cluster]
#   Both have the same [smtp] limits, which every destination takes and none binds
#   (MAX_CONNECTIONS connections, MESSAGE_RATE messages/s): with [cluster] they are
#   cluster-scoped (the default scope), so the agent takes permits and connection
#   leases for every destination from Redis for the whole run; without it they are
#   the node's own.
#
#   Each run is `volley-load run --json --volleyd-pid` (time from the drop to the last
#   outcome in the delivery log, messages counted as distinct txn, as compare_bench.sh
#   and ab_bench.sh count them). Printed: one line a run, the median (min .. max) of
#   each side's messages/s and volleyd CPU s per 10,000 recipients, the median of the
#   per-round ratios cluster/plain against the 0.90 target, and Redis round trips per
#   10,000 messages of the cluster runs: volleyd's volley_cluster_redis_round_trips_total
#   (read from its /metrics at the last outcome) and the commands Redis ran
#   (INFO commandstats calls, before and after the run).
#
#   NO_CLUSTER=1 runs the "cluster" side without [cluster] too (an A/A run): the noise
#   of this comparison on this machine, and a check of the script against a volleyd
#   that does not parse [cluster] yet.
#
# ENVIRONMENT
#   ROUNDS=3  MESSAGES=100000 (a few seconds a run at scenario 1's Release rates)
#   DOMAINS=1000  SIZE=1024  SHARDS=2
#   SINK_ADDRESSES=127.0.3.1-127.0.3.250
#   MAX_CONNECTIONS=20        [smtp] max_connections_per_destination, both sides
#   MESSAGE_RATE=1000/s       [smtp] max_message_rate, both sides (binds nowhere at these
#                             loads: 250 destinations share the run's rate)
#   NO_CLUSTER=0  RUN_TIMEOUT=1200
#   BENCH_BUILD=<root>/build-release  BENCH_SKIP_BUILD=1  BENCH_KEEP=1 (lib.sh)
#
# EXIT STATUS
#   0 when every run delivered every message; the verdict on the target is printed,
#   not the exit status.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD:-"$root/build-release"}
py=/usr/bin/python3
rounds=${ROUNDS:-3}
messages=${MESSAGES:-100000}
domains=${DOMAINS:-1000}
size=${SIZE:-1024}
shards=${SHARDS:-2}
sink_addresses=${SINK_ADDRESSES:-127.0.3.1-127.0.3.250}
max_conn=${MAX_CONNECTIONS:-20}
message_rate=${MESSAGE_RATE:-1000/s}
no_cluster=${NO_CLUSTER:-0}
run_timeout=${RUN_TIMEOUT:-1200}

. "$root/bench/lib.sh"

command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
  die "redis-server or redis-cli is missing: run scripts/install-deps"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
bench_binaries
bench_tree_info

work=$(mktemp -d /tmp/volley-cluster-bench.XXXXXX)
results="$work/results.jsonl"
: >"$results"
redis_pid=""

cluster_cleanup() {
  local status=$?
  set +e
  trap - EXIT
  stop "$redis_pid" redis-server
  (exit "$status")
  bench_cleanup
}
trap cluster_cleanup EXIT

# ---------------------------------------------------------------- Redis and the sink
redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --daemonize no \
  --dir "$work" >"$work/redis.out" 2>&1 &
redis_pid=$!
for i in $(seq 100); do
  [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" PING 2>/dev/null)" = PONG ] && break
  kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited: $(tail -5 "$work/redis.out")"
  sleep 0.1
done
[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" PING 2>/dev/null)" = PONG ] || die "redis-server did not answer"
say "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') (pid $redis_pid) on 127.0.0.1:$redis_port"

# redis_calls - commands Redis has run since it started (INFO commandstats, calls=);
# a reading counts the INFO of the reading before it, which run_side takes off.
redis_calls() {
  redis-cli -h 127.0.0.1 -p "$redis_port" INFO commandstats |
    sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{ n += $1 } END { print n + 0 }'
}

sink_port=$(free_port)
sink_flags=()
mapfile -t listen < <("$load" addresses --sink-addresses "$sink_addresses" --port "$sink_port")
for a in "${listen[@]}"; do sink_flags+=(--listen "$a"); done
"$sink" "${sink_flags[@]}" --stats "$work/sink.json" >"$work/sink.out" 2>"$work/sink.err" &
sink_pid=$!
for i in $(seq 100); do
  [ "$(grep -c 'listening on' "$work/sink.err" 2>/dev/null || true)" -ge "${#listen[@]}" ] && break
  kill -0 "$sink_pid" 2>/dev/null || die "volley-sink exited: $(tail -5 "$work/sink.err")"
  sleep 0.1
done
[ "$(grep -c 'listening on' "$work/sink.err" || true)" -ge "${#listen[@]}" ] ||
  die "volley-sink did not listen on all ${#listen[@]} addresses"
say "volley-sink (pid $sink_pid) on $sink_addresses port $sink_port"
"$load" routes --domains "$domains" --sink-addresses "$sink_addresses" --port "$sink_port" \
  --out "$work/routes.toml" 2>/dev/null || die "volley-load routes failed"

# ---------------------------------------------------------------- one run
# config DIR SIDE - the volleyd config of one run; metrics_port is set for the scrape.
config() {
  local dir=$1 side=$2
  metrics_port=$(free_port)
  cat <<EOF
[paths]
spool = "$dir/spool"
queue = "$dir/queue"
log = "$dir/log"

[delivery]
shards = $shards

[smtp]
max_connections_per_destination = $max_conn
max_message_rate = "$message_rate"

[admin]
listen = "127.0.0.1:$(free_port)"

[metrics]
listen = "127.0.0.1:$metrics_port"
EOF
  if [ "$side" = cluster ] && [ "$no_cluster" != 1 ]; then
    printf '\n[cluster]\nredis = ["127.0.0.1:%s"]\nnode = "bench-cluster"\n' "$redis_port"
  fi
  printf '\n'
  grep -v '^#' "$work/routes.toml"
}

# round_trips - volley_cluster_redis_round_trips_total of the running volleyd (its
# samples summed; empty when it exports none).
round_trips() {
  "$py" - "http://127.0.0.1:$metrics_port/metrics" <<'PY'
import re, sys, urllib.request
try:
    text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
except OSError:
    sys.exit(0)
found = re.findall(r'^volley_cluster_redis_round_trips_total(?:\{[^}]*\})? (\S+)', text, re.M)
if found:
    print(int(sum(float(v) for v in found)))
PY
}

# run_side ROUND SIDE
run_side() {
  local round=$1 side=$2 dir="$work/$2-$1" calls0 calls1 trips la
  mkdir -p "$dir/spool"
  config "$dir" "$side" >"$dir/volleyd.toml"
  start_volleyd "$dir/volleyd.toml" "$dir/volleyd.err"
  sleep 1
  la=$(cut -d' ' -f1 /proc/loadavg)
  calls0=$(redis_calls)
  "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$messages" --domains "$domains" \
    --size "$size" --personalised --job "cluster-bench-$side-$round-$$" --json --no-progress \
    --timeout "$run_timeout" --volleyd-pid "$volleyd_pid" >"$dir/report.json" 2>"$dir/load.err" ||
    die "$side round $round: volley-load run failed: $(tail -3 "$dir/load.err")"
  trips=$(round_trips)
  calls1=$(redis_calls)
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  "$py" - "$dir/report.json" "$round" "$side" "$la" "$((calls1 - calls0 - 1))" "${trips:-null}" \
    "$messages" >>"$results" <<'PY'
import json, sys
report, rnd, side, la, calls, trips, n = sys.argv[1:]
r = json.load(open(report))
mps = r.get("messages_delivered_per_second") or r["messages_per_second"]
out = {"round": int(rnd), "side": side, "loadavg": float(la), "redis_calls": int(calls),
       "round_trips": json.loads(trips), "delivered": r["delivered"], "messages": int(n),
       "seconds": r["elapsed_seconds"], "mps": mps,
       "cpu_per_10k": r.get("volleyd_cpu_seconds_per_10k"), "peak_rss_kb": r.get("volleyd_peak_rss_kb")}
print(json.dumps(out))
if r["delivered"] != int(n):
    sys.exit("%s round %s: %d of %s delivered" % (side, rnd, r["delivered"], n))
PY
  tail -1 "$results" | "$py" -c '
import json, sys
r = json.loads(sys.stdin.read())
trips = "" if r["round_trips"] is None else ", %d Redis round trips" % r["round_trips"]
print("bench:   %-7s round %d: %d delivered in %.2f s, %.0f msg/s, volleyd %.3f CPU s per 10,000, %d Redis commands%s (load %.2f)"
      % (r["side"], r["round"], r["delivered"], r["seconds"], r["mps"], r["cpu_per_10k"] or 0,
         r["redis_calls"], trips, r["loadavg"]), file=sys.stderr)'
  rm -rf "$dir"
}

say "$rounds rounds of $messages personalised ${size}-byte messages over $domains domains, cluster and plain alternating${NO_CLUSTER:+ (NO_CLUSTER=$no_cluster)}"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=(cluster plain); else order=(plain cluster); fi
  say "round $round/$rounds: ${order[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  for side in "${order[@]}"; do run_side "$round" "$side"; done
done

# ---------------------------------------------------------------- summary
"$py" - "$results" "$no_cluster" "$shards" "$max_conn" "$message_rate" "$sink_addresses" <<'PY'
import json, statistics, sys
path, no_cluster, shards, max_conn, rate, addresses = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
side = lambda s: [r for r in rows if r["side"] == s]
def mr(vals, fmt):
    return "%s (%s .. %s)" % (fmt % statistics.median(vals), fmt % min(vals), fmt % max(vals))
n = rows[0]["messages"]
print("| volleyd (%s shards, [smtp] max_connections_per_destination %s, max_message_rate %s) | messages/s | volleyd CPU s per 10,000 | Redis commands per 10,000 messages | Redis round trips per 10,000 messages |"
      % (shards, max_conn, rate))
print("| --- | ---: | ---: | ---: | ---: |")
for s, title in (("cluster", "with [cluster] (Redis on loopback)" if no_cluster != "1" else "\"cluster\" side, NO_CLUSTER=1 (A/A)"),
                 ("plain", "without [cluster]")):
    rs = side(s)
    trips = [r["round_trips"] / r["delivered"] * 1e4 for r in rs if r["round_trips"] is not None]
    print("| %s | %s | %s | %s | %s |" % (
        title, mr([r["mps"] for r in rs], "%.0f"),
        mr([r["cpu_per_10k"] for r in rs if r["cpu_per_10k"] is not None], "%.3f"),
        mr([r["redis_calls"] / r["delivered"] * 1e4 for r in rs], "%.1f"),
        mr(trips, "%.1f") if trips else "not exported"))
ratios = []
for rnd in sorted({r["round"] for r in rows}):
    c = [r["mps"] for r in rows if r["round"] == rnd and r["side"] == "cluster"]
    p = [r["mps"] for r in rows if r["round"] == rnd and r["side"] == "plain"]
    if c and p:
        ratios.append(c[0] / p[0])
ratio = statistics.median(ratios)
print()
print("- cluster / plain (messages/s): %.3f (median of the per-round ratios %s; %d messages a run, one volley-sink on %s). Target >= 0.90: %s."
      % (ratio, ", ".join("%.3f" % x for x in ratios), n, addresses, "met" if ratio >= 0.90 else "NOT met"))
PY
say "done"
