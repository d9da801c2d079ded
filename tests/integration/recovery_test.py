#!/usr/bin/python3
"""recovery_test.py - what volleyd repairs at start after a crash.

1. An intake cut short by a crash, whose file is then taken away.

volleyd is killed with SIGKILL while it is taking a large job in (the admin API shows the
job in state "loading"), and the job's file is then removed from incoming/, as an
operator would who gave up on that campaign. On restart volleyd must drop what it had
written of the job (saying so in its log) instead of keeping a job that can never
finish and an id that can never be used again: the admin API no longer lists it, and a
new, small file with the same job id is accepted and delivered, every one of its
recipients once, and nothing of the first file.

2. Outcomes in the delivery log that never reached the queue. volleyd writes the log,
then the queue (engine/outcomes.h, Commit); a crash between the two leaves recipients logged as
delivered but still queued. The window is microseconds, so the test builds that state
instead: volleyd is stopped part-way through a job, its queue folder copied, then it
finishes the job and stops, and the old queue folder is put back under the longer log.
On restart volleyd must find the records the queue never saw (after the log position
stored with its last commit) and apply them: no recipient is sent again, each keeps
exactly one delivered record, the job's counters are right, and a deferred recipient's
attempts go on counting from the logged ones.

3. A queue entry that cannot be read. One recipient's value in RocksDB is overwritten
(with RocksDB's own ldb tool, volleyd stopped) by bytes no version of Volley writes. On
restart that recipient is bounced with 5.3.0, naming its job and line, and taken out of
the queue, nothing is sent to it, and the rest of its job is delivered and the job
finishes instead of being held open by the entry for ever.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "reused"
BIG = 300000
SMALL = 50


def jobs(d):
    with urllib.request.urlopen("http://127.0.0.1:%d/jobs" % d.admin_port, timeout=5) as r:
        return {j["id"]: j for j in json.load(r)["jobs"]}


def test(h):
    abandoned_intake(h)
    replay(h)
    corrupt_entry(h)


def abandoned_intake(h):
    sink = h.sink(record=True)
    d = h.volleyd(route_port=sink.port)
    d.start()
    wait_for(lambda: harness.connectable(d.admin_port), 30, "the admin API")
    big = harness.recipients(BIG, 100, "big")
    d.drop(JOB + ".job", harness.job_text(JOB, big))

    def loading():
        d.assert_alive()
        j = jobs(d).get(JOB)
        if j is not None and j["state"] != "loading":
            raise harness.TestFailure("intake finished before the kill (state %s): the job "
                                      "is too small for this machine" % j["state"])
        return j is not None

    wait_for(loading, 60, "job %s in state loading" % JOB, interval=0.005)
    d.kill9()
    path = d.path("incoming", JOB + ".job")
    check(os.path.exists(path), "the job file is still in incoming/ after the kill")
    os.unlink(path)

    d.start()
    wait_for(lambda: harness.connectable(d.admin_port), 30, "the admin API after restart")
    out = harness.tail(d.output, 200)
    check("its intake was interrupted and its file is no longer in incoming/" in out,
          "volleyd says it dropped the abandoned intake:\n%s" % out)
    check(JOB not in jobs(d), "the abandoned job is gone from the queue: %r" % jobs(d).get(JOB))

    small = ["again-%02d@d%04d.test" % (i, i % 5 + 1) for i in range(SMALL)]
    d.drop(JOB + ".job", harness.job_text(JOB, small))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(
        harness.read_jsonl(d.deliveries_path), JOB)) >= SMALL, 60,
        "the second file's recipients delivered")
    time.sleep(0.5)  # anything left of the first file would be delivered meanwhile
    recs = [r for r in harness.read_jsonl(d.deliveries_path) if r.get("job") == JOB]
    check(sorted(r["rcpt"] for r in recs) == sorted(small),
          "exactly the second file's recipients, once each (%d records)" % len(recs))
    j = jobs(d)[JOB]
    check(j["total"] == SMALL and j["delivered"] == SMALL,
          "the counters are the second file's: %r" % j)
    got = [r for rec in sink.records() for r in rec["rcpts"]]
    check(not any(r.startswith("big-") for r in got),
          "nothing of the abandoned file reached the sink")
    check(d.stop() == 0, "volleyd exits 0")
    sink.stop()


PROFILES = """
[profile.busy]
[[profile.busy.reply]]
command = "RCPT"
reply = "451 4.3.0 try again later"

[domain."defer.test"]
profile = "busy"
"""
REPLAY_JOB = "replayed"
REPLAY_N = 6000
DEFERRED = ["late-%d@defer.test" % i for i in range(3)]


def replay(h):
    pdir = h.mkdir("replay-profiles")
    profiles = os.path.join(pdir, "profiles.toml")
    with open(profiles, "w") as f:
        f.write(PROFILES)
    sink = h.sink(extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port, name="volleyd-replay",
                  smtp_config="max_connections_per_destination = 1\n")
    d.start()
    rcpts = ["r%04d@d%04d.test" % (i, i % 3 + 1) for i in range(REPLAY_N)]
    lines = [harness.header_line(REPLAY_JOB, msg=harness.message(personalised=True))]
    # The deferred recipients first, so that they are tried before the stop.
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(DEFERRED + rcpts)]
    d.drop(REPLAY_JOB + ".job", "\n".join(lines) + "\n")

    def delivered():
        return harness.delivered_by_rcpt(harness.read_jsonl(d.deliveries_path), REPLAY_JOB)

    def deferrals():
        return [r for r in harness.read_jsonl(d.deliveries_path)
                if r.get("job") == REPLAY_JOB and r.get("status") == "deferred"]

    wait_for(lambda: d.assert_alive() and len(delivered()) >= REPLAY_N // 5 and
             len(deferrals()) >= len(DEFERRED), 120, "a fifth delivered")
    check(d.stop() == 0, "volleyd stops cleanly part-way")
    before = len(delivered())
    check(before < REPLAY_N, "the job was not finished when stopped (%d)" % before)
    snapshot = os.path.join(h.dir, "queue-snapshot")
    shutil.copytree(d.queue, snapshot)
    log("queue copied with %d of %d delivered" % (before, REPLAY_N))

    d.start()
    wait_for(lambda: d.assert_alive() and len(delivered()) >= REPLAY_N and
             len(deferrals()) >= 3 * len(DEFERRED), 180,
             "the rest delivered, and the deferred recipients retried")
    check(d.stop() == 0, "volleyd stops cleanly after the job")
    shutil.rmtree(d.queue)
    shutil.copytree(snapshot, d.queue)
    log("the old queue is back under the longer log")

    marker = "outcomes were logged but not recorded in the queue before a crash"
    d.start()
    wait_for(lambda: d.assert_alive() and marker in harness.tail(d.output, 400), 60,
             "volleyd says it applied the logged outcomes")
    # The replay comes before the admin API opens: wait for it, as the other parts do.
    wait_for(lambda: harness.connectable(d.admin_port), 30, "the admin API")
    wait_for(lambda: d.assert_alive() and
             jobs(d).get(REPLAY_JOB, {}).get("delivered") == REPLAY_N, 30,
             "the counters count every delivery")
    time.sleep(1.5)  # a recipient sent again would be logged meanwhile
    j = jobs(d)[REPLAY_JOB]
    check(j["delivered"] == REPLAY_N and j["total"] == REPLAY_N + len(DEFERRED) and
          j["deferred"] == len(DEFERRED) and j["pending"] == len(DEFERRED),
          "progress after the replay: %r" % j)
    recs = [r for r in harness.read_jsonl(d.deliveries_path) if r.get("job") == REPLAY_JOB]
    per_rcpt = {}
    for r in recs:
        if r["status"] == "delivered":
            per_rcpt[r["rcpt"]] = per_rcpt.get(r["rcpt"], 0) + 1
    twice = [a for a, n in per_rcpt.items() if n > 1]
    check(len(per_rcpt) == REPLAY_N and not twice,
          "one delivered record per recipient (%d recipients, %d twice, e.g. %s)"
          % (len(per_rcpt), len(twice), twice[:3]))
    copies = {}
    for rec in sink.records():
        for a in rec["rcpts"]:
            copies[a] = copies.get(a, 0) + 1
    resent = [a for a in rcpts if copies.get(a, 0) != 1]
    check(not resent, "every recipient reached the sink exactly once (%d not: %s)"
          % (len(resent), resent[:3]))
    for a in DEFERRED:
        attempts = [r["attempt"] for r in recs if r["rcpt"] == a]
        check(attempts == sorted(set(attempts)),
              "%s: the attempts go on counting from the logged ones: %r" % (a, attempts))
    log("replayed the logged outcomes: nothing sent twice")
    check(d.stop() == 0, "volleyd exits 0")


def ldb(queue, *args):
    out = subprocess.run(["ldb", "--db=" + queue, "--column_family=recipients"] + list(args),
                         capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, "ldb %s: %s" % (" ".join(args), out.stderr.strip()))
    return out.stdout


def corrupt_entry(h):
    sink = h.sink(record=True)
    dead = harness.free_port()  # nothing listens: every recipient is deferred
    d = h.volleyd(route_port=dead, name="volleyd-corrupt")
    d.start()
    rcpts = ["c%d@d%04d.test" % (i, i % 3 + 1) for i in range(5)]
    d.drop("corrupt.job", harness.job_text("corrupt", rcpts))
    wait_for(lambda: d.assert_alive() and len([
        r for r in harness.read_jsonl(d.deliveries_path) if r.get("status") == "deferred"])
        >= len(rcpts), 60, "every recipient deferred once")
    check(d.stop() == 0, "volleyd stops cleanly")
    # keys: job (4 bytes) . partition (2) . due (8) . line (4); value: attempts (4) . recipient
    keys = re.findall(r"^0x([0-9A-F]{36}) : 0x([0-9A-F]+)$", ldb(d.queue, "--hex", "scan"), re.M)
    check(len(keys) == len(rcpts), "ldb sees the %d queued recipients: %r" % (len(rcpts), keys))
    key, value = keys[2]
    line = int(key[28:], 16)
    ldb(d.queue, "--key_hex", "--value_hex", "put", "0x" + key, "0x" + value[:8] + "FF0001")
    with open(d.config) as f:
        config = f.read()
    with open(d.config, "w") as f:
        f.write(config.replace("127.0.0.1:%d" % dead, "127.0.0.1:%d" % sink.port))
    d.start()
    wait_for(lambda: harness.connectable(d.admin_port), 30, "the admin API")
    wait_for(lambda: d.assert_alive() and
             jobs(d).get("corrupt", {}).get("state") == "done", 60, "the job finished")
    recs = [r for r in harness.read_jsonl(d.deliveries_path)
            if r.get("job") == "corrupt" and r.get("status") in ("delivered", "bounced")]
    bounced = [r for r in recs if r["status"] == "bounced"]
    check(len(bounced) == 1 and bounced[0]["line"] == line and bounced[0]["enhanced"] == "5.3.0"
          and bounced[0]["rcpt"] == "" and "queue entry corrupt" in bounced[0]["response"],
          "the unreadable entry is bounced 5.3.0 with its line %d: %r" % (line, bounced))
    delivered = sorted(r["rcpt"] for r in recs if r["status"] == "delivered")
    check(len(delivered) == len(rcpts) - 1 and len(set(delivered)) == len(delivered),
          "the other recipients are delivered once each: %r" % delivered)
    lost = rcpts[line - 2]
    # (the sinks of this test's scenarios share one record file, written a moment
    # after the sink replies)
    got = []

    def sink_has_all():
        got[:] = [a for rec in sink.records() for a in rec["rcpts"] if a in rcpts]
        return len(got) >= len(delivered)

    wait_for(sink_has_all, 30, "the delivered recipients in the sink's record")
    check(lost not in got and sorted(got) == delivered,
          "nothing sent for the unreadable entry (%s); the sink got %r" % (lost, got))
    j = jobs(d)["corrupt"]
    check(j["bounced"] == 1 and j["delivered"] == len(rcpts) - 1 and j["pending"] == 0,
          "counters: %r" % j)
    check(d.stop() == 0, "volleyd exits 0")


harness.main(test, "recovery")
