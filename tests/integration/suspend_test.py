#!/usr/bin/python3
"""suspend_test.py - volleyctl suspend, unsuspend and retry against volley-sink (issue 20).

held.test is suspended for 2h before its job arrives: the sink sees nothing for it while
open.test's recipients are all delivered; it stays held across a restart of volleyd and
GET /destinations shows it suspended with its time and reason; unsuspend releases it and
every recipient is delivered once. short.test is suspended for 3s and is released by
itself: the suspension ends (logged once) and every recipient is delivered once.

grey.test is greylisted by the sink for 1s and volleyd's [retry] initial is 1h, so its
recipients are deferred once and would wait an hour: `volleyctl retry grey.test` makes
them due now and they are delivered at their second attempt (the retry did not count
one). grey2.test the same through `volleyctl retry --job`.

slow.test's pool is backed off by the sink's 421s (a [[backoff]] period of 10m); volleyd
restarts, the sink now accepts, and once `volleyctl retry` brings its recipient back the
pool is shown at the level it had before the restart, without a 421 since.
"""
import collections
import http.client
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SINK_PROFILES = """
[profile.default]
[profile.grey]
greylist = "1s"

[domain."grey.test"]
profile = "grey"
[domain."grey2.test"]
profile = "grey"

[profile.throttle]
[[profile.throttle.reply]]
command = "RCPT"
reply = "421 4.7.0 Try again later, closing connection."
[domain."slow.test"]
profile = "throttle"
"""

# slow.test's replies back its pool off, for longer than the test runs.
CONFIG = """
[destination."slow.test"]
max_recipients_per_transaction = 1

[[backoff]]
class = "rate_limited"
action = "backoff"
period = "10m"
"""


class Ctl:
    def __init__(self, h, admin_port):
        self.binary = h.binary("tools/volleyctl/volleyctl")
        self.admin = "%s:%d" % (harness.LOOPBACK, admin_port)

    def run(self, *args):
        argv = [self.binary, "--admin", self.admin] + list(args)
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        log("$ volleyctl %s -> %d%s%s" % (" ".join(argv[1:]), p.returncode,
                                            (": " + p.stdout.strip()) if p.stdout.strip() else "",
                                            (" / " + p.stderr.strip()) if p.stderr.strip() else ""))
        return p

    def ok(self, *args):
        p = self.run(*args)
        check(p.returncode == 0, "volleyctl %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                                  p.stderr))
        return p.stdout


def get_json(port, path):
    conn = http.client.HTTPConnection(harness.LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def post(port, path, body=None):
    conn = http.client.HTTPConnection(harness.LOOPBACK, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def addresses(tag, domain, n):
    return ["%s-%03d@%s" % (tag, i, domain) for i in range(n)]


def test(h):
    profiles = os.path.join(h.mkdir("profiles"), "grey.toml")
    with open(profiles, "w") as f:
        f.write(SINK_PROFILES)
    sink = h.sink(record=True, extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port, retry_initial="1h", retry_max="2h",
                  extra_config=CONFIG)
    ctl = Ctl(h, d.admin_port)

    def output():
        with open(d.output, errors="replace") as f:
            return f.read()

    def start():
        d.start()
        wait_for(lambda: d.assert_alive() and ctl.run("jobs").returncode == 0, 60,
                 "volleyd's admin API to answer")

    start()
    reader = harness.JsonlReader(d.deliveries_path)

    def records(job):
        return [r for r in reader.poll() if r.get("job") == job]

    def delivered(job, domain=None):
        return harness.delivered_by_rcpt(
            [r for r in records(job) if domain is None or r["rcpt"].endswith("@" + domain)], job)

    def sink_rcpts():
        sink_path = sink.record_path
        if not os.path.exists(sink_path):
            return collections.Counter()
        return collections.Counter(r for m in harness.read_jsonl(sink_path)
                                   for r in m.get("rcpts", []))

    # ---------------------------------------------------------------- usage and errors
    p = ctl.run("suspend")
    check(p.returncode == 2, "suspend without a domain exited %d" % p.returncode)
    p = ctl.run("suspend", "bad!domain.test")
    check(p.returncode == 1 and "domain" in p.stderr, "a bad domain: %d %r"
          % (p.returncode, p.stderr))
    p = ctl.run("suspend", "x.test", "--for", "30d")
    check(p.returncode == 1 and "for: must be" in p.stderr, "--for 30d: %d %r"
          % (p.returncode, p.stderr))
    p = ctl.run("unsuspend", "never.test")
    check(p.returncode == 1 and "not suspended" in p.stderr, "unsuspend of a domain not "
          "suspended: %d %r" % (p.returncode, p.stderr))
    status, body = post(d.admin_port, "/destinations/x.test/suspend", '{"for": 5}')
    check(status == 400 and "for" in body, "a numeric for: %s %s" % (status, body))
    status, body = post(d.admin_port, "/destinations/x.test/suspend", '{"until": "1h"}')
    check(status == 400 and "unknown field" in body, "an unknown field: %s %s" % (status, body))

    # ---------------------------------------------------------------- suspend holds
    out = ctl.ok("suspend", "held.test", "--for", "2h", "--reason", "blocklisted at example")
    check(out.startswith("held.test suspended until ") and "blocklisted at example" in out,
          "suspend printed %r" % out)
    wait_for(lambda: "volleyd: info: destination held.test suspended for 2h by volleyctl: "
             "blocklisted at example" in output(), 10, "the suspension's log line")
    held = addresses("h", "held.test", 20)
    opened = addresses("o", "open.test", 20)
    d.drop("job-a.job", harness.job_text("job-a", held + opened))
    wait_for(lambda: d.assert_alive() and len(delivered("job-a", "open.test")) == 20, 60,
             "open.test's recipients delivered")
    time.sleep(2)
    check(not delivered("job-a", "held.test"), "held.test was delivered while suspended")
    got = sink_rcpts()
    check(not any(got[r] for r in held), "the sink received held.test's mail while suspended")

    status, states = get_json(d.admin_port, "/destinations")
    entry = [e for e in states["destinations"] if e.get("name") == "held.test"]
    check(status == 200 and entry and entry[0]["suspended"] is True
          and entry[0]["suspension_reason"] == "blocklisted at example"
          and entry[0]["suspended_until"].endswith("Z"), "GET /destinations: %s" % states)

    # ---------------------------------------------------------------- survives a restart
    check(d.stop() == 0, "volleyd did not stop cleanly")
    start()
    time.sleep(3)
    check(not delivered("job-a", "held.test"), "held.test was delivered after a restart")
    status, states = get_json(d.admin_port, "/destinations")
    check(any(e.get("name") == "held.test" and e.get("suspended") for e in
              states["destinations"]), "held.test not suspended after a restart: %s" % states)

    # ---------------------------------------------------------------- unsuspend releases
    out = ctl.ok("unsuspend", "held.test")
    check(out.startswith("held.test unsuspended: ") and "recipients released" in out,
          "unsuspend printed %r" % out)
    wait_for(lambda: d.assert_alive() and len(delivered("job-a", "held.test")) == 20, 60,
             "held.test's recipients delivered after unsuspend")
    check("volleyd: info: destination held.test unsuspended by volleyctl" in output(),
          "no unsuspend log line")
    per = delivered("job-a")
    check(set(per) == set(held + opened) and max(per.values()) == 1,
          "job A: not every recipient delivered once: %s" % per)
    status, states = get_json(d.admin_port, "/destinations")
    check(not any(e.get("name") == "held.test" for e in states["destinations"]),
          "held.test still listed after unsuspend: %s" % states)

    # ---------------------------------------------------------------- --for expires
    ctl.ok("suspend", "short.test", "--for", "3s", "--reason", "a short one")
    short = addresses("s", "short.test", 10)
    d.drop("job-b.job", harness.job_text("job-b", short))
    wait_for(lambda: "volleyd: info: destination short.test: suspension ended (set for 3s by "
             "volleyctl: a short one)" in output(), 30, "the suspension to end by itself")
    wait_for(lambda: d.assert_alive() and len(delivered("job-b")) == 10, 60,
             "short.test's recipients delivered after the suspension ended")
    per = delivered("job-b")
    check(max(per.values()) == 1, "job B: a recipient delivered twice: %s" % per)
    check(output().count("destination short.test: suspension ended") == 1,
          "the end of a suspension was logged more than once")

    # ---------------------------------------------------------------- retry DOMAIN
    grey = addresses("g", "grey.test", 10)
    d.drop("job-c.job", harness.job_text("job-c", grey))

    def deferred(job):
        return {r["rcpt"] for r in records(job) if r.get("status") == "deferred"}

    wait_for(lambda: d.assert_alive() and len(deferred("job-c")) == 10, 60,
             "grey.test's recipients deferred by the greylist")
    time.sleep(1.5)  # the greylist lets them through from now on
    check(not delivered("job-c"), "grey.test delivered before the retry ([retry] initial 1h)")
    out = ctl.ok("retry", "grey.test")
    check(out.strip() == "10 deferred recipients made due now", "retry printed %r" % out)
    wait_for(lambda: d.assert_alive() and len(delivered("job-c")) == 10, 60,
             "grey.test's recipients delivered after retry")
    attempts = {r["rcpt"]: r["attempt"] for r in records("job-c") if r["status"] == "delivered"}
    check(set(attempts.values()) == {2}, "grey.test delivered at attempts %s, want 2 each"
          % collections.Counter(attempts.values()))
    out = ctl.ok("retry", "grey.test")
    check(out.strip() == "0 deferred recipients made due now", "a second retry printed %r" % out)

    # ---------------------------------------------------------------- retry --job
    grey2 = addresses("g2", "grey2.test", 5)
    d.drop("job-d.job", harness.job_text("job-d", grey2))
    wait_for(lambda: d.assert_alive() and len(deferred("job-d")) == 5, 60,
             "grey2.test's recipients deferred")
    time.sleep(1.5)
    out = ctl.ok("--json", "retry", "--job", "job-d")
    check(json.loads(out)["made_due"] == 5, "retry --job answered %r" % out)
    wait_for(lambda: d.assert_alive() and len(delivered("job-d")) == 5, 60,
             "job D delivered after retry --job")
    p = ctl.run("retry", "--job", "no-such-job")
    check(p.returncode == 1 and "no such job" in p.stderr, "retry of an unknown job: %r"
          % p.stderr)

    # ---------------------------------------------------------------- backoff kept
    slow = ["slow-1@slow.test"]
    d.drop("job-e.job", harness.job_text("job-e", slow))

    def slow_level():
        status, states = get_json(d.admin_port, "/destinations")
        levels = [e.get("level", 0) for e in states["destinations"]
                  if "slow.test" in e.get("pool", "") and e.get("state") == "backoff"]
        return max(levels) if levels else 0

    wait_for(lambda: d.assert_alive() and slow_level() >= 1, 60, "slow.test backed off")
    level = slow_level()
    time.sleep(2.5)  # a level is saved by the shard's once-a-second publication
    check(d.stop() == 0, "volleyd did not stop cleanly")
    sink.restart(extra_args=[])  # no profiles: slow.test is accepted from now on
    start()
    out = ctl.ok("retry", "slow.test")
    check(out.strip() == "1 deferred recipients made due now", "retry slow.test: %r" % out)
    wait_for(lambda: d.assert_alive() and len(delivered("job-e")) == 1, 60,
             "slow.test's recipient delivered after the restart")
    kept = wait_for(slow_level, 10, "slow.test shown backed off after the restart")
    check(kept >= 1, "slow.test's level after the restart: %d (before: %d)" % (kept, level))
    log("slow.test: level %d before the restart, %d after" % (level, kept))

    check(d.stop() == 0, "volleyd did not stop cleanly")
    sink.stop()
    got = sink_rcpts()
    for r in held + opened + short + grey + grey2 + slow:
        check(got[r] == 1, "the sink received %s %d times" % (r, got[r]))


if __name__ == "__main__":
    harness.main(test, "suspend")
