#!/usr/bin/python3
"""endpoints_hold.py - what 10,000 held connections cost volleyd's metrics endpoint
(issue 19), and how fast it scrapes meanwhile.

    bench/endpoints_hold.py --bindir build-release [--held 10000] [--seconds 20]

Starts volley-sink and volleyd from BINDIR with [metrics] max_connections raised to
HELD + 100 and request_timeout 5m, so that nothing is evicted or cut: volleyd really
holds every connection (by default it keeps 256 and closes the oldest silent one,
tests/integration/endpoints_test.py). Then opens HELD silent connections to the
metrics port, waits until volleyd has accepted them all (its descriptor count), and
scrapes /metrics once a second for SECONDS. Prints volleyd's RSS (VmRSS) and
descriptors before and while held, the cost per connection, and the scrape latencies
(median, max). Uses the integration harness (tests/integration/harness.py); raises
its own RLIMIT_NOFILE to the hard limit.
"""
import os
import resource
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def add_args(parser):
    parser.add_argument("--held", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=20)


def bench(h):
    held, seconds = h.args.held, h.args.seconds
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard >= held + 500, "RLIMIT_NOFILE hard limit %d is below %d" % (hard, held + 500))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sink = h.sink()
    d = h.volleyd(route_port=sink.port)
    with open(d.config) as f:
        text = f.read()
    text = text.replace("[metrics]\n", "[metrics]\nmax_connections = %d\nrequest_timeout = \"5m\"\n"
                        % (held + 100), 1)
    with open(d.config, "w") as f:
        f.write(text)
    d.start()
    wait_for(lambda: harness.connectable(d.metrics_port), 30, "the metrics port")
    url = "http://%s:%d/metrics" % (harness.LOOPBACK, d.metrics_port)
    for _ in range(3):
        harness.http_get(url, 5)
    time.sleep(1)
    rss_before, fds_before = rss_kib(d.proc.pid), d.fd_count()
    conns = []
    for _ in range(held):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((harness.LOOPBACK, d.metrics_port))
        except BlockingIOError:
            pass
        conns.append(s)
    wait_for(lambda: d.fd_count() >= fds_before + held, 60, "volleyd to accept every connection")
    latencies = []
    for _ in range(seconds):
        t = time.monotonic()
        status, body = harness.http_get(url, 5)
        latencies.append(time.monotonic() - t)
        check(status == 200, "scrape failed: %s %s" % (status, body[:200]))
        time.sleep(max(0.0, 1 - latencies[-1]))
    rss_held, fds_held = rss_kib(d.proc.pid), d.fd_count()
    for s in conns:
        s.close()
    print("held connections      %d" % held)
    print("volleyd RSS before    %d KiB" % rss_before)
    print("volleyd RSS held      %d KiB" % rss_held)
    print("per connection        %.1f KiB" % ((rss_held - rss_before) / held))
    print("descriptors           %d before, %d held" % (fds_before, fds_held))
    print("scrapes               %d, latency median %.4f s, max %.4f s"
          % (len(latencies), statistics.median(latencies), max(latencies)))
    d.stop()


harness.main(bench, "endpoints-hold", add_args)
