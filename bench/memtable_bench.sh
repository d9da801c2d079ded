#!/usr/bin/env bash
# memtable_bench.sh - instructions per memtable insert of the queue's keys (issue 21)
#
# SYNOPSIS
#   bench/memtable_bench.sh
#   MEMTABLE_PUTS=50000 bench/memtable_bench.sh
#
# DESCRIPTION
#   Builds memtable-bench (bench/memtable_bench.cc) in build-release/ (Release), then
#   runs it under `valgrind --tool=callgrind` four times, MEMTABLE_PUTS (20,000) puts
#   each: keys strictly increasing (one prefix) and keys increasing within 64 prefixes
#   drawn at random (the queue's pattern: a job's partitions interleave), each with and
#   without the 6-byte insert hint queue.cc sets. Prints, per run, the instructions
#   (Ir) inside rocksdb::MemTable::Add per put and the key comparisons per put
#   (calls of MemTable::KeyComparator), from the callgrind dump. Instruction counts
#   do not depend on the machine's load. bench/RESULTS.md has a run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build-release}
puts=${MEMTABLE_PUTS:-20000}
say() { printf 'bench: %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { say "valgrind is needed"; exit 1; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  say "building memtable-bench (Release) in $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target memtable-bench -j"$(nproc)" >/dev/null
fi
work=$(mktemp -d /tmp/volley-memtable.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '| keys | hint | Ir in MemTable::Add per put | key comparisons per put |\n| --- | --- | ---: | ---: |\n'
for prefixes in 1 64; do
  for hint in 1 0; do
    out=$work/cg.$prefixes.$hint
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$build/bench/memtable-bench" "$work/db" "$hint" "$prefixes" "$puts" >/dev/null 2>&1
    /usr/bin/python3 - "$out" "$puts" "$prefixes" "$hint" <<'PY'
import re, subprocess, sys
out, puts, prefixes, hint = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=caller", out],
                      capture_output=True, text=True, check=True).stdout
# In the caller tree each function's block lists its callers ("< caller (Nx)") and
# then the function itself ("* function"): the comparator's calls are the sum of
# its callers' counts; MemTable::Add's instructions are on its own line.
add = comparisons = 0
callers = []
for line in text.splitlines():
    if not line.strip():
        callers = []
        continue
    count = re.match(r"\s*([\d,]+) ", line)
    if count is None:
        continue
    if re.search(r"\s<\s", line):
        calls = re.search(r"\(([\d,]+)x\)", line)
        callers.append(int(calls.group(1).replace(",", "")) if calls else 0)
    elif re.search(r"\s\*\s", line):
        if "MemTable::Add(" in line and add == 0:
            add = int(count.group(1).replace(",", ""))
        if "MemTable::KeyComparator::operator()(char const*, char const*)" in line:
            comparisons = sum(callers)
        callers = []
keys = ("strictly increasing, one prefix" if prefixes == "1"
        else "increasing within %s prefixes, interleaved" % prefixes)
print("| %s | %s | %s | %.1f |" % (keys, "yes" if hint == "1" else "no",
                                  format(add // puts, ","), comparisons / puts))
PY
  done
done
