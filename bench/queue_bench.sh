#!/usr/bin/env bash
# queue_bench.sh - the queue at scale: RSS with 10,000,000 recipients queued for the
# future, and throughput in a steady state of 5,000,000 recipients pushed through
#
# SYNOPSIS
#   bench/queue_bench.sh
#
# DESCRIPTION
#   Part 1, future. FUTURE_REPS times (default 1): volley-load generate writes a
#   personalised job of FUTURE_RECIPIENTS (10,000,000) recipients over 1,000 domains;
#   its header gets "send_after": "2099-01-01T00:00:00Z", so nothing is ever due. A fresh
#   volleyd (Release, default config apart from [paths], [admin] on a free port, and
#   [routes] "*" to a 127.0.0.1 port where nothing listens) takes it in. Reported:
#   intake seconds and rate (volleyd's "accepted" line), VmHWM and VmRSS (sampled every
#   0.2 s during intake; then FUTURE_SETTLE_S (30) seconds after the accept, the queue
#   idle but RocksDB's flushes and compactions done), the queue folder on disk (apparent
#   and allocated; WAL and SST), and then the same volleyd restarted on that queue:
#   seconds to its "running" line, and VmRSS / VmHWM FUTURE_SETTLE_S seconds later (the
#   memory of a daemon sitting on a 10M queue, without the intake's history).
#
#   Part 2, steady state. STEADY_RUNS times (default 1): 5 jobs (STEADY_JOBS) of
#   1,000,000 recipients (STEADY_JOB_RECIPIENTS) x 1 KiB over 1,000 domains (one message
#   for all, so several recipients per transaction: the most queue operations per
#   second this box can drive; STEADY_PERSONALISED=1 for one recipient per transaction)
#   into a fresh volley-sink through a fresh volleyd with the default config apart from
#   [paths], [admin] and [routes] "*" = the sink. The five files are dropped together,
#   every header with "send_after" STEADY_DELAY_S (30) seconds after the drop: intake of
#   all five (about 5 s) is over before anything is due, so that the first million is
#   not delivered on a CPU shared with intake while the last is not (on 2 vCPUs that
#   alone would skew the ratio). Then all five are due at once and the shard takes them
#   in turns: every job's key range collects tombstones throughout the run, and the last
#   million is taken from ranges that each have had about 800,000 keys deleted. The
#   script waits for the five "finished" lines, then reads the delivery log: records in
#   log order, ts (ms) of the 1st, 1,000,000th, ..., 5,000,000th delivered record, and the
#   rate of each million, and volleyd's CPU seconds per recipient in each million (CPU
#   ticks sampled every 0.2 s, read at the block's first and last ts: on a shared box the
#   wall-clock rate moves with other people's load, CPU per recipient much less).
#   Reported: those rates, last / first (target: at least 0.90), CPU first / last,
#   the whole run's rate, volleyd's CPU seconds and peak RSS, the queue folder at the end,
#   and from RocksDB's LOG the flushes, compactions (records in and out: the deletions
#   dropped) and write stalls.
#
#   Everything stays on 127.0.0.1; every domain is under .test. All processes started
#   here are stopped on exit and the temporary folder is removed.
#
# ENVIRONMENT
#   BENCH_BUILD=<root>/build-qbench   the Release build folder (configured if missing)
#   FUTURE_REPS=1                     runs of part 1 (0: none)
#   FUTURE_RECIPIENTS=10000000
#   FUTURE_SETTLE_S=30
#   STEADY_RUNS=1                     runs of part 2 (0: none)
#   STEADY_JOBS=5
#   STEADY_JOB_RECIPIENTS=1000000
#   STEADY_DELAY_S=30                 send_after, counted from the drop
#   STEADY_PERSONALISED=1             one recipient per transaction
#   BENCH_TMP=/tmp                    where the temporary folder goes (part 1 needs about
#                                     1.5 GiB, part 2 about 1.5 GiB, mostly the log)
#   BENCH_KEEP=1                      keep the temporary folder
#   BENCH_SKIP_BUILD=1                do not run the (incremental) build
#
# EXIT STATUS
#   0 when every job was accepted whole and every steady-state recipient delivered once
#   the run ended; missing a target is reported, not an error.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD:-"$root/build-qbench"}
future_reps=${FUTURE_REPS:-1}
future_n=${FUTURE_RECIPIENTS:-10000000}
future_settle=${FUTURE_SETTLE_S:-30}
steady_runs=${STEADY_RUNS:-1}
steady_jobs=${STEADY_JOBS:-5}
steady_job_n=${STEADY_JOB_RECIPIENTS:-1000000}
steady_delay=${STEADY_DELAY_S:-30}
personalised=()
[ "${STEADY_PERSONALISED:-0}" = 1 ] && personalised=(--personalised)
domains=1000
py=/usr/bin/python3

. "$root/bench/lib.sh"
bench_binaries
bench_tree_info

work=$(mktemp -d "${BENCH_TMP:-/tmp}/volley-queue-bench.XXXXXX")
results="$work/results.jsonl"
: >"$results"
# queue_disk DIR - JSON fields for the queue folder's size.
queue_disk() {
  local q=$1
  printf '"queue_bytes": %s, "queue_kb": %s, "wal_bytes": %s, "sst_bytes": %s, "sst_files": %s' \
    "$(du -sb "$q" | cut -f1)" "$(du -sk "$q" | cut -f1)" \
    "$(find "$q" -maxdepth 1 -name '*.log' -printf '%s\n' | awk '{s+=$1} END {print s+0}')" \
    "$(find "$q" -maxdepth 1 -name '*.sst' -printf '%s\n' | awk '{s+=$1} END {print s+0}')" \
    "$(find "$q" -maxdepth 1 -name '*.sst' | wc -l)"
}

# sample_rss PID FILE - "time VmRSS VmHWM CPU-ticks" every 0.2 s while PID lives (background).
sample_rss() {
  (
    while kill -0 "$1" 2>/dev/null; do
      printf '%s %s %s %s\n' "$(date +%s.%N)" "$(status_kb "$1" VmRSS)" "$(status_kb "$1" VmHWM)" \
        "$(cpu_ticks "$1")" 2>/dev/null || true
      sleep 0.2
    done
  ) >"$2" 2>/dev/null &
  sampler_pid=$!
}

# ---------------------------------------------------------------- part 1: future
future_run() {
  local rep=$1 n=$future_n
  local dir="$work/future-$rep" job="future-$n-$rep-$$"
  local spool="$dir/spool" name="$job.jsonl" dead_port
  mkdir -p "$dir"
  dead_port=$(free_port)
  cat >"$dir/volley.toml" <<EOF
[paths]
spool = "$spool"
queue = "$dir/queue"
log = "$dir/log"

[routes]
"*" = "127.0.0.1:$dead_port"

$(admin_section)
EOF
  say "future run $rep: generating $n recipients"
  "$load" generate --out "$dir/gen.jsonl" --job "$job" --recipients "$n" --domains "$domains" \
    --personalised 2>/dev/null || die "volley-load generate failed"
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  sed '1s/^{/{"send_after":"2099-01-01T00:00:00Z",/' "$dir/gen.jsonl" >"$spool/tmp/$name"
  rm -f "$dir/gen.jsonl"
  local file_bytes rss_before cpu_before
  file_bytes=$(stat -c %s "$spool/tmp/$name")
  sleep 1
  rss_before=$(status_kb "$volleyd_pid" VmRSS)
  cpu_before=$(cpu_ticks "$volleyd_pid")
  sample_rss "$volleyd_pid" "$dir/rss.samples"
  local t0 t1 i line
  t0=$(date +%s.%N)
  mv "$spool/tmp/$name" "$spool/incoming/$name"
  for i in $(seq 12000); do  # 600 s
    [ -e "$spool/accepted/$name" ] && break
    [ -e "$spool/failed/$name" ] && die "job refused: $(cat "$spool/failed/$name.error" 2>/dev/null)"
    kill -0 "$volleyd_pid" 2>/dev/null || die "volleyd exited during intake: $(tail -5 "$dir/volleyd.err")"
    sleep 0.05
  done
  t1=$(date +%s.%N)
  [ -e "$spool/accepted/$name" ] || die "intake of $n recipients did not finish in 600 s"
  rm -f "$spool/accepted/$name"  # 600 MiB that nothing reads again
  local hwm_intake cpu_after
  hwm_intake=$(status_kb "$volleyd_pid" VmHWM)
  cpu_after=$(cpu_ticks "$volleyd_pid")
  line=$(grep -F "job \"$job\" accepted:" "$dir/volleyd.err" || true)
  [ -n "$line" ] || die "no accepted line for $job in volleyd's stderr"
  say "future run $rep: accepted; waiting ${future_settle}s"
  sleep "$future_settle"
  local rss_settled hwm_settled disk_settled
  rss_settled=$(status_kb "$volleyd_pid" VmRSS)
  hwm_settled=$(status_kb "$volleyd_pid" VmHWM)
  stop "$sampler_pid" sampler
  sampler_pid=""
  disk_settled=$(queue_disk "$dir/queue")
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  # The same queue, a fresh process.
  local r0 r1 rss_restart hwm_restart disk_restart
  r0=$(date +%s.%N)
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err" 1
  r1=$(date +%s.%N)
  sleep "$future_settle"
  rss_restart=$(status_kb "$volleyd_pid" VmRSS)
  hwm_restart=$(status_kb "$volleyd_pid" VmHWM)
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  disk_restart=$(queue_disk "$dir/queue")
  "$py" - "$line" "$n" "$rep" "$file_bytes" "$rss_before" "$hwm_intake" "$rss_settled" \
    "$hwm_settled" "$t0" "$t1" "$cpu_before" "$cpu_after" "$clk_tck" "$r0" "$r1" \
    "$rss_restart" "$hwm_restart" "$dir/rss.samples" "{$disk_settled}" "{$disk_restart}" \
    >>"$results" <<'EOF'
import json, re, sys
(line, n, rep, file_bytes, rss_before, hwm_intake, rss_settled, hwm_settled, t0, t1, c0, c1,
 tck, r0, r1, rss_restart, hwm_restart, samples, disk_settled, disk_restart) = sys.argv[1:]
m = re.search(r'accepted: (\d+) recipients, (\d+) rejected.*\(([\d.]+)s\)', line)
if not m:
    sys.exit("cannot parse: " + line)
accepted, rejected, secs = int(m[1]), int(m[2]), float(m[3])
rss = [int(l.split()[1]) for l in open(samples) if len(l.split()) >= 3]
print(json.dumps({
    "part": "future", "recipients": int(n), "rep": int(rep), "accepted": accepted,
    "rejected": rejected, "intake_s": secs, "rate": accepted / secs if secs else 0,
    "wall_s": float(t1) - float(t0), "file_bytes": int(file_bytes),
    "rss_before_kb": int(rss_before), "hwm_intake_kb": int(hwm_intake),
    "max_sampled_rss_kb": max(rss) if rss else 0, "samples": len(rss),
    "rss_settled_kb": int(rss_settled), "hwm_settled_kb": int(hwm_settled),
    "cpu_s": (int(c1) - int(c0)) / int(tck), "restart_s": float(r1) - float(r0),
    "rss_restart_kb": int(rss_restart), "hwm_restart_kb": int(hwm_restart),
    "disk_settled": json.loads(disk_settled), "disk_restart": json.loads(disk_restart)}))
EOF
  tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); d=r["disk_settled"]; print("bench: future %d (run %d): intake %.2f s (%.0f/s); VmHWM %.1f MiB, VmRSS %.1f MiB %ss after; restarted in %.2f s: VmRSS %.1f MiB, VmHWM %.1f MiB; queue %.1f MiB (%.1f MiB allocated, WAL %.1f, SST %.1f in %d files)" % (r["recipients"], r["rep"], r["intake_s"], r["rate"], r["hwm_settled_kb"]/1024, r["rss_settled_kb"]/1024, sys.argv[1], r["restart_s"], r["rss_restart_kb"]/1024, r["hwm_restart_kb"]/1024, d["queue_bytes"]/2**20, d["queue_kb"]/1024, d["wal_bytes"]/2**20, d["sst_bytes"]/2**20, d["sst_files"]), file=sys.stderr)' "$future_settle"
  [ "$(tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print(int(r["accepted"]==r["recipients"] and r["rejected"]==0))')" = 1 ] ||
    die "future: not every recipient was accepted: $line"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}

if [ "$future_reps" -gt 0 ]; then
  say "part 1: $future_n recipients queued for 2099, $future_reps run(s)"
  for rep in $(seq "$future_reps"); do future_run "$rep"; done
fi

# ---------------------------------------------------------------- part 2: steady state
steady_run() {
  local rep=$1
  local dir="$work/steady-$rep" port i k
  mkdir -p "$dir/gen"
  port=$(free_port)
  start_sink "$dir" "$port"
  cat >"$dir/volley.toml" <<EOF
[paths]
spool = "$dir/spool"
queue = "$dir/queue"
log = "$dir/log"

[routes]
"*" = "127.0.0.1:$port"

$(admin_section)
EOF
  local jobs=()
  say "steady run $rep: generating $steady_jobs jobs of $steady_job_n recipients"
  for k in $(seq "$steady_jobs"); do
    jobs+=("steady-$rep-$k-$$")
    "$load" generate --out "$dir/gen/$k.jsonl" --job "steady-$rep-$k-$$" --recipients "$steady_job_n" \
      --domains "$domains" --size 1024 --seed "$k" "${personalised[@]}" 2>/dev/null ||
      die "volley-load generate failed"
  done
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  sleep 1
  local due due_epoch cpu_before sink_before
  due_epoch=$(( $(date +%s) + steady_delay ))
  due=$(date -u -d "@$due_epoch" +%Y-%m-%dT%H:%M:%SZ)
  for k in $(seq "$steady_jobs"); do
    sed "1s/^{/{\"send_after\":\"$due\",/" "$dir/gen/$k.jsonl" >"$dir/spool/tmp/$k.jsonl"
    rm -f "$dir/gen/$k.jsonl"
  done
  cpu_before=$(cpu_ticks "$volleyd_pid")
  sink_before=$(cpu_ticks "$sink_pid")
  sample_rss "$volleyd_pid" "$dir/rss.samples"
  for k in $(seq "$steady_jobs"); do mv "$dir/spool/tmp/$k.jsonl" "$dir/spool/incoming/$k.jsonl"; done
  say "steady run $rep: dropped; due at $due"
  local done_all=0 accepted_at=""
  for i in $(seq 12000); do  # 1200 s
    kill -0 "$volleyd_pid" 2>/dev/null || die "volleyd exited: $(tail -5 "$dir/volleyd.err")"
    if [ -z "$accepted_at" ] && [ "$(grep -c 'accepted:' "$dir/volleyd.err")" -ge "$steady_jobs" ]; then
      accepted_at=$(date +%s.%N)
      say "steady run $rep: all $steady_jobs accepted, $(( due_epoch - ${accepted_at%.*} )) s before due"
      [ "${accepted_at%.*}" -lt "$due_epoch" ] ||
        die "intake was not over before send_after: raise STEADY_DELAY_S"
    fi
    if [ "$(grep -c 'finished$' "$dir/volleyd.err")" -ge "$steady_jobs" ]; then
      done_all=1
      break
    fi
    sleep 0.1
  done
  [ "$done_all" = 1 ] || die "the $steady_jobs jobs did not finish in 1200 s"
  local cpu_after sink_after hwm
  cpu_after=$(cpu_ticks "$volleyd_pid")
  sink_after=$(cpu_ticks "$sink_pid")
  hwm=$(status_kb "$volleyd_pid" VmHWM)
  stop "$sampler_pid" sampler
  sampler_pid=""
  local disk
  disk=$(queue_disk "$dir/queue")
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  stop "$sink_pid" volley-sink
  sink_pid=""
  "$py" - "$dir/log/deliveries.jsonl" "$rep" "$steady_jobs" "$steady_job_n" "$due_epoch" \
    "$cpu_before" "$cpu_after" "$sink_before" "$sink_after" "$clk_tck" "$hwm" "$dir/sink.json" \
    "$dir/rss.samples" "$dir/volleyd.err" "$dir/queue/LOG" "{$disk}" >>"$results" <<'EOF'
import collections, datetime, json, re, sys
(logf, rep, jobs, job_n, due, c0, c1, s0, s1, tck, hwm, sinkf, samples, errf, rocks_log,
 disk) = sys.argv[1:]
total = int(jobs) * int(job_n)
ts_re = re.compile(rb'^\{"ts":"([^"]+)"')
status_re = re.compile(rb'"status":"([a-z]+)"')
statuses = collections.Counter()
ts = []          # delivered records, in log order, as ms since the epoch
epoch_cache = {}
with open(logf, "rb") as f:
    for line in f:
        m = status_re.search(line)
        st = m[1].decode() if m else "?"
        statuses[st] += 1
        if st != "delivered":
            continue
        t = ts_re.match(line)[1].decode()      # 2026-11-28T13:45:01.123Z
        sec, ms = t[:19], int(t[20:23])
        e = epoch_cache.get(sec)
        if e is None:
            e = int(datetime.datetime.strptime(sec, "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=datetime.timezone.utc).timestamp())
            epoch_cache[sec] = e
        ts.append(e * 1000 + ms)
# Blocks of a million (of a fifth of the run when it is shorter than 2 million: a smoke test).
million = 1000000 if total >= 2000000 else max(total // 5, 1)
# volleyd's CPU ticks over time (the sampler), to charge each block its CPU: on a shared
# machine the wall-clock rate moves with other people's load, CPU per recipient much less.
cpu = [(float(p[0]) * 1000, int(p[3])) for p in (l.split() for l in open(samples)) if len(p) == 4]
def ticks_at(t):
    for (t0, c0), (t1, c1) in zip(cpu, cpu[1:]):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c0
    return None
per_million = []
for k in range(len(ts) // million):
    a, b = ts[k * million], ts[(k + 1) * million - 1]
    ca, cb = ticks_at(a), ticks_at(b)
    per_million.append({"from": k * million + 1, "seconds": (b - a) / 1000,
                        "rate": (million - 1) / ((b - a) / 1000) if b > a else 0,
                        "cpu_us": (cb - ca) / int(tck) / (million - 1) * 1e6
                        if ca is not None and cb is not None else 0})
# Accepted lines: intake seconds of each job.
intake = [float(m[1]) for m in re.finditer(r'accepted: \d+ recipients.*\(([\d.]+)s\)',
                                           open(errf).read())]
rocks = {"flushes": 0, "compactions": 0, "compaction_in": 0, "compaction_out": 0,
         "stall_lines": 0}
try:
    for l in open(rocks_log, errors="replace"):
        if '"event": "flush_finished"' in l:
            rocks["flushes"] += 1
        elif '"event": "compaction_finished"' in l:
            rocks["compactions"] += 1
            m1 = re.search(r'"num_input_records": (\d+)', l)
            m2 = re.search(r'"num_output_records": (\d+)', l)
            rocks["compaction_in"] += int(m1[1]) if m1 else 0
            rocks["compaction_out"] += int(m2[1]) if m2 else 0
        elif re.search(r'Stalling writes|Stopping writes', l):
            rocks["stall_lines"] += 1
except OSError:
    pass
try:
    s = json.load(open(sinkf))
except (OSError, ValueError):
    s = {}
rss = [int(l.split()[1]) for l in open(samples) if len(l.split()) >= 3]
print(json.dumps({
    "part": "steady", "rep": int(rep), "jobs": int(jobs), "recipients": total,
    "delivered": len(ts), "statuses": statuses, "due_epoch": int(due),
    "first_ts_ms": ts[0] if ts else 0, "last_ts_ms": ts[-1] if ts else 0,
    "per_million": per_million,
    "ratio": per_million[-1]["rate"] / per_million[0]["rate"] if len(per_million) > 1 else 0,
    "cpu_ratio": per_million[0]["cpu_us"] / per_million[-1]["cpu_us"]
    if len(per_million) > 1 and per_million[-1]["cpu_us"] else 0,
    "overall_rate": (len(ts) - 1) / ((ts[-1] - ts[0]) / 1000) if len(ts) > 1 else 0,
    "intake_s": intake, "volleyd_cpu_s": (int(c1) - int(c0)) / int(tck),
    "sink_cpu_s": (int(s1) - int(s0)) / int(tck), "volleyd_hwm_kb": int(hwm),
    "max_sampled_rss_kb": max(rss) if rss else 0, "rocksdb": rocks, "disk_end": json.loads(disk),
    "sink_messages": s.get("messages"), "sink_recipients": s.get("recipients"),
    "sink_sessions": s.get("sessions")}))
EOF
  tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print("bench: steady run %d: %d/%d delivered, %s; last/first million %.3f; overall %.0f/s; CPU us/recipient %s" % (r["rep"], r["delivered"], r["recipients"], ", ".join("%.0f/s" % m["rate"] for m in r["per_million"]), r["ratio"], r["overall_rate"], ", ".join("%.1f" % m["cpu_us"] for m in r["per_million"])), file=sys.stderr)'
  [ "$(tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print(int(r["delivered"]==r["recipients"]))')" = 1 ] ||
    die "steady run $rep: not every recipient was delivered"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}

if [ "$steady_runs" -gt 0 ]; then
  say "part 2: $steady_jobs x $steady_job_n recipients through volley-sink, $steady_runs run(s)"
  for rep in $(seq "$steady_runs"); do steady_run "$rep"; done
fi

# ---------------------------------------------------------------- summary
"$py" - "$results" "$future_settle" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
settle = sys.argv[2]
fut = [r for r in rows if r["part"] == "future"]
std = [r for r in rows if r["part"] == "steady"]
mib = lambda kb: kb / 1024
def mr(vals, fmt):
    if len(vals) == 1:
        return fmt % vals[0]
    return "%s (%s .. %s)" % (fmt % statistics.median(vals), fmt % min(vals), fmt % max(vals))

if fut:
    print("### %s recipients queued for the future (%s; median (min .. max) where several runs)" %
          (f"{fut[0]['recipients']:,}", "%d run%s" % (len(fut), "s" if len(fut) > 1 else "")))
    print()
    print("| recipients | job file | intake s | recipients/s | volleyd CPU s | RSS before drop | VmHWM | VmRSS %s s after | queue on disk (allocated) | WAL | SST (files) | restart s | after restart: VmRSS / VmHWM |" % settle)
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    d = lambda r: r["disk_settled"]
    print("| %s | %.0f MiB | %s | %s | %s | %s MiB | %s MiB | %s MiB | %s MiB (%s MiB) | %s MiB | %s MiB (%s) | %s | %s / %s MiB |" % (
        f"{fut[0]['recipients']:,}", fut[0]["file_bytes"] / 2**20,
        mr([r["intake_s"] for r in fut], "%.2f"), mr([r["rate"] for r in fut], "%.0f"),
        mr([r["cpu_s"] for r in fut], "%.1f"),
        mr([mib(r["rss_before_kb"]) for r in fut], "%.1f"),
        mr([mib(r["hwm_settled_kb"]) for r in fut], "%.1f"),
        mr([mib(r["rss_settled_kb"]) for r in fut], "%.1f"),
        mr([d(r)["queue_bytes"] / 2**20 for r in fut], "%.0f"),
        mr([d(r)["queue_kb"] / 1024 for r in fut], "%.0f"),
        mr([d(r)["wal_bytes"] / 2**20 for r in fut], "%.1f"),
        mr([d(r)["sst_bytes"] / 2**20 for r in fut], "%.0f"),
        mr([d(r)["sst_files"] for r in fut], "%d"),
        mr([r["restart_s"] for r in fut], "%.2f"),
        mr([mib(r["rss_restart_kb"]) for r in fut], "%.1f"),
        mr([mib(r["hwm_restart_kb"]) for r in fut], "%.1f")))
    print()
    for r in fut:
        print("  run %d: intake %.2f s (drop to accepted/ %.2f s), %d RSS samples, max sampled %.1f MiB; "
              "queue after the restart %.0f MiB, %d SST files" % (
              r["rep"], r["intake_s"], r["wall_s"], r["samples"], mib(r["max_sampled_rss_kb"]),
              r["disk_restart"]["queue_bytes"] / 2**20, r["disk_restart"]["sst_files"]))
    print()
if std:
    print("### Steady state: %d jobs x %s recipients, due together, into volley-sink (%s; %d run%s)" % (
        std[0]["jobs"], f"{std[0]['recipients'] // std[0]['jobs']:,}",
        "personalised, one recipient per transaction" if os.environ.get("STEADY_PERSONALISED") == "1"
        else "one message for all, several recipients per transaction",
        len(std), "s" if len(std) > 1 else ""))
    print()
    n = max(len(r["per_million"]) for r in std)
    print("| run | " + " | ".join("million %d /s" % (k + 1) for k in range(n)) +
          " | last / first | overall /s | volleyd CPU s | sink CPU s | volleyd VmHWM | queue at end | RocksDB flushes / compactions / stall lines |")
    print("| ---: " * (n + 7) + "|")
    for r in std:
        rk = r["rocksdb"]
        print("| %d | %s | %.3f | %.0f | %.1f | %.1f | %.1f MiB | %.1f MiB | %d / %d / %d |" % (
            r["rep"], " | ".join("%.0f" % m["rate"] for m in r["per_million"]), r["ratio"],
            r["overall_rate"], r["volleyd_cpu_s"], r["sink_cpu_s"], mib(r["volleyd_hwm_kb"]),
            r["disk_end"]["queue_bytes"] / 2**20, rk["flushes"], rk["compactions"], rk["stall_lines"]))
    print()
    print("volleyd CPU per recipient (us), per million, and first / last (a ratio under 1: the last million cost more):")
    print()
    print("| run | " + " | ".join("million %d" % (k + 1) for k in range(n)) + " | first / last |")
    print("| ---: " * (n + 2) + "|")
    for r in std:
        print("| %d | %s | %.3f |" % (r["rep"], " | ".join("%.1f" % m.get("cpu_us", 0) for m in r["per_million"]),
                                     r.get("cpu_ratio", 0)))
    print()
    if len(std) > 1:
        print("median last / first (rate): %.3f; median first / last (CPU per recipient): %.3f" % (
            statistics.median([r["ratio"] for r in std]),
            statistics.median([r.get("cpu_ratio", 0) for r in std])))
    for r in std:
        rk = r["rocksdb"]
        print("  run %d: statuses %s; intake s per job %s; first delivery %.1f s after due; "
              "compactions read %d records and wrote %d; sink %s messages, %s sessions" % (
              r["rep"], r["statuses"], r["intake_s"], r["first_ts_ms"] / 1000 - r["due_epoch"],
              rk["compaction_in"], rk["compaction_out"], r["sink_messages"], r["sink_sessions"]))
EOF
say "done"
