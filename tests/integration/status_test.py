#!/usr/bin/python3
"""status_test.py - the read side of issue 20: job rate and ETA, status, destinations,
queue, trace, a refused and a scheduled job.

volley-sink answers each message 50 ms late and greylists every (sender, recipient)
for 2 s (451 4.7.1 at the first RCPT); volleyd keeps one connection per destination
and retries after about 1 s, so every recipient is deferred at least once, then
delivered. While the campaign runs:
  - `volleyctl job` gains a rate and an ETA (numbers, not null) and its pending count
    and ETA fall; `volleyctl status` shows the job with a progress bar, the
    destinations and the queue totals, and `status --json` parses, with no errors;
  - `volleyctl queue --json` counts what is queued by state; its age classes add up to
    its total;
  - `volleyctl destinations --all --json` lists the route with counts.
When it is over: the destinations' deferrals equal the delivery log's deferred records
(each destination its own), the queue is empty, and `volleyctl trace` of one recipient
prints exactly its log records, deferred then delivered, in order.

Besides: a job whose send_after is an hour ahead is "scheduled" with its send_after and
expires, and GET /queue?job= counts its recipients as scheduled; a job file with a bad
recipient line shows rejected 1; a job refused whole shows state "refused" and the
error from failed/ instead of "no such job".
"""
import collections
import datetime
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB, N = "status-run", 200
DOMAINS = 4

SINK_PROFILES = """
[profile.default]
greylist = "2s"
[[profile.default.reply]]
command = "DOT"
delay = "50ms"
[[profile.default.reply]]
command = "BDAT"
delay = "50ms"
"""


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Ctl:
    def __init__(self, h, d):
        self.binary = h.binary("tools/volleyctl/volleyctl")
        self.admin = "%s:%d" % (harness.LOOPBACK, d.admin_port)
        self.config = d.config

    def run(self, *args, config=False):
        argv = [self.binary] + (["--config", self.config] if config else ["--admin", self.admin])
        argv += list(args)
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            log("$ volleyctl %s -> %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
        return p

    def ok(self, *args, config=False):
        p = self.run(*args, config=config)
        check(p.returncode == 0, "volleyctl %s failed (%d): %s"
              % (" ".join(args), p.returncode, p.stderr))
        return p.stdout

    def json(self, *args):
        return json.loads(self.ok("--json", *args))


def test(h):
    profiles = os.path.join(h.mkdir("profiles"), "slow.toml")
    with open(profiles, "w") as f:
        f.write(SINK_PROFILES)
    sink = h.sink(record=True, extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port, smtp_config="max_connections_per_destination = 1\n")
    ctl = Ctl(h, d)
    d.start()
    wait_for(lambda: d.assert_alive() and ctl.run("jobs").returncode == 0, 60,
             "volleyd's admin API")
    reader = harness.JsonlReader(d.deliveries_path)

    def poll():
        return reader.poll()  # every record so far

    # ------------------------------------------------ refused, rejected, scheduled
    # Found by its file name, as docs/jobs.md names job files: ID.job.
    d.drop("status-refused.job", json.dumps({"job": "status-refused", "from": "not an address",
                                      "message": harness.message()}) + "\n"
           + harness.rcpt_line("x@d0001.test") + "\n")
    wait_for(lambda: d.assert_alive() and ctl.run("job", "status-refused").returncode == 0, 60,
             "the refused job to show")
    refused = ctl.json("job", "status-refused")
    check(refused["state"] == "refused" and refused["error"]
          and refused["file"].startswith("failed/"), "refused job: %r" % refused)
    text = ctl.ok("job", "status-refused")
    check("state: refused" in text and "error: " in text, "volleyctl job of a refused job:\n%s"
          % text)
    p = ctl.run("job", "status-nothing")
    check(p.returncode == 1 and "no such job" in p.stderr, "unknown job: %r" % p.stderr)

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    later, expires = now + datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    sched_lines = [harness.header_line("status-sched", send_after=rfc3339(later),
                                       expires=rfc3339(expires))]
    sched_lines += [harness.rcpt_line("s%d@d0001.test" % i) for i in range(5)]
    sched_lines.append('{"to": "not-an-address"}')
    d.drop("sched.job", "\n".join(sched_lines) + "\n")
    wait_for(lambda: d.assert_alive() and ctl.run("job", "status-sched").returncode == 0, 60,
             "the scheduled job to be queued")
    sched = ctl.json("job", "status-sched")
    check(sched["state"] == "scheduled", "a job an hour ahead is %r" % sched["state"])
    check(sched["send_after"] == rfc3339(later) and sched["expires"] == rfc3339(expires),
          "send_after/expires: %r %r" % (sched["send_after"], sched["expires"]))
    check(sched["rejected"] == 1, "rejected: %r" % sched["rejected"])
    check(sched["pending"] == 5 and sched["eta_seconds"] is None,
          "scheduled job counters: %r" % sched)
    q = ctl.json("queue", "--job", "status-sched")
    check(q["scheduled"] == 5 and q["ready"] == 0 and q["deferred"] == 0 and q["total"] == 5,
          "queue of the scheduled job: %r" % q)
    check(sum(q["ages"].values()) == 5 and q["ages"]["0-5m"] == 5, "age classes: %r" % q)
    check(q["next_due"] == rfc3339(later), "next due %r, not %r" % (q["next_due"], rfc3339(later)))

    # ------------------------------------------------ the campaign
    rcpts = harness.recipients(N, DOMAINS, "st")
    # Personalised: one recipient per transaction, so the job takes a while.
    lines = [harness.header_line(JOB, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(rcpts)]
    d.drop(JOB + ".job", "\n".join(lines) + "\n")
    wait_for(lambda: d.assert_alive() and ctl.run("job", JOB).returncode == 0, 60, "the job")

    samples = []

    def rated():
        j = ctl.json("job", JOB)
        poll()
        if j["rate"] is not None and j["eta_seconds"] is not None and j["pending"] > 0:
            samples.append(j)
        return len(samples) >= 2 and samples[-1]["pending"] < samples[0]["pending"]

    wait_for(lambda: d.assert_alive() and rated(), 120, "the job to show a rate and an ETA",
             interval=1.0)
    first, last = samples[0], samples[-1]
    log("rate %.2f/s, ETA %ss with %d pending; then %.2f/s, ETA %ss with %d pending"
        % (first["rate"], first["eta_seconds"], first["pending"], last["rate"],
           last["eta_seconds"], last["pending"]))
    check(first["rate"] > 0 and first["state"] == "ready", "first sample: %r" % first)
    check(abs(first["eta_seconds"] - first["pending"] / first["rate"]) <= 1,
          "ETA %s is not pending / rate" % first["eta_seconds"])
    check(first["rejected"] == 0 and first["send_after"] is None, "fields: %r" % first)

    text = ctl.ok("status")
    check(JOB in text and "[" in text and "queue: " in text and "DESTINATION" in text,
          "volleyctl status:\n%s" % text)
    st = ctl.json("status")
    check(st["errors"] == [] and any(j["id"] == JOB for j in st["jobs"])
          and isinstance(st["destinations"], list) and "total" in st["queue"],
          "status --json: %r" % st)
    q = ctl.json("queue")
    check(sum(q["ages"].values()) == q["total"] == q["ready"] + q["deferred"] + q["scheduled"],
          "queue counts do not add up: %r" % q)
    check(q["total"] >= 5 and isinstance(q["in_flight"], int), "queue: %r" % q)
    text = ctl.ok("queue", "--domain", "d0001.test")
    check("age:" in text and "0-5m" in text, "volleyctl queue:\n%s" % text)
    dests = ctl.json("destinations", "--all")
    check(dests["destinations"] and all("queued" in x and "connections" in x and "level" in x
                                        for x in dests["destinations"]),
          "destinations --all: %r" % dests)
    text = ctl.ok("destinations", "--all")
    check(text.startswith("DESTINATION") and "QUEUED" in text, "table:\n%s" % text)

    def done():
        poll()
        j = ctl.json("job", JOB)
        return j["pending"] == 0 and j["state"] == "done" or j["pending"] == 0

    wait_for(lambda: d.assert_alive() and done(), 240, "the campaign to finish", interval=1.0)
    final = ctl.json("job", JOB)
    check(final["delivered"] == N and final["eta_seconds"] == 0, "final job: %r" % final)
    mine = [r for r in poll() if r.get("job") == JOB]
    deferred = [r for r in mine if r["status"] == "deferred"]
    check(len(deferred) >= N, "greylisting deferred only %d records" % len(deferred))

    # The log's records and the shards' counts are written apart: wait until the
    # destinations count every deferral.
    def deferrals():
        return sum(x["deferrals"] for x in ctl.json("destinations", "--all")["destinations"])

    wait_for(lambda: deferrals() == len(deferred), 30,
             "destinations' deferrals to equal the log's %d" % len(deferred))
    def drained():
        dests = ctl.json("destinations", "--all")["destinations"]
        return dests if all(x["queued"] == 0 and x["in_flight"] == 0 for x in dests) else None

    try:
        dests = wait_for(drained, 10, "the destinations' queued and in-flight counts to be 0")
    except harness.TestFailure:
        raise harness.TestFailure("destinations still queued after the end: %r"
                                  % ctl.json("destinations", "--all")["destinations"])
    check(any(x["last_reply"] and x["last_class"] is not None for x in dests),
          "no last reply: %r" % dests)
    q = ctl.json("queue", "--job", JOB)
    check(q["total"] == 0, "queue of a finished job: %r" % q)

    # ------------------------------------------------ trace
    rcpt = rcpts[7]
    expected = [r for r in mine if r["rcpt"] == rcpt]
    statuses = [r["status"] for r in expected]
    check(statuses[0] == "deferred" and statuses[-1] == "delivered", "log of %s: %r"
          % (rcpt, statuses))
    out = ctl.ok("--json", "trace", rcpt, config=True)
    traced = [json.loads(l) for l in out.splitlines()]
    check(traced == expected, "trace --json of %s:\n%r\nlog:\n%r" % (rcpt, traced, expected))
    out = ctl.ok("trace", rcpt.upper(), "--job", JOB, config=True)
    lines = out.splitlines()
    check(len(lines) == len(expected) and "deferred" in lines[0] and "delivered" in lines[-1]
          and "451" in lines[0] and "4.7.1" in lines[0], "trace:\n%s" % out)
    p = ctl.run("trace", "nobody@d0001.test", config=True)
    check(p.returncode == 1 and "no record" in p.stderr, "trace of nobody: %r" % p.stderr)
    p = ctl.run("trace", rcpt, "--job", "other-job", config=True)
    check(p.returncode == 1, "trace of another job's: %d" % p.returncode)

    # Errors: a bad query is a 400 that names it, and volleyctl says so.
    p = ctl.run("queue", "--job", "bad$id")
    check(p.returncode == 1 and "job" in p.stderr, "queue --job bad$id: %r" % p.stderr)
    p = ctl.run("destinations", "--watch")
    check(p.returncode == 2, "an option of another command: %d" % p.returncode)
    d.assert_alive()


if __name__ == "__main__":
    harness.main(test, "status")
