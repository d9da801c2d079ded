#!/usr/bin/python3
"""write_errors_test.py - a queue write that fails, then clears, while volleyd delivers
(issue 16): volleyd keeps running, says so, resumes by itself, and loses nothing.

At 10,000 domains volleyd ran out of file descriptors; RocksDB could not open its next
write-ahead log (EMFILE) and volleyd stopped. Here the failure is real and volleyd is
not modified: prlimit(1) lowers the running daemon's soft RLIMIT_NOFILE to its lowest
free descriptor number, so that no descriptor can be opened, and raises it again later.

- Job 1 (personalised: one recipient per transaction; a sink that waits before every
  reply) is being delivered.
- Job 2 is large (its intake fills a RocksDB memtable, so RocksDB needs a new log) and
  held back by send_after (nothing of it is sent during the test). Once intake has job
  2's file open, the limit is lowered (and kept at the lowest free descriptor, should a
  connection close meanwhile): RocksDB's next log cannot be opened, and it refuses
  every write; intake pauses, and the committer cannot record job 1's outcomes.
- The test checks that volleyd keeps running, that its log says outcome writes
  stalled (and RocksDB's writes stopped), holds the limit a few seconds, restores it,
  and checks that the log then says writes resumed.
- In the end every recipient of job 1 has exactly one delivered record in the delivery
  log and was received by the sink exactly once; job 2 is queued with every recipient
  once (its progress total); volleyd stops cleanly.

It needs a volleyd built without VOLLEY_SANITIZE: UBSan's vptr check opens a pipe the
first time it meets a type, which fails with no descriptor left and aborts volleyd with a
false "invalid vptr". Against such a build the test exits 77 (ctest: skipped).

Connections that cannot be opened while the limit is low are the engine's business
(it waits for descriptors rather than deferring, issue 16), so deferrals are not
counted here, only that no recipient is lost or delivered twice.
"""
import collections
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB1, N1 = "werr-1", 3000
JOB2, N2 = "werr-2", 250000   # its intake alone fills a memtable (8 MiB) about three times
HOLD = 4.0                   # seconds the limit stays low once writes stalled
SEND_AFTER = "2099-01-01T00:00:00Z"


def volleyd_log(d):
    with open(d.output, errors="replace") as f:
        return f.read()


def open_fds(pid):
    """The descriptor numbers a process has open now."""
    return {int(n) for n in os.listdir("/proc/%d/fd" % pid)}


def lowest_free_fd(pid):
    fds = open_fds(pid)
    n = 0
    while n in fds:
        n += 1
    return n


def has_open(pid, suffix):
    """Whether the process has a file open whose path ends with `suffix`."""
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, n)).endswith(suffix):
                return True
        except OSError:
            pass   # closed meanwhile
    return False


def nofile(pid):
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise harness.TestFailure("no 'Max open files' in /proc/%d/limits" % pid)


def set_nofile(pid, soft, hard):
    prlimit = harness.tool_binary("prlimit", "util-linux")
    p = subprocess.run([prlimit, "--pid", str(pid), "--nofile=%d:%d" % (soft, hard)],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "prlimit --pid %d --nofile=%d:%d: %s" % (pid, soft, hard, p.stderr))
    check(nofile(pid) == (soft, hard), "volleyd's RLIMIT_NOFILE is %r, not (%d, %d)"
          % (nofile(pid), soft, hard))


def job2_text():
    header = json.loads(harness.header_line(JOB2))
    header["send_after"] = SEND_AFTER
    lines = [json.dumps(header)]
    lines += ['{"to":"w2-%06d@d%d.test"}' % (i, i % 7 + 1) for i in range(N2)]
    return "\n".join(lines) + "\n"


def volleyctl_job(h, d, job_id):
    ctl = h.binary("tools/volleyctl/volleyctl")
    p = subprocess.run([ctl, "--admin", "%s:%d" % (harness.LOOPBACK, d.admin_port), "--json",
                        "job", job_id], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 0, "volleyctl job %s failed (%d): %s" % (job_id, p.returncode, p.stderr))
    return json.loads(p.stdout)


def test(h):
    profiles = os.path.join(h.dir, "slow.toml")
    with open(profiles, "w") as f:
        # Every reply waits: job 1 is still being delivered when the writes fail.
        f.write('[profile.default]\ntarpit = "10ms"\n')
    sink = h.sink(record=True, extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port, smtp_config="max_connections_per_destination = 2\n")
    d.start()
    pid = d.proc.pid
    soft, hard = nofile(pid)
    log("volleyd pid %d: RLIMIT_NOFILE %d:%d, %d descriptors open"
        % (pid, soft, hard, len(open_fds(pid))))

    rcpts1 = ["w1-%04d@d%d.test" % (i, i % 4 + 1) for i in range(N1)]
    lines = [harness.header_line(JOB1, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(rcpts1)]
    d.drop(JOB1 + ".job", "\n".join(lines) + "\n")
    reader = harness.JsonlReader(d.deliveries_path)

    def delivered(job):
        return sum(1 for r in reader.poll()
                   if r.get("job") == job and r.get("status") == "delivered")

    wait_for(lambda: d.assert_alive() and delivered(JOB1) >= 50, 60, "job 1's first deliveries")
    check(delivered(JOB1) < N1 // 2, "job 1 went too fast for the test (%d of %d delivered)"
          % (delivered(JOB1), N1))

    # Job 2's intake is what makes RocksDB open a new file: the limit goes down as soon
    # as intake has the file open (it needs no new descriptor after that).
    d.drop(JOB2 + ".job", job2_text())
    # Polled often: a fast intake reaches its first full memtable a tenth of a second
    # after opening the file.
    wait_for(lambda: d.assert_alive() and has_open(pid, "/incoming/%s.job" % JOB2), 30,
             "intake reading job 2's file", 0.002)
    low = lowest_free_fd(pid)
    set_nofile(pid, low, hard)
    log("RLIMIT_NOFILE lowered to %d:%d (%d descriptors open); job 1 at %d delivered"
        % (low, hard, len(open_fds(pid)), delivered(JOB1)))

    stopped_re = re.compile(r"volleyd: error: queue: writes stopped after a \S+ error: "
                            r".*Too many open files")
    stalled_re = re.compile(r"volleyd: error: outcome writes stalled: the queue refused a write: .*"
                            r"Too many open files")

    def stalled():
        d.assert_alive()
        # A connection that closed makes room for one descriptor: take it away again.
        nonlocal low
        now = lowest_free_fd(pid)
        if now < low:
            low = now
            set_nofile(pid, low, hard)
            log("RLIMIT_NOFILE lowered again, to %d" % low)
        text = volleyd_log(d)
        check(not re.search(r'job "%s" accepted' % JOB2, text),
              "job 2's intake finished before RocksDB needed a new file under the low limit "
              "(a faster machine than this test expects: make job 2 larger)")
        return stopped_re.search(text) and stalled_re.search(text)

    try:
        wait_for(stalled, 90, "RocksDB refusing writes and the committer stalled on them", 0.05)
        log("volleyd said: %s" % stalled_re.search(volleyd_log(d)).group(0)[:300])
        at_stall = delivered(JOB1)
        time.sleep(HOLD)
        d.assert_alive()
        check("outcome writes resumed" not in volleyd_log(d),
              "outcome writes resumed while no descriptor could be opened")
        log("held %.0fs: volleyd alive, job 1 at %d delivered (%d at the stall)"
            % (HOLD, delivered(JOB1), at_stall))
    finally:
        if d.alive():
            set_nofile(pid, soft, hard)
            log("RLIMIT_NOFILE restored to %d:%d" % (soft, hard))

    resumed_re = re.compile(r"volleyd: info: outcome writes resumed after [\d.]+s \((\d+) failed tries\)")
    m = wait_for(lambda: d.assert_alive() and resumed_re.search(volleyd_log(d)), 60,
                 "the log line saying outcome writes resumed")
    log("volleyd said: %s" % m.group(0))
    text = volleyd_log(d)
    check(text.index(stalled_re.search(text).group(0)) < text.index(m.group(0)),
          "'outcome writes resumed' came before 'outcome writes stalled'")
    check(len(stalled_re.findall(text)) == 1, "'outcome writes stalled' logged %d times, not once"
          % len(stalled_re.findall(text)))
    check(re.search(r"volleyd: info: queue: writes resumed after: .*Too many open files", text),
          "RocksDB's recovery was not logged ('volleyd: info: queue: writes resumed after: ...')")

    accepted_re = re.compile(r'job "%s" accepted: (\d+) recipients' % JOB2)
    m = wait_for(lambda: d.assert_alive() and accepted_re.search(volleyd_log(d)), 120,
                 "job 2 accepted once descriptors were back")
    check(int(m.group(1)) == N2, "job 2 accepted with %s recipients, not %d" % (m.group(1), N2))

    wait_for(lambda: d.assert_alive() and delivered(JOB1) >= N1, 240,
             "every recipient of job 1 delivered")
    j2 = volleyctl_job(h, d, JOB2)
    log("job 2: %s" % {k: j2.get(k) for k in ("state", "total", "pending", "delivered")})
    check(j2["total"] == N2 and j2["pending"] == N2 and j2["delivered"] == 0,
          "job 2 should hold each of its %d recipients once, unsent: %s" % (N2, j2))
    rc = d.stop()
    check(rc == 0, "volleyd stopped with status %s" % rc)
    sink.stop()

    records = reader.poll()
    check(reader.torn == 0, "torn delivery log lines: %s" % reader.torn_samples)
    per_rcpt = harness.delivered_by_rcpt(records, JOB1)
    missing = sorted(set(rcpts1) - set(per_rcpt))
    twice = sorted(r for r, n in per_rcpt.items() if n > 1)
    check(not missing, "%d recipients of job 1 without a delivered record, e.g. %s"
          % (len(missing), missing[:5]))
    check(not twice, "%d recipients of job 1 delivered twice, e.g. %s" % (len(twice), twice[:5]))
    final = harness.status_counts(records, JOB1) - collections.Counter(deferred=10 ** 9)
    check(set(final) == {"delivered"},
          "job 1: final records other than delivered: %s" % dict(final))
    check(not [r for r in records if r.get("job") == JOB2], "job 2 had records although held back")
    sunk = collections.Counter(r for msg in sink.records() for r in msg.get("rcpts", []))
    missing = [r for r in rcpts1 if sunk[r] == 0]
    twice = [r for r in rcpts1 if sunk[r] > 1]
    check(not missing, "the sink never got %d recipients, e.g. %s" % (len(missing), missing[:5]))
    check(not twice, "the sink got %d recipients twice, e.g. %s" % (len(twice), twice[:5]))
    log("%d recipients delivered exactly once and %d queued once, across a queue write "
        "failure that stalled outcomes and cleared" % (N1, N2))


def sanitized_build(argv):
    """Whether --bindir is a VOLLEY_SANITIZE build: UBSan checks a type it has not seen
    before through a pipe, and with no descriptor left it reports a false "invalid
    vptr" and aborts volleyd, so this test cannot run there."""
    bindir = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--bindir"), None)
    try:
        with open(os.path.join(bindir or ".", "CMakeCache.txt")) as f:
            return any(line.strip() == "VOLLEY_SANITIZE:BOOL=ON" for line in f)
    except OSError:
        return False


if __name__ == "__main__":
    if sanitized_build(sys.argv):
        log("SKIP: write-errors: volleyd is built with VOLLEY_SANITIZE, whose UBSan cannot run "
            "without free descriptors; run this test against a build without it")
        sys.exit(77)
    harness.main(test, "write-errors")
