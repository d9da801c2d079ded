#!/bin/bash
# suppression_delivery_bench.sh - one job delivered with an empty suppression list and with 10M entries (issue 18)
#
# Usage: bench/suppression_delivery_bench.sh
#        ROUNDS=7 RECIPIENTS=200000 bench/suppression_delivery_bench.sh
#
# The same volleyd binary ($build, Release) delivers the same personalised job into
# one volley-sink (127.0.3.1-127.0.3.50, DOMAINS domains routed there) with each of
# VARIANTS, in the order given, ROUNDS times, alternating so that no variant always
# gets the quieter machine:
#   empty     a new, empty suppression list;
#   list      a copy of a list of ENTRIES (10,000,000) entries, "user<i>@d<i % 1000>.test"
#             (suppression-bench load, none of them the job's recipients), plus SUPPRESSED
#             (5) of the job's own recipients, global; [suppression] filter_bits_per_key
#             FILTER_BITS (10);
#   nofilter  the same list with filter_bits_per_key = 0: every Check from RocksDB, as
#             before the filter.
# volleyd checks every recipient at intake and again before its attempt, so each run
# makes 2 x RECIPIENTS Checks. The list is built once (about 2 minutes, compacted
# after the load) and copied for each run; LIST=DIR reuses one built before (kept with
# BENCH_KEEP=1 as $work/list-master, or by SUPP_KEEP=1 bench/suppression_bench.sh); the
# job's recipients are added to it.
#
# Prints one line per run (messages/s, volleyd CPU s per 10,000 recipients from the
# drop to the last outcome, peak RSS, seconds from start to "running", which includes
# building the filter from the list, and the outcome counts), then per variant the
# medians and the median of its per-round ratios to "empty".
#
# Environment: ROUNDS (5), RECIPIENTS (200000), DOMAINS (1000), SIZE (1024),
# PERSONALISED (1), SHARDS (2), ENTRIES (10000000), SUPPRESSED (5), FILTER_BITS (10),
# VARIANTS ("empty list nofilter"), LIST, BENCH_BUILD (build-release), BENCH_SKIP_BUILD=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD:-$root/build-release}
py=/usr/bin/python3
. "$root/bench/lib.sh"
bench_binaries
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cmake --build "$build" --target suppression-bench >/dev/null
fi
supp="$build/bench/suppression-bench"
[ -x "$supp" ] || die "missing $supp"
bench_tree_info
rounds=${ROUNDS:-5}
recipients=${RECIPIENTS:-200000}
domains=${DOMAINS:-1000}
size=${SIZE:-1024}
shards=${SHARDS:-2}
entries=${ENTRIES:-10000000}
suppressed=${SUPPRESSED:-5}
filter_bits=${FILTER_BITS:-10}
variants=${VARIANTS:-empty list nofilter}
personalised=()
[ "${PERSONALISED:-1}" = 1 ] && personalised=(--personalised)
work=$(mktemp -d /tmp/volley-suppdelivery.XXXXXX)

# The job's recipients to put on the list: the same generator, options and seed as
# `volley-load run` below, so these are recipients of the job it drops.
"$load" generate --out "$work/job.jsonl" --job probe --recipients "$recipients" \
  --domains "$domains" --size "$size" "${personalised[@]}" >/dev/null
"$py" - "$work/job.jsonl" "$suppressed" >"$work/suppressed.txt" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[1:]
n = int(sys.argv[2])
for i in range(n):
    print(json.loads(lines[(i * len(lines)) // n])["to"])
PY
rm -f "$work/job.jsonl"

master=${LIST:-}
if [ -z "$master" ]; then
  master=$work/list-master
  say "loading $entries entries into $master"
  "$supp" load --dir "$master" --entries "$entries" >"$work/load.txt"
fi
"$supp" add --dir "$master" --file "$work/suppressed.txt" >/dev/null
say "compacting $master"
"$supp" compact --dir "$master"
say "list: $(du -sh "$master" | cut -f1) on disk; job recipients on it: $(tr '\n' ' ' <"$work/suppressed.txt")"

port=$(free_port)
range=127.0.3.1-127.0.3.50
"$sink" --listen "$range:$port" --stats "$work/sink.json" >"$work/sink.out" 2>"$work/sink.err" &
sink_pid=$!
for i in $(seq 100); do
  grep -q 'listening on' "$work/sink.err" 2>/dev/null && break
  sleep 0.1
done
"$load" routes --domains "$domains" --sink-addresses "$range" --port "$port" --out "$work/routes.toml" 2>/dev/null

: >"$work/runs.tsv"
for round in $(seq "$rounds"); do
  for variant in $variants; do
    dir=$work/$variant-$round
    mkdir -p "$dir/spool"
    bits=$filter_bits
    case $variant in
      empty) mkdir -p "$dir/suppression" ;;
      list) cp -a "$master" "$dir/suppression" ;;
      nofilter) cp -a "$master" "$dir/suppression"; bits=0 ;;
      *) die "unknown variant $variant (empty, list, nofilter)" ;;
    esac
    {
      printf '[paths]\nspool = "%s/spool"\nqueue = "%s/queue"\nlog = "%s/log"\n' "$dir" "$dir" "$dir"
      printf '[delivery]\nshards = %d\n' "$shards"
      printf '[suppression]\npath = "%s/suppression"\nfilter_bits_per_key = %d\n' "$dir" "$bits"
      admin_section
      cat "$work/routes.toml"
    } >"$dir/volleyd.toml"
    t0=$(date +%s.%N)
    start_volleyd "$dir/volleyd.toml" "$dir/volleyd.err"
    start_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$recipients" --domains "$domains" \
      --size "$size" "${personalised[@]}" --json --no-progress --volleyd-pid "$volleyd_pid" >"$dir/report.json"
    "$py" - "$dir/report.json" "$variant" "$round" "$start_s" >>"$work/runs.tsv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("\t".join(str(x) for x in (sys.argv[2], sys.argv[3], r["messages_per_second"],
      r["volleyd_cpu_seconds_per_10k"], r["volleyd_peak_rss_kb"], sys.argv[4],
      r["delivered"], r.get("other", 0))))
PY
    tail -1 "$work/runs.tsv" | awk -F'\t' '{printf "%-8s round %s: %8.1f messages/s  %6.3f volleyd CPU s per 10,000  peak RSS %d KiB  start %.1f s  (%d delivered, %d other)\n", $1, $2, $3, $4, $5, $6, $7, $8}'
    stop "$volleyd_pid" volleyd
    volleyd_pid=""
    rm -rf "$dir/suppression" "$dir/queue"
  done
done

"$py" - "$work/runs.tsv" <<'PY'
import statistics, sys
runs = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
by = {}
for v, rnd, mps, cpu, rss, start, delivered, other in runs:
    by.setdefault(v, {})[rnd] = (float(mps), float(cpu), int(rss), float(start))
print("variant   median msg/s  median CPU s/10k  median peak RSS  median start s"
      "  ratio to empty (median of rounds): msg/s  CPU")
for v, rounds in by.items():
    vals = list(rounds.values())
    line = "%-8s  %12.1f  %16.3f  %12d KiB  %14.1f" % (
        v, statistics.median(x[0] for x in vals), statistics.median(x[1] for x in vals),
        statistics.median(x[2] for x in vals), statistics.median(x[3] for x in vals))
    if v != "empty" and "empty" in by:
        paired = [r for r in rounds if r in by["empty"]]
        mps = statistics.median(rounds[r][0] / by["empty"][r][0] for r in paired)
        cpu = statistics.median(rounds[r][1] / by["empty"][r][1] for r in paired)
        line += "  %.3f  %.3f" % (mps, cpu)
    print(line)
PY
