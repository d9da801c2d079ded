#!/usr/bin/python3
"""fairness_test.py - a small job dropped while a large one fills the delivery window
still goes out promptly: the jobs take turns at the window.

volleyd runs with a window of 64 recipients, so the large job (12,000 recipients) keeps
the window full for a while. A 40-recipient job dropped once the large
one is under way must finish while most of the large job is still queued. (Before the
shard rotated the job it refills from, the oldest job refilled the window first every
time and the small job waited for the whole large one.)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

BIG, SMALL = "fair-big", "fair-small"
N_BIG, N_SMALL = 12000, 40


def test(h):
    sink = h.sink(record=False)
    d = h.volleyd(route_port=sink.port, extra_config="\n[delivery]\nwindow = 64\n")
    d.start()
    d.drop(BIG + ".job", harness.job_text(BIG, harness.recipients(N_BIG, 10, "big")))

    def delivered(job):
        return len(harness.delivered_by_rcpt(d.deliveries(job), job))

    wait_for(lambda: d.assert_alive() and delivered(BIG) >= 200, 60,
             "the large job to be under way")
    d.drop(SMALL + ".job", harness.job_text(SMALL, harness.recipients(N_SMALL, 10, "small")))
    wait_for(lambda: d.assert_alive() and delivered(SMALL) >= N_SMALL, 60,
             "every recipient of the small job delivered")
    big_then = delivered(BIG)
    log("small job done when the large one had %d of %d delivered" % (big_then, N_BIG))
    check(big_then < N_BIG * 3 // 4,
          "the small job finished only when %d of the large job's %d recipients were "
          "delivered: it waited behind the large job" % (big_then, N_BIG))
    wait_for(lambda: d.assert_alive() and delivered(BIG) >= N_BIG, 120,
             "every recipient of the large job delivered")
    check(d.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "fairness")
