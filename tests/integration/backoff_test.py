#!/usr/bin/python3
"""backoff_test.py - adaptive backoff: a destination's replies back it off, suspend it, or bounce.

volley-sink answers by recipient domain (fault profiles, docs/sink.md); volleyd's
[[backoff]] rules act on the class of each deferral ([[classify]]'s defaults):

  slow.test   RCPT to s*@ gets "421 4.7.0 Try again later" half the time
              (class rate_limited -> backoff, period 2 s). The delivery log's records
              carry "backoff": N >= 1, GET /destinations shows the destination backed
              off with a message rate derived from what it was sending, and once those replies stop (a second job to c*@) it
              eases back a level per period to none: nothing is in backoff in the
              admin list and the last job's records carry no backoff.
  block.test  RCPT blockme@ gets "450 4.7.1 blocked for policy reasons" (policy ->
              suspend, 3 s): the other recipients waiting are deferred "suspended", and
              after the suspension everyone is delivered.
  derived.test  RCPT to d*@ gets the 421 30% of the time (and every reply 20 ms late),
              and it has no max_message_rate: backed off, it is held to a share of the
              rate it was sending at, shown in GET /destinations.
  full.test   RCPT gets "452 4.2.2 mailbox full" (mailbox_full -> bounce): bounced at
              the first attempt, not deferred.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

PROFILES = """
[profile.throttle]
[[profile.throttle.reply]]
command = "RCPT"
match = "<s"
rate = 0.5
reply = "421 4.7.0 Try again later, closing connection."

[profile.throttle_some]
[[profile.throttle_some.reply]]
command = "RCPT"
match = "<d"
rate = 0.3
reply = "421 4.7.0 Try again later, closing connection."
[[profile.throttle_some.reply]]
command = "RCPT"
delay = "20ms"

[profile.block]
[[profile.block.reply]]
command = "RCPT"
match = "blockme"
reply = "450 4.7.1 blocked for policy reasons"

[profile.full]
[[profile.full.reply]]
command = "RCPT"
reply = "452 4.2.2 mailbox full"

[domain."slow.test"]
profile = "throttle"
[domain."derived.test"]
profile = "throttle_some"
[domain."block.test"]
profile = "block"
[domain."full.test"]
profile = "full"
"""

CONFIG = """
[destination."slow.test"]
max_connections_per_destination = 8
max_recipients_per_transaction = 1
max_message_rate = "100/s"
[destination."derived.test"]
max_recipients_per_transaction = 1
max_connections_per_destination = 2
[destination."block.test"]
max_recipients_per_transaction = 1

[[backoff]]
class = "rate_limited"
action = "backoff"
period = "2s"
[[backoff]]
class = "policy"
action = "suspend"
period = "3s"
[[backoff]]
class = "mailbox_full"
action = "bounce"
period = "1m"
"""


# derived.test's max_message_rate in every GET /destinations that showed it backed off.
DERIVED_RATES = []


def destinations(d):
    """GET /destinations; None while the admin API is not listening yet (volleyd opens
    it after the queue, so the first polls may come before it)."""
    status, body = harness.http_get("http://127.0.0.1:%d/destinations" % d.admin_port)
    if status == 0:
        return None
    check(status == 200, "GET /destinations answered %s: %s" % (status, body))
    states = json.loads(body)["destinations"]
    DERIVED_RATES.extend(s["max_message_rate"] for s in states
                         if s["pool"].endswith("|derived.test") and s["state"] == "backoff")
    return states


def test(h):
    profiles = os.path.join(h.mkdir("profiles"), "profiles.toml")
    with open(profiles, "w") as f:
        f.write(PROFILES)
    sink = h.sink(record=True, extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port, retry_initial="1s", retry_max="1s", extra_config=CONFIG)
    d.start()

    slow = ["s%d@slow.test" % i for i in range(120)]
    block = ["blockme@block.test"] + ["b%d@block.test" % i for i in range(10)]
    full = ["f%d@full.test" % i for i in range(5)]
    d.drop("throttled.job", harness.job_text("throttled", slow + full, sender="throttle@volley-src.test"))
    d.drop("blocked.job", harness.job_text("blocked", block))
    derived = ["d%d@derived.test" % i for i in range(150)]
    d.drop("derived.job", harness.job_text("derived", derived))

    # Backed off while the 421s come: in the log and in the admin view.
    seen_backoff = []
    def backed_off():
        d.assert_alive()
        states = destinations(d) or []
        if any(s["state"] == "backoff" and s["level"] >= 1 for s in states):
            seen_backoff.extend(states)
            return True
        return False
    wait_for(backed_off, 30, "slow.test backed off in GET /destinations", interval=0.2)
    log("GET /destinations: %s" % seen_backoff)
    check(any(s["name"].endswith(":%d" % sink.port) and "421" in s["reason"] for s in seen_backoff),
          "the backed-off destination names the sink and the 421: %s" % seen_backoff)
    # slow.test's configured 100/s halves per level.
    rates = [s["max_message_rate"] for s in seen_backoff
             if s["state"] == "backoff" and s["pool"].endswith("|slow.test")]
    check(rates and all(0 < r <= 50 for r in rates),
          "slow.test backed off, yet its max_message_rate is %s" % rates)

    wait_for(lambda: d.assert_alive() and destinations(d) is not None and
             len(harness.delivered_by_rcpt(d.deliveries("throttled"), "throttled")) >= len(slow),
             90, "every slow.test recipient delivered", interval=0.3)
    records = d.deliveries("throttled")
    levels = [r.get("backoff", 0) for r in records if r["rcpt"].endswith("@slow.test")]
    check(max(levels) >= 1, "no slow.test record carries a backoff level")
    deferred = [r for r in records if r["status"] == "deferred" and r["rcpt"].endswith("@slow.test")]
    check(deferred and all(r["code"] == 421 and r.get("class") == "rate_limited" for r in deferred),
          "slow.test deferrals: %s" % deferred[:3])

    # mailbox_full -> bounced at once, never deferred.
    fulls = [r for r in records if r["rcpt"].endswith("@full.test")]
    check(len(fulls) == len(full) and all(r["status"] == "bounced" and r["attempt"] == 1
                                          and r["code"] == 452 for r in fulls),
          "full.test records: %s" % fulls)

    # The replies stop: the destination eases a level per period back to none.
    def eased():
        states = destinations(d)
        # block.test's own suspension comes and goes with blockme's retries.
        return states is not None and not any(s["state"] == "backoff" for s in states)
    wait_for(lambda: d.assert_alive() and eased(), 30,
             "no destination in backoff in GET /destinations (eased off)", interval=0.5)
    d.drop("calm.job", harness.job_text("calm", ["c%d@slow.test" % i for i in range(30)]))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries("calm"), "calm"))
             >= 30, 30, "the calm job delivered", interval=0.3)
    calm = d.deliveries("calm")
    check(all("backoff" not in r for r in calm), "calm records still backed off: %s"
          % [r for r in calm if "backoff" in r][:3])

    # derived.test has no max_message_rate: backed off, it is held to a share of the
    # rate it was sending at (measured once a second has passed; at least 1/s), and
    # still gets everything through.
    # (Every GET /destinations so far collected its rates: it is backed off from the
    # start, alongside slow.test.)
    log("derived.test's max_message_rate while backed off: %s" % sorted(set(DERIVED_RATES)))
    check(any(r > 0 for r in DERIVED_RATES),
          "derived.test was never seen backed off to a measured rate: %s" % DERIVED_RATES)
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries("derived"),
                                                                        "derived")) >= len(derived),
             90, "every derived.test recipient delivered", interval=0.5)

    # Suspension: blockme's 450 4.7.1 suspends block.test; the others wait it out.
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries("blocked"),
                                                                        "blocked")) >= 10,
             60, "block.test's other recipients delivered after the suspension", interval=0.5)
    blocked = d.deliveries("blocked")
    suspended = [r for r in blocked if "suspended until" in r["response"]]
    check(suspended, "no recipient was deferred by the suspension: %s" % blocked[:5])
    first_block = min(r["ts"] for r in blocked if r["rcpt"] == "blockme@block.test")
    firsts = {}
    for r in blocked:
        if r["status"] == "delivered":
            firsts[r["rcpt"]] = r["ts"]
    log("block.test: %d deferred by the suspension, first 450 at %s, deliveries from %s"
        % (len(suspended), first_block, min(firsts.values())))
    stderr = open(d.output).read()
    check("backoff raised to level 1" in stderr and "suspended for 3s" in stderr,
          "volleyd's log does not say backoff raised / suspended")
    m = harness.scrape(d.metrics_port)
    check((m.get("volley_backoff_events_total", action="backoff") or 0) >= 1 and
          (m.get("volley_backoff_events_total", action="suspend") or 0) >= 1,
          "volley_backoff_events_total not counted")


if __name__ == "__main__":
    harness.main(test, "backoff")
