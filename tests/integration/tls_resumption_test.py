#!/usr/bin/python3
"""tls_resumption_test.py - a reconnect to a host resumes its TLS session, and a
session is only offered where it was made: volleyd against a volley-sink whose
profile offers STARTTLS (it issues one ticket per full handshake).

One shard (each shard keeps its own sessions), two destinations on the one sink
address, each allowed one connection and one message per connection, so that every message is a connection of its own, one after another:
    opportunistic.test   tls = "opportunistic" (the default)
    verified.test        tls = "verify", tls_match = ["sink.test"], the sink's own
                         certificate as tls_ca_file
Steps:
  1. four messages to opportunistic.test: one full handshake, then three resumed
     (volley_tls_handshakes_total{kind} and the sink's tls_resumed agree).
  2. three messages to verified.test, same address and port: its first handshake is
     full, since the opportunistic session was never verified (and names no
     certificate check); the other two resume the verified one. Every record says TLS.
  3. volleyd with [smtp] tls_session_cache = 0: every handshake in full.
  4. a real Postfix smtpd (tests/integration/postfix_smtpd.py: STARTTLS offered, its
     tlsmgr issuing tickets), three messages one connection each: at least one
     connection resumed, and every message arrived.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402
from postfix_smtpd import PostfixSmtpd  # noqa: E402


def handshakes(d):
    m = harness.scrape(d.metrics_port)
    return (m.get("volley_tls_handshakes_total", kind="full"),
            m.get("volley_tls_handshakes_total", kind="resumed"))


def deliver(d, job, rcpts):
    d.drop(job + ".job", harness.job_text(job, rcpts))
    recs = wait_for(lambda: d.assert_alive() and len(d.deliveries(job)) >= len(rcpts) and
                    d.deliveries(job), 60, "%s: a record per recipient" % job)
    for r in recs:
        check(r["status"] == "delivered" and r.get("tls_version") in ("TLSv1.2", "TLSv1.3"),
              "%s: not delivered over TLS: %s" % (job, r))
    return recs


def sink_counts(sink, want_sessions):
    st = wait_for(lambda: (lambda s: s.get("tls_sessions", 0) >= want_sessions and s)(
        sink.fresh_stats()), 10, "the sink's stats after %d TLS sessions" % want_sessions)
    return st["tls_sessions"], st.get("tls_resumed")


def test(h):
    profiles = os.path.join(h.mkdir("profiles"), "profiles.toml")
    with open(profiles, "w") as f:
        f.write("[profile.default]\nstarttls = true\n")
    cert = os.path.join(h.dir, "sink-cert.pem")
    sink = h.sink(extra_args=["--profiles", profiles, "--hostname", "sink.test",
                              "--tls-cert-out", cert])
    one_at_a_time = ("max_connections_per_destination = 1\nmax_messages_per_connection = 1\n"
                     "max_recipients_per_transaction = 1\n"
                     'tls_ca_file = "%s"\n' % cert)
    routes = {"opportunistic.test": sink.port, "verified.test": sink.port}
    d = h.volleyd(route_port=sink.port, routes=routes, smtp_config=one_at_a_time,
                  extra_config='\n[delivery]\nshards = 1\n'
                               '\n[destination."verified.test"]\ntls = "verify"\n'
                               'tls_match = ["sink.test"]\n')
    d.start()

    deliver(d, "resume-1", ["r%d@opportunistic.test" % i for i in range(4)])
    full, resumed = handshakes(d)
    log("opportunistic.test, 4 connections: %s full, %s resumed" % (full, resumed))
    check((full, resumed) == (1, 3), "want 1 full and 3 resumed handshakes, got %s and %s"
          % (full, resumed))
    check(sink_counts(sink, 4) == (4, 3), "the sink saw %s (sessions, resumed), want (4, 3)"
          % (sink_counts(sink, 4),))

    deliver(d, "resume-2", ["v%d@verified.test" % i for i in range(3)])
    full, resumed = handshakes(d)
    log("then verified.test, 3 connections: %s full, %s resumed in all" % (full, resumed))
    check((full, resumed) == (2, 5),
          "verify must not resume the unverified session: want 2 full and 5 resumed, got %s and %s"
          % (full, resumed))
    check(sink_counts(sink, 7) == (7, 5), "the sink saw %s (sessions, resumed), want (7, 5)"
          % (sink_counts(sink, 7),))
    check(d.stop() == 0, "volleyd did not stop cleanly")

    off = h.volleyd(route_port=sink.port, routes=routes, name="volleyd-nocache",
                    smtp_config=one_at_a_time + "tls_session_cache = 0\n")
    off.start()
    deliver(off, "resume-3", ["n%d@opportunistic.test" % i for i in range(3)])
    full, resumed = handshakes(off)
    log("tls_session_cache = 0, 3 connections: %s full, %s resumed" % (full, resumed))
    check((full, resumed) == (3, 0), "want 3 full handshakes and none resumed, got %s and %s"
          % (full, resumed))
    check(off.stop() == 0, "volleyd (no session cache) did not stop cleanly")

    mailboxes = ["p%d@inbox.test" % i for i in range(3)]
    with PostfixSmtpd(h, mailboxes) as pf:
        p = h.volleyd(route_port=pf.port, name="volleyd-postfix",
                      smtp_config="max_connections_per_destination = 1\n"
                                  "max_messages_per_connection = 1\n"
                                  "max_recipients_per_transaction = 1\n",
                      extra_config="\n[delivery]\nshards = 1\n")
        p.start()
        deliver(p, "resume-pf", mailboxes)
        full, resumed = handshakes(p)
        log("Postfix, 3 connections: %s full, %s resumed" % (full, resumed))
        check(full + resumed == 3 and resumed >= 1,
              "Postfix: want 3 handshakes, at least one resumed; got %s full, %s resumed"
              % (full, resumed))
        wait_for(lambda: all(pf.message_paths(a) for a in mailboxes), 30,
                 "Postfix: a message in every mailbox")
        check(p.stop() == 0, "volleyd (Postfix) did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "tls_resumption")
