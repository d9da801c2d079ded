#!/usr/bin/python3
"""jobctl_test.py - pause, resume and cancel a job with volleyctl over volleyd's admin API.

volley-sink answers every message 10 ms late and volleyd keeps one connection to it
(max_connections_per_destination = 1) and sends one recipient per transaction (a
personalised message), so a job takes long enough to be stopped half-way.

Job A (2,000 recipients): paused once a few hundred are delivered. The delivery log and
the sink then stop growing (beyond what was in flight), `volleyctl job` shows it paused
with counters equal to the log's counts, and it is still paused after a restart of
volleyd. Resumed, it finishes: total = delivered = N, pending = 0, every recipient
delivered once and received by the sink.

Job B (1,000 recipients): cancelled once some are delivered. Every recipient ends with
exactly one terminal record in the delivery log, delivered or cancelled; the sink
received none of the cancelled ones; the counters agree with the log (cancelled +
delivered = total) and the job's state is "cancelled".

Errors: an unknown job (exit 1 and volleyd's message), a malformed id (400 on the wire,
exit 1 from volleyctl), a state that forbids the change (409), no volleyd listening
(exit 1, "is volleyd running?"), a usage error (exit 2).
"""
import collections
import http.client
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB_A, N_A = "jobctl-a", 2000
JOB_B, N_B = "jobctl-b", 1000
DOMAINS = 5
# Recipients that may still be delivered after a pause took effect: the transaction
# under way on the one connection, and what the shard had already handed to it.
IN_FLIGHT_BOUND = 10
TERMINAL = ("delivered", "bounced", "expired", "cancelled")

SINK_PROFILES = """
[profile.default]
[[profile.default.reply]]
command = "DOT"
delay = "10ms"
[[profile.default.reply]]
command = "BDAT"
delay = "10ms"
"""


class Ctl:
    def __init__(self, h, admin_port, config=None):
        self.binary = h.binary("tools/volleyctl/volleyctl")
        self.admin = "%s:%d" % (harness.LOOPBACK, admin_port)
        self.config = config

    def run(self, *args, admin=None, use_config=False):
        argv = [self.binary]
        argv += ["--config", self.config] if use_config else ["--admin", admin or self.admin]
        argv += list(args)
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        log("$ volleyctl %s -> %d%s" % (" ".join(argv[1:]), p.returncode,
                                          (": " + p.stderr.strip()) if p.stderr.strip() else ""))
        return p

    def job(self, job_id):
        p = self.run("--json", "job", job_id)
        check(p.returncode == 0, "volleyctl job %s failed: %s" % (job_id, p.stderr))
        return json.loads(p.stdout)

    def ok(self, *args):
        p = self.run(*args)
        check(p.returncode == 0, "volleyctl %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                                  p.stderr))
        return p.stdout


def personalised_job(job_id, rcpts):
    lines = [harness.header_line(job_id, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(rcpts)]
    return "\n".join(lines) + "\n"


def http_status(port, method, path):
    conn = http.client.HTTPConnection(harness.LOOPBACK, port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test(h):
    profiles = os.path.join(h.mkdir("profiles"), "slow.toml")
    with open(profiles, "w") as f:
        f.write(SINK_PROFILES)
    sink = h.sink(record=True, extra_args=["--profiles", profiles])
    admin_port = harness.free_port()
    d = h.volleyd(route_port=sink.port,
                  smtp_config="max_connections_per_destination = 1\n",
                  extra_config='\n[admin]\nlisten = "%s:%d"\n' % (harness.LOOPBACK, admin_port))
    ctl = Ctl(h, admin_port, config=d.config)

    # No volleyd yet: a clear error, exit 1.
    p = ctl.run("jobs")
    check(p.returncode == 1, "volleyctl without volleyd exited %d" % p.returncode)
    check("cannot connect to volleyd's admin API at %s" % ctl.admin in p.stderr
          and "is volleyd running?" in p.stderr, "unclear error: %r" % p.stderr)
    p = ctl.run("frob")
    check(p.returncode == 2 and "usage:" in p.stderr, "a usage error exited %d: %r"
          % (p.returncode, p.stderr))
    p = ctl.run("pause")
    check(p.returncode == 2, "pause without an id exited %d" % p.returncode)

    def start():
        d.start()
        wait_for(lambda: d.assert_alive() and ctl.run("jobs").returncode == 0, 60,
                 "volleyd's admin API to answer")
        with open(d.output, errors="replace") as f:
            text = f.read()
        check("volleyd: info: admin API on %s" % ctl.admin in text,
              "volleyd did not log its admin address")
        check("volleyd: info: metrics on http://%s:%d/metrics" % (harness.LOOPBACK, d.metrics_port)
              in text, "volleyd did not log its metrics address")
        # Every line of volleyd's own says when, and how bad.
        line_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z volleyd: "
                             r"(info|warning|error|fatal): ")
        own = [l for l in text.splitlines() if "volleyd: " in l]
        check(own and all(line_re.match(l) for l in own),
              "volleyd lines without a time and severity: %r"
              % [l for l in own if not line_re.match(l)][:3])

    start()
    reader = harness.JsonlReader(d.deliveries_path)

    def records(job):
        return [r for r in reader.poll() if r.get("job") == job]

    def delivered(job):
        return sum(1 for r in records(job) if r.get("status") == "delivered")

    def sink_messages():
        return sink.stats().get("messages", 0)

    # ---------------------------------------------------------------- errors
    p = ctl.run("pause", "no-such-job")
    check(p.returncode == 1 and p.stderr.startswith("volleyctl: volleyd: ")
          and "no-such-job" in p.stderr, "pause of an unknown job: %d %r" % (p.returncode, p.stderr))
    p = ctl.run("job", "no-such-job")
    check(p.returncode == 1 and "no-such-job" in p.stderr, "job of an unknown job: %r" % p.stderr)
    for bad in ("bad$id", "x" * 129, "a:b"):
        p = ctl.run("pause", bad)
        check(p.returncode == 1 and "job id must match" in p.stderr,
              "pause %r: %d %r" % (bad[:20], p.returncode, p.stderr))
        status, body = http_status(admin_port, "POST", "/jobs/%s/pause" % bad)
        check(status == 400 and "job id must match" in json.loads(body)["error"],
              "POST /jobs/%s/pause: %s %s" % (bad[:20], status, body))
    status, body = http_status(admin_port, "GET", "/jobs/a%2Fb")
    check(status == 400, "an escaped id: %s %s" % (status, body))
    status, body = http_status(admin_port, "GET", "/jobs/x/pause")
    check(status == 405, "GET of a POST endpoint: %s %s" % (status, body))
    status, body = http_status(admin_port, "GET", "/health")
    check(status == 200 and json.loads(body) == {"ok": True}, "health: %s %s" % (status, body))

    # ---------------------------------------------------------------- pause
    rcpts_a = harness.recipients(N_A, DOMAINS, "ja")
    d.drop(JOB_A + ".job", personalised_job(JOB_A, rcpts_a))
    wait_for(lambda: d.assert_alive() and delivered(JOB_A) >= 300, 120,
             "300 recipients of job A delivered", interval=0.02)
    out = ctl.ok("pause", JOB_A)
    at_pause = delivered(JOB_A)
    check("paused: yes" in out.splitlines(), "pause did not print the paused job:\n%s" % out)
    log("paused job A at %d of %d delivered" % (at_pause, N_A))

    # The log stops growing: wait until it has been still for 2 s (what was in flight
    # lands), then it must stay still, and the sink must receive nothing more.
    last = [delivered(JOB_A), time.monotonic()]

    def still():
        n = delivered(JOB_A)
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        return time.monotonic() - last[1] >= 2.0

    wait_for(lambda: d.assert_alive() and still(), 60, "job A's deliveries to stop after pause",
             interval=0.1)
    settled = delivered(JOB_A)
    sink_settled = sink_messages()
    log("job A settled at %d delivered (%d after the pause answer); sink %d messages"
        % (settled, settled - at_pause, sink_settled))
    check(settled - at_pause <= IN_FLIGHT_BOUND,
          "%d recipients delivered after the pause (at most %d were in flight)"
          % (settled - at_pause, IN_FLIGHT_BOUND))
    check(settled < N_A, "job A finished before the pause took effect")
    time.sleep(3)
    check(delivered(JOB_A) == settled, "job A's deliveries grew while paused: %d -> %d"
          % (settled, delivered(JOB_A)))
    check(sink_messages() == sink_settled, "the sink received mail while job A was paused: %d -> %d"
          % (sink_settled, sink_messages()))

    def check_counters(job_id, j, total):
        recs = records(job_id)
        statuses = collections.Counter(r.get("status") for r in recs)
        check(j["total"] == total, "%s: total %s, want %d" % (job_id, j["total"], total))
        for k in ("delivered", "bounced", "expired", "cancelled"):
            check(j[k] == statuses.get(k, 0), "%s: counter %s = %s, the log has %d: %s"
                  % (job_id, k, j[k], statuses.get(k, 0), j))
        done = sum(statuses.get(k, 0) for k in TERMINAL)
        check(j["pending"] == total - done, "%s: pending %s, want %d" % (job_id, j["pending"],
                                                                      total - done))
        check(j["deferrals"] == statuses.get("deferred", 0),
              "%s: deferrals %s, the log has %d deferred" % (job_id, j["deferrals"],
                                                            statuses.get("deferred", 0)))

    j = ctl.job(JOB_A)
    log("job A while paused: %s" % j)
    check(j["paused"] is True and j["state"] == "ready", "job A is not shown paused: %s" % j)
    check(j["delivered"] == settled, "job A: delivered %s, the log has %d" % (j["delivered"],
                                                                             settled))
    check_counters(JOB_A, j, N_A)
    table = ctl.ok("jobs").splitlines()
    check(table[0].split()[:3] == ["ID", "STATE", "PAUSED"], "jobs header: %r" % table[0])
    row = [line.split() for line in table[1:] if line.split()[0] == JOB_A]
    check(row and row[0][1:5] == ["ready", "yes", str(N_A), str(settled)],
          "jobs row for job A: %r" % row)
    # --config finds the admin address in volleyd's config.
    p = ctl.run("job", JOB_A, use_config=True)
    check(p.returncode == 0 and "paused: yes" in p.stdout.splitlines(),
          "volleyctl --config: %d %r" % (p.returncode, p.stderr))

    # ---------------------------------------------------------------- restart
    check(d.stop() == 0, "volleyd did not stop cleanly")
    start()
    j = ctl.job(JOB_A)
    check(j["paused"] is True, "job A is not paused after a restart: %s" % j)
    time.sleep(3)
    check(delivered(JOB_A) == settled, "job A was sent after a restart while paused: %d -> %d"
          % (settled, delivered(JOB_A)))
    check_counters(JOB_A, ctl.job(JOB_A), N_A)

    # ---------------------------------------------------------------- resume
    out = ctl.ok("resume", JOB_A)
    check("paused: no" in out.splitlines(), "resume did not print the resumed job:\n%s" % out)
    wait_for(lambda: d.assert_alive() and delivered(JOB_A) >= N_A, 180,
             "every recipient of job A delivered after resume", interval=0.2)
    j = wait_for(lambda: (lambda j: j if j["pending"] == 0 else None)(ctl.job(JOB_A)), 30,
                 "job A's counters to show nothing pending")
    log("job A after resume: %s" % j)
    check(j["total"] == N_A and j["delivered"] == N_A and j["pending"] == 0 and not j["paused"],
          "job A after resume: %s" % j)
    check_counters(JOB_A, j, N_A)
    per_rcpt = harness.delivered_by_rcpt(records(JOB_A), JOB_A)
    check(set(per_rcpt) == set(rcpts_a) and max(per_rcpt.values()) == 1,
          "job A: not every recipient delivered exactly once")
    # A finished job can no longer be paused: 409, exit 1.
    p = ctl.run("pause", JOB_A)
    check(p.returncode == 1 and p.stderr.startswith("volleyctl: volleyd: "),
          "pause of a finished job: %d %r" % (p.returncode, p.stderr))
    status, body = http_status(admin_port, "POST", "/jobs/%s/pause" % JOB_A)
    check(status == 409, "POST pause of a finished job: %s %s" % (status, body))

    # ---------------------------------------------------------------- cancel
    rcpts_b = harness.recipients(N_B, DOMAINS, "jb", seed=2)
    d.drop(JOB_B + ".job", personalised_job(JOB_B, rcpts_b))
    wait_for(lambda: d.assert_alive() and delivered(JOB_B) >= 100, 120,
             "100 recipients of job B delivered", interval=0.02)
    out = ctl.ok("cancel", JOB_B)
    check("state: cancelled" in out.splitlines(), "cancel did not print the job:\n%s" % out)

    def terminal_b():
        return {r.get("rcpt") for r in records(JOB_B) if r.get("status") in TERMINAL}

    wait_for(lambda: d.assert_alive() and len(terminal_b()) >= N_B, 120,
             "a terminal record for every recipient of job B", interval=0.2)
    j = wait_for(lambda: (lambda j: j if j["pending"] == 0 else None)(ctl.job(JOB_B)), 30,
                 "job B's counters to show nothing pending")
    log("job B after cancel: %s" % j)
    time.sleep(2)  # anything that would still come
    recs = records(JOB_B)
    terminal = collections.Counter(r.get("rcpt") for r in recs if r.get("status") in TERMINAL)
    statuses = collections.Counter(r.get("status") for r in recs)
    check(set(terminal) == set(rcpts_b), "job B: recipients without a terminal record")
    dup = [r for r, n in terminal.items() if n != 1]
    check(not dup, "job B: %d recipients with more than one terminal record, e.g. %s"
          % (len(dup), dup[:3]))
    check(statuses.get("bounced", 0) == 0 and statuses.get("expired", 0) == 0,
          "job B: unexpected outcomes %s" % dict(statuses))
    check(statuses.get("cancelled", 0) > 0, "job B: nothing was cancelled: %s" % dict(statuses))
    j = ctl.job(JOB_B)
    check(j["state"] == "cancelled", "job B's state is %r" % j["state"])
    check(j["cancelled"] + j["delivered"] == j["total"] == N_B,
          "job B: cancelled %d + delivered %d != total %d" % (j["cancelled"], j["delivered"],
                                                              j["total"]))
    check_counters(JOB_B, j, N_B)
    log("job B: %d delivered, %d cancelled" % (j["delivered"], j["cancelled"]))
    p = ctl.run("resume", JOB_B)
    check(p.returncode == 1, "resume of a cancelled job exited %d" % p.returncode)

    # ---------------------------------------------------------------- what the sink got
    check(d.stop() == 0, "volleyd did not stop cleanly")
    sink.stop()  # flushes its record file
    received = collections.Counter(r for m in sink.records() for r in m.get("rcpts", []))
    missing_a = [r for r in rcpts_a if received[r] == 0]
    check(not missing_a, "the sink did not receive %d of job A's recipients, e.g. %s"
          % (len(missing_a), missing_a[:3]))
    cancelled = {r.get("rcpt") for r in recs if r.get("status") == "cancelled"}
    delivered_b = {r.get("rcpt") for r in recs if r.get("status") == "delivered"}
    got_cancelled = sorted(r for r in cancelled if received[r])
    check(not got_cancelled, "the sink received %d cancelled recipients, e.g. %s"
          % (len(got_cancelled), got_cancelled[:3]))
    missing_b = sorted(r for r in delivered_b if not received[r])
    check(not missing_b, "the sink did not receive %d delivered recipients of job B, e.g. %s"
          % (len(missing_b), missing_b[:3]))


if __name__ == "__main__":
    harness.main(test, "jobctl")
