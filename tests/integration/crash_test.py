#!/usr/bin/python3
"""crash_test.py - volleyd loses no recipient when killed with SIGKILL ten times.

A 50,000-recipient personalised job (one recipient per transaction, at most 2
connections, so that delivery lasts long enough to be interrupted) goes to volley-sink
(with --record). volleyd is killed with SIGKILL at ten random points and restarted each
time with the same config and directories:

  - kill 1 during intake: once volleyd has the job file open and has read a random
    amount of it (its read offset, /proc/PID/fdinfo), before the job is accepted; the
    file must still be in incoming/ after the kill;
  - one kill right after a restart (0 to 0.3 s after the harness saw volleyd up: RocksDB
    recovery, intake, the first refill), at a random place in the sequence;
  - eight kills when the delivery log shows a random number of recipients delivered,
    one drawn in each eighth of 2 %..95 % of the job, so they spread over the campaign.

The points come from random.Random(seed); the seed is printed and --seed replays it.
[delivery] window = 200, so that "what was in flight" is a tight bound.

What is asserted, and why (engine/shard.h, its invariants; engine/outcomes.h, Commit;
engine/recovery.h, ReplayUnappliedOutcomes; queue/README.md, "Durability and its cost"): a shard
appends outcomes to the delivery log in memory, and once per loop turn writes them with
one write(2), then applies the same outcomes to the queue (RocksDB, WAL in the page
cache, which survives kill -9) together with the log position they end at. A kill before
the log write leaves the recipients queued and unlogged: sent again, logged once. A kill
between the two writes leaves them logged and still queued: at start volleyd reads the
log past the stored position and applies those outcomes to the queue before sending
anything, so they are not logged again. Hence:

  1. every recipient of the job has exactly one terminal record (delivered, bounced,
     expired, cancelled), and it is "delivered" (the sink accepts everything: a bounce
     or expiry here would be a bug), for an address of the job;
  2. the sink received every recipient at least once;
  3. the sink's extra copies (sent, killed before the outcome was logged, sent again)
     are at most `window` per kill: what was taken from the queue and not committed.

The duplicate copies at the sink are reported. A kill landing in the few microseconds
between the log write and the queue write is rare; recovery_test.py builds that state
on purpose and checks the replay itself.
"""
import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "crash-1"
N = 50000
DOMAINS = 50
WINDOW = 200
KILLS = 10
DELIVERED_KILLS = 8            # the kills at a delivered count
SPREAD = (0.02, 0.95)          # of N: where those eight are drawn
AFTER_RESTART_MAX_S = 0.3      # the kill right after a restart: this long after it, at most
TERMINAL = ("delivered", "bounced", "expired", "cancelled")


def add_args(parser):
    parser.add_argument("--seed", type=int, default=None,
                        help="replay the kill points of an earlier run")


def open_offset(pid, path):
    """The read offset of `path` in process `pid`, or None when it has no such file open."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != path:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                for line in f:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return None


def plan(rng):
    """The nine kills after the intake one: ("after_restart", delay) at a random place
    among eight ("delivered", count) in ascending order."""
    lo, hi = SPREAD
    step = (hi - lo) / DELIVERED_KILLS
    points = [("delivered", int(N * (lo + (i + rng.random()) * step)))
              for i in range(DELIVERED_KILLS)]
    points.insert(rng.randrange(len(points) + 1),
                  ("after_restart", rng.uniform(0.0, AFTER_RESTART_MAX_S)))
    return points


def test(h):
    seed = h.args.seed if h.args.seed is not None else int.from_bytes(os.urandom(4), "big")
    log("seed %d (replay the same kill points with --seed %d)" % (seed, seed))
    rng = random.Random(seed)
    later = plan(rng)

    sink = h.sink(record=True)
    d = h.volleyd(route_port=sink.port,
                  smtp_config="max_connections_per_destination = 2\n",
                  extra_config="\n[delivery]\nwindow = %d\n" % WINDOW)
    d.start()
    rcpts = harness.recipients(N, DOMAINS, "crash")
    lines = [harness.header_line(JOB, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(rcpts)]
    text = "\n".join(lines) + "\n"
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

    kills = []        # (what, delivered count at the kill)
    marks = []        # log records read when each kill had taken effect

    def kill(what):
        d.kill9()
        n = refresh()  # volleyd is dead: the log is complete up to the kill
        marks.append(len(reader.records))
        kills.append((what, n))
        log("kill #%d (%s) at %d of %d delivered (%.1f%%), after log record %d"
            % (len(kills), what, n, N, 100.0 * n / N, marks[-1]))

    # Kill 1: during intake. The file is read through a 1 MiB buffer; stop volleyd once
    # it has read past a random offset that leaves at least 1.5 MiB (over 20,000
    # recipients and the synced commit) still to take in.
    incoming = os.path.join(d.spool, "incoming", JOB + ".job")
    size = len(text.encode())
    check(size > (5 << 20) // 2, "the job file (%d bytes) is too small for a kill during intake"
          % size)
    target = rng.randint(1, size - (3 << 20) // 2)
    d.drop(JOB + ".job", text)
    def read_past_target():
        d.assert_alive()
        pos = open_offset(d.proc.pid, incoming)
        return pos if pos is not None and pos >= target else None

    at = wait_for(read_past_target, 60, "volleyd reading the job file past offset %d" % target,
                  interval=0.001)
    kill("intake, read offset %d of %d" % (at, size))
    check(os.path.exists(incoming) and not d.exists("accepted", JOB + ".job"),
          "the kill during intake came too late: the job was accepted already")
    check(refresh() == 0, "recipients delivered before the job was accepted")
    d.start()

    for what, arg in later:
        if what == "after_restart":
            time.sleep(arg)
            d.assert_alive()
            kill("%.3f s after restart #%d" % (arg + 0.2, d.starts - 1))
        else:
            wait_for(lambda: d.assert_alive() and refresh() >= arg, 180,
                     "%d delivered before kill #%d" % (arg, len(kills) + 1), interval=0.005)
            kill("at %d delivered" % arg)
        check(kills[-1][1] < N, "delivery outran the test: all %d delivered before kill #%d"
              % (N, len(kills)))
        d.start()
    check(len(kills) == KILLS, "%d kills, not %d" % (len(kills), KILLS))

    terminal = collections.Counter()

    def count_terminal():
        recs = reader.poll()
        for r in recs[count_terminal.seen:]:
            if r.get("job") == JOB and r.get("status") in TERMINAL:
                terminal[r.get("rcpt")] += 1
        count_terminal.seen = len(recs)
        return len(terminal)
    count_terminal.seen = 0

    wait_for(lambda: d.assert_alive() and count_terminal() >= N, 240,
             "a terminal record for every recipient after %d restarts" % len(kills),
             interval=0.2)
    log("every recipient has a terminal record")
    time.sleep(2)  # anything still coming (a duplicate of a late outcome) is in the log
    rc = d.stop()
    check(rc == 0, "volleyd exited with status %s at the end" % rc)
    sink.stop()
    check(d.exists("accepted", JOB + ".job"), "the job file is not in accepted/")
    check(not os.listdir(d.path("failed")), "files in failed/: %s" % os.listdir(d.path("failed")))

    # 1. at least one terminal record each; every one of them "delivered".
    records = reader.poll()
    by_rcpt = collections.defaultdict(list)   # rcpt -> indexes of its terminal records
    statuses = collections.Counter()
    for i, r in enumerate(records):
        if r.get("job") != JOB:
            continue
        statuses[r.get("status")] += 1
        if r.get("status") in TERMINAL:
            by_rcpt[r.get("rcpt")].append(i)
            check(r.get("status") == "delivered",
                  "a terminal record other than delivered (the sink accepts all): %s" % r)
    job_rcpts = set(rcpts)
    unexpected = sorted(set(by_rcpt) - job_rcpts)
    check(not unexpected, "terminal records for addresses not in the job: %s" % unexpected[:5])
    missing = sorted(job_rcpts - set(by_rcpt))
    check(not missing, "%d recipients have no terminal record, e.g. %s"
          % (len(missing), missing[:5]))

    twice = sorted(r for r, idx in by_rcpt.items() if len(idx) > 1)
    check(not twice, "%d recipients have more than one terminal record, e.g. %s: %s"
          % (len(twice), twice[:3], [records[i] for i in by_rcpt[twice[0]]] if twice else ""))

    # 2. and 3. the sink: everyone at least once, extra copies within what was in flight.
    seen = collections.Counter(a for rec in sink.records() for a in rec.get("rcpts", []))
    not_sent = sorted(job_rcpts - set(seen))
    check(not not_sent, "%d recipients never reached the sink, e.g. %s"
          % (len(not_sent), not_sent[:5]))
    stray = sorted(set(seen) - job_rcpts)
    check(not stray, "the sink received addresses not in the job: %s" % stray[:5])
    sink_dupes = sum(c - 1 for c in seen.values())
    check(sink_dupes <= KILLS * WINDOW,
          "%d extra copies at the sink, more than %d kills x window %d"
          % (sink_dupes, KILLS, WINDOW))

    log("seed %d: kills %s" % (seed, [n for _, n in kills]))
    log("delivery-log statuses %s" % dict(statuses))
    log("duplicates: %d extra copies at the sink (%d recipients, bound %d); %d torn log lines"
        % (sink_dupes, sum(1 for c in seen.values() if c > 1), KILLS * WINDOW, reader.torn))
    if reader.torn:
        log("torn delivery-log lines (a record cut by SIGKILL), e.g. %s" % reader.torn_samples[:2])


if __name__ == "__main__":
    harness.main(test, "crash", add_args)
