#!/usr/bin/python3
"""schedule_test.py - when volleyd sends, retries and gives up (docs/jobs.md, docs/config.md).

volley-sink answers every RCPT to defer.test and shortlived.test with 451 4.3.0 (a fault
profile); everything else is accepted. volleyd retries after 1 s, at most every 2 s, and
gives up after 3 days, except at shortlived.test, whose [destination] table sets
retry_max_age = "3s". Four jobs:

  later      send_after 4 s ahead: no recipient is sent before that time.
  gone       expires already passed at intake: the job is refused (its .error names
             expires), nothing of it is queued, logged or sent.
  expiring   expires 3 s ahead, recipients at defer.test: deferred, retried, and
             expired at the deadline with the last reply quoted.
  perdomain  recipients at defer.test and at shortlived.test: the shortlived.test ones
             expire after about 3 s (the destination's max_age); the defer.test ones
             are still being retried then (the 3-day default applies to them).

Every terminal record is checked to be the only one for its recipient.
"""
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

PROFILES = """
[profile.busy]
[[profile.busy.reply]]
command = "RCPT"
reply = "451 4.3.0 try again later"

[domain."defer.test"]
profile = "busy"

[domain."shortlived.test"]
profile = "busy"
"""

TERMINAL = ("delivered", "bounced", "expired", "cancelled")


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def job(job_id, rcpts, **header):
    lines = [harness.header_line(job_id, **header)]
    lines += [harness.rcpt_line(r) for r in rcpts]
    return "\n".join(lines) + "\n"


def test(h):
    pdir = h.mkdir("profiles")
    profiles = os.path.join(pdir, "profiles.toml")
    with open(profiles, "w") as f:
        f.write(PROFILES)
    sink = h.sink(extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port,
                  extra_config='\n[destination."shortlived.test"]\nretry_max_age = "3s"\n')
    d.start()

    later = ["later-%02d@d%04d.test" % (i, i % 5 + 1) for i in range(20)]
    gone = ["gone-%02d@d%04d.test" % (i, i % 5 + 1) for i in range(10)]
    expiring = ["exp-%02d@defer.test" % i for i in range(5)]
    short = ["short-%02d@shortlived.test" % i for i in range(5)]
    long_ = ["long-%02d@defer.test" % i for i in range(5)]

    t0 = time.time()
    send_after = t0 + 4
    d.drop("later.job", job("later", later, send_after=rfc3339(send_after)))
    d.drop("gone.job", job("gone", gone, expires=rfc3339(t0 - 60)))
    expires = t0 + 3
    d.drop("expiring.job", job("expiring", expiring, expires=rfc3339(expires)))
    d.drop("perdomain.job", job("perdomain", short + long_))

    def records():
        return harness.read_jsonl(d.deliveries_path)

    def terminal(recs, job_id):
        return [r for r in recs if r.get("job") == job_id and r.get("status") in TERMINAL]

    # gone: refused at intake, as a job that would expire every recipient at once.
    wait_for(lambda: d.assert_alive() and d.exists("failed", "gone.job.error"), 60,
             "\"gone\" refused into failed/")
    with open(d.path("failed", "gone.job.error")) as f:
        why = f.read()
    check("incoming/gone.job:1: expires: " in why and "is in the past" in why,
          "gone: the refusal names expires: %r" % why)

    # perdomain: the shortlived.test recipients expire after their 3 s; the defer.test
    # ones of the same job are still being retried.
    wait_for(lambda: d.assert_alive() and
             len([r for r in terminal(records(), "perdomain") if r["rcpt"] in short]) >= len(short),
             60, "the shortlived.test recipients expired")
    recs = records()
    for r in [r for r in terminal(recs, "perdomain") if r["rcpt"] in short]:
        check(r["status"] == "expired" and r["attempt"] >= 2 and r["code"] == 451,
              "shortlived.test: expired after retries, with the last reply: %r" % r)
        check("message expired after" in r["response"] and "try again later" in r["response"],
              "shortlived.test: the response quotes the last reply: %r" % r)
    long_terminal = [r for r in terminal(recs, "perdomain") if r["rcpt"] in long_]
    check(not long_terminal, "defer.test recipients keep the default max_age: %r" % long_terminal)
    long_deferrals = [r for r in recs if r.get("job") == "perdomain" and r["rcpt"] in long_
                      and r["status"] == "deferred"]
    check(len(long_deferrals) >= 2 * len(long_),
          "defer.test recipients were retried (%d deferrals)" % len(long_deferrals))

    # expiring: the job's expires ends the retries at the deadline.
    wait_for(lambda: d.assert_alive() and len(terminal(records(), "expiring")) >= len(expiring),
             60, "every recipient of \"expiring\" expired")
    for r in terminal(records(), "expiring"):
        check(r["status"] == "expired" and r["code"] == 451 and r["attempt"] >= 2,
              "expiring: expired after retries: %r" % r)
        check(parse_ts(r["ts"]) >= expires - 0.001,
              "expiring: not given up before the job's expires: %r" % r)

    # later: nothing before send_after, then everything.
    wait_for(lambda: d.assert_alive() and len(terminal(records(), "later")) >= len(later), 60,
             "every recipient of \"later\" delivered")
    recs = records()
    for r in [r for r in recs if r.get("job") == "later"]:
        check(r["status"] == "delivered", "later: delivered: %r" % r)
        check(parse_ts(r["ts"]) >= send_after - 0.001,
              "later: sent at %s, before send_after %s" % (r["ts"], rfc3339(send_after)))

    # One terminal record per recipient, in every job.
    seen = {}
    for r in records():
        if r.get("status") in TERMINAL:
            key = (r["job"], r["rcpt"])
            check(key not in seen, "two terminal records for %r: %r and %r" % (key, seen.get(key), r))
            seen[key] = r
    got = set()

    def sink_has_later():
        got.clear()
        for rec in sink.records():
            got.update(rec["rcpts"])
        return set(later) <= got

    # The sink writes its record a moment after it replies.
    wait_for(sink_has_later, 30, "every recipient of \"later\" in the sink's record")
    check(not (got & set(gone)), "no recipient of \"gone\" reached the sink")
    check(not [r for r in records() if r.get("job") == "gone"],
          "gone: records in the delivery log of a refused job")
    log("send_after, expires and per-destination max_age honoured")
    check(d.stop() == 0, "volleyd exits 0")


harness.main(test, "schedule")
