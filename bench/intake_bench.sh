#!/usr/bin/env bash
# intake_bench.sh - intake memory and speed for 100k / 1M / 3M-recipient jobs, and delivery throughput
#
# SYNOPSIS
#   bench/intake_bench.sh
#
# DESCRIPTION
#   Part 1, intake. For each job size in INTAKE_SIZES (default 100,000, 1,000,000 and
#   3,000,000 recipients over 1,000 domains, personalised), INTAKE_REPS times:
#     - volley-load generate writes the job into a temporary folder;
#     - a fresh volleyd (Release) starts on an empty spool/queue/log in that folder;
#     - the job is dropped (written to <spool>/tmp, renamed into <spool>/incoming);
#     - volleyd's VmRSS/VmHWM (/proc/PID/status) are sampled every 0.2 s until the file
#       is in <spool>/accepted/, and the "accepted: N recipients ... (X s)" line is read
#       from volleyd's stderr.
#   Reported: intake seconds (volleyd's own figure), recipients/s, RSS before the drop,
#   peak RSS (VmHWM), RSS 2 s after, volleyd CPU seconds for the intake, job file size,
#   and the queue folder's size on disk after intake (WAL and SST parts).
#
#   How intake is isolated from delivery: a job is in state "loading" while it is taken
#   in and the scheduler never scans it, so delivery cannot run during intake whatever
#   the config. To keep the moments after the commit quiet too, the job's header gets
#   "send_after": "2099-01-01T00:00:00Z" (nothing is ever due), [delivery] window = 1,
#   and [routes] "*" points at a 127.0.0.1 port where nothing listens. A fresh volleyd
#   per job keeps VmHWM (a high-water mark over the whole process life) per job.
#
#   Part 2, delivery. DELIVERY_RUNS times (default 3): a fresh volley-sink on a free
#   127.0.0.1 port, a fresh volleyd with the default config apart from [paths] and
#   [routes] "*" = the sink, then `volley-load run` of 200,000 recipients of 1 KiB over
#   1,000 domains. Reported: messages/s (volley-load: drop to last outcome, so the
#   200k intake is included), and volleyd's CPU seconds (utime+stime from
#   /proc/PID/stat, before the drop and after the last outcome) per 10,000 messages.
#   Median and range over the runs.
#
#   Everything stays on 127.0.0.1; every domain is under .test. All processes started
#   here are stopped on exit and the temporary folder is removed.
#
# ENVIRONMENT
#   INTAKE_SIZES="100000 1000000 3000000"   job sizes for part 1
#   INTAKE_REPS=3                            runs of each size (0: no intake part)
#   DELIVERY_RUNS=3                          runs of part 2
#   DELIVERY_RECIPIENTS=200000
#   DELIVERY_PERSONALISED=1                  a personalised job (one recipient per
#                                            transaction) instead of a shared message
#                                            (up to 100 recipients of a domain each)
#   DELIVERY_COMPARE_CHUNKING=1              each delivery run twice, alternating which
#                                            goes first: BDAT (the default, chunking on)
#                                            and DATA ([smtp] chunking = false); the
#                                            summary gives each and the ratio of medians
#   BENCH_KEEP=1                             keep the temporary folder
#   BENCH_SKIP_BUILD=1                       do not run the (incremental) build
#   BENCH_BUILD=<root>/build-release         the Release build folder
#
# EXIT STATUS
#   0 when every intake was accepted whole and every delivery run delivered everything.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD:-"$root/build-release"}
intake_sizes=${INTAKE_SIZES:-"100000 1000000 3000000"}
intake_reps=${INTAKE_REPS:-3}
delivery_runs=${DELIVERY_RUNS:-3}
delivery_recipients=${DELIVERY_RECIPIENTS:-200000}
personalised=()
[ "${DELIVERY_PERSONALISED:-0}" = 1 ] && personalised=(--personalised)
domains=1000
py=/usr/bin/python3

. "$root/bench/lib.sh"
bench_binaries
bench_tree_info

work=$(mktemp -d /tmp/volley-intake-bench.XXXXXX)
results="$work/results.jsonl"
: >"$results"
# ---------------------------------------------------------------- part 1: intake
intake_run() {
  local n=$1 rep=$2
  local dir="$work/intake-$n-$rep" job="intake-$n-$rep-$$"
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

[delivery]
window = 1

$(admin_section)
EOF
  "$load" generate --out "$dir/gen.jsonl" --job "$job" --recipients "$n" --domains "$domains" \
    --personalised 2>/dev/null || die "volley-load generate failed"

  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  # Nothing due before 2099: delivery never touches the job after its commit either.
  sed '1s/^{/{"send_after":"2099-01-01T00:00:00Z",/' "$dir/gen.jsonl" >"$spool/tmp/$name"
  rm -f "$dir/gen.jsonl"
  local file_bytes
  file_bytes=$(stat -c %s "$spool/tmp/$name")
  sleep 1  # let volleyd settle (RocksDB open, first scans)
  local rss_before hwm_before cpu_before
  rss_before=$(status_kb "$volleyd_pid" VmRSS)
  hwm_before=$(status_kb "$volleyd_pid" VmHWM)
  cpu_before=$(cpu_ticks "$volleyd_pid")

  (
    while kill -0 "$volleyd_pid" 2>/dev/null; do
      printf '%s %s %s\n' "$(date +%s.%N)" "$(status_kb "$volleyd_pid" VmRSS)" \
        "$(status_kb "$volleyd_pid" VmHWM)" 2>/dev/null || true
      sleep 0.2
    done
  ) >"$dir/rss.samples" 2>/dev/null &
  sampler_pid=$!

  local t0 t1 i
  t0=$(date +%s.%N)
  mv "$spool/tmp/$name" "$spool/incoming/$name"
  for i in $(seq 6000); do  # 300 s
    [ -e "$spool/accepted/$name" ] && break
    [ -e "$spool/failed/$name" ] && die "job refused: $(cat "$spool/failed/$name.error" 2>/dev/null)"
    kill -0 "$volleyd_pid" 2>/dev/null || die "volleyd exited during intake: $(tail -5 "$dir/volleyd.err")"
    sleep 0.05
  done
  t1=$(date +%s.%N)
  [ -e "$spool/accepted/$name" ] || die "intake of $n recipients did not finish in 300 s"
  local hwm_peak cpu_after line
  hwm_peak=$(status_kb "$volleyd_pid" VmHWM)
  cpu_after=$(cpu_ticks "$volleyd_pid")
  for i in $(seq 100); do
    line=$(grep -F "job \"$job\" accepted:" "$dir/volleyd.err" || true)
    [ -n "$line" ] && break
    sleep 0.05
  done
  [ -n "$line" ] || die "no accepted line for $job in volleyd's stderr"
  sleep 2  # RSS once the commit is done and a flush may have finished
  local rss_after hwm_after
  rss_after=$(status_kb "$volleyd_pid" VmRSS)
  hwm_after=$(status_kb "$volleyd_pid" VmHWM)
  stop "$sampler_pid" sampler
  sampler_pid=""
  local q="$dir/queue" queue_kb queue_bytes wal_bytes sst_bytes sst_files
  queue_kb=$(du -sk "$q" | cut -f1)        # allocated blocks (RocksDB preallocates its WAL)
  queue_bytes=$(du -sb "$q" | cut -f1)     # apparent size
  wal_bytes=$(find "$q" -maxdepth 1 -name '*.log' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  sst_bytes=$(find "$q" -maxdepth 1 -name '*.sst' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  sst_files=$(find "$q" -maxdepth 1 -name '*.sst' | wc -l)
  stop "$volleyd_pid" volleyd
  volleyd_pid=""

  "$py" - "$line" "$n" "$rep" "$file_bytes" "$rss_before" "$hwm_before" "$hwm_peak" \
    "$rss_after" "$hwm_after" "$t0" "$t1" "$cpu_before" "$cpu_after" "$clk_tck" "$queue_kb" "$queue_bytes" \
    "$wal_bytes" "$sst_bytes" "$sst_files" "$dir/rss.samples" >>"$results" <<'EOF'
import json, re, sys
(line, n, rep, file_bytes, rss_before, hwm_before, hwm_peak, rss_after, hwm_after, t0, t1,
 cpu_before, cpu_after, tck, queue_kb, queue_bytes, wal, sst, sst_files, samples) = sys.argv[1:]
m = re.search(r'accepted: (\d+) recipients, (\d+) rejected.*\(([\d.]+)s\)', line)
if not m:
    sys.exit("cannot parse: " + line)
accepted, rejected, secs = int(m[1]), int(m[2]), float(m[3])
rss = []
for l in open(samples):
    p = l.split()
    if len(p) == 3:
        rss.append(int(p[1]))
print(json.dumps({
    "part": "intake", "recipients": int(n), "rep": int(rep), "accepted": accepted,
    "rejected": rejected, "intake_s": secs, "rate": accepted / secs if secs else 0,
    "wall_s": float(t1) - float(t0), "file_bytes": int(file_bytes),
    "rss_before_kb": int(rss_before), "hwm_before_kb": int(hwm_before),
    "hwm_peak_kb": int(hwm_peak), "rss_after_kb": int(rss_after), "hwm_after_kb": int(hwm_after),
    "samples": len(rss), "max_sampled_rss_kb": max(rss) if rss else 0,
    "cpu_s": (int(cpu_after) - int(cpu_before)) / int(tck),
    "queue_kb": int(queue_kb), "queue_bytes": int(queue_bytes), "wal_bytes": int(wal), "sst_bytes": int(sst),
    "sst_files": int(sst_files)}))
EOF
  tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print("bench: intake %9d (run %d): %.3f s, %.0f recipients/s, RSS before %.1f MiB, peak (VmHWM) %.1f MiB, RSS 2 s after %.1f MiB, queue %.1f MiB (%.1f MiB allocated)" % (r["recipients"], r["rep"], r["intake_s"], r["rate"], r["rss_before_kb"]/1024, r["hwm_peak_kb"]/1024, r["rss_after_kb"]/1024, r["queue_bytes"]/2**20, r["queue_kb"]/1024), file=sys.stderr)'
  [ "$(tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print(int(r["accepted"]==r["recipients"] and r["rejected"]==0))')" = 1 ] ||
    die "intake of $n: not every recipient was accepted: $line"
  rm -rf "$dir"
}

say "part 1: intake of $intake_sizes recipients x $intake_reps runs (fresh volleyd each)"
for rep in $(seq "$intake_reps"); do
  for n in $intake_sizes; do
    intake_run "$n" "$rep"
  done
done

# ---------------------------------------------------------------- part 2: delivery
delivery_run() {
  local rep=$1 variant=${2:-default}
  local dir="$work/delivery-$rep-$variant" port i smtp_section=""
  [ "$variant" = data ] && smtp_section=$'[smtp]\nchunking = false\n'

  mkdir -p "$dir"
  port=$(free_port)
  start_sink "$dir" "$port"
  cat >"$dir/volley.toml" <<EOF
[paths]
spool = "$dir/spool"
queue = "$dir/queue"
log = "$dir/log"

[routes]
"*" = "127.0.0.1:$port"

$smtp_section
$(admin_section)
EOF
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  sleep 1
  local cpu_before cpu_after sink_before sink_after hwm status=0
  cpu_before=$(cpu_ticks "$volleyd_pid")
  sink_before=$(cpu_ticks "$sink_pid")
  "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$delivery_recipients" \
    --domains "$domains" --size 1024 --job "delivery-$rep-$$" --json --timeout 300 "${personalised[@]}" \
    >"$dir/load.json" || status=$?
  cpu_after=$(cpu_ticks "$volleyd_pid")
  sink_after=$(cpu_ticks "$sink_pid")
  hwm=$(status_kb "$volleyd_pid" VmHWM)
  [ "$status" = 0 ] || die "volley-load run exited $status: $(cat "$dir/load.json") $(tail -5 "$dir/volleyd.err")"
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  stop "$sink_pid" volley-sink
  sink_pid=""
  "$py" - "$dir/load.json" "$rep" "$cpu_before" "$cpu_after" "$sink_before" "$sink_after" \
    "$clk_tck" "$hwm" "$dir/sink.json" "$variant" >>"$results" <<'EOF'
import json, sys
load, rep, a, b, sa, sb, tck, hwm, sinkf, variant = sys.argv[1:]
r = json.load(open(load))
try:
    s = json.load(open(sinkf))
except (OSError, ValueError):
    s = {}
cpu = (int(b) - int(a)) / int(tck)
print(json.dumps({
    "part": "delivery", "rep": int(rep), "variant": variant, "recipients": r["recipients"],
    "delivered": r["delivered"], "deferred": r["deferred"], "bounced": r["bounced"],
    "elapsed_s": r["elapsed_seconds"], "rate": r["messages_per_second"],
    "volleyd_cpu_s": cpu, "cpu_per_10k": cpu / r["delivered"] * 10000 if r["delivered"] else 0,
    "sink_cpu_s": (int(sb) - int(sa)) / int(tck), "volleyd_hwm_kb": int(hwm),
    "sink_messages": s.get("messages"), "sink_sessions": s.get("sessions"),
    "sink_peak_connections": s.get("peak_connections")}))
EOF
  tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print("bench: delivery run %d: %d/%d delivered in %.3f s, %.0f messages/s, volleyd %.2f CPU s (%.3f per 10k), sink %.2f CPU s" % (r["rep"], r["delivered"], r["recipients"], r["elapsed_s"], r["rate"], r["volleyd_cpu_s"], r["cpu_per_10k"], r["sink_cpu_s"]), file=sys.stderr)'
  [ "$(tail -1 "$results" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); print(int(r["delivered"]==r["recipients"]))')" = 1 ] ||
    die "delivery run $rep: not everything was delivered"
  rm -rf "$dir"
}

say "part 2: delivery of $delivery_recipients x 1 KiB over $domains domains into volley-sink, $delivery_runs runs"
for rep in $(seq "$delivery_runs"); do
  if [ "${DELIVERY_COMPARE_CHUNKING:-0}" = 1 ]; then
    # Alternate which goes first, so that neither always runs on a warmer machine.
    if [ $((rep % 2)) = 1 ]; then order="bdat data"; else order="data bdat"; fi
    for variant in $order; do delivery_run "$rep" "$variant"; done
  else
    delivery_run "$rep"
  fi
done

# ---------------------------------------------------------------- summary
"$py" - "$results" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
intake = [r for r in rows if r["part"] == "intake"]
deliv = [r for r in rows if r["part"] == "delivery"]
mib = lambda kb: kb / 1024
def mr(vals, fmt):
    return "%s (%s .. %s)" % (fmt % statistics.median(vals), fmt % min(vals), fmt % max(vals))

if not intake:
    print("(no intake runs: INTAKE_SIZES was empty)")
    print()
print("## Intake (median (min .. max) over %d runs per size; fresh volleyd per run)" %
      max([r["rep"] for r in intake] or [0]))
print()
print("| recipients | job file | intake s | recipients/s | volleyd CPU s | RSS before drop | peak RSS (VmHWM) | RSS 2 s after | queue size (allocated) | of which WAL | SST |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
sizes = sorted({r["recipients"] for r in intake})
peak = {}
for n in sizes:
    rs = [r for r in intake if r["recipients"] == n]
    peak[n] = statistics.median([r["hwm_peak_kb"] for r in rs])
    print("| %s | %.1f MiB | %s | %s | %s | %s MiB | %s MiB | %s MiB | %s MiB | %.1f MiB | %.1f MiB |" % (
        f"{n:,}", rs[0]["file_bytes"] / 2**20,
        mr([r["intake_s"] for r in rs], "%.3f"),
        mr([r["rate"] for r in rs], "%.0f"),
        mr([r["cpu_s"] for r in rs], "%.2f"),
        mr([mib(r["rss_before_kb"]) for r in rs], "%.1f"),
        mr([mib(r["hwm_peak_kb"]) for r in rs], "%.1f"),
        mr([mib(r["rss_after_kb"]) for r in rs], "%.1f"),
        "%.1f (%.1f)" % (statistics.median([r["queue_bytes"] / 2**20 for r in rs]),
                         statistics.median([mib(r["queue_kb"]) for r in rs])),
        statistics.median([r["wal_bytes"] / 2**20 for r in rs]),
        statistics.median([r["sst_bytes"] / 2**20 for r in rs])))
print()
for n in sizes[1:]:
    base = sizes[0]
    print("peak RSS ratio %s / %s recipients: %.2f" % (f"{n:,}", f"{base:,}", peak[n] / peak[base]))
print()
print("Per run:")
for r in intake:
    print("  %9d run %d: intake %.3f s (drop to accepted/ %.3f s), %d samples, max sampled RSS %.1f MiB, "
          "VmHWM %.1f MiB, %d SST file(s)" % (
          r["recipients"], r["rep"], r["intake_s"], r["wall_s"], r["samples"],
          mib(r["max_sampled_rss_kb"]), mib(r["hwm_peak_kb"]), r["sst_files"]))
print()
VARIANTS = {"default": "", "bdat": ", BDAT (chunking on, the default)",
            "data": ", DATA (chunking = false)"}
medians = {}
for variant in [v for v in VARIANTS if any(r.get("variant", "default") == v for r in deliv)]:
    rows_v = [r for r in deliv if r.get("variant", "default") == variant]
    medians[variant] = statistics.median([r["rate"] for r in rows_v])
    print("## Delivery, %s%s (%d recipients x 1 KiB over 1,000 domains into volley-sink; median (min .. max) over %d runs)" %
          ("personalised, one recipient per transaction"
           if os.environ.get("DELIVERY_PERSONALISED") == "1"
           else "one message for all, up to 100 recipients of a domain per transaction",
           VARIANTS[variant], rows_v[0]["recipients"], len(rows_v)))
    print()
    print("| messages/s | seconds (drop to last outcome) | volleyd CPU s | volleyd CPU s per 10,000 messages | volley-sink CPU s | volleyd peak RSS |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print("| %s | %s | %s | %s | %s | %s MiB |" % (
        mr([r["rate"] for r in rows_v], "%.0f"),
        mr([r["elapsed_s"] for r in rows_v], "%.2f"),
        mr([r["volleyd_cpu_s"] for r in rows_v], "%.2f"),
        mr([r["cpu_per_10k"] for r in rows_v], "%.3f"),
        mr([r["sink_cpu_s"] for r in rows_v], "%.2f"),
        mr([mib(r["volleyd_hwm_kb"]) for r in rows_v], "%.1f")))
    print()
    for r in rows_v:
        print("  run %d: %d delivered, %.3f s, %.0f msg/s, volleyd %.2f CPU s, sink %s sessions, peak %s connections" % (
            r["rep"], r["delivered"], r["elapsed_s"], r["rate"], r["volleyd_cpu_s"],
            r["sink_sessions"], r["sink_peak_connections"]))
    print()
if "bdat" in medians and "data" in medians:
    print("BDAT / DATA, ratio of median messages/s: %.2f" % (medians["bdat"] / medians["data"]))
EOF
say "done"
