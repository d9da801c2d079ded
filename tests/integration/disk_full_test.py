#!/usr/bin/python3
"""disk_full_test.py - intake pauses on a nearly full disk, delivery goes on, nothing is lost.

The queue and the spool live on a 64 MiB tmpfs mounted for the test, and volleyd runs with
[queue] min_free_space = "24MiB". Job 1 (personalised: one recipient per transaction, one
connection per domain, and a sink that waits before every reply) is being delivered when
a filler file leaves only about 12 MiB free. Then job 2 is dropped. The test checks that:

- intake pauses, and volleyd's log says why: the folder, its free bytes and the minimum;
- job 2's file stays in spool/incoming/ and nothing of job 2 is sent while paused;
- job 1 goes on being delivered meanwhile (its outcomes use the room the floor keeps);
- RocksDB itself never ran out of space (no "writes stopped" in the log);
- once the filler is deleted, intake resumes by itself, job 2 is accepted, and every
  recipient of both jobs has exactly one delivered record in the delivery log and is in
  the sink's record exactly once.

The test mounts a tmpfs, so it needs root (CAP_SYS_ADMIN): without it, it fails rather
than skip, so that a CI that cannot mount is noticed. The tmpfs is unmounted at the end,
on failure too.
"""
import collections
import ctypes
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

TMPFS_SIZE = "64m"
MIN_FREE = 24 << 20          # [queue] min_free_space below
LEAVE_FREE = 12 << 20        # what the filler leaves: under MIN_FREE, room for outcomes
JOB1, N1 = "full-1", 400
JOB2, N2 = "full-2", 200
PROGRESS_WHILE_PAUSED = 20   # job 1 recipients delivered after intake paused, at least
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, ("size=%s,mode=0755" % size).encode()) != 0:
        err = ctypes.get_errno()
        raise harness.TestFailure(
            "cannot mount a tmpfs on %s: %s: this test needs root with CAP_SYS_ADMIN"
            % (path, os.strerror(err)))
    log("mounted a %s tmpfs on %s" % (size, path))


def umount(path):
    if _libc.umount2(path.encode(), 0) != 0:
        err = ctypes.get_errno()
        log("umount %s: %s; detaching it instead" % (path, os.strerror(err)))
        if _libc.umount2(path.encode(), MNT_DETACH) != 0:
            log("umount -l %s: %s" % (path, os.strerror(ctypes.get_errno())))
            return
    log("unmounted %s" % path)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave):
    """Write a file of zeros under `path` until `leave` bytes are free (roughly)."""
    filler = os.path.join(path, "filler")
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        while free_bytes(path) > leave + len(chunk):
            f.write(chunk)
            f.flush()
        f.write(b"\0" * max(0, free_bytes(path) - leave))
        f.flush()
        os.fsync(f.fileno())
    log("filler %d MiB: %d bytes free on %s" % (os.path.getsize(filler) >> 20, free_bytes(path), path))
    return filler


def use_mount(d, mnt):
    """Move volleyd's spool and queue onto the tmpfs (the delivery log stays off it: this
    test is about the queue)."""
    spool, queue = os.path.join(mnt, "spool"), os.path.join(mnt, "queue")
    for sub in ("tmp", "incoming"):
        os.makedirs(os.path.join(spool, sub), exist_ok=True)
    with open(d.config) as f:
        text = f.read()
    text = text.replace('spool = "%s"' % d.spool, 'spool = "%s"' % spool, 1)
    text = text.replace('queue = "%s"' % d.queue, 'queue = "%s"' % queue, 1)
    with open(d.config, "w") as f:
        f.write(text)
    d.spool, d.queue = spool, queue


def volleyd_log(d):
    with open(d.output, errors="replace") as f:
        return f.read()


def test(h):
    profiles = os.path.join(h.dir, "slow.toml")
    with open(profiles, "w") as f:
        # Every reply waits: job 1 lasts long enough to be delivered while intake is paused.
        f.write('[profile.default]\ntarpit = "20ms"\n')
    sink = h.sink(record=True, extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port, smtp_config="max_connections_per_destination = 1\n",
                  extra_config='\n[queue]\nmin_free_space = "24MiB"\n')
    mnt = os.path.join(d.dir, "fs")
    mount_tmpfs(mnt, TMPFS_SIZE)
    try:
        use_mount(d, mnt)
        run(h, d, sink, mnt)
    finally:
        if d.alive():
            d.stop()
        umount(mnt)


def run(h, d, sink, mnt):
    d.start()
    rcpts1 = ["j1-%04d@d%d.test" % (i, i % 2 + 1) for i in range(N1)]
    lines = [harness.header_line(JOB1, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(rcpts1)]
    d.drop(JOB1 + ".job", "\n".join(lines) + "\n")
    reader = harness.JsonlReader(d.deliveries_path)

    def delivered(job):
        return sum(1 for r in reader.poll() if r.get("job") == job and r.get("status") == "delivered")

    wait_for(lambda: d.assert_alive() and delivered(JOB1) > 0, 60, "job 1's first delivery")
    check(delivered(JOB1) < N1 // 2, "job 1 went too fast for the test (%d of %d delivered)"
          % (delivered(JOB1), N1))

    # Job 2 is written before the disk fills (the spool is on the tmpfs too), then the
    # filler, then the drop: the rename needs no room.
    rcpts2 = harness.recipients(N2, 5, "j2")
    tmp = os.path.join(d.spool, "tmp", JOB2 + ".job")
    with open(tmp, "w") as f:
        f.write(harness.job_text(JOB2, rcpts2))
    filler = fill(mnt, LEAVE_FREE)
    check(free_bytes(mnt) < MIN_FREE, "the filler left %d bytes free, not under %d"
          % (free_bytes(mnt), MIN_FREE))
    os.rename(tmp, os.path.join(d.spool, "incoming", JOB2 + ".job"))
    log("dropped %s with %d bytes free" % (JOB2, free_bytes(mnt)))

    pause_re = re.compile(r"volleyd: warning: intake paused: free space: (\S+): (\d+) bytes free "
                          r"\([^)]*\), below min_free_space (\d+) .*incoming/%s\.job stays"
                          % re.escape(JOB2))
    m = wait_for(lambda: d.assert_alive() and pause_re.search(volleyd_log(d)), 60,
                 "the log line saying intake paused, and why")
    log("volleyd said: %s" % m.group(0))
    path, free, floor = m.group(1), int(m.group(2)), int(m.group(3))
    check(path.startswith(mnt), "the pause names %s, not a folder on the full tmpfs %s" % (path, mnt))
    check(floor == MIN_FREE, "the pause names a minimum of %d, not min_free_space %d" % (floor, MIN_FREE))
    check(free < floor, "the pause names %d bytes free, not under the minimum %d" % (free, floor))

    # While paused: job 1 goes on, job 2 stays where it is and nothing of it is sent.
    at_pause = delivered(JOB1)
    wait_for(lambda: d.assert_alive() and delivered(JOB1) >= min(N1, at_pause + PROGRESS_WHILE_PAUSED),
             60, "job 1 delivering while intake is paused")
    check(delivered(JOB1) < N1, "job 1 finished before the test could see it go on while paused")
    check(d.exists("incoming", JOB2 + ".job"), "job 2's file left incoming/ while intake was paused")
    check(not d.exists("accepted", JOB2 + ".job"), "job 2 was accepted below the floor")
    check(not d.deliveries(JOB2), "job 2 had deliveries while intake was paused")
    check(pause_re.search(volleyd_log(d)) and "intake resumed" not in volleyd_log(d),
          "intake resumed with the disk still full")
    log("while paused: job 1 went from %d to %d delivered; job 2 waits in incoming/"
        % (at_pause, delivered(JOB1)))

    os.unlink(filler)
    log("filler deleted: %d bytes free" % free_bytes(mnt))
    # The intake thread logs "resumed" before the job's "accepted" line.
    accepted_re = re.compile(r'job "%s" accepted: (\d+) recipients' % JOB2)
    m = wait_for(lambda: d.assert_alive() and accepted_re.search(volleyd_log(d)), 60,
                 "job 2 accepted once the room came back")
    check(int(m.group(1)) == N2, "job 2 accepted with %s recipients, not %d" % (m.group(1), N2))
    check(d.exists("accepted", JOB2 + ".job"), "job 2's file is not in accepted/")
    check(re.search(r"volleyd: info: intake resumed after \d+s paused", volleyd_log(d)),
          "no 'intake resumed' line")

    wait_for(lambda: d.assert_alive() and delivered(JOB1) >= N1 and delivered(JOB2) >= N2, 240,
             "every recipient of both jobs delivered")
    d.stop()
    sink.stop()

    text = volleyd_log(d)
    check("queue: writes stopped" not in text,
          "RocksDB ran out of space although the floor should have kept room:\n%s"
          % harness.tail(d.output))
    records = reader.poll()
    for job, rcpts in ((JOB1, rcpts1), (JOB2, rcpts2)):
        per_rcpt = harness.delivered_by_rcpt(records, job)
        missing = sorted(set(rcpts) - set(per_rcpt))
        twice = sorted(r for r, n in per_rcpt.items() if n > 1)
        check(not missing, "%s: %d recipients without a delivered record, e.g. %s"
              % (job, len(missing), missing[:5]))
        check(not twice, "%s: %d recipients delivered twice, e.g. %s" % (job, len(twice), twice[:5]))
        others = harness.status_counts(records, job) - collections.Counter(delivered=len(rcpts))
        check(not others, "%s: records other than delivered: %s" % (job, dict(others)))
    sunk = collections.Counter(r for m in sink.records() for r in m.get("rcpts", []))
    for rcpts in (rcpts1, rcpts2):
        missing = [r for r in rcpts if sunk[r] == 0]
        twice = [r for r in rcpts if sunk[r] > 1]
        check(not missing, "the sink never got %d recipients, e.g. %s" % (len(missing), missing[:5]))
        check(not twice, "the sink got %d recipients twice, e.g. %s" % (len(twice), twice[:5]))
    log("%d + %d recipients delivered exactly once; intake paused and resumed by itself" % (N1, N2))


if __name__ == "__main__":
    harness.main(test, "disk-full")
