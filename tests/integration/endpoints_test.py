#!/usr/bin/python3
"""endpoints_test.py - volleyd's /metrics and admin API keep answering while 10,000
idle connections and a few slowloris ones are held against them (issue 19).

The report: two idle TCP connections to the metrics port made every scrape time out
for a minute, and 2,000 idle connections kept volleyctl out of the admin API for
minutes (civetweb gave each connection a worker thread). Now both run on
engine/http's libmicrohttpd server, where at [admin]/[metrics] max_connections the
oldest connection that has not sent its request head is closed, and a head must be
complete request_timeout after the connection. /metrics keeps a scraper's connection
([metrics] keepalive_timeout): a flood that fills the listen backlog makes a new
connection's SYN wait for its retransmission (1 s, a failed scrape at a 1 s timeout,
as CI once saw), and a kept connection never meets it.

The test, for the metrics port and then the admin port:
  - a real Prometheus scrapes volleyd's /metrics every second (scrape timeout 1 s);
  - a flood thread opens HELD (10,000) connections to the port that send nothing,
    and SLOWLORIS more that send a request head one byte every 2 s, and opens again
    each one the server closes (up to RECONNECTS_PER_SECOND a second), as an attacker
    keeping them would: volleyd keeps its cap of them and closes the rest, so the
    flood churns through tens of thousands of connections;
  - for FLOOD_SECONDS, every second the test scrapes /metrics itself and runs
    `volleyctl jobs` (within its own 10 s timeout): every one must succeed;
  - then Prometheus's `up` must have been 1 at every scrape of the flood's window
    (min_over_time), with a scrape each second or so (count_over_time), and the
    connection Prometheus held before the metrics flood must still be open after it.
It logs volleyd's RSS before and during each flood, and the scrape latencies
(Prometheus's scrape_duration_seconds and the test's own), the figures of
bench/RESULTS.md "Endpoints under a connection flood".

The test process raises its RLIMIT_NOFILE to the hard limit (20000 on the test
machine): HELD client sockets, while volleyd itself holds at most its caps (256 +
64 per endpoint by default).
"""
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

HELD = 10000
SLOWLORIS = 8
FLOOD_SECONDS = 20
RECONNECTS_PER_SECOND = 5000
# [admin] and [metrics] max_connections by default (docs/config.md).
DEFAULT_CAP = 256
SLOW_HEAD = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 4000


class Flood:
    """HELD silent and SLOWLORIS slow connections to 127.0.0.1:port, on one thread
    with epoll; any the server closes is opened again."""

    def __init__(self, port, held, slow):
        self.port = port
        self.held = held
        self.slow = slow
        self.sel = selectors.EpollSelector()
        self.conns = {}         # socket -> bytes of SLOW_HEAD sent, or None for silent
        self.pending = []       # kinds to reconnect (None or 0)
        self.closed_by_server = 0
        self.connect_errors = 0
        self.opened = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="flood-%d" % port, daemon=True)

    def _open(self, kind):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((harness.LOOPBACK, self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            self.connect_errors += 1
            self.pending.append(kind)
            return
        self.conns[s] = kind
        self.sel.register(s, selectors.EVENT_READ)
        self.opened += 1

    def _close(self, s):
        kind = self.conns.pop(s)
        self.sel.unregister(s)
        s.close()
        self.closed_by_server += 1
        self.pending.append(0 if kind is not None else None)

    def start(self):
        for _ in range(self.held):
            self._open(None)
        for _ in range(self.slow):
            self._open(0)
        log("flood on port %d: %d connections opened" % (self.port, len(self.conns)))
        self.thread.start()
        return self

    def open_now(self):
        return len(self.conns)

    def _run(self):
        next_byte = time.monotonic() + 2
        budget_at, budget = time.monotonic(), 0
        while not self.stopping.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed (evicted, or past its deadline)
                    self._close(s)
            now = time.monotonic()
            if now - budget_at >= 1:
                budget_at, budget = now, 0
            while self.pending and budget < RECONNECTS_PER_SECOND:
                self._open(self.pending.pop())
                budget += 1
            if now >= next_byte:  # the slowloris: one more byte each
                next_byte = now + 2
                for s, sent in list(self.conns.items()):
                    if sent is not None and sent < len(SLOW_HEAD):
                        try:
                            s.send(SLOW_HEAD[sent:sent + 1])
                            self.conns[s] = sent + 1
                        except OSError:
                            pass

    def stop(self):
        self.stopping.set()
        self.thread.join(10)
        for s in list(self.conns):
            self.sel.unregister(s)
            s.close()
        self.conns.clear()
        log("flood on port %d stopped: %d connections closed by volleyd and opened again, "
            "%d connect errors" % (self.port, self.closed_by_server, self.connect_errors))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def connections_to(pid, port):
    """The local ports of process `pid`'s established TCP connections to
    127.0.0.1:`port` (from /proc, without ss)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                ports.add(int(local.split(":")[1], 16))
    return ports


def scalar(prom, expr, at):
    result = prom.query(expr, at=at)["result"]
    check(len(result) == 1, "%s: %d series, not 1: %r" % (expr, len(result), result))
    return float(result[0]["value"][1])


def flood_one(h, d, prom, volleyctl, name, port):
    rss_before = rss_kib(d.proc.pid)
    fds_before = d.fd_count()
    prom_kept = connections_to(prom.proc.pid, d.metrics_port)
    check(name != "metrics" or prom_kept,
          "Prometheus holds no connection to the metrics port between scrapes (no keep-alive)")
    flood = Flood(port, HELD, SLOWLORIS).start()
    started = time.time()
    latencies, ctl_seconds, rss_peak, fds_peak, open_min = [], [], rss_before, fds_before, HELD
    while time.time() - started < FLOOD_SECONDS:
        d.assert_alive()
        t = time.monotonic()
        status, body = harness.http_get("http://%s:%d/metrics" % (harness.LOOPBACK, d.metrics_port), 5)
        latencies.append(time.monotonic() - t)
        check(status == 200 and "volley_deliveries_total" in body,
              "%s flood: a scrape failed after %.1f s: %s %s"
              % (name, time.time() - started, status, body[:200]))
        t = time.monotonic()
        p = subprocess.run([volleyctl, "--admin", "%s:%d" % (harness.LOOPBACK, d.admin_port), "jobs"],
                           capture_output=True, text=True, timeout=30)
        ctl_seconds.append(time.monotonic() - t)
        check(p.returncode == 0 and "endpoints-job" in p.stdout,
              "%s flood: volleyctl jobs failed after %.1f s (exit %d): %s%s"
              % (name, time.time() - started, p.returncode, p.stdout[:200], p.stderr[:300]))
        rss_peak = max(rss_peak, rss_kib(d.proc.pid))
        fds_peak = max(fds_peak, d.fd_count() or 0)
        open_min = min(open_min, flood.open_now())
        time.sleep(max(0.0, 1 - (time.monotonic() - t)))
    ended = time.time()
    flood.stop()
    # volleyd kept at most its cap of them: the rest of the first wave, and every
    # one opened again since, were closed (oldest silent first).
    check(flood.closed_by_server >= HELD - DEFAULT_CAP,
          "%s flood: volleyd closed only %d of %d held connections"
          % (name, flood.closed_by_server, HELD))
    check(fds_peak < fds_before + 2 * (DEFAULT_CAP + 64),
          "%s flood: volleyd held %d descriptors (%d before)" % (name, fds_peak, fds_before))
    # Prometheus: `up` was 1 at every scrape of the window, and it scraped each second.
    time.sleep(2)
    window = int(ended - started)
    up_min = scalar(prom, 'min_over_time(up{job="volley"}[%ds])' % window, ended)
    scrapes = scalar(prom, 'count_over_time(up{job="volley"}[%ds])' % window, ended)
    duration_max = scalar(prom, 'max_over_time(scrape_duration_seconds{job="volley"}[%ds])' % window, ended)
    duration_median = scalar(
        prom, 'quantile_over_time(0.5, scrape_duration_seconds{job="volley"}[%ds])' % window, ended)
    log("%s flood, %d s: prometheus scrapes %d, up min %g, scrape_duration_seconds median %.4f "
        "max %.4f; the test's scrapes (%d) median %.4f max %.4f s; volleyctl jobs (%d) median %.3f "
        "max %.3f s; volleyd RSS %d KiB before, %d KiB peak; descriptors %s before, %d peak; "
        "client connections held at least %d, %d opened in all"
        % (name, window, scrapes, up_min, duration_median, duration_max, len(latencies),
           statistics.median(latencies), max(latencies), len(ctl_seconds),
           statistics.median(ctl_seconds), max(ctl_seconds), rss_before, rss_peak, fds_before,
           fds_peak, open_min, flood.opened))
    check(up_min == 1, "%s flood: Prometheus's up was 0 at some scrape of the window" % name)
    # The scraper kept its connection through the flood: the cap evicts the
    # silent ones first, and a kept connection never waits in the backlog.
    if name == "metrics":
        check(prom_kept & connections_to(prom.proc.pid, d.metrics_port),
              "metrics flood: Prometheus's connection (ports %s) did not last through the flood"
              % sorted(prom_kept))
    check(scrapes >= window - 3, "%s flood: only %d Prometheus scrapes in %d s" % (name, scrapes, window))
    check(max(ctl_seconds) < 10, "%s flood: volleyctl took %.1f s" % (name, max(ctl_seconds)))


def test(h):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard >= HELD + 1000, "RLIMIT_NOFILE hard limit %d: the flood needs %d" % (hard, HELD + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    volleyctl = h.binary("tools/volleyctl/volleyctl")
    sink = h.sink()
    d = h.volleyd(route_port=sink.port)
    d.start()
    wait_for(lambda: harness.connectable(d.metrics_port) and harness.connectable(d.admin_port), 30,
             "volleyd's metrics and admin ports")
    d.drop("endpoints-job.job", harness.job_text("endpoints-job", harness.recipients(5, 1, "ep")))
    prom = h.prometheus(["%s:%d" % (harness.LOOPBACK, d.metrics_port)])
    prom.wait_for_query('up{job="volley"} == 1', 60, "Prometheus's first good scrape")
    wait_for(lambda: "endpoints-job" in subprocess.run(
        [volleyctl, "--admin", "%s:%d" % (harness.LOOPBACK, d.admin_port), "jobs"],
        capture_output=True, text=True, timeout=30).stdout, 30, "the job in volleyctl jobs")
    flood_one(h, d, prom, volleyctl, "metrics", d.metrics_port)
    flood_one(h, d, prom, volleyctl, "admin", d.admin_port)
    check(d.stop() == 0, "volleyd did not stop cleanly")


harness.main(test, "endpoints")
