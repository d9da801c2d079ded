#!/usr/bin/python3
"""transactions_test.py - several recipients per transaction, and 452 "too many recipients".

A job whose message is the same for every recipient sends the recipients of one domain
together, up to smtp.max_recipients_per_transaction (default 100). volley-sink here takes
only 30 per transaction (--max-recipients 30) and answers 452 4.5.3 to the rest, as real
servers do: those go in the next transaction, without a deferral and without counting
an attempt (RFC 5321 4.5.3.1.10). A personalised job beside it sends one recipient per
transaction.
"""
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SHARED, PERSONAL = "txn-shared", "txn-personal"
SHARED_FROM, PERSONAL_FROM = "shared@volley-src.test", "personal@volley-src.test"
N_SHARED, N_PERSONAL, DOMAINS, SINK_CAP = 500, 60, 5, 30


def test(h):
    sink = h.sink(record=True, extra_args=["--max-recipients", str(SINK_CAP)])
    d = h.volleyd(route_port=sink.port)
    d.start()
    shared = harness.recipients(N_SHARED, DOMAINS, "sh")
    personal = harness.recipients(N_PERSONAL, DOMAINS, "pe")
    d.drop(SHARED + ".job", harness.job_text(SHARED, shared, sender=SHARED_FROM))
    lines = [harness.header_line(PERSONAL, PERSONAL_FROM, harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="N%d" % i) for i, r in enumerate(personal)]
    d.drop(PERSONAL + ".job", "\n".join(lines) + "\n")

    for job, n in ((SHARED, N_SHARED), (PERSONAL, N_PERSONAL)):
        wait_for(lambda job=job, n=n: d.assert_alive()
                 and len(harness.delivered_by_rcpt(d.deliveries(job), job)) >= n,
                 60, "every recipient of %s delivered" % job, interval=0.2)
    wait_for(lambda: sink.stats().get("recipients", 0) >= N_SHARED + N_PERSONAL, 15,
             "the sink to count every recipient")
    time.sleep(1.5)  # the sink flushes its record every second

    # Every recipient delivered once, at the first attempt: a 452 is not a deferral.
    for job, rcpts in ((SHARED, shared), (PERSONAL, personal)):
        recs = d.deliveries(job)
        bad = [r for r in recs if r["status"] != "delivered" or r["attempt"] != 1]
        check(not bad, "%s: %d records other than delivered at attempt 1, e.g. %s"
              % (job, len(bad), bad[:3]))
        per = collections.Counter(r["rcpt"] for r in recs)
        check(set(per) == set(rcpts) and max(per.values()) == 1,
              "%s: delivery log does not have each recipient exactly once" % job)

    messages = sink.records()
    by_sender = collections.defaultdict(list)
    for m in messages:
        by_sender[m["from"]].append(m["rcpts"])
    seen = collections.Counter(r for m in messages for r in m["rcpts"])
    check(set(seen) == set(shared) | set(personal) and max(seen.values()) == 1,
          "the sink did not get every recipient exactly once: %s"
          % [r for r, c in seen.items() if c != 1][:5])

    sizes = [len(r) for r in by_sender[SHARED_FROM]]
    log("shared job: %d transactions, sizes %s" % (len(sizes), sorted(collections.Counter(sizes).items())))
    check(max(sizes) == SINK_CAP,
          "shared job: largest transaction had %d recipients, want the sink's cap %d "
          "(volleyd sends up to 100; the sink takes %d and answers 452 to the rest)"
          % (max(sizes), SINK_CAP, SINK_CAP))
    check(len(sizes) <= N_SHARED // 10,
          "shared job: %d transactions for %d recipients: not grouped" % (len(sizes), N_SHARED))
    mixed = [r for r in by_sender[SHARED_FROM] if len({a.split("@")[1] for a in r}) != 1]
    check(not mixed, "shared job: transactions mixing domains: %s" % mixed[:2])

    # Each delivery record names its transaction (txn, docs/delivery-log.md):
    # grouped by it, the recipients are exactly the sink's messages, so that
    # counting distinct txn counts messages (volley-load does).
    for job, sender in ((SHARED, SHARED_FROM), (PERSONAL, PERSONAL_FROM)):
        by_txn = collections.defaultdict(set)
        for r in d.deliveries(job):
            check(r.get("txn"), "%s: a delivered record without txn: %s" % (job, r))
            by_txn[r["txn"]].add(r["rcpt"])
        got = sorted(sorted(rcpts) for rcpts in by_txn.values())
        want = sorted(sorted(rcpts) for rcpts in by_sender[sender])
        check(got == want, "%s: the log's transactions (%d) are not the sink's (%d): %s vs %s"
              % (job, len(got), len(want), got[:2], want[:2]))

    personal_sizes = collections.Counter(len(r) for r in by_sender[PERSONAL_FROM])
    check(personal_sizes == collections.Counter({1: N_PERSONAL}),
          "personalised job: transaction sizes %s, want %d of 1" % (dict(personal_sizes), N_PERSONAL))
    check(d.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "transactions")
