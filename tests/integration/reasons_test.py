#!/usr/bin/python3
"""reasons_test.py - reasons kept (issue 20): whose a deferral is, why a recipient expired,
why a route gets nothing through.

One volley-sink listening on 127.0.0.1 and 127.0.0.2 (same port), fault profiles by
recipient domain (docs/sink.md); [[backoff]] backs a route off for a minute on any
rate_limited deferral, so a level raised would still show at the end:

  grey.test   (route "*", 127.0.0.1) greylists every (sender, recipient) for 2 s:
              "451 4.7.1 Greylisted, please try again later", which the built-in
              [[classify]] table calls rate_limited. A per-recipient deferral
              (engine/reasons.h): every recipient is delivered after its retry, and the
              route is never backed off (no record of it carries "backoff", GET
              /destinations never lists it, volleyd logs no "backoff raised" for it).
  storm.test  (route 127.0.0.2) answers every RCPT "421 4.7.0 Try again later,
              closing connection.": the route's, so it is backed off (GET
              /destinations, volleyd's log, "backoff" in its records).
  never.test  (route "*") greylists for an hour; a second volleyd ("volleyd-never")
              has retry_max_age = 10s for it. It is stopped after the first deferral
              and started again more than kLateRetryGrace (a minute) past the
              recipient's next retry, so the recipient expires untried (code 0,
              5.4.7), and its expired record names the reply of the last attempt
              (last_reply, last_class), kept in the queue across the restart. The
              other parts run meanwhile.
  closed.test (route 127.0.0.1:P, nothing listening on P): connections are refused.
              volleyd logs "destination 127.0.0.1:P: cannot connect to 127.0.0.1:P:
              connection refused; next try in ..." once however many attempts fail,
              GET /destinations shows it unreachable with last_error and next_retry,
              and its deferred records carry the reason.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

PROFILES = """
[profile.grey]
greylist = "2s"
[profile.grey_forever]
greylist = "1h"
[profile.storm]
[[profile.storm.reply]]
command = "RCPT"
reply = "421 4.7.0 Try again later, closing connection."

[domain."grey.test"]
profile = "grey"
[domain."never.test"]
profile = "grey_forever"
[domain."storm.test"]
profile = "storm"
"""

NEVER_CONFIG = """
[destination."never.test"]
retry_max_age = "10s"
"""

# A recipient taken this long after its retry fell due, past its deadline, expires
# untried (engine/shard.h kLateRetryGrace is a minute), with room to spare.
UNTRIED_AFTER = 75

CONFIG = """
[[backoff]]
class = "rate_limited"
action = "backoff"
period = "1m"
"""

GREYLISTED = "451 4.7.1 Greylisted, please try again later"


def destinations(d):
    status, body = harness.http_get("http://127.0.0.1:%d/destinations" % d.admin_port)
    if status == 0:
        return None
    check(status == 200, "GET /destinations answered %s: %s" % (status, body))
    return json.loads(body)["destinations"]


def volleyd_lines(d):
    with open(d.output, errors="replace") as f:
        return f.read().splitlines()


def test(h):
    profiles = os.path.join(h.mkdir("profiles"), "profiles.toml")
    with open(profiles, "w") as f:
        f.write(PROFILES)
    sink = h.sink(record=True, extra_args=["--profiles", profiles],
                  listen_hosts=["127.0.0.1", "127.0.0.2"])
    closed_port = harness.free_port()
    grey_route = "127.0.0.1:%d" % sink.port
    storm_route = "127.0.0.2:%d" % sink.port
    closed_route = "127.0.0.1:%d" % closed_port

    # never.test first: its volleyd stops after the first deferral, and waits out
    # the grace while the rest runs.
    nv = h.volleyd(route_port=sink.port, name="volleyd-never", retry_initial="1s",
                   retry_max="1s", extra_config=NEVER_CONFIG)
    nv.start()
    nv.drop("never.job", harness.job_text("never", ["n0@never.test"]))
    wait_for(lambda: nv.assert_alive() and
             any(r["status"] == "deferred" for r in nv.deliveries("never")), 30,
             "never.test's recipient deferred", interval=0.1)
    check(nv.stop() == 0, "volleyd-never stops cleanly")
    never_stopped = time.monotonic()
    never = nv.deliveries("never")
    check(never and all(r["status"] == "deferred" and r["response"] == GREYLISTED[10:]
                        for r in never),
          "never.test's recipient greylisted, not expired, before the stop: %r" % never)

    d = h.volleyd(route_port=sink.port, retry_initial="1s", retry_max="1s", extra_config=CONFIG,
                  routes={"storm.test": storm_route, "closed.test": closed_port})
    d.start()

    grey = ["g%d@grey.test" % i for i in range(20)]
    storm = ["s%d@storm.test" % i for i in range(10)]
    closed = ["c%d@closed.test" % i for i in range(5)]
    d.drop("grey.job", harness.job_text("grey", grey))
    d.drop("storm.job", harness.job_text("storm", storm))
    d.drop("closed.job", harness.job_text("closed", closed))

    # Every poll of GET /destinations, to show the greylisted route was never in it.
    seen = []

    def poll():
        d.assert_alive()
        states = destinations(d) or []
        seen.extend(states)
        return states

    # The 421 storm backs its route off; the closed port shows as unreachable.
    def storm_backed_off():
        return any(s["name"] == storm_route and s["state"] == "backoff" for s in poll())
    wait_for(storm_backed_off, 30, "the 421 storm's route backed off in GET /destinations",
             interval=0.2)

    def closed_unreachable():
        return any(s["name"] == closed_route and s["state"] == "unreachable" for s in poll())
    wait_for(closed_unreachable, 30, "the closed port's route unreachable in GET /destinations",
             interval=0.2)
    unreachable = [s for s in seen if s["name"] == closed_route][-1]
    log("GET /destinations, the closed port: %s" % unreachable)
    check("connection refused" in unreachable.get("last_error", ""),
          "last_error names the refusal: %r" % unreachable)
    check(unreachable.get("next_retry"), "next_retry is there: %r" % unreachable)
    storm_state = [s for s in seen if s["name"] == storm_route][-1]
    check("421" in storm_state["reason"], "the storm's backoff names the 421: %r" % storm_state)

    # The greylisted recipients all get through after their retry.
    def grey_delivered():
        poll()
        return sum(1 for r in d.deliveries("grey") if r["status"] == "delivered") == len(grey)
    wait_for(grey_delivered, 60, "every greylisted recipient delivered", interval=0.3)
    # Let a few more connection attempts to the closed port fail meanwhile.
    wait_for(lambda: sum(1 for r in d.deliveries("closed") if r["status"] == "deferred") >= 10,
             30, "the closed port's recipients deferred again and again", interval=0.3)
    poll()

    grey_records = d.deliveries("grey")
    greylisted = [r for r in grey_records if r["status"] == "deferred"]
    check(len(greylisted) >= len(grey), "every grey recipient was greylisted first: %d records"
          % len(greylisted))
    check(all(r["response"].startswith("Greylisted") and r["class"] == "rate_limited"
              for r in greylisted),
          "the greylisting deferrals are rate_limited by the built-in table: %r" % greylisted[:2])
    backed = [r for r in grey_records if r.get("backoff")]
    check(not backed, "no record of the greylisted route carries a backoff level: %r" % backed[:3])
    check(not any(s["name"] == grey_route for s in seen),
          "GET /destinations never listed the greylisted route: %r"
          % [s for s in seen if s["name"] == grey_route][:2])
    lines = volleyd_lines(d)
    raised = [line for line in lines if "backoff raised" in line]
    check(any(storm_route in line for line in raised), "the storm raised a backoff: %r" % raised)
    check(not any(line.split("volleyd: info: ")[-1].startswith(grey_route + "|") or
                  (" " + grey_route + ": backoff") in line for line in raised),
          "no backoff raised for the greylisted route: %r" % raised)
    check(any(r.get("backoff") for r in d.deliveries("storm")),
          "the storm's records carry its backoff level")

    # The closed port: logged once, however many attempts failed.
    want = re.compile(r"volleyd: warning: destination %s: cannot connect to %s: connection refused; "
                      r"next try in [0-9hms]+$" % (re.escape(closed_route), re.escape(closed_route)))
    refused = [line for line in lines if "cannot connect to" in line]
    check(len(refused) == 1 and want.search(refused[0]),
          "one warning for the closed port, in the documented form: %r" % refused)
    closed_deferred = [r for r in d.deliveries("closed") if r["status"] == "deferred"]
    check(all("Connection refused" in r["response"] and r["code"] == 451 and
              r["enhanced"] == "4.4.2" for r in closed_deferred),
          "the closed port's deferrals carry the reason: %r" % closed_deferred[:2])

    check(d.stop() == 0, "volleyd stops cleanly")

    # never.test: started again well past its deadline and its retry's due time.
    time.sleep(max(0, UNTRIED_AFTER - (time.monotonic() - never_stopped)))
    nv.start()
    wait_for(lambda: nv.assert_alive() and
             any(r["status"] == "expired" for r in nv.deliveries("never")), 30,
             "never.test's recipient expired after the restart", interval=0.2)
    expired = [r for r in nv.deliveries("never") if r["status"] == "expired"]
    log("expired record: %s" % expired[0])
    check(len(expired) == 1, "one expired record: %r" % expired)
    e = expired[0]
    check(e["code"] == 0 and e["enhanced"] == "5.4.7" and e["class"] == "expired" and
          not e["host"], "expired untried: %r" % e)
    check(e.get("last_reply") == GREYLISTED,
          "the expired record names the last reply %r: %r" % (GREYLISTED, e))
    check(e.get("last_class") == "rate_limited", "and its class: %r" % e)
    check(nv.stop() == 0, "volleyd-never stops cleanly")


if __name__ == "__main__":
    harness.main(test, "reasons")
