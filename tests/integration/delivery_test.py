#!/usr/bin/python3
"""delivery_test.py - a 2,000-recipient job over 20 domains through volleyd into volley-sink.

Checks: the sink's recipient count equals the job's; the sink's record has each recipient
exactly once; the delivery log has exactly one `delivered` record per recipient (with the
right line number, code and host); a second drop of the same job id is refused (moved to
failed/ with a .error naming the job id) and sends nothing again; SIGTERM stops volleyd
cleanly.
"""
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "delivery-1"
JOB2 = "delivery-2"
N = 2000
N2 = 200
DOMAINS = 20


def test(h):
    sink = h.sink(record=True)
    d = h.volleyd(route_port=sink.port)
    d.start()

    rcpts = harness.recipients(N, DOMAINS, "dlv")
    check(len(set(rcpts)) == N, "test bug: recipients are not unique")
    line_of = {r: i + 2 for i, r in enumerate(rcpts)}
    d.drop(JOB + ".job", harness.job_text(JOB, rcpts))

    wait_for(lambda: d.assert_alive() and d.exists("accepted", JOB + ".job"), 60,
             "%s.job to reach spool/accepted/" % JOB)
    log("job accepted")
    reader = harness.JsonlReader(d.deliveries_path)

    def all_delivered():
        d.assert_alive()
        got = harness.delivered_by_rcpt(reader.poll(), JOB)
        return len(got) >= N

    wait_for(all_delivered, 180, "a delivered record for every recipient", interval=0.2)
    log("every recipient has a delivered record")
    wait_for(lambda: sink.stats().get("recipients", 0) >= N, 15,
             "the sink's stats to count %d recipients" % N)
    time.sleep(2)  # anything extra (a duplicate send) would show up by now

    # The delivery log: exactly one delivered record per recipient, consistent fields.
    records = d.deliveries(JOB)
    check(reader.torn == 0, "delivery log has %d lines that do not parse: %s"
          % (reader.torn, reader.torn_samples))
    delivered = [r for r in records if r.get("status") == "delivered"]
    per_rcpt = collections.Counter(r.get("rcpt") for r in delivered)
    dupes = {r: c for r, c in per_rcpt.items() if c > 1}
    check(not dupes, "recipients with more than one delivered record: %d, e.g. %s"
          % (len(dupes), list(dupes.items())[:5]))
    check(set(per_rcpt) == set(rcpts), "delivered recipients differ from the job's: "
          "missing %s, unexpected %s" % (sorted(set(rcpts) - set(per_rcpt))[:5],
                                          sorted(set(per_rcpt) - set(rcpts))[:5]))
    statuses = harness.status_counts(records, JOB)
    log("delivery-log statuses for %s: %s" % (JOB, dict(statuses)))
    bad_fields = []
    for r in delivered:
        problems = []
        for key in ("ts", "job", "line", "rcpt", "status", "code", "enhanced", "response", "host",
                    "attempt"):
            if key not in r:
                problems.append("no %s" % key)
        if r.get("line") != line_of.get(r.get("rcpt")):
            problems.append("line %r, want %r" % (r.get("line"), line_of.get(r.get("rcpt"))))
        if not isinstance(r.get("code"), int) or not 200 <= r["code"] < 300:
            problems.append("code %r" % r.get("code"))
        if r.get("host") != harness.LOOPBACK:
            problems.append("host %r" % r.get("host"))
        if "port" in r and r["port"] != sink.port:
            problems.append("port %r, want %d" % (r["port"], sink.port))
        if problems:
            bad_fields.append((r.get("rcpt"), problems))
    check(not bad_fields, "%d delivered records have bad fields, e.g. %s"
          % (len(bad_fields), bad_fields[:3]))

    # The sink: the same recipients, each once.
    stats = sink.stats()
    log("sink stats: %s" % stats)
    check(stats.get("recipients") == N, "sink counted %r recipients, the job has %d"
          % (stats.get("recipients"), N))
    seen = collections.Counter()
    for rec in sink.records():
        for r in rec.get("rcpts", []):
            seen[r] += 1
    twice = {r: c for r, c in seen.items() if c != 1}
    check(not twice, "recipients the sink got more than once: %d, e.g. %s"
          % (len(twice), list(twice.items())[:5]))
    check(set(seen) == set(rcpts), "sink record differs from the job: missing %s, unexpected %s"
          % (sorted(set(rcpts) - set(seen))[:5], sorted(set(seen) - set(rcpts))[:5]))

    # A next job to the same domains goes out over the connections the first
    # one left idle in the pool: every recipient delivered at the first attempt.
    # (A pooled connection that was handed work but never flushed it once
    # stalled until the idle timeout and deferred everything.)
    rcpts2 = harness.recipients(N2, DOMAINS, "dlv2")
    d.drop(JOB2 + ".job", harness.job_text(JOB2, rcpts2))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries(JOB2), JOB2)) >= N2,
             60, "a delivered record for every recipient of %s" % JOB2, interval=0.2)
    second = d.deliveries(JOB2)
    not_first_try = [r for r in second if r.get("status") != "delivered" or r.get("attempt") != 1]
    check(not not_first_try, "%s: %d records other than delivered at attempt 1, e.g. %s"
          % (JOB2, len(not_first_try), not_first_try[:3]))
    wait_for(lambda: sink.stats().get("recipients", 0) >= N + N2, 15,
             "the sink's stats to count %d recipients" % (N + N2))
    stats = sink.stats()

    # A second drop of the same job id is refused and sends nothing.
    before_records = len(records)
    before_sink = stats.get("recipients")
    again = JOB + "-again.job"
    d.drop(again, harness.job_text(JOB, rcpts))
    wait_for(lambda: d.assert_alive() and d.exists("failed", again) and d.exists("failed", again + ".error"),
             30, "the duplicate %s to be moved to spool/failed/ with a .error" % again)
    error = d.read("failed", again + ".error")
    log("duplicate refused: %s" % error.strip()[:300])
    check(JOB in error, "the .error for a duplicate job id does not name the job id %r: %r"
          % (JOB, error[:300]))
    check(not d.exists("accepted", again), "the duplicate is also in spool/accepted/")
    time.sleep(3)  # the sink writes its stats every second
    after = d.deliveries(JOB)
    check(len(after) == before_records, "the duplicate drop added %d delivery-log records for %s"
          % (len(after) - before_records, JOB))
    check(sink.stats().get("recipients") == before_sink, "the duplicate drop sent mail: sink "
          "recipients %r -> %r" % (before_sink, sink.stats().get("recipients")))

    rc = d.stop()
    check(rc == 0, "volleyd did not exit cleanly on SIGTERM: status %r" % rc)
    sink.stop()
    final = sink.stats()
    check(final.get("recipients") == N + N2, "sink's final stats count %r recipients, want %d"
          % (final.get("recipients"), N + N2))


if __name__ == "__main__":
    harness.main(test, "delivery")
