#!/usr/bin/python3
"""spool_safety_test.py - operator mistakes with the spool lose and double nothing (issue 19).

- Two daemons on one spool, each with its own queue, log and ports: the second refuses to
  start (exit non-zero), naming the spool and the first one's pid and host, while the
  first delivers every recipient of the jobs in that spool exactly once (counted at the
  sink). Once the first is killed with SIGKILL the spool is free again: no stale lock.
- A file written slowly in place in incoming/ (100 lines, then pauses past the settle time
  with the file still open, then 900 more lines, then close) ends with all 1,000
  recipients queued and delivered once; the wait is logged, once.
- A file appended in place with a separate open and close per chunk (shell `>>` style),
  pausing less than the settle time between chunks, the same.
- What incoming/ holds that is not a job (a directory, a FIFO, a symlink, a dot file) is
  logged once per name, however many scans pass; the symlink's target is not read.
- The same bad file dropped twice under one name leaves two files in failed/, each with
  its own .error.
- Job ids "." and ".." are refused with file, line and field; nothing of them is sent and
  no hidden file appears in failed/.
- Under a settle time of an hour, a job renamed into incoming/ is taken in and sent at
  once, while a file written in place, and one renamed in and then finished in place,
  stay in incoming/.
"""
import collections
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SETTLE = 2  # seconds: [intake] settle_time of the daemon under test


def sink_counts(sink, prefix):
    """Counter of messages the sink got per recipient address starting with prefix."""
    got = collections.Counter()
    for rec in sink.records():
        for a in rec.get("rcpts", []):
            if a.startswith(prefix):
                got[a] += 1
    return got


def wait_delivered_once(d, sink, job, rcpts, failures, timeout=120):
    """Wait until every one of rcpts is delivered; then each must have reached the sink
    exactly once."""
    reader = harness.JsonlReader(d.deliveries_path)

    def done():
        d.assert_alive()
        return set(harness.delivered_by_rcpt(reader.poll(), job)) >= set(rcpts)

    try:
        wait_for(done, timeout, "every recipient of %s delivered" % job, interval=0.5)
    except harness.TestFailure as e:
        failures.append("%s: %s; statuses %s" % (job, e, dict(harness.status_counts(reader.records, job))))
        return
    time.sleep(1)  # anything sent twice would be at the sink by now
    got = sink_counts(sink, job + "-")
    missing = sorted(set(rcpts) - set(got))
    doubled = sorted(a for a, n in got.items() if n != 1)
    extra = sorted(set(got) - set(rcpts))
    if missing or doubled or extra:
        failures.append("%s: at the sink %d missing %s, %d more than once %s, %d unknown %s"
                        % (job, len(missing), missing[:5], len(doubled), doubled[:5], len(extra), extra[:5]))
    else:
        log("%s: %d recipients, each delivered exactly once" % (job, len(rcpts)))


def output(d):
    with open(d.output, errors="replace") as f:
        return f.read()


def two_daemons(h, sink, failures):
    first = h.volleyd(route_port=sink.port, name="volleyd")
    second = h.volleyd(route_port=sink.port, name="volleyd-second")
    # The second daemon's config names the first one's spool; the rest is its own.
    with open(second.config) as f:
        text = f.read()
    with open(second.config, "w") as f:
        f.write(text.replace('spool = "%s"' % second.spool, 'spool = "%s"' % first.spool))
    first.start()
    rcpts = ["lock-%04d@%s" % (i, harness.domain(i % 5)) for i in range(300)]
    first.drop("lock.job", harness.job_text("lock", rcpts))
    proc = harness.Proc(h, second.name, [second.binary, "--config", second.config], cwd=second.dir,
                        output=second.output)
    try:
        rc = proc.popen.wait(30)
    except Exception:
        proc.stop(5)
        failures.append("the second volleyd on one spool is still running after 30 s")
        rc = None
    said = output(second)
    want = "spool %s is in use by volleyd pid %d on host " % (first.spool, first.proc.pid)
    log("second volleyd exited with %s: %s" % (rc, said.strip().splitlines()[-1] if said.strip() else ""))
    if rc == 0 or rc is None:
        failures.append("the second volleyd on one spool exited with %s, not an error" % rc)
    if want not in said:
        failures.append("the second volleyd does not say %r:\n%s" % (want, said[-600:]))
    if os.path.exists(second.deliveries_path) and harness.read_jsonl(second.deliveries_path):
        failures.append("the second volleyd wrote delivery records")
    wait_delivered_once(first, sink, "lock", rcpts, failures)
    # The lock dies with its holder, kill -9 included: nothing stale is left.
    first.kill9()
    second.start()
    wait_for(lambda: "running:" in output(second), 30, "the second volleyd to run once the first is gone")
    check(second.alive(), "the second volleyd stopped:\n%s" % harness.tail(second.output))
    second.stop()
    log("after the first was killed with SIGKILL, the second took the spool")


def writers(h, sink, failures):
    d = h.volleyd(route_port=sink.port, name="volleyd-writers",
                  extra_config='[intake]\nsettle_time = "%ds"\n' % SETTLE)
    d.start()
    incoming = d.path("incoming")

    # A slow writer, the file open all along, pausing past the settle time.
    job = "slow"
    rcpts = ["slow-%04d@%s" % (i, harness.domain(i % 7)) for i in range(1000)]
    lines = [harness.header_line(job)] + [harness.rcpt_line(r) for r in rcpts]
    with open(os.path.join(incoming, "slow.job"), "w") as f:
        f.write("\n".join(lines[:101]) + "\n")
        f.flush()
        for _ in range(3):
            time.sleep(SETTLE + 1)
            d.assert_alive()
            if not d.exists("incoming", "slow.job"):
                failures.append("slow.job left incoming/ while it was still open for writing")
                break
        f.write("\n".join(lines[101:]) + "\n")
    log("slow.job: written in place, %d recipients, with three pauses of %ds" % (len(rcpts), SETTLE + 1))
    wait_delivered_once(d, sink, job, rcpts, failures)

    # `>>` style: a separate open and close per chunk, pauses shorter than the settle time.
    job = "append"
    rcpts = ["append-%04d@%s" % (i, harness.domain(i % 7)) for i in range(1000)]
    lines = [harness.header_line(job)] + [harness.rcpt_line(r) for r in rcpts]
    path = os.path.join(incoming, "append.job")
    for start in range(0, len(lines), 100):
        with open(path, "a") as f:
            f.write("\n".join(lines[start:start + 100]) + "\n")
        time.sleep(0.3)
        d.assert_alive()
        if not d.exists("incoming", "append.job"):
            failures.append("append.job left incoming/ after %d lines, before its writer was done"
                            % (start + 100))
            break
    log("append.job: appended in 11 chunks, 0.3 s apart")
    wait_delivered_once(d, sink, job, rcpts, failures)

    out = output(d)
    for name in ("slow.job", "append.job"):
        accepted = re.findall(r"incoming/%s: job \"[a-z]+\" accepted: (\d+) recipients" % re.escape(name), out)
        if accepted != ["1000"]:
            failures.append("%s: accepted %s, want once with 1000 recipients" % (name, accepted))
    waits = re.findall(r"intake: incoming/slow\.job: waiting: still being written.*", out)
    log("slow.job waits logged: %s" % waits)
    if not waits:
        failures.append("the wait for slow.job was not logged")
    elif len(waits) > 2:  # at most once per reason: modified, open for writing
        failures.append("the wait for slow.job was logged %d times: %s" % (len(waits), waits))

    # Ignored entries, each logged once however many scans pass.
    os.mkdir(os.path.join(incoming, "a-folder"))
    os.mkfifo(os.path.join(incoming, "a-fifo.job"))
    secret = os.path.join(d.dir, "elsewhere.job")
    with open(secret, "w") as f:
        f.write(harness.job_text("symlinked", ["symlinked-1@d0001.test"]))
    os.symlink(secret, os.path.join(incoming, "a-link.job"))
    with open(os.path.join(incoming, ".being-written.job"), "w") as f:
        f.write(harness.header_line("dotfile") + "\n")
    time.sleep(SETTLE + 4)  # several scans (one a second at least)
    out = output(d)
    for name, what in (("a-folder", "a directory"), ("a-fifo.job", "a FIFO"),
                       ("a-link.job", "a symlink"), (".being-written.job", "a dot file")):
        said = re.findall(r"intake: incoming/%s: ignored: (.*)" % re.escape(name), out)
        if len(said) != 1 or not said[0].startswith(what):
            failures.append("incoming/%s: logged %r, want one line saying %r" % (name, said, what))
        if d.exists("accepted", name) or d.exists("failed", name):
            failures.append("incoming/%s was moved: it must be left alone" % name)
    if sink_counts(sink, "symlinked-") or sink_counts(sink, "dotfile-"):
        failures.append("a symlinked or dot file was sent")
    if not os.path.exists(secret):
        failures.append("the symlink's target was moved")

    # The same bad file twice under one name: two failed files, two .error files.
    d.drop("bad.job", "{not json\n")
    wait_for(lambda: d.assert_alive() and d.exists("failed", "bad.job.error"), 30, "failed/bad.job.error")
    d.drop("bad.job", '{"job": "bad", "from": "sender@volley-src.test"}\n')
    try:
        wait_for(lambda: d.assert_alive() and d.exists("failed", "bad.job.1.error"), 30,
                 "failed/bad.job.1.error")
        first, second = d.read("failed", "bad.job.error"), d.read("failed", "bad.job.1.error")
        log("bad.job twice -> %r, %r" % (first.strip(), second.strip()))
        if "json" not in first or "message: missing" not in second:
            failures.append("the two .error files do not each say their own reason: %r, %r" % (first, second))
        if d.read("failed", "bad.job") != "{not json\n" or not d.exists("failed", "bad.job.1"):
            failures.append("failed/bad.job and failed/bad.job.1 are not the two files dropped")
    except harness.TestFailure as e:
        failures.append("bad.job dropped twice: %s (failed/: %s)" % (e, sorted(os.listdir(d.path("failed")))))

    # Job ids that are not file names.
    for name, job_id in (("dot.job", "."), ("dotdot.job", "..")):
        d.drop(name, "\n".join([harness.header_line(job_id), harness.rcpt_line("dotted-1@d0001.test"),
                                '{"to": "not an address"}']) + "\n")
    for name in ("dot.job", "dotdot.job"):
        try:
            wait_for(lambda: d.assert_alive() and d.exists("failed", name + ".error"), 30,
                     "failed/%s.error" % name)
            error = d.read("failed", name + ".error")
            log("%s -> %s" % (name, error.strip()))
            if not error.startswith("incoming/%s:1: job: must not start with '.'" % name):
                failures.append("%s: the .error does not name file, line and field: %r" % (name, error))
        except harness.TestFailure as e:
            failures.append("job id in %s: %s" % (name, e))
    hidden = [n for n in os.listdir(d.path("failed")) if n.startswith(".")]
    if hidden:
        failures.append("hidden files in failed/: %s" % hidden)
    if sink_counts(sink, "dotted-"):
        failures.append("a job with id '.' or '..' was sent")
    d.stop()


def renamed_in(h, sink, failures):
    """With a settle time of an hour, only a file seen arriving by rename is taken in."""
    d = h.volleyd(route_port=sink.port, name="volleyd-renamed",
                  extra_config='[intake]\nsettle_time = "1h"\n')
    d.start()
    # Its watch on incoming/ is set before it says it is running: a file there
    # before that waits out the settle time, since nobody saw how it came.
    wait_for(lambda: d.assert_alive() and "info: running: " in output(d), 60, "volleyd running")
    incoming = d.path("incoming")

    # Written in place: it waits the hour out (nothing says it is complete).
    with open(os.path.join(incoming, "in-place.job"), "w") as f:
        f.write(harness.job_text("inplace", ["inplace-1@d0001.test"]))
    # Renamed in without its last LF, then finished in place: the close of that
    # write ends the trust the rename gave, so it waits too.
    text = harness.job_text("finished", ["finished-1@d0001.test"])
    d.drop("finished.job", text[:-1])
    # Renamed in, complete: taken in and sent now, not in an hour.
    rcpts = ["renamed-%02d@%s" % (i, harness.domain(i % 3)) for i in range(20)]
    d.drop("renamed.job", harness.job_text("renamed", rcpts))
    wait_delivered_once(d, sink, "renamed", rcpts, failures, timeout=60)
    with open(os.path.join(incoming, "finished.job"), "a") as f:
        f.write("\n")
    time.sleep(3)  # scans come on every event and at least once a second
    d.assert_alive()
    for name in ("in-place.job", "finished.job"):
        if not d.exists("incoming", name):
            failures.append("%s left incoming/ before its settle time: only a rename says a "
                            "file is complete" % name)
    if sink_counts(sink, "inplace-") or sink_counts(sink, "finished-"):
        failures.append("a file written in place was sent before its settle time")
    log("renamed.job taken in at once; in-place.job and finished.job still wait (settle_time 1h)")
    d.stop()


def test(h):
    sink = h.sink(record=True)
    failures = []
    two_daemons(h, sink, failures)
    writers(h, sink, failures)
    renamed_in(h, sink, failures)
    if failures:
        raise harness.TestFailure("%d problems:\n  - %s" % (len(failures), "\n  - ".join(failures)))


if __name__ == "__main__":
    harness.main(test, "spool_safety")
