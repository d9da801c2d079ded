#!/usr/bin/python3
"""crash_test.py - volleyd loses no recipient when killed with SIGKILL mid-delivery.

A 60,000-recipient personalised job (one recipient per transaction, over at most 2
connections, so that delivery lasts long enough to be interrupted) goes to volley-sink (with --record). Three times, when the delivery
log shows some but not all recipients delivered (at about 10%, 40% and 70%), volleyd is
killed with SIGKILL and restarted with the same config and directories. Then the test waits
until every recipient has a delivered record, and checks that every recipient is in the
sink's record at least once and has a delivered record in the log. Duplicates (sent again
after a crash) are allowed and reported.
"""
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "crash-1"
N = 60000
DOMAINS = 50
KILL_AT = (0.10, 0.40, 0.70)


def test(h):
    sink = h.sink(record=True)
    d = h.volleyd(route_port=sink.port, smtp_config="max_connections_per_destination = 2\n")
    d.start()
    rcpts = harness.recipients(N, DOMAINS, "crash")
    lines = [harness.header_line(JOB, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(rcpts)]
    d.drop(JOB + ".job", "\n".join(lines) + "\n")
    reader = harness.JsonlReader(d.deliveries_path)
    delivered = set()

    seen_records = [0]

    def refresh():
        recs = reader.poll()
        for r in recs[seen_records[0]:]:
            if r.get("job") == JOB and r.get("status") == "delivered":
                delivered.add(r.get("rcpt"))
        seen_records[0] = len(recs)
        return len(delivered)

    kills = []
    for frac in KILL_AT:
        target = int(N * frac)
        wait_for(lambda: (d.assert_alive() and refresh() >= target), 180,
                 "%d delivered before kill #%d" % (target, len(kills) + 1), interval=0.005)
        n = refresh()
        if n >= N:
            log("all %d delivered before kill #%d could happen: delivery outran the test"
                % (N, len(kills) + 1))
            break
        d.kill9()
        time.sleep(0.2)
        n = refresh()  # what was logged before the kill took effect
        kills.append(n)
        log("kill #%d at %d of %d delivered (%.1f%%)" % (len(kills), n, N, 100.0 * n / N))
        d.start()
    check(len(kills) == len(KILL_AT), "only %d of %d kills landed mid-delivery (at %s)"
          % (len(kills), len(KILL_AT), kills))
    check(len(set(kills)) == len(kills), "kills did not land at different points: %s" % kills)

    wait_for(lambda: d.assert_alive() and refresh() >= N, 240,
             "a delivered record for every recipient after %d restarts" % len(kills), interval=0.2)
    log("every recipient has a delivered record")
    time.sleep(2)
    refresh()
    rc = d.stop()
    log("volleyd exit status after the run: %s" % rc)
    sink.stop()

    records = [r for r in reader.poll() if r.get("job") == JOB]
    per_rcpt = harness.delivered_by_rcpt(records, JOB)
    missing = sorted(set(rcpts) - set(per_rcpt))
    check(not missing, "%d recipients have no delivered record, e.g. %s" % (len(missing), missing[:5]))
    unexpected = sorted(set(per_rcpt) - set(rcpts))
    check(not unexpected, "delivered records for addresses not in the job: %s" % unexpected[:5])
    log_dupes = sum(c - 1 for c in per_rcpt.values())

    seen = collections.Counter(a for rec in sink.records() for a in rec.get("rcpts", []))
    not_sent = sorted(set(rcpts) - set(seen))
    check(not not_sent, "%d recipients never reached the sink, e.g. %s" % (len(not_sent), not_sent[:5]))
    sink_dupes = sum(c - 1 for c in seen.values())
    stats = harness.status_counts(records, JOB)
    log("kills at %s delivered; delivery-log statuses %s" % (kills, dict(stats)))
    log("duplicates: %d extra delivered records in the log (%d recipients), %d extra copies "
        "at the sink (%d recipients); %d torn log lines"
        % (log_dupes, sum(1 for c in per_rcpt.values() if c > 1), sink_dupes,
           sum(1 for c in seen.values() if c > 1), reader.torn))
    if reader.torn:
        log("torn delivery-log lines (a record cut by SIGKILL and not repaired), e.g. %s"
            % reader.torn_samples[:2])


if __name__ == "__main__":
    harness.main(test, "crash")
