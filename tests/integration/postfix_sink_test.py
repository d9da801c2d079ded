#!/usr/bin/python3
"""postfix_sink_test.py - a 2,000-recipient job over 20 domains through volleyd into
Postfix's smtp-sink (a real, independent SMTP server implementation).

smtp-sink runs on a free 127.0.0.1 port with -D (append every transaction to a dump file,
each after the -S marker line, with X-Mail-Args / X-Rcpt-Args headers) and -c (running
counters sess= quit= mesg=). Checks: every recipient has exactly one delivered record in
the delivery log; the dump holds every recipient exactly once; smtp-sink's message
counter equals the transactions in the dump.
"""
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "postfix-sink-1"
N = 2000
DOMAINS = 20
SENDER = "sender@volley-src.test"


def test(h):
    sink = h.postfix_sink()
    d = h.volleyd(route_port=sink.port)
    d.start()

    rcpts = harness.recipients(N, DOMAINS, "pfx")
    d.drop(JOB + ".job", harness.job_text(JOB, rcpts, sender=SENDER))
    reader = harness.JsonlReader(d.deliveries_path)

    def all_delivered():
        d.assert_alive()
        return len(harness.delivered_by_rcpt(reader.poll(), JOB)) >= N

    wait_for(all_delivered, 180, "a delivered record for every recipient", interval=0.2)
    log("every recipient has a delivered record")
    time.sleep(1)
    records = d.deliveries(JOB)
    log("delivery-log statuses: %s" % dict(harness.status_counts(records, JOB)))
    per_rcpt = harness.delivered_by_rcpt(records, JOB)
    dupes = {r: c for r, c in per_rcpt.items() if c > 1}
    check(not dupes, "recipients with more than one delivered record: %d, e.g. %s"
          % (len(dupes), list(dupes.items())[:5]))
    check(set(per_rcpt) == set(rcpts), "delivered recipients differ from the job's")
    wrong_port = [r for r in records if r.get("status") == "delivered" and "port" in r
                  and r["port"] != sink.port]
    check(not wrong_port, "delivered records name another port: %s" % wrong_port[:3])

    rc = d.stop()
    log("volleyd exit status %s" % rc)
    counters_live = sink.counters()
    sink.stop()  # flushes the dump
    transactions = sink.transactions()
    counters = sink.counters() or counters_live
    got = collections.Counter(r for _, rcpts_ in transactions for r in rcpts_)
    log("smtp-sink: %d transactions, %d recipients (%d distinct), counters %s"
        % (len(transactions), sum(got.values()), len(got), counters))
    senders = collections.Counter(s for s, _ in transactions)
    check(set(senders) <= {SENDER}, "unexpected MAIL FROM in the dump: %s" % dict(senders))
    twice = {r: c for r, c in got.items() if c > 1}
    check(not twice, "smtp-sink got %d recipients more than once, e.g. %s"
          % (len(twice), list(twice.items())[:5]))
    check(set(got) == set(rcpts), "smtp-sink's recipients differ from the job: missing %d "
          "(e.g. %s), unexpected %d (e.g. %s)"
          % (len(set(rcpts) - set(got)), sorted(set(rcpts) - set(got))[:3],
             len(set(got) - set(rcpts)), sorted(set(got) - set(rcpts))[:3]))
    check("mesg" in counters, "no counters from smtp-sink -c in %s" % sink.proc.output)
    check(counters["mesg"] == len(transactions), "smtp-sink counted %d messages but dumped %d"
          % (counters["mesg"], len(transactions)))


if __name__ == "__main__":
    harness.main(test, "postfix-sink")
