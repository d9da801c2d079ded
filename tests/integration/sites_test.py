#!/usr/bin/python3
"""sites_test.py - a site reached by DNS keeps its limits when its domains are on
different shards.

Two domains of sitetest.test, picked so that their queue partitions belong to different
shards of two, both have their MX at mx.shared.sitetest.test (one site, one address,
127.0.54.2). [destination."mx.shared.sitetest.test"] allows 2 connections. Each shard
makes its own pool for the site; together they must not open more than 2. The sink
answers slowly (RCPT and the end of data 60 ms late) so that every pool wants all
the connections it may have, and its live counters (GET /stats) are read every 100 ms.
The shards learn that they share the site when the second pool is made and once a
second after that; a pool over its new share gives a connection back when its
transaction under way ends (a slow one here), so the first SETTLE seconds are not
held to the limit. Under a loaded machine and the sanitizer build that takes more than
the report interval: 1.5 s failed there with the code before and after the engine's
split alike (the third connection closed at 1.8-1.9 s).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SHARDS = 2
PARTITIONS = 64           # queue::kPartitions
SITE_HOST = "127.0.54.2"
LIMIT = 2
PER_DOMAIN = 80
SETTLE = 2.5              # s: the once-a-second report, a transaction, QUIT


def partition_of(name):
    """queue::PartitionOf: FNV-1a 32 of the name, modulo the partitions."""
    h = 2166136261
    for c in name.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h % PARTITIONS


def pick_domains():
    """One domain of sitetest.test on each shard."""
    found = {}
    for i in range(1000):
        name = "d%d.sitetest.test" % i
        found.setdefault(partition_of(name) % SHARDS, name)
        if len(found) == SHARDS:
            return [found[s] for s in range(SHARDS)]
    raise harness.TestFailure("no domains on both shards")


def test(h):
    domains = pick_domains()
    log("domains on shards 0 and 1: %s" % domains)
    records = "\n".join("%s MX 10 mx.shared" % d.split(".")[0] for d in domains)
    records += "\nmx.shared A %s\n" % SITE_HOST
    nsd = h.nsd({"sitetest.test": records})
    profiles = os.path.join(h.mkdir("profiles"), "profiles.toml")
    with open(profiles, "w") as f:
        # No reply given: the normal one, late.
        f.write('[profile.slow]\n[[profile.slow.reply]]\ncommand = "RCPT"\ndelay = "60ms"\n'
                '[[profile.slow.reply]]\ncommand = "DOT"\ndelay = "60ms"\n')
        for d in domains:
            f.write('[domain."%s"]\nprofile = "slow"\n' % d)
    http_port = harness.free_port()
    sink = h.sink(record=False, listen_hosts=[SITE_HOST],
                  extra_args=["--profiles", profiles, "--http", "127.0.0.1:%d" % http_port])
    dns = "\n".join(['servers = ["127.0.0.1:%d"]' % nsd.port, "allow_loopback = true",
                     'families = "ipv4_only"'])
    d = h.volleyd(star_route=False, smtp_config="port = %d\n" % sink.port, dns_config=dns,
                  extra_config=('\n[delivery]\nshards = %d\n'
                                '\n[destination."mx.shared.sitetest.test"]\n'
                                'max_connections_per_destination = %d\n'
                                'max_recipients_per_transaction = 1\n' % (SHARDS, LIMIT)))
    d.start()
    rcpts = ["r%03d@%s" % (i, dom) for dom in domains for i in range(PER_DOMAIN)]
    d.drop("site.job", harness.job_text("site", rcpts))
    t0 = time.monotonic()
    peak_after_settling = 0
    samples = 0
    while len(harness.delivered_by_rcpt(d.deliveries("site"), "site")) < len(rcpts):
        d.assert_alive()
        if time.monotonic() - t0 > 120:
            raise harness.TestFailure("not every recipient delivered in 120 s")
        status, body = harness.http_get("http://127.0.0.1:%d/stats" % http_port)
        if status == 200 and time.monotonic() - t0 > SETTLE:
            open_now = sum(l.get("connections", 0) for l in json.loads(body)["listeners"])
            peak_after_settling = max(peak_after_settling, open_now)
            samples += 1
        time.sleep(0.1)
    log("delivered %d in %.1f s; most connections open at once after %.1f s: %d (%d samples)"
        % (len(rcpts), time.monotonic() - t0, SETTLE, peak_after_settling, samples))
    check(samples >= 10, "too few samples of the sink's connections: %d" % samples)
    check(0 < peak_after_settling <= LIMIT,
          "the site's limit is %d connections, the shards together had %d open"
          % (LIMIT, peak_after_settling))
    per_domain = harness.status_counts(d.deliveries("site"), "site")
    check(per_domain.get("delivered") == len(rcpts), "outcomes: %s" % dict(per_domain))
    check(d.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "sites")
