#!/usr/bin/python3
"""many_domains_test.py - thousands of DNS-routed domains at once (issue 16), at a size
the suite can afford.

Every domain dNNNN.test is routed by DNS through nsd on loopback (one zone, "test",
harness.domains_zone): an MX of its own, mx.dNNNN.test, whose A record is one of a few
dozen loopback addresses where one volley-sink listens ([smtp] port = the sink's).
So every domain is a destination (a site) of its own, as in a campaign to many small
domains, with [smtp] max_connections_per_destination at its default, 20. Parts
(--part, default all; ctest runs each as a test of its own):

  dns    DOMAINS_DNS (2,500) domains, RCPTS_DNS (5,000) recipients, [dns]
         max_pending = 8: more lookups are wanted at once than may be in progress,
         and the ones past the limit must wait for their turn, not fail. Every
         recipient delivered once, at attempt 1; no deferral 4.4.3 ("DNS lookup
         failed") in the delivery log; every recipient reaches the sink.
  fds    volleyd under `ulimit -n 512` (prlimit), DOMAINS_FDS (1,000) domains,
         RCPTS_FDS (10,000) personalised recipients (one per transaction, so a large
         domain wants its 20 connections): some 2,000 connections are wanted, far
         more than there are descriptors. No record and no line of volleyd's output
         mentions EMFILE / "Too many open files", volleyd stays up, every recipient is
         delivered (a deferral for another reason is retried after 1 s). [dns]
         max_pending = 64 keeps the resolver out of it: a burst of a thousand answers
         overflows the resolver's UDP socket (lost answers become timeouts).
  stop   SIGTERM while hundreds of lookups and connections are in flight: the MX
         queries of half the domains are never answered (harness DnsProxy `drop`),
         the other half's addresses are sink listeners that delay their greeting by a
         minute; SIGTERM once IN_FLIGHT (200) of each are under way. volleyd exits by
         itself, status 0, within its stop grace (kStopGrace in engine/shard.h,
         10 s) plus STOP_MARGIN (10 s); then, DNS answering and the sink restarted
         without the delay, a restarted volleyd delivers every recipient (nothing
         lost, none logged delivered twice) and every one reaches the sink.
         (Before issue 16's fixes a Release volleyd spun for ever in ~Resolver here:
         ares_destroy called back into the shard's DNS socket watch; the Debug+ASan
         build happened to get through.)
  stop_now  the same, with a second SIGTERM a second after the first: volleyd
         exits at once (within STOP_NOW_LIMIT, 5 s after the first signal), not at
         the end of its 10 s grace, which the connections waiting for their greeting
         would otherwise use up; then the same restart delivers every recipient once.

Everything listens on and connects to 127.0.0.0/8; every domain is under .test.
"""
import collections
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

DOMAINS_DNS = 2500
RCPTS_DNS = 5000
MAX_PENDING = 8

DOMAINS_FDS = 1000
RCPTS_FDS = 10000
NOFILE = 512
FDS_MAX_PENDING = 64

DOMAINS_STOP = 600          # half unanswered in DNS, half behind a slow greeting
RCPTS_PER_STOP_DOMAIN = 2
STOP_GRACE = 10.0           # kStopGrace, engine/shard.h
STOP_MARGIN = 10.0          # RocksDB's close, ASan's exit, a loaded machine
GREETING_DELAY = "60s"
IN_FLIGHT = 200            # lookups, and connections, in flight at the SIGTERM

EMFILE_WORDS = ("Too many open files", "EMFILE")
PARTS = ("dns", "fds", "stop", "stop_now")
STOP_NOW_LIMIT = 5.0        # the second SIGTERM 1 s after the first, then exit and RocksDB's close


def add_args(parser):
    parser.add_argument("--part", choices=PARTS + ("all",), default="all")


def dns_config(port, *extra):
    return "\n".join(['servers = ["%s:%d"]' % (harness.LOOPBACK, port), "allow_loopback = true"]
                     + list(extra))


def personalised_job(job_id, rcpts):
    lines = [harness.header_line(job_id, msg=harness.message(personalised=True))]
    lines.extend(harness.rcpt_line(r, first_name="N%d" % i) for i, r in enumerate(rcpts))
    return "\n".join(lines) + "\n"


def by_rcpt(records):
    out = collections.defaultdict(list)
    for r in records:
        out[r.get("rcpt")].append(r)
    return out


def summary(records):
    """The records that are not deliveries, counted by status, enhanced code and text
    (domain names folded): "12 x deferred 4.4.3 dNNNN.test: MX lookup failed ..."."""
    c = collections.Counter("%s %s %s" % (r.get("status"), r.get("enhanced"),
                                          re.sub(r"\b(mx\.)?d\d{4,}\.test", "dNNNN.test",
                                                 r.get("response") or "")[:90])
                            for r in records if r.get("status") != "delivered")
    return "; ".join("%d x %s" % (n, k) for k, n in c.most_common(8)) or "none"


def wait_for_outcomes(d, job, rcpts, timeout, what):
    """Wait until every recipient of job has a record (whatever its status) while
    volleyd stays up; returns the job's records."""
    want = set(rcpts)

    def ready():
        d.assert_alive()
        recs = d.deliveries(job)
        return recs if want <= {r.get("rcpt") for r in recs} else None
    try:
        return wait_for(ready, timeout, what, 0.5)
    except harness.TestFailure:
        if not d.alive():
            raise   # volleyd died: assert_alive's message says how
        recs = d.deliveries(job)
        got = {r.get("rcpt") for r in recs}
        raise harness.TestFailure("%s: %d of %d recipients have a record after %ss; not deliveries: %s"
                                  % (what, len(want & got), len(want), timeout, summary(recs)))


def check_sink_has(sink, want, timeout=10):
    """Every address of want in the sink's record file (written out about once a second)."""
    got = set()

    def has_all():
        got.clear()
        got.update(a for m in sink.records() for a in m.get("rcpts", []))
        return want <= got
    try:
        wait_for(has_all, timeout, "the sink to record every recipient", 0.5)
    except harness.TestFailure:
        raise harness.TestFailure("the sink has %d of the %d recipients, e.g. missing %r"
                                  % (len(want & got), len(want), sorted(want - got)[:3]))


def emfile_lines(path):
    text = harness.tail(path, 100000)
    return [line for line in text.splitlines() if any(w in line for w in EMFILE_WORDS)]


# ---------------------------------------------------------------- dns

def part_dns(h):
    hosts = harness.address_range("127.0.61.1", 50)
    nsd = h.nsd({"test": harness.domains_zone(DOMAINS_DNS, hosts)}, name="nsd-dns")
    sink = h.sink(listen_hosts=hosts, name="sink-dns")
    d = h.volleyd(name="volleyd-dns", star_route=False, smtp_config="port = %d\n" % sink.port,
                  dns_config=dns_config(nsd.port, "max_pending = %d" % MAX_PENDING))
    d.start()
    rcpts = harness.recipients(RCPTS_DNS, DOMAINS_DNS, "dns")
    t0 = time.monotonic()
    d.drop("dns.job", harness.job_text("dns", rcpts))
    recs = wait_for_outcomes(d, "dns", rcpts, 75, "a record for every recipient of %d domains "
                             "(max_pending %d)" % (DOMAINS_DNS, MAX_PENDING))
    log("dns: every recipient has a record after %.1f s; not deliveries: %s"
        % (time.monotonic() - t0, summary(recs)))
    dns_failed = [r for r in recs if r.get("enhanced") == "4.4.3"]
    check(not dns_failed, "%d deferrals 4.4.3 (DNS lookup failed) with %d domains and max_pending %d, "
          "e.g. %r" % (len(dns_failed), DOMAINS_DNS, MAX_PENDING, dns_failed[:1]))
    per = by_rcpt(recs)
    bad = [rs for rs in per.values() if len(rs) != 1 or rs[0].get("status") != "delivered"
           or rs[0].get("attempt") != 1]
    check(not bad, "%d recipients not delivered once at their first attempt (%s), e.g. %r"
          % (len(bad), summary(recs), bad[:1]))
    check_sink_has(sink, set(rcpts))
    domains = {r["rcpt"].rpartition("@")[2] for r in recs}
    check(len(domains) == DOMAINS_DNS, "every domain was sent to: %d of %d" % (len(domains), DOMAINS_DNS))
    m = harness.scrape(d.metrics_port)
    log("dns: volley_dns_queries_total %r, cache %r" % (
        {dict(k).get("result"): v for k, v in m.select("volley_dns_queries_total").items()},
        {dict(k).get("result"): v for k, v in m.select("volley_dns_cache_lookups_total").items()}))
    d.assert_alive()
    check(d.stop() == 0, "volleyd stopped cleanly")


# ---------------------------------------------------------------- fds

def part_fds(h):
    hosts = harness.address_range("127.0.62.1", 50)
    nsd = h.nsd({"test": harness.domains_zone(DOMAINS_FDS, hosts)}, name="nsd-fds")
    sink = h.sink(listen_hosts=hosts, name="sink-fds")
    # This part is about descriptors, not the resolver: a few lookups in flight per
    # shard (more wait their turn), so that no burst of answers overflows the
    # resolver's socket (lost answers are timeouts, deferred 4.4.3).
    d = h.volleyd(name="volleyd-fds", star_route=False, smtp_config="port = %d\n" % sink.port,
                  dns_config=dns_config(nsd.port, "max_pending = %d" % FDS_MAX_PENDING))
    d.start_with_nofile(NOFILE)
    idle_fds = d.fd_count()
    log("fds: volleyd holds %d descriptors idle, limit %d" % (idle_fds, NOFILE))
    sampler = harness.FdSampler(d.proc.pid, 0.05)
    rcpts = harness.recipients(RCPTS_FDS, DOMAINS_FDS, "fds")
    t0 = time.monotonic()
    d.drop("fds.job", personalised_job("fds", rcpts))
    want = set(rcpts)
    try:
        def done():
            d.assert_alive()
            recs = d.deliveries("fds")
            emfile = [r for r in recs if any(w in (r.get("response") or "") for w in EMFILE_WORDS)]
            check(not emfile, "%d records blame the descriptor limit (ulimit -n %d), e.g. %r; not deliveries: %s"
                  % (len(emfile), NOFILE, emfile[:1], summary(recs)))
            delivered = {r.get("rcpt") for r in recs if r.get("status") == "delivered"}
            return recs if want <= delivered else None
        recs = wait_for(done, 80, "every recipient of %d domains delivered under ulimit -n %d"
                        % (DOMAINS_FDS, NOFILE), 0.5)
    finally:
        peak = sampler.stop()
        log("fds: peak %d descriptors (limit %d) over %d samples; stderr lines naming EMFILE: %d"
            % (peak, NOFILE, sampler.samples, len(emfile_lines(d.output))))
    log("fds: all %d delivered after %.1f s; not deliveries: %s" % (len(want), time.monotonic() - t0, summary(recs)))
    lines = emfile_lines(d.output)
    check(not lines, "volleyd's output names the descriptor limit %d times, e.g. %r" % (len(lines), lines[:3]))
    bounced = [r for r in recs if r.get("status") not in ("delivered", "deferred")]
    check(not bounced, "no recipient bounced or expired: %s" % summary(bounced))
    domains = {a.rpartition("@")[2] for a in want}
    check(len(domains) == DOMAINS_FDS, "the job covers every domain")
    check_sink_has(sink, want)
    # The budget did the work: destinations waited for it (nothing was deferred for
    # that), every recipient went at its first attempt, and the connections open
    # never passed the budget volleyd worked out from the limit.
    m = harness.scrape(d.metrics_port)
    budget = m.get("volley_connection_budget")
    waits = m.get("volley_connection_budget_waits_total")
    log("fds: connection budget %s, destinations made to wait %s times" % (budget, waits))
    check(budget is not None and 0 < budget < NOFILE, "a connection budget under the limit: %s" % budget)
    check(waits is not None and waits > 0, "with %d domains under ulimit -n %d destinations waited for "
          "the budget (volley_connection_budget_waits_total %s)" % (DOMAINS_FDS, NOFILE, waits))
    late = [r for r in recs if r.get("status") == "delivered" and r.get("attempt") != 1]
    check(not late, "every recipient delivered at its first attempt: %d not, e.g. %r" % (len(late), late[:1]))
    check(peak <= NOFILE, "descriptors stayed under the limit: peak %d" % peak)
    d.assert_alive()
    check(d.stop() == 0, "volleyd stopped cleanly")


# ---------------------------------------------------------------- stop

def part_stop_now(h):
    part_stop(h, twice=True)


def part_stop(h, twice=False):
    fast = harness.address_range("127.0.63.1", 25)
    slow = harness.address_range("127.0.63.101", 25)
    half = DOMAINS_STOP // 2
    # Domains 0..half-1: MX queries never answered (lookups in flight); the rest:
    # addresses behind a greeting delayed a minute (connections in flight).
    hosts_by_domain = [fast[i % len(fast)] if i < half else slow[i % len(slow)] for i in range(DOMAINS_STOP)]
    nsd = h.nsd({"test": harness.domains_zone(DOMAINS_STOP, hosts_by_domain)}, name="nsd-stop")
    proxy = h.dns_proxy(nsd.port, name="dns-proxy-stop")
    proxy.set_receive_buffer(8 << 20)   # every query of the burst, none lost to a full socket
    unanswered = {harness.dns_name_key(harness.domain(i)) for i in range(half)}
    proxy.drop.update((n, harness.QTYPES["MX"]) for n in unanswered)
    # Listener profile keys name "HOST:PORT", and one that names no --listen address
    # stops the sink: the port is chosen first.
    port = harness.free_port()
    profiles = os.path.join(h.dir, "slow-greeting.toml")
    with open(profiles, "w") as f:
        f.write('[profile.slow]\ngreeting_delay = "%s"\n' % GREETING_DELAY)
        for a in slow:
            f.write('[listener."%s:%d"]\nprofile = "slow"\n' % (a, port))
    sink = harness.Sink(h, listen_hosts=fast + slow, name="sink-stop",
                        extra_args=["--profiles", profiles]).start(port=port)
    dns = dns_config(proxy.port, 'timeout = "30s"', "tries = 2")
    d = h.volleyd(name="volleyd-stop", star_route=False, smtp_config="port = %d\n" % sink.port,
                  dns_config=dns, retry_initial="1s", retry_max="2s")
    d.start()
    rcpts = ["stop-%02d@%s" % (k, harness.domain(i)) for i in range(DOMAINS_STOP)
             for k in range(RCPTS_PER_STOP_DOMAIN)]
    d.drop("stop.job", harness.job_text("stop", rcpts))

    seen = [0, 0]

    def in_flight():
        d.assert_alive()
        seen[0] = len({q[2] for q in proxy.queries() if q[4] == "drop"})
        seen[1] = sink.stats().get("connections", 0)
        return tuple(seen) if min(seen) >= IN_FLIGHT else None
    try:
        lookups, conns = wait_for(in_flight, 30, "%d unanswered MX lookups and %d connections waiting for "
                                  "their greeting" % (IN_FLIGHT, IN_FLIGHT), 0.5)
    except harness.TestFailure as e:
        raise harness.TestFailure("%s: %d and %d; records: %s" % (e, seen[0], seen[1], summary(d.deliveries("stop"))))
    log("stop: %d MX lookups unanswered and %d connections waiting for a greeting; SIGTERM" % (lookups, conns))
    log("stop: records before the SIGTERM: %s" % summary(d.deliveries("stop")))
    t0 = time.monotonic()
    d.proc.popen.send_signal(signal.SIGTERM)
    limit = STOP_GRACE + STOP_MARGIN
    if twice:
        time.sleep(1.0)
        check(d.proc.popen.poll() is None, "volleyd still in its grace period a second after SIGTERM "
              "(the connections wait a minute for their greeting)")
        d.proc.popen.send_signal(signal.SIGTERM)
        limit = STOP_NOW_LIMIT
    try:
        d.proc.popen.wait(limit + 20)
    except subprocess.TimeoutExpired:
        pass
    took = time.monotonic() - t0
    rc = d.proc.popen.returncode
    if rc is None:
        d.kill9()
        raise harness.TestFailure("volleyd ignored SIGTERM for %.0f s with lookups and connections in "
                                  "flight (killed):\n%s" % (took, harness.tail(d.output, 15)))
    log("stop: volleyd exited with status %s %.1f s after the first SIGTERM%s"
        % (rc, took, " (a second one came 1 s after it)" if twice else ""))
    check(rc == 0, "volleyd exits 0 on SIGTERM, not %s:\n%s" % (rc, harness.tail(d.output, 15)))
    check(took <= limit, "volleyd took %.1f s to stop, more than its grace %.0f s + %.0f s"
          % (took, STOP_GRACE, STOP_MARGIN))

    # Answer every lookup, greet at once, start volleyd again: nothing may be lost.
    proxy.drop.clear()
    sink.restart(extra_args=[])
    d.start()
    want = set(rcpts)

    def all_delivered():
        d.assert_alive()
        return want <= {r.get("rcpt") for r in d.deliveries("stop") if r.get("status") == "delivered"}
    try:
        wait_for(all_delivered, 60, "every recipient delivered after the restart", 0.5)
    except harness.TestFailure as e:
        raise harness.TestFailure("%s: not deliveries: %s" % (e, summary(d.deliveries("stop"))))
    recs = d.deliveries("stop")
    final = [r for r in recs if r.get("status") not in ("delivered", "deferred")]
    check(not final, "nothing bounced or expired: %s" % summary(final))
    per = by_rcpt(r for r in recs if r.get("status") == "delivered")
    twice = [a for a, rs in per.items() if len(rs) > 1]
    check(not twice, "each delivered once in the log: %r" % twice[:5])
    check_sink_has(sink, want)
    log("stop: all %d delivered after the restart; not deliveries: %s" % (len(want), summary(recs)))
    check(d.stop() == 0, "volleyd stopped cleanly")


def test(h):
    part = h.args.part
    for name in PARTS:
        if part in ("all", name):
            t0 = time.monotonic()
            log("---- part %s" % name)
            globals()["part_" + name](h)
            log("---- part %s passed in %.1f s" % (name, time.monotonic() - t0))


if __name__ == "__main__":
    harness.main(test, "many-domains", add_args)
