#!/usr/bin/python3
"""egress_test.py - connections leave from the configured egress sources, with each
source's EHLO name, in weighted round robin; a destination can be held to one source.

Two sources: "heavy" on 127.0.0.2 (weight 3) and "light" on 127.0.0.3 (weight 1).
aiosmtpd (a server Volley's authors did not write) records each message's client
address and EHLO name. Every message is its own connection (max_messages_per_connection
= 1, a personalised job), so the sessions split by the weights: 3 to 1, exactly, since
the round robin is smooth and per destination. A second domain whose [destination]
table lists only "light" is sent from 127.0.0.3 alone.
"""
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "egress"
N_MAIN, N_PINNED = 80, 20
SOURCES = """
[[source]]
name = "heavy"
address = "127.0.0.2"
ehlo_name = "heavy.volley-src.test"
weight = 3

[[source]]
name = "light"
address = "127.0.0.3"
ehlo_name = "light.volley-src.test"
"""


def test(h):
    server = harness.AiosmtpdServer(h).start()
    main = ["ok-%03d@main.test" % i for i in range(N_MAIN)]
    pinned = ["ok-%03d@pinned.test" % i for i in range(N_PINNED)]
    d = h.volleyd(route_port=server.port, smtp_config=(
        'sources = ["heavy", "light"]\nmax_messages_per_connection = 1\n'
        'max_connections_per_destination = 4\n'),
        extra_config=SOURCES + '\n[destination."pinned.test"]\nsources = ["light"]\n'
                               'max_messages_per_connection = 1\n')
    d.start()
    # Personalised: one recipient per transaction, so one message per connection.
    msg = harness.message(personalised=True)
    lines = [harness.header_line(JOB, msg=msg)]
    lines += [harness.rcpt_line(r, first_name="R%d" % i) for i, r in enumerate(main + pinned)]
    d.drop(JOB + ".job", "\n".join(lines) + "\n")
    wait_for(lambda: d.assert_alive() and
             len(harness.delivered_by_rcpt(d.deliveries(JOB), JOB)) >= N_MAIN + N_PINNED, 60,
             "every recipient delivered")
    records = server.messages()
    by_domain = collections.defaultdict(collections.Counter)
    for rec in records:
        for rcpt in rec["rcpts"]:
            by_domain[rcpt.split("@")[1]][(rec["peer"], rec["helo"])] += 1
    log("client address and EHLO name per domain: %s" % dict(by_domain))
    check(by_domain["main.test"] == collections.Counter({
        ("127.0.0.2", "heavy.volley-src.test"): N_MAIN * 3 // 4,
        ("127.0.0.3", "light.volley-src.test"): N_MAIN // 4}),
        "main.test: sources not 3:1 or EHLO names not theirs: %s" % by_domain["main.test"])
    check(by_domain["pinned.test"] == collections.Counter({
        ("127.0.0.3", "light.volley-src.test"): N_PINNED}),
        "pinned.test: not all from the light source: %s" % by_domain["pinned.test"])
    # The delivery log names the source of each delivery.
    sources = collections.Counter((r["rcpt"].split("@")[1], r.get("source"))
                                  for r in d.deliveries(JOB) if r["status"] == "delivered")
    check(sources == collections.Counter({("main.test", "heavy"): N_MAIN * 3 // 4,
                                          ("main.test", "light"): N_MAIN // 4,
                                          ("pinned.test", "light"): N_PINNED}),
          "delivery log sources: %s" % sources)
    check(d.stop() == 0, "volleyd did not stop cleanly")

    # A source the machine does not have: the bind fails and the recipient is
    # deferred with the reason, not sent from another address.
    bad = h.volleyd(route_port=server.port, name="volleyd-bad", smtp_config='sources = ["gone"]\n',
                    extra_config='\n[[source]]\nname = "gone"\naddress = "192.0.2.1"\n')
    bad.start()
    bad.drop("bad.job", harness.job_text("bad", ["ok-1@main.test"]))
    wait_for(lambda: bad.assert_alive() and any(r["status"] == "deferred"
                                                for r in bad.deliveries("bad")), 30,
             "the recipient deferred")
    deferred = [r for r in bad.deliveries("bad") if r["status"] == "deferred"][0]
    log("deferred: %s" % deferred["response"])
    check("bind to source gone (192.0.2.1)" in deferred["response"],
          "the deferral does not name the source: %s" % deferred)
    check(bad.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "egress")
