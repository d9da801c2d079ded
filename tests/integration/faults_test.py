#!/usr/bin/python3
"""faults_test.py - volleyd keeps going when a server breaks off or refuses up front.

1. Postfix's smtp-sink with `-q .` hangs up after each final dot without replying,
   while more recipients wait for the same (single) connection. Every recipient must be
   deferred with "connection lost ... (message may have been delivered)" and retried;
   volleyd must not abort. (It once did: the next transaction was started on the
   session that had just ended.)
2. aiosmtpd advertising `SIZE 2000`: a larger message is refused by the client itself
   (552 5.3.4) without sending it. The second job's recipient reaches the idle pooled
   connection and must be bounced at once. (It once waited forever there: the outcome
   was decided without I/O and never collected, so the job never finished.)
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402


def hang_up_after_dot(h):
    port = harness.free_port()
    d_dir = h.mkdir("smtp-sink-q")
    os.chmod(h.dir, 0o711)
    os.chmod(d_dir, 0o777)
    sink = harness.Proc(h, "smtp-sink-q", ["/usr/sbin/smtp-sink", "-u", "nobody", "-q", ".",
                                           "%s:%d" % (harness.LOOPBACK, port), "64"], cwd=d_dir)
    wait_for(lambda: sink.alive() and _connectable(port), 10, "smtp-sink -q . to listen")
    d = h.volleyd(route_port=port, name="volleyd-q",
                  smtp_config="max_connections_per_destination = 1\n")
    d.start()
    rcpts = harness.recipients(6, 1, "hang")
    lines = [harness.header_line("hangup", msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="x") for r in rcpts]
    d.drop("hangup.job", "\n".join(lines) + "\n")

    def all_deferred_twice():
        d.assert_alive()
        recs = d.deliveries("hangup")
        per = {}
        for r in recs:
            if r["status"] == "deferred":
                per[r["rcpt"]] = per.get(r["rcpt"], 0) + 1
        return len(per) == len(rcpts) and min(per.values()) >= 2

    wait_for(all_deferred_twice, 60, "every recipient deferred at two attempts")
    recs = d.deliveries("hangup")
    bad = [r for r in recs if r["status"] != "deferred" or r["code"] != 451
           or r["enhanced"] != "4.4.2" or "may have been delivered" not in r["response"]]
    check(not bad, "records other than a 451 4.4.2 'may have been delivered' deferral: %s"
          % bad[:3])
    check(d.stop() == 0, "volleyd did not stop cleanly")
    sink.stop(10)


def refused_by_size(h):
    server = harness.AiosmtpdServer(h, extra_args=["--size-limit", "2000"]).start()
    d = h.volleyd(route_port=server.port, name="volleyd-size")
    d.start()
    big = harness.message(size=6000)
    d.drop("big1.job", harness.job_text("big1", ["ok-1@d0001.test"], msg=big))
    wait_for(lambda: d.assert_alive() and d.deliveries("big1"), 30, "big1's outcome")
    # The connection is idle in the pool now (idle_timeout 5s): the next job uses it.
    d.drop("big2.job", harness.job_text("big2", ["ok-2@d0001.test"], msg=big))
    t0 = time.monotonic()
    wait_for(lambda: d.assert_alive() and d.deliveries("big2"), 4,
             "big2's outcome on the pooled connection, before the idle timeout")
    log("big2 decided %.2fs after its drop" % (time.monotonic() - t0))
    for job in ("big1", "big2"):
        recs = d.deliveries(job)
        check(len(recs) == 1 and recs[0]["status"] == "bounced" and recs[0]["code"] == 552
              and recs[0]["enhanced"] == "5.3.4",
              "%s: want one bounced 552 5.3.4 record, got %s" % (job, recs))
    check(not server.messages(), "the server received a message over its SIZE limit")
    check(d.stop() == 0, "volleyd did not stop cleanly")
    server.stop()


def _connectable(port):
    import socket
    try:
        with socket.create_connection((harness.LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def test(h):
    hang_up_after_dot(h)
    refused_by_size(h)


if __name__ == "__main__":
    harness.main(test, "faults")
