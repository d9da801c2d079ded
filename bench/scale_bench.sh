#!/usr/bin/env bash
# scale_bench.sh - issue 16 at full size: a personalised campaign over 10,000 domains
# routed by DNS through nsd, beside the same campaign over 1,000 statically routed ones
#
# SYNOPSIS
#   bench/scale_bench.sh                        # full size, 3 runs: 2 minutes before issue 16's fixes
#   SCALE=small bench/scale_bench.sh            # 20,000 recipients / 2,000 domains: a quick check
#   SCALE_RUNS=1 SCALE_WAYS=dns bench/scale_bench.sh
#
#   Reproduce the figures of bench/RESULTS.md, "Many domains routed by DNS (issue 16)":
#     bench/scale_bench.sh >scale.md            # tables on stdout, progress on stderr
#
# DESCRIPTION
#   volley-sink listens on SINK_ADDRESSES (default 127.0.5.1-127.0.5.250, one port): it
#   stands for 250 mail hosts. It runs as SINK_PROCESSES (2) processes, each on its
#   share of the addresses, each under `ulimit -n SINK_NOFILE` or the hard limit when
#   that is lower: where the hard limit is 20,000 for everyone (the issue's machine,
#   and this VM, where even root may not raise it), one sink process could not hold
#   the ~20,000 connections volleyd may open. Two ways of sending into it, each run side by side,
#   SCALE_RUNS times, alternating which goes first (run 1: dns static, run 2: static dns,
#   ...), each with a fresh volleyd on an empty queue:
#
#     dns     RECIPIENTS personalised recipients (`volley-load run --personalised`:
#             every recipient has a first_name, so every message is its own transaction
#             with one recipient) over DNS_DOMAINS domains d0001.test ..., routed by DNS:
#             [routes] empty, [dns] servers = the nsd started here, allow_loopback =
#             true, [smtp] port = the sink's. nsd (loopback, a free port) serves one zone,
#             `test.`, written by `volley-load zone`: every domain dNNNN.test has an MX of
#             its own, mx.dNNNN.test, whose A record is one of the sink's addresses
#             (round robin). So every domain is a destination (a site) of its own:
#             10,000 destinations, each allowed [smtp] max_connections_per_destination
#             (20 by default) connections.
#     static  RECIPIENTS personalised recipients over STATIC_DOMAINS domains with the
#             [routes] of `volley-load routes` (round robin over the sink's addresses: 250
#             destinations), as compare_bench.sh scenario 1. No DNS.
#
#   volleyd runs under `ulimit -n VOLLEYD_NOFILE` (20,000, soft and hard: the issue's
#   machine) with everything else at its default (shards: one per CPU; window 20,000;
#   [dns] max_pending 1,000; retry after 5 minutes), plus DNS_EXTRA (lines of the [dns]
#   table) and VOLLEYD_EXTRA (more TOML tables) when set: to try a setting, not for the
#   reference figures.
#
#   A run ends when every recipient has an outcome in the delivery log (volley-load
#   run: a deferral is an outcome; its retry would come 5 minutes later), when volleyd
#   exits by itself (recorded as such, with its status and the last lines it wrote),
#   or after RUN_TIMEOUT. Then volleyd gets SIGTERM, and the time it takes to exit is
#   recorded (SIGKILL after STOP_TIMEOUT seconds, recorded too).
#
#   Recorded per run and way:
#     recipients/s      recipients delivered / seconds from the drop to the last outcome
#                       (volley-load's elapsed_seconds, intake included)
#     messages/s        messages (SMTP transactions) that delivered, counted in the
#                       delivery log (distinct txn: volley-load's messages_delivered) /
#                       the same seconds. One recipient per transaction here, so the
#                       two are equal when everything is delivered once: both are
#                       printed, as a check, and the sinks' count per run
#     first attempt     share of the recipients delivered at their first attempt
#     deferrals         the delivery log's deferred records by enhanced code and reason
#                       (domain names folded to dNNNN.test), and bounces likewise
#     volleyd CPU       volleyd's user + system CPU seconds per 10,000 delivered
#                       recipients (volley-load's volleyd_cpu_seconds_per_10k; one
#                       recipient per message here, so per 10,000 messages too)
#     peak RSS          VmHWM of /proc/PID/status at the end (volleyd is fresh each run)
#     peak fds          the most entries of /proc/PID/fd seen, sampled every
#                       SAMPLE_INTERVAL (0.2) s, and the most volley_connections_open seen
#                       (metrics, scraped every second)
#     DNS lookups/s     increase of volley_dns_queries_total (every result: questions the
#                       resolver answered, docs/metrics.md) / the run's seconds; also the
#                       cache's hit share (volley_dns_cache_lookups_total) and the increase
#                       of every other volley_dns_* counter the build exports
#     UDP drops         answers the kernel threw away because the resolver's UDP socket
#                       was full (the `drops` of /proc/net/udp for the sockets connected
#                       to nsd, sampled every second) and at nsd's own socket: a lost
#                       answer is a lookup that times out (4.4.3 after [dns] timeout x tries)
#     stop              seconds from SIGTERM to exit, and whether it took SIGKILL; with
#                       STOP_AFTER=S, SIGTERM comes S seconds after the drop, under load,
#                       with what was in flight then (connections, descriptors, the
#                       volley_dns_* gauges), and how long volleyd took to go
#   and the ratio dns/static of recipients/s within each run, median over the runs.
#   Medians (min .. max) over the runs. Markdown on stdout, progress on stderr.
#
#   Everything listens and connects on 127.0.0.0/8; every domain is under .test; the
#   only DNS server asked is the nsd started here on loopback. Every process started
#   here is stopped on exit, also on failure or Ctrl-C, and the temporary folder is
#   removed (kept with BENCH_KEEP=1).
#
# ENVIRONMENT
#   SCALE=full                full: RECIPIENTS 200000, DNS_DOMAINS 10000;
#                             small: RECIPIENTS 20000, DNS_DOMAINS 2000
#   RECIPIENTS, DNS_DOMAINS   override the SCALE's
#   STATIC_DOMAINS=1000       domains of the static way
#   SCALE_RUNS=3              runs (each: both ways)
#   SCALE_WAYS="dns static"   ways to run
#   MESSAGE_SIZE=1024         volley-load --size
#   SINK_ADDRESSES=127.0.5.1-127.0.5.250
#   SINK_PROCESSES=2          volley-sink processes, the addresses split between them
#   SINK_THREADS=             volley-sink --threads, when set
#   SINK_NOFILE=200000        each sink's ulimit -n (the hard limit, when that is lower)
#   VOLLEYD_NOFILE=20000      volleyd's ulimit -n (soft and hard)
#   VOLLEYD_PRELOAD=          LD_PRELOAD for volleyd alone (e.g. another malloc), when set
#   DNS_TTL=3600              TTL of the zone's records
#   DNS_EXTRA=                lines added to volleyd's [dns] table (dns way)
#   VOLLEYD_EXTRA=            TOML added to volleyd's config (both ways)
#   SMTP_EXTRA=               lines of volleyd's [smtp] table (both ways), e.g.
#                             "max_transactions_in_flight = 1"
#   SAMPLE_INTERVAL=0.2       seconds between samples of volleyd's descriptors
#   RUN_TIMEOUT=900           seconds a run may take (300 for SCALE=small)
#   STOP_TIMEOUT=60           seconds volleyd may take to exit after SIGTERM
#   STOP_AFTER=               SIGTERM volleyd this many seconds after the drop (stop under load)
#   IDLE_AFTER=S              leave volleyd running S seconds after the campaign, measured in
#                             IDLE_WINDOW (10) s windows: its CPU (ms a second) and the
#                             destinations it holds (GET /destinations?all=1's total, asked at
#                             each window's start); printed per run (progress on stderr)
#   BENCH_KEEP=1              keep the temporary folder (delivery logs, stderr of each run)
#   BENCH_SKIP_BUILD=1        do not run the (incremental) build
#   BENCH_BUILD=<root>/build-release
#
# EXIT STATUS
#   0 when every run ended (whatever its outcomes: the tables say what happened);
#   1 when the set-up failed. A run in which volleyd died, or did not stop on SIGTERM,
#   is recorded and the bench goes on.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD:-"$root/build-release"}
py=/usr/bin/python3
scale=${SCALE:-full}
case $scale in
  full) def_recipients=200000 def_dns_domains=10000 def_timeout=900 ;;
  small) def_recipients=20000 def_dns_domains=2000 def_timeout=300 ;;
  *) printf 'bench: SCALE must be full or small, not "%s"\n' "$scale" >&2; exit 2 ;;
esac
recipients=${RECIPIENTS:-$def_recipients}
dns_domains=${DNS_DOMAINS:-$def_dns_domains}
static_domains=${STATIC_DOMAINS:-1000}
runs=${SCALE_RUNS:-3}
ways=${SCALE_WAYS:-"dns static"}
size=${MESSAGE_SIZE:-1024}
sink_addresses=${SINK_ADDRESSES:-127.0.5.1-127.0.5.250}
sink_threads=${SINK_THREADS:-}
sink_nofile=${SINK_NOFILE:-200000}
sink_processes=${SINK_PROCESSES:-2}
volleyd_nofile=${VOLLEYD_NOFILE:-20000}
volleyd_preload=${VOLLEYD_PRELOAD:-}
dns_ttl=${DNS_TTL:-3600}
dns_extra=${DNS_EXTRA:-}
volleyd_extra=${VOLLEYD_EXTRA:-}
smtp_extra=${SMTP_EXTRA:-}
sample_interval=${SAMPLE_INTERVAL:-0.2}
run_timeout=${RUN_TIMEOUT:-$def_timeout}
stop_timeout=${STOP_TIMEOUT:-60}

. "$root/bench/lib.sh"

nsd_bin=$(command -v nsd || echo /usr/sbin/nsd)
[ -x "$nsd_bin" ] || die "nsd is not installed: run scripts/install-deps (package nsd)"

export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
bench_binaries
bench_tree_info
volleyd_real=$volleyd

work=$(mktemp -d /tmp/volley-scale-bench.XXXXXX)
results="$work/results.jsonl"
: >"$results"
nsd_pid=""

sink_pids=()
scale_cleanup() {
  local status=$? p
  set +e
  trap - EXIT
  stop "$nsd_pid" nsd
  for p in "${sink_pids[@]:1}"; do stop "$p" volley-sink; done
  (exit "$status")
  bench_cleanup
}
trap scale_cleanup EXIT

say "SCALE=$scale: $recipients personalised recipients; dns: $dns_domains domains by DNS; static: $static_domains domains by [routes]; $runs run(s) of: $ways"
say "volleyd under ulimit -n $volleyd_nofile; $sink_processes sink processes asking ulimit -n $sink_nofile (the hard limit, $(ulimit -Hn), if lower); $(nproc) CPUs"

# volleyd under the descriptor limit: a wrapper that sets it and execs volleyd, so
# that lib.sh's start_volleyd (and its $volleyd_pid) work unchanged.
cat >"$work/volleyd-limited" <<EOF
#!/bin/bash
ulimit -n $volleyd_nofile || { echo "volleyd-limited: cannot set ulimit -n $volleyd_nofile" >&2; exit 111; }
${volleyd_preload:+export LD_PRELOAD=$volleyd_preload}
exec "$volleyd_real" "\$@"
EOF
chmod +x "$work/volleyd-limited"
volleyd="$work/volleyd-limited"

# ---------------------------------------------------------------- the sink
# SINK_PROCESSES volley-sink processes, each on its share of the addresses (one port):
# each has a descriptor limit of its own, so that the sink side can hold more
# connections than volleyd may open even where the hard limit cannot be raised.
sink_port=$(free_port)
mapfile -t listen < <("$load" addresses --sink-addresses "$sink_addresses" --port "$sink_port")
[ "${#listen[@]}" -gt 0 ] || die "volley-load addresses gave nothing for $sink_addresses"
[ "$sink_processes" -ge 1 ] && [ "$sink_processes" -le "${#listen[@]}" ] ||
  die "SINK_PROCESSES must be 1..${#listen[@]}"
sink_pids=()
sink_urls=()
per=$(( (${#listen[@]} + sink_processes - 1) / sink_processes ))
for k in $(seq 0 $((sink_processes - 1))); do
  part=("${listen[@]:$((k * per)):$per}")
  [ "${#part[@]}" -gt 0 ] || break
  sink_flags=(--http 127.0.0.1:0 --stats "$work/sink-$k.json")
  [ -n "$sink_threads" ] && sink_flags+=(--threads "$sink_threads")
  for a in "${part[@]}"; do sink_flags+=(--listen "$a"); done
  ( ulimit -n "$sink_nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$sink" "${sink_flags[@]}" ) \
    >"$work/sink-$k.out" 2>"$work/sink-$k.err" &
  sink_pids+=($!)
  [ "$k" = 0 ] && sink_pid=$!   # lib.sh's cleanup stops this one, scale_cleanup the others
  url=""
  for i in $(seq 100); do
    url=$(sed -n 's|^volley-sink: stats on \(http://[^/ ]*\)/stats$|\1|p' "$work/sink-$k.err" | head -1)
    [ -n "$url" ] && break
    kill -0 "${sink_pids[$k]}" 2>/dev/null || die "volley-sink exited: $(tail -5 "$work/sink-$k.err")"
    sleep 0.1
  done
  [ -n "$url" ] || die "volley-sink did not start: $(tail -5 "$work/sink-$k.err")"
  [ "$(grep -c 'listening on' "$work/sink-$k.err" || true)" -ge "${#part[@]}" ] ||
    die "volley-sink did not listen on all ${#part[@]} of its addresses"
  sink_urls+=("$url")
  say "volley-sink $((k + 1))/$sink_processes (pid ${sink_pids[$k]}) on ${part[0]%:*}..${part[-1]%:*} (${#part[@]} addresses) port $sink_port, counters at $url/stats, ulimit -n $(awk '/Max open files/ {print $4}' "/proc/${sink_pids[$k]}/limits")"
done
sink_url=$(IFS=,; echo "${sink_urls[*]}")

# ---------------------------------------------------------------- nsd
need_dns=0
[[ " $ways " == *" dns "* ]] && need_dns=1
if [ "$need_dns" = 1 ]; then
  nsd_dir="$work/nsd"
  mkdir -p "$nsd_dir"
  "$load" zone --domains "$dns_domains" --sink-addresses "$sink_addresses" --ttl "$dns_ttl" \
    --out "$nsd_dir/test.zone" 2>/dev/null || die "volley-load zone failed"
  if command -v nsd-checkzone >/dev/null; then
    nsd-checkzone test "$nsd_dir/test.zone" >"$nsd_dir/checkzone.out" 2>&1 ||
      die "nsd-checkzone: $(tail -3 "$nsd_dir/checkzone.out")"
  fi
  for attempt in 1 2 3; do
    nsd_port=$(free_port)
    cat >"$nsd_dir/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@$nsd_port
  username: ""
  chroot: ""
  database: ""
  zonesdir: "$nsd_dir"
  pidfile: "$nsd_dir/nsd.pid"
  xfrdfile: "$nsd_dir/xfrd.state"
  zonelistfile: "$nsd_dir/zone.list"
  logfile: "$nsd_dir/nsd.log"
  server-count: 1
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "test"
  zonefile: "$nsd_dir/test.zone"
EOF
    "$nsd_bin" -d -c "$nsd_dir/nsd.conf" >"$nsd_dir/nsd.out" 2>&1 &
    nsd_pid=$!
    # Up when it answers the SOA of test. over UDP.
    if "$py" - "$nsd_port" "$nsd_pid" <<'EOF'; then break; fi
import os, socket, struct, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
q = struct.pack("!HHHHHH", 0x5ca1, 0, 1, 0, 0, 0) + b"\x04test\x00" + struct.pack("!HH", 6, 1)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(q, ("127.0.0.1", port))
            r = s.recv(4096)
            if r[:2] == q[:2] and struct.unpack("!H", r[6:8])[0] >= 1 and r[3] & 0xF == 0:
                sys.exit(0)
        except OSError:
            pass
    time.sleep(0.1)
sys.exit(1)
EOF
    stop "$nsd_pid" nsd
    nsd_pid=""
  done
  [ -n "$nsd_pid" ] || die "nsd did not answer for test.: $(tail -5 "$nsd_dir/nsd.out" "$nsd_dir/nsd.log" 2>/dev/null)"
  say "nsd (pid $nsd_pid) on 127.0.0.1:$nsd_port serving test. ($dns_domains domains, TTL $dns_ttl)"
fi

"$load" routes --domains "$static_domains" --sink-addresses "$sink_addresses" --port "$sink_port" \
  --out "$work/routes.toml" 2>/dev/null || die "volley-load routes failed"

# ---------------------------------------------------------------- one run of a way
# run_way.py - runs volley-load against a running volleyd, samples volleyd meanwhile
# (descriptors, VmHWM, metrics), watches that it stays up, and prints one JSON object.
cat >"$work/run_way.py" <<'EOF'
import collections, json, os, re, signal, subprocess, sys, threading, time, urllib.request
(way, rep, pid, metrics_port, spool, logdir, n, domains, size, job, timeout, sink_url,
 interval, load, nsd_port) = sys.argv[1:16]
pid, n, interval, nsd_port = int(pid), int(n), float(interval), int(nsd_port or 0)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def get(url, t=5):
    with opener.open(url, timeout=t) as r:
        return r.read().decode("utf-8", "replace")

def metrics():
    """{name: {labels text: value}} of volleyd's /metrics, or None."""
    try:
        text = get("http://127.0.0.1:%s/metrics" % metrics_port)
    except OSError:
        return None
    out = collections.defaultdict(dict)
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                out[m.group(1)][m.group(2) or ""] = float(m.group(3))
            except ValueError:
                pass
    return out

def total(ms, name, label=None):
    if not ms or name not in ms:
        return None
    return sum(v for k, v in ms[name].items() if label is None or label in k)

def sink_stats(key):
    """The sum of a counter over the sink processes (None if one does not answer)."""
    try:
        return sum(json.loads(get(u + "/stats", 2))[key] for u in sink_url.split(","))
    except (OSError, ValueError, KeyError):
        return None

def sink_messages():
    return sink_stats("messages")

def status_kb(field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None

def alive():
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def udp_sockets():
    """{inode: (local port, remote port, drops)} of /proc/net/udp (drops: datagrams the
    kernel threw away because the socket's receive buffer was full)."""
    out = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                x = line.split()
                out[x[9]] = (int(x[1].split(":")[1], 16), int(x[2].split(":")[1], 16), int(x[-1]))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return out

def udp_errors():
    """The kernel's Udp RcvbufErrors (every socket of the machine)."""
    try:
        lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None

def nsd_drops(socks):
    return sum(d for port, _, d in socks.values() if port == nsd_port) if nsd_port else 0

# Drops at the resolver's sockets: c-ares connects its UDP sockets to the server, so
# they are the ones whose remote port is nsd's. Sampled with the rest (c-ares closes
# an idle socket, and its count with it): the most seen per socket.
client_drops = {}

def note_client_drops(socks):
    for inode, (_, rport, d) in socks.items():
        if nsd_port and rport == nsd_port and inode not in udp0:
            client_drops[inode] = max(client_drops.get(inode, 0), d)

udp0 = udp_sockets()
udp_err0 = udp_errors()
peak = {"fds": 0, "hwm_kb": 0, "samples": 0, "gauges": {}}
stop = threading.Event()

def sampler():
    last_scrape = 0.0
    while not stop.is_set():
        try:
            peak["fds"] = max(peak["fds"], len(os.listdir("/proc/%d/fd" % pid)))
            peak["samples"] += 1
        except OSError:
            pass
        peak["hwm_kb"] = max(peak["hwm_kb"], status_kb("VmHWM") or 0)
        if time.monotonic() - last_scrape >= 1.0:
            last_scrape = time.monotonic()
            note_client_drops(udp_sockets())
            ms = metrics()
            c = sink_stats("connections")
            if c is not None:
                peak["sink_connections"] = max(peak.get("sink_connections", 0), c)
            # every gauge-like series of interest: the most seen
            for name in ("volley_connections_open",) + tuple(k for k in (ms or {}) if k.startswith("volley_dns_") and not k.endswith("_total")):
                v = total(ms, name)
                if v is not None:
                    peak["gauges"][name] = max(peak["gauges"].get(name, 0), v)
        stop.wait(interval)

m0 = metrics()
s0 = sink_messages()
t = threading.Thread(target=sampler, daemon=True)
t.start()
t0 = time.monotonic()
out = open(os.path.join(logdir, "..", "load.json"), "w")
err = open(os.path.join(logdir, "..", "load.err"), "w")
child = subprocess.Popen([load, "run", "--spool", spool, "--log", logdir, "--recipients", str(n),
                          "--domains", domains, "--size", size, "--personalised", "--job", job,
                          "--json", "--timeout", timeout, "--no-progress", "--volleyd-pid", str(pid)],
                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)
died_after = None
gone_at = None
stop_after = float(os.environ.get("STOP_AFTER") or 0)
sigterm_at = None        # STOP_AFTER: when volleyd was sent SIGTERM under load
under_load = None        # and what was in flight then
while child.poll() is None:
    if stop_after and sigterm_at is None and time.monotonic() - t0 >= stop_after and alive():
        ms = metrics()
        under_load = {"connections_open": total(ms, "volley_connections_open"),
                      "fds": len(os.listdir("/proc/%d/fd" % pid))}
        for name in (ms or {}):
            if name.startswith("volley_dns_") and not name.endswith("_total"):
                under_load[name] = total(ms, name)
        sigterm_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
    if sigterm_at is not None and alive() and time.monotonic() - sigterm_at > float(os.environ.get("STOP_TIMEOUT") or 60):
        child.send_signal(signal.SIGTERM)   # volleyd hangs: the bench script kills it
        break
    if not alive():
        gone_at = time.monotonic()
        if sigterm_at is None:
            died_after = gone_at - t0   # by itself: a crash or a fatal error
        time.sleep(3)   # let volley-load read the last outcomes
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        break
    time.sleep(0.2)
child.wait()
wall = time.monotonic() - t0
# Stopped under load: how long after the SIGTERM volleyd was gone (up to STOP_TIMEOUT).
stop_under_load_s = None
if sigterm_at is not None:
    limit = float(os.environ.get("STOP_TIMEOUT") or 60)
    while alive() and time.monotonic() - sigterm_at < limit:
        time.sleep(0.05)
    stop_under_load_s = None if alive() else (gone_at or time.monotonic()) - sigterm_at
m1 = metrics()
udp1 = udp_sockets()
note_client_drops(udp1)
udp_drops = {"nsd": nsd_drops(udp1) - nsd_drops(udp0), "volleyd": sum(client_drops.values()),
             "volleyd_sockets": len(client_drops),
             "machine_rcvbuf_errors": (udp_errors() - udp_err0) if udp_err0 is not None else None}
time.sleep(1.2)
s1 = sink_messages()
stop.set()
t.join(5)
out.close()
err.close()
try:
    report = json.load(open(os.path.join(logdir, "..", "load.json")))
except (OSError, ValueError):
    report = None

# The delivery log: outcomes of this job.
reasons = collections.Counter()
statuses = collections.Counter()
first_delivered = 0
latest = {}
last_ts = None
fold = lambda s: re.sub(r"\b(mx\.)?d\d{4,}\.test", "dNNNN.test", s)
fold_ip = lambda s: re.sub(r"127\.\d+\.\d+\.\d+", "127.x.x.x", s)
for name in sorted(os.listdir(logdir)):
    if not name.startswith("deliveries"):
        continue
    with open(os.path.join(logdir, name), errors="replace") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("job") != job:
                continue
            st = r.get("status")
            statuses[st] += 1
            if st == "delivered" and r.get("attempt") == 1:
                first_delivered += 1
            if st != "delivered":
                reasons["%s %s %s" % (st, r.get("enhanced") or "-", fold_ip(fold(r.get("response") or ""))[:100])] += 1
            latest[r.get("line")] = st
            last_ts = r.get("ts") or last_ts
# When volley-load has no report (volleyd died and it was stopped): seconds from the
# drop (the job file's time in accepted/) to the last record of the job.
elapsed_log = None
try:
    import datetime
    dropped = os.stat(os.path.join(spool, "accepted", job + ".job")).st_mtime
    if last_ts:
        elapsed_log = datetime.datetime.strptime(last_ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp() - dropped
except (OSError, ValueError):
    pass
dns_counters = {}
for name in sorted(set(m0 or {}) | set(m1 or {})):
    if name.startswith("volley_dns_") and name.endswith("_total"):
        a, b = total(m0, name), total(m1, name)
        if a is not None and b is not None:
            dns_counters[name] = b - a
def delta(name, label=None):
    a, b = total(m0, name, label), total(m1, name, label)
    return None if a is None or b is None else b - a

def cpu_ticks():
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None

def destinations_held():
    """GET /destinations?all=1's total: the destinations the shards hold."""
    try:
        conf = open(os.path.join(spool, "..", "volley.toml")).read()
        port = re.search(r'\[admin\]\s*listen = "127\.0\.0\.1:(\d+)"', conf).group(1)
        return json.loads(get("http://127.0.0.1:%s/destinations?all=1&limit=1" % port))["total"]
    except (OSError, ValueError, AttributeError, KeyError):
        return None

# IDLE_AFTER: volleyd left running after the campaign, IDLE_WINDOW-second windows:
# its CPU in each (one GET /destinations?all=1 included, at the window's start) and
# the destinations it holds.
idle = []
idle_after = float(os.environ.get("IDLE_AFTER") or 0)
idle_window = float(os.environ.get("IDLE_WINDOW") or 10)
hz = os.sysconf("SC_CLK_TCK")
idle_t0 = time.monotonic()
while idle_after and alive() and time.monotonic() - idle_t0 < idle_after:
    held = destinations_held()
    c0, w0 = cpu_ticks(), time.monotonic()
    time.sleep(idle_window)
    c1, w1 = cpu_ticks(), time.monotonic()
    if c0 is None or c1 is None:
        break
    idle.append({"at_s": round(w0 - idle_t0, 1), "destinations": held,
                 "cpu_ms_per_s": round((c1 - c0) * 1000.0 / hz / (w1 - w0), 2)})
print(json.dumps({
    "idle": idle,
    "way": way, "rep": int(rep), "recipients": n, "domains": int(domains), "report": report,
    "wall_s": wall, "volleyd_died_after_s": died_after,
    "sink_messages": (s1 - s0) if s0 is not None and s1 is not None else None,
    "peak_fds": peak["fds"], "fd_samples": peak["samples"],
    "peak_hwm_kb": peak["hwm_kb"], "peak_gauges": peak["gauges"],
    "peak_sink_connections": peak.get("sink_connections"),
    "dns_queries": delta("volley_dns_queries_total"),
    "dns_servfail": delta("volley_dns_queries_total", 'result="servfail"'),
    "dns_cache_hits": delta("volley_dns_cache_lookups_total", 'result="hit"'),
    "dns_cache_misses": delta("volley_dns_cache_lookups_total", 'result="miss"'),
    "dns_counters": dns_counters,
    "connections_opened": delta("volley_connections_opened_total"),
    "udp_drops": udp_drops,
    "stop_after_s": stop_after or None, "stop_under_load_s": stop_under_load_s, "in_flight_at_sigterm": under_load,
    "metrics_after": m1 is not None,
    "statuses": statuses, "latest": collections.Counter(latest.values()), "elapsed_log_s": elapsed_log,
    "first_attempt_delivered": first_delivered, "reasons": reasons.most_common(12)}))
EOF

volleyd_config() {  # WAY DIR
  local way=$1 dir=$2
  printf '[paths]\nspool = "%s/spool"\nqueue = "%s/queue"\nlog = "%s/log"\n\n' "$dir" "$dir" "$dir"
  admin_section
  echo
  if [ "$way" = dns ]; then
    printf '[smtp]\nport = %s\n%s\n\n' "$sink_port" "$smtp_extra"
    printf '[dns]\nservers = ["127.0.0.1:%s"]\nallow_loopback = true\n%s\n\n' "$nsd_port" "$dns_extra"
    printf '[routes]\n\n'
  else
    [ -n "$smtp_extra" ] && printf '[smtp]\n%s\n\n' "$smtp_extra"
    grep -v '^#' "$work/routes.toml"
    echo
  fi
  printf '%s\n' "$volleyd_extra"
}

# run_way WAY REP
run_way() {
  local way=$1 rep=$2 dir="$work/$1-$2" domains m_port line t0 t1 rc=0 killed=0 stop_s died=0
  domains=$dns_domains
  [ "$way" = static ] && domains=$static_domains
  mkdir -p "$dir"
  volleyd_config "$way" "$dir" >"$dir/volley.toml"
  m_port=$(sed -n '/^\[metrics\]/,/^\[/ s/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$dir/volley.toml" | head -1)
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  say "  $way: volleyd pid $volleyd_pid, $recipients recipients over $domains domains (load average $(cut -d' ' -f1 /proc/loadavg))"
  sleep 1
  line=$("$py" "$work/run_way.py" "$way" "$rep" "$volleyd_pid" "$m_port" "$dir/spool" "$dir/log" \
    "$recipients" "$domains" "$size" "scale-$way-$rep-$$" "$run_timeout" "$sink_url" \
    "$sample_interval" "$load" "$([ "$way" = dns ] && echo "${nsd_port:-0}" || echo 0)") || die "run_way.py failed for $way run $rep"
  # Stop: SIGTERM, then up to STOP_TIMEOUT s, then SIGKILL.
  t0=$(date +%s.%N)
  if kill -0 "$volleyd_pid" 2>/dev/null && [ "$(ps -o stat= -p "$volleyd_pid" | cut -c1)" != Z ]; then
    kill -TERM "$volleyd_pid" 2>/dev/null || true
    for i in $(seq $((stop_timeout * 10))); do
      kill -0 "$volleyd_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$volleyd_pid" 2>/dev/null; then
      killed=1
      say "  $way: volleyd did not exit within ${stop_timeout}s of SIGTERM: SIGKILL"
      kill -KILL "$volleyd_pid" 2>/dev/null || true
    fi
  else
    died=1
  fi
  wait "$volleyd_pid" 2>/dev/null || rc=$?
  t1=$(date +%s.%N)
  stop_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  [ "$died" = 1 ] && stop_s=null
  volleyd_pid=""
  "$py" - "$line" "$rc" "$killed" "$stop_s" "$dir/volleyd.err" <<'EOF' >>"$results"
import json, sys
r = json.loads(sys.argv[1])
r["exit_status"] = int(sys.argv[2])
r["stop_killed"] = sys.argv[3] == "1"
r["stop_s"] = json.loads(sys.argv[4])
lines = open(sys.argv[5], errors="replace").read().splitlines()
r["stderr_lines"] = len(lines)
r["stderr_emfile"] = sum(1 for l in lines if "Too many open files" in l or "EMFILE" in l)
r["stderr_tail"] = [l[:200] for l in lines if not any(w in l for w in (
    "intake", "warning: EHLO name", "admin API on", "volleyd: info: running"))][-6:]
print(json.dumps(r))
EOF
  "$py" - "$(tail -1 "$results")" <<'EOF' >&2
import json, sys
r = json.loads(sys.argv[1]); l = dict(r["latest"])
el = (r["report"] or {}).get("elapsed_seconds") or r.get("elapsed_log_s") or 0
cpu = (r["report"] or {}).get("volleyd_cpu_seconds_per_10k")
print("bench:   %s run %d: %s/%d delivered (%s at attempt 1), deferred %s, %.3f s, %.0f recipients/s, volleyd %s CPU s per 10,000 recipients, sink +%s; peak fds %d, VmHWM %.1f MiB; DNS %s queries (%s servfail), cache %s hit / %s miss; UDP drops %s; stop %s s%s%s%s"
      % (r["way"], r["rep"], l.get("delivered", 0), r["recipients"], r["first_attempt_delivered"], l.get("deferred", 0),
         el, l.get("delivered", 0) / el if el else 0, "%.3f" % cpu if cpu is not None else "-",
         r["sink_messages"], r["peak_fds"], r["peak_hwm_kb"] / 1024,
         r["dns_queries"], r["dns_servfail"], r["dns_cache_hits"], r["dns_cache_misses"], json.dumps(r["udp_drops"]), r["stop_s"],
         " (SIGKILL)" if r["stop_killed"] else "", ", exit %d" % r["exit_status"] if r["exit_status"] else "",
         ", VOLLEYD DIED after %.1f s" % r["volleyd_died_after_s"] if r["volleyd_died_after_s"] is not None else ""))
if r.get("idle"):
    print("bench:     idle after the run: " + ", ".join(
        "%+.0f s: %s destinations, %.1f ms CPU/s" % (w["at_s"], w["destinations"], w["cpu_ms_per_s"])
        for w in r["idle"]))
if r["stop_after_s"]:
    print("bench:     SIGTERM %.0f s after the drop with %s in flight: %s" % (
        r["stop_after_s"], json.dumps(r["in_flight_at_sigterm"]),
        "gone %.1f s later" % r["stop_under_load_s"] if r["stop_under_load_s"] is not None else "STILL RUNNING at the stop timeout"))
for reason, c in r["reasons"][:6]:
    print("bench:     %7d x %s" % (c, reason))
if r["volleyd_died_after_s"] is not None or r["stop_killed"] or r["stderr_emfile"]:
    print("bench:     stderr (%d lines naming EMFILE): %s" % (r["stderr_emfile"], " | ".join(r["stderr_tail"])))
EOF
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}

for rep in $(seq "$runs"); do
  order=($ways)
  if [ $((rep % 2)) = 0 ] && [ "${#order[@]}" -gt 1 ]; then
    order=("${order[@]:1}" "${order[0]}")
  fi
  say "run $rep/$runs: ${order[*]}"
  for w in "${order[@]}"; do
    case $w in
      dns | static) run_way "$w" "$rep" ;;
      *) die "SCALE_WAYS: unknown way \"$w\"" ;;
    esac
  done
done

# ---------------------------------------------------------------- summary
"$py" - "$results" "$scale" "$sink_addresses" "$volleyd_nofile" "$(nproc)" "$sink_processes" <<'EOF'
import collections, json, statistics, sys
path, scale, addresses, nofile, cpus, sinks = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
if not rows:
    sys.exit(0)

def el(r):
    return (r["report"] or {}).get("elapsed_seconds") or r.get("elapsed_log_s") or None

def delivered(r):
    return r["latest"].get("delivered", 0)

def rps(r):
    e = el(r)
    return delivered(r) / e if e else None

def log_messages(r):
    # Messages counted in the delivery log: distinct txn of the delivered records
    # (volley-load's messages_delivered; None from a volleyd without the field).
    return (r["report"] or {}).get("messages_delivered")

def mps(r):
    e = el(r)
    return log_messages(r) / e if e and log_messages(r) is not None else None

def dns_rate(r):
    e = el(r)
    return r["dns_queries"] / e if e and r["dns_queries"] is not None else None

def mr(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt % vals[0]
    return "%s (%s .. %s)" % (fmt % statistics.median(vals), fmt % min(vals), fmt % max(vals))

WAYS = [("dns", "by DNS (nsd), one MX host per domain"), ("static", "static [routes], 250 destinations")]
n = rows[0]["recipients"]
nruns = max(r["rep"] for r in rows)
print("## Many domains routed by DNS (issue 16): %s personalised recipients (SCALE=%s; median (min .. max) over %d runs)"
      % (f"{n:,}", scale, nruns))
print()
print("volley-sink on %s (%s processes); volleyd under ulimit -n %s, %s CPUs, otherwise its default config. "
      "recipients/s: delivered / seconds from the drop to the last outcome (a deferral is an outcome: its retry "
      "would come 5 minutes later); messages/s: messages (SMTP transactions) that delivered, counted in the "
      "delivery log (distinct txn) over the same seconds (one recipient per transaction here: equal when all "
      "is delivered once; the sinks' own count is in the per-run lines)." % (addresses, sinks, nofile, cpus))
print()
print("| way | domains | delivered | at attempt 1 | recipients/s | messages/s | seconds | volleyd CPU s / 10k recipients | peak RSS MiB | peak fds | peak connections | DNS lookups/s | DNS cache hits | stop s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for way, title in WAYS:
    w = [r for r in rows if r["way"] == way]
    if not w:
        continue
    hits = [r["dns_cache_hits"] / (r["dns_cache_hits"] + r["dns_cache_misses"]) * 100
            if r["dns_cache_hits"] is not None and (r["dns_cache_hits"] + r["dns_cache_misses"]) else None for r in w]
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        title, f"{w[0]['domains']:,}",
        mr([delivered(r) / r["recipients"] * 100 for r in w], "%.1f %%"),
        mr([r["first_attempt_delivered"] / r["recipients"] * 100 for r in w], "%.1f %%"),
        mr([rps(r) for r in w], "%.0f"), mr([mps(r) for r in w], "%.0f"), mr([el(r) for r in w], "%.1f"),
        mr([(r["report"] or {}).get("volleyd_cpu_seconds_per_10k") for r in w], "%.3f"),
        mr([max(r["peak_hwm_kb"], ((r["report"] or {}).get("volleyd_peak_rss_kb") or 0)) / 1024 for r in w], "%.1f"),
        mr([r["peak_fds"] for r in w], "%.0f"),
        mr([r["peak_gauges"].get("volley_connections_open") for r in w], "%.0f"),
        mr([dns_rate(r) for r in w], "%.0f") if way == "dns" else "-",
        mr(hits, "%.1f %%") if way == "dns" else "-",
        mr([r["stop_s"] for r in w], "%.1f")))
print()
per_run = []
for rep in range(1, nruns + 1):
    d = [rps(r) for r in rows if r["rep"] == rep and r["way"] == "dns"]
    s = [rps(r) for r in rows if r["rep"] == rep and r["way"] == "static"]
    if d and s and d[0] is not None and s[0]:
        per_run.append(d[0] / s[0])
if per_run:
    print("- dns / static recipients/s: %.2f (median of the per-run ratios %s)." % (
        statistics.median(per_run), ", ".join("%.2f" % x for x in per_run)))
for r in rows:
    if r.get("stop_after_s"):
        print("- %s run %d: SIGTERM %.0f s after the drop, with %s in flight: %s." % (
            r["way"], r["rep"], r["stop_after_s"], json.dumps(r["in_flight_at_sigterm"]),
            "volleyd was gone %.1f s later" % r["stop_under_load_s"] if r["stop_under_load_s"] is not None
            else "volleyd was STILL RUNNING at the stop timeout"))
bad = [r for r in rows if r["volleyd_died_after_s"] is not None or r["stop_killed"] or r["exit_status"]]
for r in bad:
    print("- %s run %d: %s%s%s; volleyd's last lines: %s" % (
        r["way"], r["rep"],
        "volleyd exited by itself %.1f s after the drop (status %d)" % (r["volleyd_died_after_s"], r["exit_status"])
        if r["volleyd_died_after_s"] is not None else "",
        "did not exit within the stop timeout after SIGTERM (SIGKILL)" if r["stop_killed"] else "",
        " exit status %d" % r["exit_status"] if r["exit_status"] and r["volleyd_died_after_s"] is None else "",
        " | ".join("`%s`" % l for l in r["stderr_tail"])))
print()
print("Outcomes other than delivered, by reason (delivery log records; domains folded to dNNNN.test), per run:")
print()
print("| way | run | records | reason |")
print("| --- | ---: | ---: | --- |")
any_reason = False
for r in sorted(rows, key=lambda r: (r["way"], r["rep"])):
    for reason, c in r["reasons"]:
        any_reason = True
        print("| %s | %d | %s | `%s` |" % (r["way"], r["rep"], f"{c:,}", reason.replace("|", "\\|")))
if not any_reason:
    print("| all | | 0 | none: every record is a delivery |")
print()
print("Per run:")
for r in sorted(rows, key=lambda r: (r["rep"], r["way"])):
    l = r["report"] or {}
    extra = ", ".join("%s +%.0f" % (k, v) for k, v in sorted(r["dns_counters"].items()))
    print("  run %d %-6s delivered %s/%s (attempt 1: %s), latest status %s, %s s, %s recipients/s, "
          "messages %s in the log, sink +%s, "
          "peak fds %d, VmHWM %.1f MiB, connections opened %s, stop %s s%s; %s; %s" % (
          r["rep"], r["way"], delivered(r), r["recipients"], r["first_attempt_delivered"], json.dumps(r["latest"]),
          "%.3f" % el(r) if el(r) else "-", "%.0f" % rps(r) if rps(r) else "-", log_messages(r),
          r["sink_messages"], r["peak_fds"],
          r["peak_hwm_kb"] / 1024, r["connections_opened"], r["stop_s"], " SIGKILL" if r["stop_killed"] else "",
          extra or "no volley_dns_* counters", "peak gauges " + json.dumps(r["peak_gauges"]) +
          ", the sink's open connections at most %s; UDP datagrams dropped for a full receive buffer: %s"
          % (r.get("peak_sink_connections"), json.dumps(r.get("udp_drops")))))
EOF
say "done"
