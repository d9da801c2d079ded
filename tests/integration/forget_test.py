#!/usr/bin/python3
"""forget_test.py - a shard lets go of the destinations recent work no longer needs
([delivery] forget_idle_destinations_after), and keeps those with state to remember.

volleyd, forgetting after 4 s, sends one job to two routes: ok.test to volley-sink,
which delivers, and closed.test to a closed port, whose host is then marked down for a
minute (engine/destination_limits.h, kHostDownTime) and whose recipient is deferred for
an hour. GET /destinations?all=1 lists both at first; then ok.test's destination goes
from the listing once its idle connection has closed ([smtp] idle_timeout, 5 s) and 4 s
more have passed (nothing queued, no connection, nothing to remember), while
closed.test's stays, shown unreachable. A second job to ok.test afterwards is
delivered: the destination is made afresh.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

FORGET_AFTER_S = 4
IDLE_TIMEOUT_S = 5  # [smtp] idle_timeout's default: the delivered route's connection stays


def all_destinations(d):
    status, body = harness.http_get("http://127.0.0.1:%d/destinations?all=1&limit=100"
                                    % d.admin_port)
    check(status == 200, "GET /destinations?all=1 answered %s: %s" % (status, body))
    return json.loads(body)


def test(h):
    sink = h.sink(record=True)
    closed_port = harness.free_port()
    ok_route = "127.0.0.1:%d" % sink.port
    closed_route = "127.0.0.1:%d" % closed_port
    d = h.volleyd(route_port=sink.port, retry_initial="1h", retry_max="1h",
                  routes={"closed.test": closed_port},
                  extra_config='[delivery]\nforget_idle_destinations_after = "%ds"\n'
                  % FORGET_AFTER_S)
    d.start()
    ok = ["o%d@ok.test" % i for i in range(5)]
    d.drop("first.job", harness.job_text("first", ok + ["c0@closed.test"]))

    def outcomes():
        records = d.deliveries("first")
        delivered = {r["rcpt"] for r in records if r["status"] == "delivered"}
        deferred = {r["rcpt"] for r in records if r["status"] == "deferred"}
        return delivered == set(ok) and deferred == {"c0@closed.test"}

    wait_for(lambda: d.assert_alive() and outcomes(), 60,
             "ok.test's 5 delivered and closed.test's 1 deferred", interval=0.1)
    ended = time.monotonic()

    def names(listing):
        return sorted(x["name"] for x in listing["destinations"])

    # Both are there while recent: ok.test's connection idles IDLE_TIMEOUT_S before it
    # closes, and only then do FORGET_AFTER_S start (a second's margin for the walk).
    first = all_destinations(d)
    check(time.monotonic() - ended < IDLE_TIMEOUT_S + FORGET_AFTER_S - 1,
          "the listing came too late to see both (%.1f s)" % (time.monotonic() - ended))
    check(names(first) == sorted([ok_route, closed_route]) and first["total"] == 2,
          "both destinations listed at first: %r" % first)

    def forgotten():
        listing = all_destinations(d)
        return listing if names(listing) == [closed_route] else None

    listing = wait_for(forgotten, 30, "ok.test's destination to be forgotten", interval=0.2)
    waited = time.monotonic() - ended
    log("ok.test's destination forgotten after %.1f s: %r" % (waited, listing))
    check(waited >= IDLE_TIMEOUT_S + FORGET_AFTER_S - 1.5,
          "forgotten after %.1f s, before its connection's %d s idle and %d s more"
          % (waited, IDLE_TIMEOUT_S, FORGET_AFTER_S))
    kept = listing["destinations"][0]
    check(kept["state"] == "unreachable" and "connection refused" in kept["last_error"],
          "closed.test's destination kept, unreachable: %r" % kept)
    check(listing["total"] == 1, "total counts what is held: %r" % listing)

    # Work for a forgotten destination makes it again, and goes.
    again = ["a%d@ok.test" % i for i in range(3)]
    d.drop("second.job", harness.job_text("second", again))
    wait_for(lambda: d.assert_alive() and {r["rcpt"] for r in d.deliveries("second")
                                           if r["status"] == "delivered"} == set(again),
             60, "the second job to ok.test delivered", interval=0.1)
    check(names(all_destinations(d)) == sorted([ok_route, closed_route]),
          "ok.test's destination made again: %r" % all_destinations(d))
    d.assert_alive()


if __name__ == "__main__":
    harness.main(test, "forget")
