# lib.sh - what the benchmark scripts share (sourced, not run)
#
#   root=...; build=...; py=/usr/bin/python3
#   . "$root/bench/lib.sh"
#   bench_binaries          # build (unless BENCH_SKIP_BUILD=1), set $volleyd $sink $load
#   bench_tree_info         # one line: commit, CPUs, kernel, load average
#
# Sets an EXIT trap that stops $sampler_pid, $volleyd_pid and $sink_pid and removes
# $work (kept with BENCH_KEEP=1). Everything the benchmarks start listens on 127.0.0.1.

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: FAILED: %s\n' "$*" >&2; exit 1; }

work=""
volleyd_pid=""
sink_pid=""
sampler_pid=""

# stop PID NAME - SIGTERM, wait up to 30 s (a volleyd finishing transactions, RocksDB
# flushing), then SIGKILL.
stop() {
  local pid=$1 name=$2 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) did not stop on SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop "$sampler_pid" sampler
  stop "$volleyd_pid" volleyd
  stop "$sink_pid" volley-sink
  if [ -n "$work" ] && [ -d "$work" ]; then
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
      say "kept $work"
    else
      rm -rf "$work"
    fi
  fi
  exit "$status"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_binaries - build the Release binaries in $build (configured if missing) unless
# BENCH_SKIP_BUILD=1, check it is a Release tree, and set $volleyd, $sink and $load.
bench_binaries() {
  local b
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "building Release (volleyd, volley-sink, volley-load) in $build"
    if [ ! -f "$build/build.ninja" ]; then
      cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    fi
    cmake --build "$build" --target volleyd volley-sink volley-load >/dev/null
  fi
  grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt" ||
    die "$build is not a Release tree"
  volleyd="$build/engine/volleyd"
  sink="$build/tools/sink/volley-sink"
  load="$build/bench/volley-load"
  for b in "$volleyd" "$sink" "$load"; do
    [ -x "$b" ] || die "missing $b"
  done
}

bench_tree_info() {
  local rev
  if rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null); then
    [ -z "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ] || rev="$rev+local changes"
    say "tree $rev; $(nproc) CPUs; kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  fi
}

clk_tck=$(getconf CLK_TCK)

# free_port - a 127.0.0.1 TCP port nobody holds right now (bound, then released).
free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# cpu_ticks PID - utime+stime of PID in clock ticks (fields 14 and 15 of /proc/PID/stat,
# counted after the ")" that ends the command name).
cpu_ticks() {
  local rest
  rest=$(sed 's/^.*) //' "/proc/$1/stat")
  set -- $rest
  echo $(( ${12} + ${13} ))
}

# wait_idle PID - return once PID has used under 0.05 CPU s in one second (at most
# a minute): its start-up done, or the last of its work written.
wait_idle() {
  local i c0
  for i in $(seq 60); do
    c0=$(cpu_ticks "$1")
    sleep 1
    [ $(( $(cpu_ticks "$1") - c0 )) -le $(( clk_tck / 20 )) ] && return 0
  done
}

# status_kb PID FIELD - a kB value from /proc/PID/status (VmRSS, VmHWM).
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# admin_section - [admin] and [metrics] tables on free ports: their default ports
# would clash with any other volleyd on the machine. [admin] only when this volleyd
# has an admin API (a build from before it refuses the section, so the docs of the
# tree decide); every build takes [metrics] listen.
admin_section() {
  if grep -q '^## \[admin\]' "$root/docs/config.md" 2>/dev/null; then
    printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$(free_port)"
  fi
  printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$(free_port)"
}

# start_volleyd CONFIG ERRFILE [SEEN] - start volleyd, wait for its "running" line beyond
# the SEEN (0) already in ERRFILE (up to 120 s: RocksDB may replay a large WAL).
start_volleyd() {
  local config=$1 err=$2 i c
  "$volleyd" --config "$config" 2>>"$err" >/dev/null &
  volleyd_pid=$!
  for i in $(seq 1200); do
    c=$(grep -c 'volleyd: info: running' "$err" 2>/dev/null || true)
    [ "${c:-0}" -gt "${3:-0}" ] && return 0
    kill -0 "$volleyd_pid" 2>/dev/null || die "volleyd exited: $(tail -5 "$err")"
    sleep 0.1
  done
  die "volleyd did not start: $(tail -5 "$err")"
}

# start_sink DIR PORT - volley-sink on 127.0.0.1:PORT, counters in DIR/sink.json; wait
# until it listens.
start_sink() {
  local dir=$1 port=$2 i
  "$sink" --listen "127.0.0.1:$port" --stats "$dir/sink.json" >"$dir/sink.out" 2>"$dir/sink.err" &
  sink_pid=$!
  for i in $(seq 100); do
    grep -q "listening on" "$dir/sink.err" 2>/dev/null && break
    kill -0 "$sink_pid" 2>/dev/null || die "volley-sink exited: $(cat "$dir/sink.err")"
    sleep 0.1
  done
  grep -q "listening on" "$dir/sink.err" || die "volley-sink did not start listening"
}
