#!/usr/bin/env bash
# dkim_bench.sh - DKIM signing cost: unsigned, RSA-2048 and dual (RSA-2048 + Ed25519) side by side (issue 15)
#
# SYNOPSIS
#   bench/dkim_bench.sh
#   DKIM_RUNS=5 DKIM_SIZES=1024 bench/dkim_bench.sh
#
# DESCRIPTION
#   Three ways of sending the same personalised campaign through volleyd into one
#   volley-sink, at each message size of DKIM_SIZES (1 KiB and 100 KiB):
#     unsigned  volleyd without [[dkim]] tables (it still adds Message-ID and Date);
#     rsa       one [[dkim]] table: an RSA-2048 key, rsa-sha256;
#     dual      two [[dkim]] tables for the same domain: RSA-2048 and Ed25519, two
#               DKIM-Signature fields on every message (what operators do).
#   Keys come from `volleyctl dkim keygen` (2048-bit RSA, Ed25519), the domain is the
#   domain of FROM (bulk@sender.test), which is what `volley-load run --from` writes
#   into the generated message's From field, so every message is signed (docs/dkim.md:
#   the From domain or a subdomain of the [[dkim]] domain). canonicalization and the
#   signed fields are volleyd's defaults (relaxed/relaxed).
#
#   Each way: a fresh volleyd (Release, [delivery] shards = VOLLEYD_SHARDS, durable
#   queue, everything else default) on an empty queue, [routes] from `volley-load
#   routes`: DOMAINS domains d0001.test .. round robin over the sink's addresses
#   SINK_ADDRESSES (250 destinations), then `volley-load run --personalised`: every
#   recipient has a first_name, the body says "Hello {{first_name}},", so every message
#   is its own transaction with one recipient (messages/s = recipients/s), and the body
#   hash is computed per message (a body with a placeholder; docs/dkim.md). Time:
#   volley-load's, drop into the spool to the last outcome in the delivery log, intake
#   included. CPU: volleyd's utime+stime over the same span (volley-load
#   --volleyd-pid), every thread. The sink's CPU and its message and byte counters
#   (its --http /stats) are read before and after.
#
#   Side by side: DKIM_RUNS runs; each run measures `openssl speed` first, then every
#   size, and within a size the ways one after the other, rotating which goes first
#   (run 1: unsigned rsa dual, run 2: rsa dual unsigned, run 3: dual unsigned rsa), as
#   bench/compare_bench.sh does. Reported: median (min .. max) over the runs, and the
#   ratios signed/unsigned taken within each run, median over the runs.
#
#   The physical bound: `openssl speed -mr -seconds OPENSSL_SECONDS rsa2048 ed25519` in
#   every run, one process. openssl divides by the CPU (user) time its process got, so
#   its figure is signatures per CPU-second of one core, whatever else the machine
#   does. volleyd can use at most VOLLEYD_SHARDS cores for its shard loops, but on this
#   2-CPU machine the sink (and volley-load following the log) runs on the same cores,
#   so volleyd never gets all of them. The target is therefore taken per CPU-second:
#       signed messages per volleyd CPU-second  /  RSA-2048 signatures per CPU-second
#   = messages/s / (RSA signs/s per core x the cores volleyd actually got, its CPU s
#   divided by the run's seconds), the same number. The RSA figure for a signed way is
#   the mean of two short ones (BRACKET_SECONDS) taken just before volleyd starts and
#   just after it stops: the VM's host is shared, and a core's signing rate drifts by
#   10-20 % within minutes, with nothing else running in the VM. Target (issue 15): at least
#   TARGET (0.80), for every signed way and size (the dual way is held to the RSA
#   rate too, as the issue states it; its own bound, 1/(1/rsa + 1/ed25519), is printed
#   beside it). Also printed: the nominal bound, RSA signs/s x VOLLEYD_SHARDS, which
#   a machine with cores to spare for the sink would allow, and the same measured:
#   `openssl speed -multi VOLLEYD_SHARDS rsa2048`, that many processes at once (the
#   cores slow each other a little); and the CPU signing adds per message (signed
#   minus unsigned, in the same run) against what openssl needs for the signature(s)
#   and for one SHA-256 pass over the message size (`openssl speed -evp sha256 -bytes
#   102400`, the body hash's floor).
#
#   Proof that the signed runs signed, cheaply:
#     - once, before the runs (unless VERIFY=0): a volleyd of each signing config
#       sends VERIFY_MESSAGES messages of the same campaign (1 KiB) to a small SMTP
#       receiver written here (Python, DATA, stores each message), and Debian's
#       python3-dkim verifies every DKIM-Signature on them with the TXT records
#       keygen printed (rsa: one rsa-sha256 signature; dual: rsa-sha256 and
#       ed25519-sha256; each with d= the From domain); the same message with one body
#       byte changed must fail, so the check can fail. The receiver also gives the
#       size of the signature fields, in bytes.
#     - every measured run: delivered (volley-load, from volleyd's delivery log) must
#       equal the messages, the sink must have counted them, and volleyd must not have
#       logged "sent without a DKIM signature"; and per size and run, the sink's bytes
#       per message of a signed way minus the unsigned way's (same campaign, same job
#       id length, so the same bytes apart from the signatures) must equal the
#       signature fields' size within SIG_BYTES_TOLERANCE bytes: a message in 1,000
#       left unsigned would show as half a byte missing per message.
#
#   Quiet machine: before the openssl figure and before every way, the script waits
#   while processes matching QUIET_PATTERN (builds and test runs of other sessions)
#   are running, or any other process (not this script's) used QUIET_CPU % of a CPU
#   over the last second (fuzzers, benchmarks), polling every QUIET_POLL (30) seconds,
#   up to QUIET_MAX_WAIT (1200) seconds each time; then it measures anyway and the
#   per-run lines say so ("busy", also for what ran when the way ended).
#
#   Tables in markdown on stdout, progress on stderr. Everything listens and connects
#   on 127.0.0.0/8, every domain is under .test. Every process started here (sink,
#   volleyd, the receiver) is stopped on exit, also on failure or Ctrl-C, and the
#   temporary folder (keys included) is removed. About 6 minutes for the defaults on
#   the shared 2-CPU machine (5 runs and PROFILE=1: about 10), plus any wait for quiet.
#
# ENVIRONMENT
#   DKIM_RUNS=3                    runs (each: openssl speed, then every size and way)
#   DKIM_WAYS="unsigned rsa dual"  ways to run (a subset, for a check)
#   DKIM_SIZES="1024 102400"       message sizes (volley-load --size)
#   MESSAGES_1K=20000              messages per way at sizes up to 10 KiB
#   MESSAGES_100K=10000            messages per way at larger sizes
#   DOMAINS=1000                   recipient domains of the campaign
#   FROM=bulk@sender.test          volley-load --from; its domain is the [[dkim]] domain
#   SINK_ADDRESSES=127.0.3.1-127.0.3.250
#   VOLLEYD_SHARDS=2               [delivery] shards
#   OPENSSL_SECONDS=3              openssl speed -seconds (sign and verify each)
#   BRACKET_SECONDS=1              the RSA-2048 figure just before and after each signed
#                                  way (0: none; the run's figure is used instead)
#   TARGET=0.80                    signed messages per volleyd CPU-s / RSA signs per CPU-s
#   VERIFY=1  VERIFY_MESSAGES=3    the one-off signature check (0: skip it)
#   SIG_BYTES_TOLERANCE=0.5        bytes per message, for the sink byte check
#   QUIET_PATTERN='ctest|ninja|cc1plus'  QUIET_POLL=30  QUIET_MAX_WAIT=1200
#   QUIET_CPU=20                   also wait for any other process using this many %
#                                  of a CPU (top, over one second; 0: only the pattern)
#   QUIET_WAIT=1                   0: measure without waiting for quiet
#   PROFILE=0                      1: after the runs, one more run of each of PROFILE_WAYS
#   PROFILE_WAYS=dual              at each size with `perf record -F PROFILE_HZ (999)` on
#   PROFILE_HZ=999  PROFILE_TOP=12 volleyd (not measured); printed: volleyd's CPU by
#                                  library and the top PROFILE_TOP functions by self
#                                  time, in % and in µs per message. OpenSSL's own
#                                  functions have no symbols in Debian's libcrypto, so
#                                  they show as libcrypto.so.3 addresses.
#   RUN_TIMEOUT=600                seconds any one way may take
#   BENCH_KEEP=1                   keep the temporary folder
#   BENCH_SKIP_BUILD=1             do not run the (incremental) build
#   BENCH_BUILD=<root>/build-release
#
# EXIT STATUS
#   0 when every run delivered every message, signed (the checks above), whether the
#   target was met or not (the summary says); 1 otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD:-"$root/build-release"}
py=/usr/bin/python3
runs=${DKIM_RUNS:-3}
ways=${DKIM_WAYS:-"unsigned rsa dual"}
sizes=${DKIM_SIZES:-"1024 102400"}
messages_1k=${MESSAGES_1K:-20000}
messages_100k=${MESSAGES_100K:-10000}
domains=${DOMAINS:-1000}
from=${FROM:-bulk@sender.test}
sink_addresses=${SINK_ADDRESSES:-127.0.3.1-127.0.3.250}
shards=${VOLLEYD_SHARDS:-2}
openssl_seconds=${OPENSSL_SECONDS:-3}
bracket_seconds=${BRACKET_SECONDS:-1}
target=${TARGET:-0.80}
verify=${VERIFY:-1}
verify_messages=${VERIFY_MESSAGES:-3}
sig_tolerance=${SIG_BYTES_TOLERANCE:-0.5}
quiet_wait=${QUIET_WAIT:-1}
quiet_pattern=${QUIET_PATTERN:-'ctest|ninja|cc1plus'}
quiet_cpu=${QUIET_CPU:-20}
quiet_poll=${QUIET_POLL:-30}
quiet_max_wait=${QUIET_MAX_WAIT:-1200}
run_timeout=${RUN_TIMEOUT:-600}
profile=${PROFILE:-0}
profile_ways=${PROFILE_WAYS:-dual}
profile_hz=${PROFILE_HZ:-999}
profile_top=${PROFILE_TOP:-12}
from_domain=${from##*@}

. "$root/bench/lib.sh"

case $from_domain in
  *.test) ;;
  *) die "FROM must be an address under .test (got \"$from\")" ;;
esac
for w in $ways; do
  case $w in unsigned | rsa | dual) ;; *) die "DKIM_WAYS: unknown way \"$w\"" ;; esac
done
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
if [ "$profile" = 1 ]; then
  command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf), or run with PROFILE=0"
fi
if [ "$verify" = 1 ]; then
  "$py" -c 'import dkim, nacl' 2>/dev/null ||
    die "python3-dkim (with python3-nacl, for Ed25519) is missing: scripts/install-deps, or run with VERIFY=0"
fi

# Two CPUs, shared: the (incremental) build takes no more than two jobs.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
bench_binaries
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cmake --build "$build" --target volleyctl >/dev/null
fi
ctl="$build/tools/volleyctl/volleyctl"
[ -x "$ctl" ] || die "missing $ctl"
bench_tree_info

work=$(mktemp -d /tmp/volley-dkim-bench.XXXXXX)
results="$work/results.jsonl"
: >"$results"
receiver_pid=""
perf_pid=""

dkim_cleanup() {
  local status=$?
  set +e
  trap - EXIT
  stop "$perf_pid" perf
  stop "$receiver_pid" receiver
  (exit "$status")
  bench_cleanup
}
trap dkim_cleanup EXIT

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- quiet machine
# wait_quiet WHAT - wait while other sessions build, test or fuzz (QUIET_PATTERN, or
# over QUIET_CPU % of a CPU); sets quiet_waited (seconds waited) and quiet_busy (what
# still ran when measuring began: empty when nothing did).
quiet_waited=0
quiet_busy=""
# This script and the processes it was started from (a shell running "ninja && ..."
# would match the pattern for ever) are never waited for.
ancestors=""
a=$$
while [ -n "$a" ] && [ "$a" -gt 1 ]; do
  ancestors="$ancestors $a"
  a=$(awk '$1 == "PPid:" { print $2 }' "/proc/$a/status" 2>/dev/null || true)
done
heavy() {  # "pid name" a line: what matches QUIET_PATTERN, and what else took QUIET_CPU
  local mine="$ancestors ${sink_pid:-0} ${volleyd_pid:-0} ${receiver_pid:-0}"
  { pgrep -af -- "$quiet_pattern" 2>/dev/null || true; } |
    awk -v mine="$mine" 'BEGIN { split(mine, m, " "); for (i in m) skip[m[i]] = 1 }
      !($1 in skip) { n = split($2, p, "/"); print $1, p[n] }'
  # top's second frame: the CPU each process used over the last second (the first frame
  # is since it started).
  if [ "$quiet_cpu" != 0 ]; then
    { top -b -n 2 -d 1 -w 512 2>/dev/null || true; } |
      awk -v mine="$mine" -v lim="$quiet_cpu" 'BEGIN { split(mine, m, " "); for (i in m) skip[m[i]] = 1 }
        /^top -/ { frame++ }
        frame == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= lim && !($1 in skip) && $12 != "top" { print $1, $12 }'
  fi
}
wait_quiet() {
  local what=$1 busy
  quiet_waited=0
  busy=$(heavy)
  while [ -n "$busy" ] && [ "$quiet_wait" = 1 ] && [ "$quiet_waited" -lt "$quiet_max_wait" ]; do
    say "before $what: waiting for $(printf '%s' "$busy" | awk '{ print $2 }' | sort | uniq -c |
      awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }') to finish (waited ${quiet_waited} s; load average $(loadavg))"
    sleep "$quiet_poll"
    quiet_waited=$((quiet_waited + quiet_poll))
    busy=$(heavy)
  done
  quiet_busy=$(printf '%s' "$busy" | awk '{ print $2 }' | sort -u | paste -sd, -)
  if [ -n "$quiet_busy" ]; then
    say "before $what: measuring although $quiet_busy still run (waited ${quiet_waited} s)"
  fi
}

# ---------------------------------------------------------------- keys
keys="$work/keys"
mkdir -p "$keys"
chmod 700 "$keys"
: >"$keys/records.txt"
# keygen SELECTOR ALGORITHM - a key in $keys/SELECTOR.pem; its TXT record (the quoted
# strings keygen prints, joined) as "SELECTOR._domainkey.DOMAIN. RECORD" in records.txt.
keygen() {
  local out
  out=$("$ctl" dkim keygen --domain "$from_domain" --selector "$1" --algorithm "$2" \
          --out "$keys/$1.pem" 2>"$keys/$1.err") || die "volleyctl dkim keygen $2: $(cat "$keys/$1.err")"
  "$py" - "$1" "$from_domain" "$out" >>"$keys/records.txt" <<'EOF' || die "no TXT record in keygen's output"
import re, sys
sel, dom, out = sys.argv[1:]
strings = re.findall(r'"((?:[^"\\]|\\.)*)"', out)
if not strings:
    sys.exit(1)
print("%s._domainkey.%s. %s" % (sel, dom, "".join(strings)))
EOF
}
keygen bench-rsa rsa
keygen bench-ed ed25519
say "keys: RSA-2048 (selector bench-rsa) and Ed25519 (bench-ed) for $from_domain, by volleyctl dkim keygen"

# dkim_tables WAY - the [[dkim]] tables of a way.
dkim_tables() {
  case $1 in
    unsigned) ;;
    rsa | dual)
      printf '[[dkim]]\ndomain = "%s"\nselector = "bench-rsa"\nkey_file = "%s"\n\n' "$from_domain" "$keys/bench-rsa.pem"
      [ "$1" = dual ] &&
        printf '[[dkim]]\ndomain = "%s"\nselector = "bench-ed"\nkey_file = "%s"\n\n' "$from_domain" "$keys/bench-ed.pem"
      ;;
  esac
}

# volleyd_config DIR WAY ROUTES_FILE
volleyd_config() {
  cat <<EOF
[paths]
spool = "$1/spool"
queue = "$1/queue"
log = "$1/log"

[delivery]
shards = $shards

$(dkim_tables "$2")
$(admin_section)

$(grep -v '^#' "$3")
EOF
}

# ---------------------------------------------------------------- the one-off check
# receiver.py - a small SMTP server on 127.0.0.1 (no PIPELINING, no CHUNKING: volleyd
# sends DATA) that stores every message it accepts, dot-unstuffed, CRLF kept, as
# DIR/mN.eml. Only for the handful of messages of the signature check.
cat >"$work/receiver.py" <<'EOF'
import itertools, os, socketserver, sys
outdir, port_file = sys.argv[1:3]
numbers = itertools.count(1)

class Session(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"220 verify.sender.test ESMTP dkim_bench receiver\r\n")
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-verify.sender.test\r\n250 8BITMIME\r\n")
            elif verb == b"HELO" or verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.wfile.write(b"250 2.0.0 ok\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 end with <CRLF>.<CRLF>\r\n")
                data = bytearray()
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                path = os.path.join(outdir, "m%d.eml" % next(numbers))
                with open(path + ".tmp", "wb") as f:
                    f.write(data)
                os.rename(path + ".tmp", path)
                self.wfile.write(b"250 2.0.0 stored\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 2.0.0 bye\r\n")
                return
            else:
                self.wfile.write(b"502 5.5.2 not here\r\n")

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

server = Server(("127.0.0.1", 0), Session)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
EOF

# verify.py - verify every DKIM-Signature of every stored message with python3-dkim
# against the records keygen printed; print one JSON object.
cat >"$work/verify.py" <<'EOF'
import glob, json, os, re, sys
import dkim
way, msgdir, records_file = sys.argv[1:4]
records = {}
for line in open(records_file):
    name, record = line.rstrip("\n").split(" ", 1)
    records[name.lower()] = record.encode()

def lookup(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    name = name.lower()
    return records.get(name if name.endswith(".") else name + ".")

def verifies(msg, idx):
    try:
        return bool(dkim.DKIM(msg).verify(idx=idx, dnsfunc=lookup))
    except dkim.DKIMException:  # a body hash mismatch is raised, not returned
        return False

def signature_fields(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    fields = re.split(rb"\r\n(?![ \t])", head)
    return [f for f in fields if f.lower().startswith(b"dkim-signature:")]

def tag(field, name):
    value = re.sub(rb"\s+", b"", field.split(b":", 1)[1])
    for t in value.split(b";"):
        k, _, v = t.partition(b"=")
        if k == name:
            return v.decode()
    return None

out = {"part": "verify", "way": way, "messages": 0, "signatures": [], "sig_bytes": [], "ok": True, "why": []}
want = {"rsa": ["rsa-sha256"], "dual": ["ed25519-sha256", "rsa-sha256"]}[way]
for path in sorted(glob.glob(os.path.join(msgdir, "m*.eml"))):
    msg = open(path, "rb").read()
    out["messages"] += 1
    sigs = signature_fields(msg)
    out["sig_bytes"].append(sum(len(f) + 2 for f in sigs))
    algos = sorted(tag(f, b"a") for f in sigs)
    results = []
    for i, f in enumerate(sigs):
        good = verifies(msg, i)
        results.append([tag(f, b"a"), tag(f, b"d"), tag(f, b"s"), good])
        if not good:
            out["ok"] = False
            out["why"].append("%s: signature %d (%s) does not verify" % (os.path.basename(path), i, tag(f, b"a")))
    out["signatures"].append(results)
    if algos != want:
        out["ok"] = False
        out["why"].append("%s: signatures %s, want %s" % (os.path.basename(path), algos, want))
    from_domain = re.search(rb"^From:[^\r\n]*@([A-Za-z0-9.-]+)>", msg, re.M | re.I)
    if any(r[1] != from_domain.group(1).decode() for r in results):
        out["ok"] = False
        out["why"].append("%s: d= is not the From domain" % os.path.basename(path))
    # The check can fail: one body byte changed, the first signature must not verify.
    head, body = msg.split(b"\r\n\r\n", 1)
    bad = head + b"\r\n\r\n" + body.replace(b"Hello", b"Jello", 1)
    if sigs and verifies(bad, 0):
        out["ok"] = False
        out["why"].append("%s: a changed body still verifies" % os.path.basename(path))
if out["messages"] == 0:
    out["ok"] = False
    out["why"].append("no message stored")
if len(set(out["sig_bytes"])) > 1:
    out["ok"] = False
    out["why"].append("signature fields of different sizes: %s" % out["sig_bytes"])
print(json.dumps(out))
EOF

# verify_way WAY - send VERIFY_MESSAGES messages of the campaign, signed the WAY way,
# to the receiver, and verify them; one "part": "verify" line in results.jsonl.
verify_way() {
  local way=$1 dir="$work/verify-$1" port i n
  mkdir -p "$dir/msgs"
  "$py" "$work/receiver.py" "$dir/msgs" "$dir/port" 2>"$dir/receiver.err" &
  receiver_pid=$!
  for i in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.1; done
  [ -s "$dir/port" ] || die "the check's SMTP receiver did not start: $(cat "$dir/receiver.err")"
  port=$(cat "$dir/port")
  printf '[routes]\n"*" = "127.0.0.1:%s"\n' "$port" >"$dir/routes.toml"
  volleyd_config "$dir" "$way" "$dir/routes.toml" >"$dir/volley.toml"
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$verify_messages" --domains 1 \
    --size 1024 --personalised --from "$from" --job "dkim-verify-$way-$$" --json --timeout 60 \
    --no-progress >"$dir/load.json" 2>"$dir/load.err" || die "verify $way: volley-load: $(cat "$dir/load.json" "$dir/load.err")"
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  stop "$receiver_pid" receiver
  receiver_pid=""
  n=$(ls "$dir/msgs" | grep -c '\.eml$' || true)
  [ "$n" -eq "$verify_messages" ] || die "verify $way: the receiver stored $n messages, not $verify_messages"
  "$py" "$work/verify.py" "$way" "$dir/msgs" "$keys/records.txt" >>"$results" ||
    die "verify $way: verify.py failed"
  "$py" - "$(tail -1 "$results")" <<'EOF' || die "the signatures did not verify (above)"
import json, sys
r = json.loads(sys.argv[1])
print("bench:   check %s: %d messages; signatures %s; %s; DKIM-Signature fields %d bytes a message"
      % (r["way"], r["messages"], ", ".join("%s d=%s s=%s %s" % (a, d, s, "verifies" if ok else "FAILS")
                                            for a, d, s, ok in r["signatures"][0]),
         "a changed body fails" if r["ok"] else "; ".join(r["why"]), r["sig_bytes"][0]), file=sys.stderr)
sys.exit(0 if r["ok"] else 1)
EOF
  rm -rf "$dir"
}

if [ "$verify" = 1 ]; then
  for w in $ways; do
    [ "$w" = unsigned ] && continue
    say "check: $verify_messages messages signed the $w way to a storing receiver, verified by python3-dkim"
    verify_way "$w"
  done
fi

# ---------------------------------------------------------------- the sink
sink_port=$(free_port)
sink_usage=$("$sink" --no-such-option 2>&1 || true)
[[ $sink_usage == *--http* ]] || die "this volley-sink has no --http (its byte counter is read there)"
mapfile -t listen < <("$load" addresses --sink-addresses "$sink_addresses" --port "$sink_port")
[ "${#listen[@]}" -gt 0 ] || die "volley-load addresses gave nothing for $sink_addresses"
sink_flags=(--http 127.0.0.1:0)
for a in "${listen[@]}"; do sink_flags+=(--listen "$a"); done
"$sink" "${sink_flags[@]}" --stats "$work/sink.json" >"$work/sink.out" 2>"$work/sink.err" &
sink_pid=$!
sink_url=""
for i in $(seq 100); do
  sink_url=$(sed -n 's|^volley-sink: stats on \(http://[^/ ]*\)/stats$|\1|p' "$work/sink.err" | head -1)
  [ -n "$sink_url" ] && [ "$(grep -c 'listening on' "$work/sink.err" || true)" -ge "${#listen[@]}" ] && break
  kill -0 "$sink_pid" 2>/dev/null || die "volley-sink exited: $(tail -5 "$work/sink.err")"
  sleep 0.1
done
[ -n "$sink_url" ] || die "volley-sink did not start (no stats URL)"
say "volley-sink (pid $sink_pid) on $sink_addresses port $sink_port (${#listen[@]} addresses), counters at $sink_url/stats"
"$load" routes --domains "$domains" --sink-addresses "$sink_addresses" --port "$sink_port" \
  --out "$work/routes.toml" 2>/dev/null || die "volley-load routes failed"

# sink_counts - "MESSAGES BYTES" from the sink's live counters.
sink_counts() {
  "$py" -c '
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/stats", timeout=5) as r:
    s = json.load(r)
print(s["messages"], s["bytes"])' "$sink_url"
}

# ---------------------------------------------------------------- openssl speed
# openssl_run REP - the physical bound, one process: RSA-2048 and Ed25519 signatures per
# CPU-second (openssl divides by its user CPU time); one "part": "openssl" line.
openssl_run() {
  local rep=$1 t0 t1 la
  wait_quiet "openssl speed (run $rep)"
  la=$(loadavg)
  t0=$(date +%s.%N)
  openssl speed -mr -seconds "$openssl_seconds" rsa2048 ed25519 >"$work/openssl-$rep.out" 2>&1 ||
    die "openssl speed failed: $(tail -5 "$work/openssl-$rep.out")"
  t1=$(date +%s.%N)
  # The same RSA signing in VOLLEYD_SHARDS processes at once: what the cores give
  # together (the nominal bound, measured rather than multiplied).
  if [ "$shards" -gt 1 ]; then
    openssl speed -mr -seconds "$openssl_seconds" -multi "$shards" rsa2048 >"$work/openssl-multi-$rep.out" 2>&1 ||
      die "openssl speed -multi failed: $(tail -5 "$work/openssl-multi-$rep.out")"
  else
    : >"$work/openssl-multi-$rep.out"
  fi
  # SHA-256, for scale: the body hash of a message is (at least) one pass of it.
  openssl speed -mr -seconds "$openssl_seconds" -bytes 102400 -evp sha256 >>"$work/openssl-$rep.out" 2>&1 ||
    die "openssl speed -evp sha256 failed: $(tail -5 "$work/openssl-$rep.out")"
  local busy_end
  busy_end=$(heavy | awk '{ print $2 }' | sort -u | paste -sd, -)
  "$py" - "$work/openssl-$rep.out" "$rep" "$la" "$quiet_waited" "$quiet_busy" "$t0" "$t1" \
    "$(openssl version)" "$openssl_seconds" "$work/openssl-multi-$rep.out" "$busy_end" >>"$results" <<'EOF' || die "cannot read openssl speed's output"
import json, re, sys
path, rep, la, waited, busy, t0, t1, version, seconds, multi_path, busy_end = sys.argv[1:]
# -mr output: "+DTP:2048:private:rsa:3" (what follows: RSA-2048 signing), then
# "+R1:COUNT:2048:CPU_SECONDS"; "+DTP:253:sign:Ed25519:3", then "+R8:COUNT:253:Ed25519:CPU_SECONDS";
# "+DT:sha256:3:102400", then "+R:COUNT:sha256:CPU_SECONDS" (COUNT buffers of 102400 bytes).
what, got = None, {}
for line in open(path):
    line = line.strip()
    if line.startswith("+DT:sha256:"):
        what, block = "sha256", int(line.split(":")[3])
    elif line.startswith("+R:") and what == "sha256":
        f = line.split(":")
        got["sha256"] = {"bytes": int(f[1]) * block, "cpu_s": float(f[-1])}
        got["sha256"]["bytes_per_cpu_s"] = got["sha256"]["bytes"] / got["sha256"]["cpu_s"]
        what = None
    elif line.startswith("+DTP:"):
        f = line.split(":")
        what = {("2048", "private", "rsa"): "rsa2048", ("253", "sign", "Ed25519"): "ed25519"}.get(tuple(f[1:4]))
    elif re.match(r"^\+R\d+:", line) and what:
        f = line.split(":")
        got[what] = {"signs": int(f[1]), "cpu_s": float(f[-1])}
        what = None
if "sha256" not in got:
    sys.exit("no sha256 figure in openssl speed's output")
for k in ("rsa2048", "ed25519"):
    if k not in got or got[k]["cpu_s"] <= 0:
        sys.exit("no %s signing figure in openssl speed's output" % k)
    got[k]["per_cpu_s"] = got[k]["signs"] / got[k]["cpu_s"]
# -multi N: each process's "+F2:2:2048:SIGN_PER_S:VERIFY_PER_S" (after "Got:"), then their sum.
children = []
for line in open(multi_path):
    m = re.match(r"^(Got: )?\+F2:\d+:2048:([\d.]+):", line.strip())
    if m and m.group(1):
        children.append(float(m.group(2)))
if children:
    got["rsa2048_multi"] = {"processes": len(children), "per_process": children, "total": sum(children)}
print(json.dumps({"part": "openssl", "rep": int(rep), "loadavg": la, "waited": int(waited), "busy": busy, "busy_end": busy_end,
                  "wall_s": float(t1) - float(t0), "version": version, "seconds": int(seconds), **got}))
EOF
  "$py" - "$(tail -1 "$results")" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
print("bench:   openssl speed: RSA-2048 %.0f signs per CPU-s (%d in %.2f CPU s of %d s), Ed25519 %.0f signs per CPU-s (%d in %.2f CPU s), SHA-256 %.0f MB per CPU-s"
      % (r["rsa2048"]["per_cpu_s"], r["rsa2048"]["signs"], r["rsa2048"]["cpu_s"], r["seconds"],
         r["ed25519"]["per_cpu_s"], r["ed25519"]["signs"], r["ed25519"]["cpu_s"],
         r["sha256"]["bytes_per_cpu_s"] / 1e6), file=sys.stderr)
if "rsa2048_multi" in r:
    m = r["rsa2048_multi"]
    print("bench:   openssl speed -multi %d: RSA-2048 %.0f signs/s together (%s)"
          % (m["processes"], m["total"], " + ".join("%.0f" % x for x in m["per_process"])), file=sys.stderr)
EOF
}

# rsa_quick - RSA-2048 signatures per CPU-second, `openssl speed -seconds
# BRACKET_SECONDS rsa2048` (it verifies for as long too); "" with BRACKET_SECONDS=0.
rsa_quick() {
  [ "$bracket_seconds" != 0 ] || return 0
  local out
  out=$(openssl speed -mr -seconds "$bracket_seconds" rsa2048 2>&1) || true
  printf '%s\n' "$out" | awk -F: '/^\+R1:/ && $4 > 0 && !done { printf "%.1f\n", $2 / $4; done = 1 }'
}

# ---------------------------------------------------------------- one way
# messages_for SIZE
messages_for() { if [ "$1" -le 10240 ]; then echo "$messages_1k"; else echo "$messages_100k"; fi; }

# way_run SIZE WAY REP - one fresh volleyd, one campaign; one "part": "way" line.
way_run() {
  local size=$1 way=$2 rep=$3 n dir la s0 s1 c0 c1 i job
  n=$(messages_for "$size")
  dir="$work/$size-$way-$rep"
  # The job id is in the Subject and the Message-ID: the same length for every way, so
  # that the messages differ by the signature fields only.
  job="dkim-$size-${way:0:1}-$rep-$$"
  mkdir -p "$dir"
  volleyd_config "$dir" "$way" "$work/routes.toml" >"$dir/volley.toml"
  wait_quiet "$way, $size bytes (run $rep)"
  local rsa_before="" rsa_after=""
  [ "$way" != unsigned ] && rsa_before=$(rsa_quick)
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  sleep 1
  la=$(loadavg)
  s0=$(sink_counts)
  c0=$(cpu_ticks "$sink_pid")
  "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$n" --domains "$domains" \
    --size "$size" --personalised --from "$from" --job "$job" --json --timeout "$run_timeout" \
    --no-progress --volleyd-pid "$volleyd_pid" >"$dir/load.json" 2>"$dir/load.err" ||
    die "$way, $size bytes, run $rep: volley-load: $(cat "$dir/load.json" "$dir/load.err" | tail -5)"
  # volley-load ends at the last outcome logged, after the sink's reply: the sink has
  # counted by then; allow it a moment anyway.
  for i in $(seq 50); do
    s1=$(sink_counts)
    [ $(( ${s1% *} - ${s0% *} )) -ge "$n" ] && break
    sleep 0.1
  done
  c1=$(cpu_ticks "$sink_pid")
  local busy_end
  busy_end=$(heavy | awk '{ print $2 }' | sort -u | paste -sd, -)
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  [ "$way" != unsigned ] && rsa_after=$(rsa_quick)
  local unsigned_lines
  unsigned_lines=$(grep -c 'sent without a DKIM signature' "$dir/volleyd.err" || true)
  "$py" - "$dir/load.json" "$size" "$way" "$rep" "$n" "$la" "$s0" "$s1" "$(( c1 - c0 ))" "$clk_tck" \
    "$quiet_waited" "$quiet_busy" "$unsigned_lines" "$busy_end" "$rsa_before" "$rsa_after" >>"$results" <<'EOF' || die "cannot record the run"
import json, sys
(load, size, way, rep, n, la, s0, s1, ticks, tck, waited, busy, unsigned_lines, busy_end,
 rsa_before, rsa_after) = sys.argv[1:]
m0, b0 = map(int, s0.split()); m1, b1 = map(int, s1.split())
print(json.dumps({"part": "way", "size": int(size), "way": way, "rep": int(rep), "messages": int(n),
                  "loadavg": la, "waited": int(waited), "busy": busy, "load": json.load(open(load)),
                  "sink_messages": m1 - m0, "sink_bytes": b1 - b0, "sink_cpu_s": int(ticks) / int(tck),
                  "unsigned_lines": int(unsigned_lines), "busy_end": busy_end,
                  "rsa_before": float(rsa_before) if rsa_before else None,
                  "rsa_after": float(rsa_after) if rsa_after else None}))
EOF
  "$py" - "$(tail -1 "$results")" <<'EOF' || die "$way, $size bytes, run $rep: not everything was delivered and signed (above)"
import json, sys
r = json.loads(sys.argv[1]); l = r["load"]
cpu = l["volleyd_cpu_seconds"] or 0
print("bench:   %-8s %6d x %6d bytes: %d delivered in %.3f s, %.0f messages/s, volleyd %.2f CPU s (%.0f us a message, %.2f cores), "
      "sink +%d messages, %.0f bytes a message, %.2f CPU s%s"
      % (r["way"], r["messages"], r["size"], l["delivered"], l["elapsed_seconds"], l["messages_per_second"], cpu,
         cpu / max(l["delivered"], 1) * 1e6, cpu / l["elapsed_seconds"] if l["elapsed_seconds"] else 0,
         r["sink_messages"], r["sink_bytes"] / max(r["sink_messages"], 1), r["sink_cpu_s"],
         "" if not r["unsigned_lines"] else "; volleyd logged %d 'sent without a DKIM signature'" % r["unsigned_lines"]),
      file=sys.stderr)
ok = (l["delivered"] == r["messages"] and r["sink_messages"] == r["messages"] and l["volleyd_cpu_seconds"] is not None
      and (r["way"] == "unsigned" or r["unsigned_lines"] == 0))
sys.exit(0 if ok else 1)
EOF
  rm -rf "$dir"
}

# ---------------------------------------------------------------- the runs
all=($ways)
say "ways: ${all[*]}; sizes: $sizes; $runs runs; $shards shards; From $from; $(nproc) CPUs shared with the sink"
for rep in $(seq "$runs"); do
  order=()
  for i in $(seq 0 $((${#all[@]} - 1))); do
    order+=("${all[$(( (i + rep - 1) % ${#all[@]} ))]}")
  done
  say "run $rep/$runs: openssl speed, then ${order[*]} at each size (load average $(loadavg))"
  openssl_run "$rep"
  for size in $sizes; do
    for w in "${order[@]}"; do
      way_run "$size" "$w" "$rep"
    done
  done
done

# ---------------------------------------------------------------- profile
# profile_way SIZE WAY - one more run of WAY (not measured: perf's sampling costs a
# little) with `perf record` attached to volleyd; one "part": "profile" line: volleyd's
# CPU by library and its top functions by self time, each also in µs per message.
profile_way() {
  local size=$1 way=$2 n dir
  n=$(messages_for "$size")
  dir="$work/profile-$size-$way"
  mkdir -p "$dir"
  volleyd_config "$dir" "$way" "$work/routes.toml" >"$dir/volley.toml"
  wait_quiet "the profile of $way, $size bytes"
  start_volleyd "$dir/volley.toml" "$dir/volleyd.err"
  sleep 1
  perf record -F "$profile_hz" -o "$dir/perf.data" -p "$volleyd_pid" >"$dir/perf.out" 2>&1 &
  perf_pid=$!
  sleep 0.5
  kill -0 "$perf_pid" 2>/dev/null || die "perf record did not start: $(cat "$dir/perf.out")"
  "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$n" --domains "$domains" \
    --size "$size" --personalised --from "$from" --job "dkim-$size-p-0-$$" --json --timeout "$run_timeout" \
    --no-progress --volleyd-pid "$volleyd_pid" >"$dir/load.json" 2>"$dir/load.err" ||
    die "profile $way, $size bytes: volley-load: $(cat "$dir/load.json" "$dir/load.err" | tail -5)"
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=""
  stop "$volleyd_pid" volleyd
  volleyd_pid=""
  perf report -i "$dir/perf.data" --no-children --sort dso --stdio -g none >"$dir/dso.txt" 2>/dev/null ||
    die "perf report failed"
  perf report -i "$dir/perf.data" --no-children --sort dso,symbol --stdio -g none >"$dir/sym.txt" 2>/dev/null ||
    die "perf report failed"
  "$py" - "$dir/load.json" "$dir/dso.txt" "$dir/sym.txt" "$size" "$way" "$profile_top" >>"$results" <<'EOF' ||
import json, re, sys
load, dso, sym, size, way, top = sys.argv[1:]
l = json.load(open(load))
def rows(path):
    out = []
    for line in open(path):
        m = re.match(r"^\s*([\d.]+)%\s+(.*?)\s*$", line)
        if m and not line.startswith("#"):
            out.append([float(m.group(1)), re.sub(r"\s{2,}", "  ", m.group(2))])
    return out
syms = []
for pct, rest in rows(sym):
    parts = rest.split("  ", 1)
    name = re.sub(r"\s+-\s+-\s*$", "", parts[1] if len(parts) > 1 else "").strip()
    # A bare address: a function of a library without symbols (Debian's libcrypto): its
    # library's share is in the by-library figures, and its addresses are left out.
    if not re.match(r"^\[.\]\s+0x[0-9a-f]+$", name):
        syms.append([pct, parts[0], name])
print(json.dumps({"part": "profile", "size": int(size), "way": way, "delivered": l["delivered"],
                  "cpu_s": l["volleyd_cpu_seconds"], "dso": rows(dso), "symbols": syms[:int(top)]}))
EOF
    die "cannot read perf's report"
  say "profile: $way, $size bytes: $(tail -1 "$results" | "$py" -c 'import json, sys; r = json.loads(sys.stdin.read()); print(", ".join("%s %.1f %%" % (d, p) for p, d in r["dso"][:4]))')"
  rm -rf "$dir"
}

if [ "$profile" = 1 ]; then
  for size in $sizes; do
    for w in $profile_ways; do
      profile_way "$size" "$w"
    done
  done
fi

# ---------------------------------------------------------------- summary
"$py" - "$results" "$shards" "$target" "$sig_tolerance" "$sink_addresses" "$domains" <<'EOF'
import json, statistics, sys
path, shards, target, tol, addresses, domains = sys.argv[1:]
shards, target, tol = int(shards), float(target), float(tol)
rows = [json.loads(l) for l in open(path) if l.strip()]
checks = {r["way"]: r for r in rows if r.get("part") == "verify"}
ossl = {r["rep"]: r for r in rows if r.get("part") == "openssl"}
runs = [r for r in rows if r.get("part") == "way"]
failed = False
verdicts = []

def med(v): return statistics.median(v)
def mr(v, fmt): return "%s (%s .. %s)" % (fmt % med(v), fmt % min(v), fmt % max(v))
def secs(r): return r["load"]["elapsed_seconds"]
def rate(r): return r["load"]["delivered"] / secs(r)
def cpu(r): return r["load"]["volleyd_cpu_seconds"]
def us_per_msg(r): return cpu(r) / r["load"]["delivered"] * 1e6
def per_cpu_s(r): return r["load"]["delivered"] / cpu(r)
def cores(r): return cpu(r) / secs(r)
def rsa_rate(rep): return ossl[rep]["rsa2048"]["per_cpu_s"]
def ed_rate(rep): return ossl[rep]["ed25519"]["per_cpu_s"]
def sha_us(rep, size): return size / ossl[rep]["sha256"]["bytes_per_cpu_s"] * 1e6
def rsa_for(r):  # RSA-2048 per CPU-second around this way: the mean of just before and after
    b = [x for x in (r.get("rsa_before"), r.get("rsa_after")) if x]
    return sum(b) / len(b) if b else rsa_rate(r["rep"])
def bound(way, r):  # the signatures' own cost, as messages per CPU-second
    return rsa_for(r) if way == "rsa" else 1 / (1 / rsa_for(r) + 1 / ed_rate(r["rep"]))
def sign_us(way, r): return 1e6 / bound(way, r)
def busy(r):
    b = [x for x in (r.get("busy"), r.get("busy_end")) if x]
    return "  busy: " + ",".join(sorted(set(",".join(b).split(",")))) if b else ""

WAYS = [("unsigned", "unsigned"), ("rsa", "RSA-2048 (rsa-sha256)"), ("dual", "dual: RSA-2048 + Ed25519")]
nruns = max([r["rep"] for r in runs] or [0])

o = [ossl[k] for k in sorted(ossl)]
if o:
    print("### The bound: openssl speed on this machine (one process; per CPU-second of its own; median (min .. max) over %d runs)" % len(o))
    print()
    print("| %s | per CPU-second | µs each | x %d shards (nominal bound) |" % (" ".join(o[0]["version"].split()[:2]), shards))
    print("| --- | ---: | ---: | ---: |")
    for k, name in (("rsa2048", "RSA-2048 signatures"), ("ed25519", "Ed25519 signatures")):
        v = [x[k]["per_cpu_s"] for x in o]
        print("| %s | %s | %.0f | %.0f |" % (name, mr(v, "%.0f"), 1e6 / med(v), med(v) * shards))
    v = [1 / (1 / x["rsa2048"]["per_cpu_s"] + 1 / x["ed25519"]["per_cpu_s"]) for x in o]
    print("| both (one dual-signed message) | %s | %.0f | %.0f |" % (mr(v, "%.0f"), 1e6 / med(v), med(v) * shards))
    mm = [x["rsa2048_multi"]["total"] for x in o if "rsa2048_multi" in x]
    if mm:
        print("| RSA-2048 signatures, %d processes at once (-multi %d), together | %s | | %s (measured) |"
              % (shards, shards, mr([m / shards for m in mm], "%.0f") + " each", mr(mm, "%.0f")))
    v = [x["sha256"]["bytes_per_cpu_s"] / 1e6 for x in o]
    print("| SHA-256 (-evp, 100 KiB buffers), MB | %s | %.0f per 100 KiB | |" % (mr(v, "%.0f"), 102400 / med(v)))
    print()
    print("openssl's CPU seconds in each %d s of RSA signing: %s (load average %s at the start)%s."
          % (o[0]["seconds"], ", ".join("%.2f" % x["rsa2048"]["cpu_s"] for x in o), ", ".join(x["loadavg"] for x in o),
             "".join("; run %d measured while%s ran" % (x["rep"], busy(x)[len("  busy:"):]) for x in o if busy(x))))
    print()

for size in sorted({r["size"] for r in runs}):
    rs = [r for r in runs if r["size"] == size]
    n = rs[0]["messages"]
    print("### %s-byte personalised messages, %s per way, %s domains, one volley-sink on %s "
          "(one recipient per message: messages/s = recipients/s; median (min .. max) over %d runs)"
          % (f"{size:,}", f"{n:,}", f"{int(domains):,}", addresses, nruns))
    print()
    print("| way | messages/s (= recipients/s) | seconds | volleyd CPU µs per message | volleyd cores used (CPU s / s) | messages per volleyd CPU-second | volley-sink CPU µs per message | bytes per message at the sink |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for way, title in WAYS:
        w = [r for r in rs if r["way"] == way]
        if not w:
            continue
        print("| %s | %s | %s | %s | %s | %s | %s | %.0f |" % (
            title, mr([rate(r) for r in w], "%.0f"), mr([secs(r) for r in w], "%.2f"),
            mr([us_per_msg(r) for r in w], "%.0f"), mr([cores(r) for r in w], "%.2f"),
            mr([per_cpu_s(r) for r in w], "%.0f"),
            mr([r["sink_cpu_s"] / r["sink_messages"] * 1e6 for r in w], "%.1f"),
            med([r["sink_bytes"] / r["sink_messages"] for r in w])))
    print()
    u = {r["rep"]: r for r in rs if r["way"] == "unsigned"}
    for way, title in WAYS[1:]:
        w = {r["rep"]: r for r in rs if r["way"] == way}
        reps = sorted(w)
        if not reps:
            continue
        both = [k for k in reps if k in u]
        if both:
            tr = [rate(w[k]) / rate(u[k]) for k in both]
            cr = [us_per_msg(w[k]) / us_per_msg(u[k]) for k in both]
            added = [us_per_msg(w[k]) - us_per_msg(u[k]) for k in both]
            own = [sign_us(way, w[k]) for k in both if k in ossl]
            sha = [sha_us(k, size) for k in both if k in ossl]
            print("- %s / unsigned, within each run: messages/s x%.3f (runs %s); volleyd CPU per message x%.2f (runs %s). "
                  "Signing adds %.0f µs of volleyd CPU per message (runs %s)%s"
                  % (title, med(tr), ", ".join("%.3f" % x for x in tr), med(cr), ", ".join("%.2f" % x for x in cr),
                     med(added), ", ".join("%.0f" % x for x in added),
                     "; openssl needs %.0f µs for the signature%s and %.0f µs for one SHA-256 pass over %s bytes (a body hash): %.0f µs a message beyond those."
                     % (med(own), "s" if way == "dual" else "", med(sha), f"{size:,}", med(added) - med(own) - med(sha)) if own else "."))
        f = [per_cpu_s(w[k]) / rsa_for(w[k]) for k in reps if k in ossl]
        if not f:
            continue
        fb = [per_cpu_s(w[k]) / bound(way, w[k]) for k in reps if k in ossl]
        nom = [rate(w[k]) / (rsa_for(w[k]) * shards) for k in reps if k in ossl]
        multi = [ossl[k]["rsa2048_multi"]["total"] for k in reps if k in ossl and "rsa2048_multi" in ossl[k]]
        multi_note = ("; against %d openssl processes at once (-multi, measured), %.0f/s: %.1f %%"
                      % (shards, med(multi), 100 * med([rate(w[k]) / ossl[k]["rsa2048_multi"]["total"]
                                                         for k in reps if k in ossl and "rsa2048_multi" in ossl[k]]))) if multi else ""
        rsa_med = med([rsa_for(w[k]) for k in reps if k in ossl])
        verdict = "PASS" if med(f) >= target else "FAIL"
        verdicts.append((size, title, med([per_cpu_s(w[k]) for k in reps]), 100 * med(f), f, 100 * med(fb) if way == "dual" else None,
                         med([rate(w[k]) for k in reps]), med([cores(w[k]) for k in reps]), 100 * med(nom), verdict))
        print("- **%s, %s bytes: %.0f signed messages per volleyd CPU-second = %.1f %% of RSA-2048's %.0f signatures per CPU-second "
              "(runs %s; the RSA figure of each is openssl's just before and after it); target %.0f %%: %s.** In wall-clock terms the same: %.0f messages/s against RSA-2048 x the %.2f cores volleyd got. "
              "%sAgainst the nominal bound, RSA-2048 x %d shards = %.0f/s (a core each for volleyd alone, none for the sink): %.1f %%%s."
              % (title, f"{size:,}", med([per_cpu_s(w[k]) for k in reps]), 100 * med(f), rsa_med,
                 ", ".join("%.1f %%" % (100 * x) for x in f), 100 * target, verdict,
                 med([rate(w[k]) for k in reps]), med([cores(w[k]) for k in reps]),
                 ("Against its own bound (both signatures, %.0f per CPU-second): %.1f %%. "
                  % (med([bound(way, w[k]) for k in reps if k in ossl]), 100 * med(fb))) if way == "dual" else "",
                 shards, rsa_med * shards, 100 * med(nom), multi_note))
    print()
    # Proof of signing: the sink's bytes per message, signed minus unsigned, against the
    # signature fields' size from the one-off check.
    for way, title in WAYS[1:]:
        w = {r["rep"]: r for r in rs if r["way"] == way}
        if not w:
            continue
        if not u or way not in checks:
            print("- %s: signed bytes not checked (%s)." % (title, "no unsigned way to compare with" if not u else "VERIFY=0"))
            continue
        want = checks[way]["sig_bytes"][0]
        diffs = [(w[k]["sink_bytes"] - u[k]["sink_bytes"]) / w[k]["messages"] for k in sorted(w) if k in u]
        ok = all(abs(d - want) <= tol for d in diffs)
        failed |= not ok
        print("- %s: the sink got %s bytes per message more than unsigned (per run); the DKIM-Signature field%s %d bytes: %s."
              % (title, ", ".join("%.2f" % d for d in diffs), "s are" if way == "dual" else " is", want,
                 "every message was signed" if ok else "MISMATCH: not every message carried the signature(s)"))
    print()
    print("Per run (load average at the start of each way; waited: seconds waited for other sessions' builds and tests before it; "
          "openssl RSA-2048 signatures per CPU-second just before and after a signed way, the bound its target figure uses; busy: what ran at its start or end anyway):")
    print()
    print("```")
    for r in sorted(rs, key=lambda r: r["rep"]):
        bracket = ""
        if r.get("rsa_before") or r.get("rsa_after"):
            bracket = "  openssl RSA-2048 before/after %s/%s per CPU-s" % tuple(
                "%.0f" % r[k] if r.get(k) else "-" for k in ("rsa_before", "rsa_after"))
        print("run %d %-8s %6d messages %7.2f s %6.0f msg/s  volleyd %6.0f µs/msg %.2f cores  sink %5.1f µs/msg  load %-5s waited %4d s%s%s"
              % (r["rep"], r["way"], r["messages"], secs(r), rate(r), us_per_msg(r), cores(r),
                 r["sink_cpu_s"] / r["sink_messages"] * 1e6, r["loadavg"], r["waited"], bracket, busy(r)))
    print("```")
    print()

if verdicts:
    print("### Target (issue 15): signed messages per volleyd CPU-second >= %.0f %% of RSA-2048 signatures per CPU-second" % (100 * target))
    print()
    print("| size | way | messages per volleyd CPU-second | % of RSA-2048 (runs) | % of its own bound | messages/s | volleyd cores | % of nominal (x shards) | verdict |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for size, title, pcs, pct, f, own, r, c, nom, verdict in verdicts:
        print("| %s | %s | %.0f | %.1f (%s) | %s | %.0f | %.2f | %.1f | **%s** |"
              % (f"{size:,}", title, pcs, pct, ", ".join("%.1f" % (100 * x) for x in f),
                 "%.1f" % own if own is not None else "(= RSA)", r, c, nom, verdict))
    print()
for p in [r for r in rows if r.get("part") == "profile"]:
    per = p["cpu_s"] / max(p["delivered"], 1) * 1e6
    print("### perf profile: volleyd, %s, %s-byte messages (%s delivered, %.0f µs of CPU a message; a run of its own, not one of the above)"
          % (dict(WAYS)[p["way"]], f"{p['size']:,}", f"{p['delivered']:,}", per))
    print()
    print("By library: %s." % ", ".join("%s %.1f %% (%.0f µs)" % (d, pct, pct / 100 * per) for pct, d in p["dso"] if pct >= 0.5))
    print()
    print("Top functions by self time, leaving out the addresses of libraries without symbols (libcrypto):")
    print()
    print("| self % | µs per message | library | function |")
    print("| ---: | ---: | --- | --- |")
    for pct, d, name in p["symbols"]:
        name = name if len(name) <= 120 else name[:117] + "..."
        print("| %.2f | %.0f | %s | `%s` |" % (pct, pct / 100 * per, d, name.replace("|", "\\|").replace("`", "'")))
    print()
if checks:
    print("Signature check (before the runs): %s." % "; ".join(
        "%s: %d messages, every DKIM-Signature verified by python3-dkim (%s), a changed body fails" %
        (w, c["messages"], ", ".join(a for a, _, _, _ in c["signatures"][0])) for w, c in sorted(checks.items())))
sys.exit(1 if failed else 0)
EOF
