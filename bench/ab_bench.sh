#!/bin/bash
# ab_bench.sh - two volleyd binaries side by side on the same campaign, same sink
#
# Usage: A=/path/to/volleyd-a B=/path/to/volleyd-b bench/ab_bench.sh
#        A=volleyd B=volleyd A_SMTP='max_transactions_in_flight = 1' bench/ab_bench.sh
#
# One volley-sink (from $build) on SINK_ADDRESSES; `volley-load routes` sends
# DOMAINS domains there. Each round runs a fresh volleyd of A, then of B (empty
# queue, [delivery] shards = SHARDS), and `volley-load run --json --volleyd-pid`
# for the campaign; prints one line per run: recipients/s and messages/s (messages
# counted in the delivery log, distinct txn), volleyd CPU s per 10,000 recipients,
# peak RSS, and from volleyd's metrics at the end the sessions it opened
# (volley_connections_opened_total) and its STARTTLS handshakes, full and resumed
# (volley_tls_handshakes_total). ROUNDS rounds alternate A and B so that neither always gets
# the quieter machine: compare the rounds side by side.
#
# Environment: A, B (required), ROUNDS (3), RECIPIENTS (5000), DOMAINS (100), SIZE
# (102400), PERSONALISED (1), SHARDS (2), BENCH_BUILD (build-release: volley-sink and
# volley-load), BENCH_SKIP_BUILD=1, SINK_ADDRESSES (127.0.3.1-127.0.3.50: the sink's
# addresses, one destination each; 127.0.3.1-127.0.3.250 as compare_bench.sh has),
# STARTTLS (0; 1: the sink offers STARTTLS, which volleyd's default tls =
# "opportunistic" takes, as compare_bench.sh's volleyd-tls way), A_SMTP and B_SMTP
# (lines of an [smtp] table for A's or B's config: one binary, two settings).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD:-$root/build-release}
py=/usr/bin/python3
. "$root/bench/lib.sh"
bench_binaries
bench_tree_info
: "${A:?set A to the first volleyd binary}" "${B:?set B to the second volleyd binary}"
rounds=${ROUNDS:-3}
recipients=${RECIPIENTS:-5000}
domains=${DOMAINS:-100}
size=${SIZE:-102400}
shards=${SHARDS:-2}
personalised=()
[ "${PERSONALISED:-1}" = 1 ] && personalised=(--personalised)
work=$(mktemp -d /tmp/volley-abbench.XXXXXX)
port=$(free_port)
range=${SINK_ADDRESSES:-127.0.3.1-127.0.3.50}
sink_flags=()
if [ "${STARTTLS:-0}" = 1 ]; then
  printf '[profile.default]\nstarttls = true\n' >"$work/profiles.toml"
  sink_flags=(--profiles "$work/profiles.toml" --hostname sink.test)
fi
"$sink" --listen "$range:$port" --stats "$work/sink.json" "${sink_flags[@]}" >"$work/sink.out" \
  2>"$work/sink.err" &
sink_pid=$!
for i in $(seq 100); do
  grep -q 'listening on' "$work/sink.err" 2>/dev/null && break
  sleep 0.1
done
"$load" routes --domains "$domains" --sink-addresses "$range" --port "$port" --out "$work/routes.toml" 2>/dev/null
for round in $(seq "$rounds"); do
  for which in A B; do
    binary=${!which}
    dir=$work/$which-$round
    mkdir -p "$dir/spool"
    {
      printf '[paths]\nspool = "%s/spool"\nqueue = "%s/queue"\nlog = "%s/log"\n' "$dir" "$dir" "$dir"
      printf '[delivery]\nshards = %d\n' "$shards"
      smtp_lines=${which}_SMTP
      [ -n "${!smtp_lines:-}" ] && printf '[smtp]\n%s\n' "${!smtp_lines}"
      admin_section
      cat "$work/routes.toml"
    } >"$dir/volleyd.toml"
    volleyd=$binary start_volleyd "$dir/volleyd.toml" "$dir/volleyd.err"
    "$load" run --spool "$dir/spool" --log "$dir/log" --recipients "$recipients" --domains "$domains" \
      --size "$size" "${personalised[@]}" --json --no-progress --volleyd-pid "$volleyd_pid" >"$dir/report.json"
    metrics=$(sed -n '/^\[metrics\]/,/^\[/s/^listen = "\(.*\)"/\1/p' "$dir/volleyd.toml")
    "$py" - "$dir/report.json" "$which" "$round" "$metrics" <<'PY'
import json, re, sys, urllib.request
r = json.load(open(sys.argv[1]))
# Recipients and messages apart; messages are counted in the delivery log (txn), so
# "?" for a tree whose volleyd does not write it.
mps = r.get("messages_delivered_per_second")
# Sessions opened and TLS handshakes by kind, from volleyd's metrics ("?" when not
# exported): what a change to connection opening or resumption moves.
def total(text, name, labels=""):
    found = [float(m.group(1)) for m in re.finditer(
        r"^%s\{?[^}\n]*%s[^}\n]*\}? ([0-9.e+]+)$" % (name, re.escape(labels)), text, re.M)]
    return "%.0f" % sum(found) if found else "?"
try:
    text = urllib.request.urlopen("http://%s/metrics" % sys.argv[4], timeout=5).read().decode()
except OSError:
    text = ""
print("%s round %s: %8.1f recipients/s  %8s messages/s  %6.2f volleyd CPU s per 10,000 recipients  peak RSS %d KiB  (%d delivered)  sessions %s, TLS full %s resumed %s"
      % (sys.argv[2], sys.argv[3], r["messages_per_second"], "%.1f" % mps if mps is not None else "?",
         r["volleyd_cpu_seconds_per_10k"], r["volleyd_peak_rss_kb"], r["delivered"],
         total(text, "volley_connections_opened_total"),
         total(text, "volley_tls_handshakes_total", 'kind="full"'),
         total(text, "volley_tls_handshakes_total", 'kind="resumed"')))
PY
    stop "$volleyd_pid" volleyd
    volleyd_pid=""
  done
done
