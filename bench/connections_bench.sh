#!/bin/bash
# connections_bench.sh - 10,000 concurrent SMTP sessions: volleyd's memory per idle
# connection, and the system calls it makes per delivered message
#
# Usage: bench/connections_bench.sh            (about 2 minutes; Release build)
#
# Part 1, memory. volley-sink listens on 100 addresses (127.0.2.1-100, one port); 100
# domains are routed one to each. A personalised job of 1,000 recipients per domain is
# sent twice, side by side in one run, by two fresh volleyd (1,000, and up to 100
# connections opening at once per destination: a destination opens another
# connection only while more than 8 transactions per connection wait, and only
# max_connections_opening at a time, so 100 recipients per domain opened about 12):
#   "one"   max_connections_per_destination = 1:   100 connections in all
#   "many"  max_connections_per_destination = 100: up to 10,000 connections
# with idle_timeout long enough that every connection stays open once its messages
# are delivered. When every recipient has an outcome, volleyd's RSS and the sink's
# open connections are read; memory per idle connection is
#   (RSS many - RSS one) / (connections many - connections one).
# Part 2, system calls. A fresh volleyd (20 connections per domain) delivers 100,000
# messages twice: once counted by perf at the system-call tracepoints (all threads,
# at full speed), once under strace -c -f for the calls by name.
#
# Environment: BENCH_SKIP_BUILD=1 (use build-release as it is), BENCH_KEEP=1,
# BENCH_SHARDS (volleyd's [delivery] shards; default 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD:-$root/build-release}
py=/usr/bin/python3
. "$root/bench/lib.sh"
bench_binaries
bench_tree_info
command -v strace >/dev/null || die "strace is needed (apt-get install strace)"
shards=${BENCH_SHARDS:-2}
domains=100
per_domain=1000
work=$(mktemp -d /tmp/volley-connbench.XXXXXX)
port=$(free_port)

# The sink: one process on 100 addresses (all of 127.0.0.0/8 is local on Linux).
"$sink" --listen "127.0.2.1-127.0.2.$domains:$port" --stats "$work/sink.json" >"$work/sink.out" 2>"$work/sink.err" &
sink_pid=$!
for i in $(seq 100); do
  [ "$(grep -c 'listening on' "$work/sink.err" 2>/dev/null || true)" -ge $domains ] && break
  kill -0 "$sink_pid" 2>/dev/null || die "volley-sink exited: $(tail -3 "$work/sink.err")"
  sleep 0.1
done

# write_job FILE ID N_PER_DOMAIN - a personalised job: every message is its own
# transaction, so each waiting recipient can use a connection of its own.
write_job() {
  "$py" - "$1" "$2" "$3" "$domains" <<'PY'
import json, sys
path, job, per, domains = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = "Hello {{name}},\r\n" + ("x" * 70 + "\r\n") * 12
msg = "From: bench@sender.test\r\nSubject: connections\r\n\r\n" + body
with open(path, "w") as f:
    f.write(json.dumps({"job": job, "from": "bench@sender.test", "message": msg}) + "\n")
    for i in range(per):
        for d in range(domains):
            f.write(json.dumps({"to": "u%d@d%04d.test" % (i, d + 1), "vars": {"name": "u%d" % i}}) + "\n")
PY
}

# config DIR MAX_CONNECTIONS - a volleyd config routing domain i to 127.0.2.i.
config() {
  local dir=$1 max=$2 i
  mkdir -p "$dir/spool/tmp" "$dir/spool/incoming"
  {
    printf '[paths]\nspool = "%s/spool"\nqueue = "%s/queue"\nlog = "%s/log"\n\n' "$dir" "$dir" "$dir"
    printf '[smtp]\nmax_connections_per_destination = %d\nmax_connections_opening = %d\n' "$max" "$max"
    printf 'max_messages_per_connection = 100000\nidle_timeout = "10m"\n\n'
    printf '[delivery]\nshards = %d\nwindow = 40000\n\n[routes]\n' "$shards"
    for i in $(seq 1 $domains); do printf '"d%04d.test" = "127.0.2.%d:%d"\n' "$i" "$i" "$port"; done
    admin_section
  } >"$dir/volleyd.toml"
}

# outcomes DIR - delivery-log records so far.
outcomes() { cat "$1"/log/deliveries.jsonl 2>/dev/null | wc -l; }

# run_to_idle NAME MAX_CONNECTIONS - deliver the job, wait for it, print
# "rss_kib connections idle_cpu_ms" with every connection idle and open; idle_cpu_ms
# is volleyd's CPU time over $idle_seconds seconds of nothing but open connections.
run_to_idle() {
  local name=$1 max=$2 dir=$work/$1 want=$((domains * per_domain)) i rss conns
  config "$dir" "$max"
  start_volleyd "$dir/volleyd.toml" "$dir/volleyd.err"
  write_job "$dir/spool/tmp/$name.job" "$name" "$per_domain"
  mv "$dir/spool/tmp/$name.job" "$dir/spool/incoming/"
  for i in $(seq 1200); do
    [ "$(outcomes "$dir")" -ge "$want" ] && break
    kill -0 "$volleyd_pid" 2>/dev/null || die "volleyd ($name) exited: $(tail -3 "$dir/volleyd.err")"
    sleep 0.1
  done
  [ "$(outcomes "$dir")" -ge "$want" ] || die "$name: only $(outcomes "$dir") of $want outcomes"
  sleep 3  # the committer's last turns; the sink's stats file (once a second)
  rss=$(status_kb "$volleyd_pid" VmRSS)
  conns=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["connections"])' "$work/sink.json")
  local ticks=$(cpu_ticks "$volleyd_pid")
  sleep "$idle_seconds"
  local idle_ms=$(( ($(cpu_ticks "$volleyd_pid") - ticks) * 1000 / clk_tck ))
  grep -c '"status":"delivered"' "$dir/log/deliveries.jsonl" >"$dir/delivered"
  echo "$rss $conns $idle_ms"
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
}

say "part 1: memory per idle connection ($domains domains x $per_domain recipients, $shards shards)"
idle_seconds=10
read -r rss_one conns_one idle_one < <(run_to_idle one 1)
sleep 2
read -r rss_many conns_many idle_many < <(run_to_idle many 100)
per_conn=$(( (rss_many - rss_one) * 1024 / (conns_many - conns_one) ))
printf '| run | connections open (sink) | volleyd RSS | delivered | volleyd CPU over %d s idle |\n| --- | ---: | ---: | ---: | ---: |\n' "$idle_seconds"
printf '| one connection per domain | %d | %d KiB | %d | %d ms |\n' "$conns_one" "$rss_one" "$(cat "$work/one/delivered")" "$idle_one"
printf '| 100 connections per domain | %d | %d KiB | %d | %d ms |\n' "$conns_many" "$rss_many" "$(cat "$work/many/delivered")" "$idle_many"
printf '\nmemory per idle connection: %d bytes (%.1f KiB)\n' "$per_conn" "$(echo "$per_conn / 1024" | bc -l)"

# syscall_run NAME TRACER... - a fresh volleyd (20 connections per domain) delivers
# $sys_per_domain recipients per domain (50 messages a connection, so that opening
# the connections and growing the heaps is not most of what is counted) with TRACER attached to all its threads (the tracer's
# output goes to $work/NAME.txt); prints the number delivered.
syscall_run() {
  local name=$1 dir=$work/$1 want=$((domains * sys_per_domain)) tracer_pid i
  shift
  config "$dir" 20
  start_volleyd "$dir/volleyd.toml" "$dir/volleyd.err"
  "$@" -p "$volleyd_pid" -o "$work/$name.txt" 2>/dev/null &
  tracer_pid=$!
  sleep 1
  write_job "$dir/spool/tmp/$name.job" "$name" "$sys_per_domain"
  mv "$dir/spool/tmp/$name.job" "$dir/spool/incoming/"
  for i in $(seq 6000); do
    [ "$(outcomes "$dir")" -ge "$want" ] && break
    sleep 0.1
  done
  sleep 2
  kill -INT "$tracer_pid" 2>/dev/null || true
  wait "$tracer_pid" 2>/dev/null || true
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  grep -c '"status":"delivered"' "$dir/log/deliveries.jsonl"
}

sys_per_domain=1000
say "part 2: system calls per delivered message ($domains domains x $sys_per_domain recipients)"
# perf counts every system call at its tracepoint without stopping the thread, so
# volleyd runs at speed; strace -c names them but slows each one down, which makes
# loop turns (io_uring_enter) gather more completions than they would.
if perf stat -e raw_syscalls:sys_enter true 2>/dev/null; then
  delivered=$(syscall_run perf perf stat -x, -e raw_syscalls:sys_enter \
              -e syscalls:sys_enter_io_uring_enter)
  "$py" - "$work/perf.txt" "$delivered" <<'PY'
import sys
path, delivered = sys.argv[1], int(sys.argv[2])
counts = {}
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        counts[parts[2]] = int(parts[0])
total = counts.get("raw_syscalls:sys_enter", 0)
ring = counts.get("syscalls:sys_enter_io_uring_enter", 0)
print("\nperf (volleyd at full speed): %d messages delivered; %d system calls by all "
      "threads, %.2f per message; io_uring_enter %d, %.3f per message\n"
      % (delivered, total, total / delivered, ring, ring / delivered))
PY
else
  say "perf cannot count tracepoints here: only the strace figures follow"
fi
delivered=$(syscall_run strace strace -c -f)
"$py" - "$work/strace.txt" "$delivered" <<'PY'
import sys
path, delivered = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        rows.append((int(parts[3]), parts[-1]))
rows.sort(reverse=True)
total = sum(c for c, _ in rows)
print("strace -c (slowed down): %d messages delivered; %d system calls, %.2f per message\n"
      % (delivered, total, total / delivered))
print("| system call | calls | per message |\n| --- | ---: | ---: |")
for calls, name in rows[:12]:
    print("| %s | %d | %.3f |" % (name, calls, calls / delivered))
PY
