#!/usr/bin/python3
"""priority_test.py - a higher-priority job overtakes a lower one at a shared destination.

One destination (p.test) limited to 40 messages a second, one recipient per message.
A bulk job (priority 1, 160 recipients) starts; once it is under way an urgent job
(priority 9, 40 recipients) arrives. From the urgent job's first delivery to its
last, the bulk job must get almost nothing through (only what was already in a
transaction), and the bulk job finishes after it. Jobs of equal priority sharing a
destination take turns instead (fairness_test).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

N_BULK, N_URGENT = 160, 40
CONFIG = ('\n[destination."p.test"]\nmax_message_rate = "40/s"\n'
          'max_recipients_per_transaction = 1\nmax_connections_per_destination = 4\n')


def job(job_id, rcpts, priority):
    lines = [harness.header_line(job_id, priority=priority)]
    lines += [harness.rcpt_line(r) for r in rcpts]
    return "\n".join(lines) + "\n"


def test(h):
    sink = h.sink(record=False)
    d = h.volleyd(route_port=sink.port, extra_config=CONFIG)
    d.start()
    d.drop("bulk.job", job("bulk", ["b%d@p.test" % i for i in range(N_BULK)], 1))
    wait_for(lambda: d.assert_alive() and len(d.deliveries("bulk")) >= 20, 30,
             "the bulk job under way", interval=0.1)
    d.drop("urgent.job", job("urgent", ["u%d@p.test" % i for i in range(N_URGENT)], 9))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries("bulk"), "bulk"))
             >= N_BULK, 60, "both jobs delivered", interval=0.3)
    urgent = sorted(r["ts"] for r in d.deliveries("urgent") if r["status"] == "delivered")
    bulk = sorted(r["ts"] for r in d.deliveries("bulk") if r["status"] == "delivered")
    check(len(urgent) == N_URGENT, "urgent: %d of %d delivered" % (len(urgent), N_URGENT))
    during = [t for t in bulk if urgent[0] < t < urgent[-1]]
    log("urgent from %s to %s; bulk deliveries meanwhile: %d; bulk's last at %s"
        % (urgent[0], urgent[-1], len(during), bulk[-1]))
    # What was already in a transaction (4 connections) may finish meanwhile.
    check(len(during) <= 4, "%d bulk deliveries while the urgent job was being sent" % len(during))
    check(bulk[-1] > urgent[-1], "the bulk job finished before the urgent one")


if __name__ == "__main__":
    harness.main(test, "priority")
