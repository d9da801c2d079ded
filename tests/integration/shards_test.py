#!/usr/bin/python3
"""shards_test.py - several delivery shards share the queue by partition, and nothing is
lost, doubled or left unfinished between them.

volleyd runs 4 shards. 40 domains are routed statically to 8 sink addresses
(127.0.0.1..8), so their recipients fall into many queue partitions and every shard owns
some of them: a shard that did not scan its partitions would leave recipients queued. A
second job uses 2 domains only, so most shards have no part of it: the job must still
be marked done, once, by whichever shard finishes last.
"""
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SHARDS = 4
ADDRESSES = ["127.0.0.%d" % i for i in range(1, 9)]
N_DOMAINS = 40
WIDE, NARROW = "shards-wide", "shards-narrow"
N_WIDE, N_NARROW = 3000, 300


def test(h):
    sink = h.sink(listen_hosts=ADDRESSES)
    routes = {harness.domain(i): "%s:%d" % (ADDRESSES[i % len(ADDRESSES)], sink.port)
              for i in range(N_DOMAINS)}
    d = h.volleyd(star_route=False, routes=routes,
                  extra_config="\n[delivery]\nshards = %d\n" % SHARDS)
    d.start()
    wide = harness.recipients(N_WIDE, N_DOMAINS, "wide")
    narrow = harness.recipients(N_NARROW, 2, "narrow")
    d.drop(WIDE + ".job", harness.job_text(WIDE, wide))
    d.drop(NARROW + ".job", harness.job_text(NARROW, narrow))

    # One thread per shard, named for top -H (the main thread runs shard 0).
    def shard_threads():
        names = []
        for task in os.listdir("/proc/%d/task" % d.proc.pid):
            try:
                with open("/proc/%d/task/%s/comm" % (d.proc.pid, task)) as f:
                    names.append(f.read().strip())
            except FileNotFoundError:
                pass  # a thread that ended meanwhile
        return sorted(n for n in names if n.startswith("volley-shard"))

    want = ["volley-shard%d" % i for i in range(1, SHARDS)]
    wait_for(lambda: d.assert_alive() and shard_threads() == want, 20,
             "threads %s (have %s)" % (want, shard_threads()))

    def finished(job):
        with open(d.output, errors="replace") as f:
            return "job \"%s\" finished" % job in f.read()

    wait_for(lambda: d.assert_alive() and finished(WIDE) and finished(NARROW), 120,
             "both jobs finished")
    records = d.deliveries()
    for job, rcpts in ((WIDE, wide), (NARROW, narrow)):
        got = harness.delivered_by_rcpt(records, job)
        check(set(got) == set(rcpts),
              "%s: %d of %d recipients delivered" % (job, len(set(got) & set(rcpts)), len(rcpts)))
        twice = [r for r, n in got.items() if n != 1]
        check(not twice, "%s: delivered more than once in the log: %s" % (job, twice[:5]))
        status, body = harness.http_get("http://%s:%d/jobs/%s" % (harness.LOOPBACK,
                                                                  d.admin_port, job))
        check(status == 200 and json.loads(body).get("state") == "done",
              "%s: admin API says %s %s" % (job, status, body))
    with open(d.output, errors="replace") as f:
        out = f.read()
    for job in (WIDE, NARROW):
        n = out.count("job \"%s\" finished" % job)
        check(n == 1, "%s: \"finished\" logged %d times, not once" % (job, n))

    # The sink saw every message once, and on every address: the domains' partitions
    # were spread over the shards and each shard delivered its own. (It writes its
    # record file at least once a second: wait for the last lines.)
    def sink_seen():
        seen = collections.Counter()
        for rec in sink.records():
            for rcpt in rec.get("rcpts", []):
                seen[rcpt] += 1
        return seen
    wait_for(lambda: sum(sink_seen().values()) >= N_WIDE + N_NARROW, 10,
             "the sink's record of every message")
    seen = sink_seen()
    check(all(seen[r] == 1 for r in wide + narrow),
          "the sink did not get every recipient exactly once (%d of %d, max %d)"
          % (sum(1 for r in wide + narrow if seen[r] >= 1), N_WIDE + N_NARROW,
             max(seen.values() or [0])))
    per_address = sink.listener_sessions(sink.fresh_stats())
    log("sessions per sink address: %s" % per_address)
    check(all(n > 0 for n in per_address.values()),
          "some sink address got no session: %s" % per_address)
    check(d.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "shards")
