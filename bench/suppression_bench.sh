#!/usr/bin/env bash
# suppression_bench.sh - the suppression list at 10 million entries: load, memory, lookups (issue 18)
#
# SYNOPSIS
#   bench/suppression_bench.sh
#   SUPP_ENTRIES=1000000 SUPP_LOOKUPS=200000 bench/suppression_bench.sh
#
# DESCRIPTION
#   Builds suppression-bench (bench/suppression_bench.cc) in build-release/ (Release),
#   then, in a fresh folder under TMPDIR:
#     1. suppression-bench load: SUPP_ENTRIES (10,000,000) entries added in batches of
#        SUPP_BATCH (5000), one synced write each (as `volleyctl suppress import` sends
#        them through the admin API, without the HTTP): load time and rate, the loading
#        process's VmRSS and VmHWM;
#     2. the folder's size on disk (du, apparent and allocated);
#     3. suppression-bench lookup in a new process (the list as volleyd opens it, default
#        options: 32 MiB block cache): SUPP_LOOKUPS (1,000,000) Checks of addresses on
#        the list and as many not on it, shuffled, each with a From domain (a miss is
#        four point lookups), timed one by one: median, p99, p99.9 of hits and misses,
#        lookups per second on one thread and on SUPP_THREADS (2), VmRSS and VmHWM
#        after open and at the end.
#     4. step 3 once for each of SUPP_FILTER_BITS ("0 10"): [suppression]
#        filter_bits_per_key, 0 being no filter (every Check from RocksDB) and 10 the
#        default; each run also prints Open's time (it builds the filter), the filter's
#        size and RocksDB reads per lookup. Before them the list is compacted
#        (suppression-bench compact), so that neither run pays for the load's
#        compactions.
#   Prints the "key value" lines of every run on stdout; bench/RESULTS.md has a run.
#   SUPP_KEEP=1 keeps the folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build-release}
entries=${SUPP_ENTRIES:-10000000}
batch=${SUPP_BATCH:-5000}
lookups=${SUPP_LOOKUPS:-1000000}
threads=${SUPP_THREADS:-2}

say() { printf 'bench: %s\n' "$*" >&2; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  say "building suppression-bench (Release) in $build"
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$build" --target suppression-bench >/dev/null
fi
grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt" || { say "not a Release tree: $build"; exit 1; }
bin="$build/bench/suppression-bench"
work=$(mktemp -d "${TMPDIR:-/tmp}/volley-suppression-bench.XXXXXX")
[ "${SUPP_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
list="$work/suppression"

echo "tree $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "loading $entries entries into $list"
"$bin" load --dir "$list" --entries "$entries" --batch "$batch"
echo "disk_apparent $(du -sh --apparent-size "$list" | cut -f1)"
echo "disk_allocated $(du -sh "$list" | cut -f1)"
say "compacting $list"
"$bin" compact --dir "$list"
for bits in ${SUPP_FILTER_BITS:-0 10}; do
  say "looking up $lookups hits and $lookups misses in a fresh process, filter_bits_per_key $bits"
  "$bin" lookup --dir "$list" --entries "$entries" --lookups "$lookups" --threads "$threads" \
    --filter-bits "$bits"
done
