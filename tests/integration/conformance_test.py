#!/usr/bin/python3
"""conformance_test.py - volleyd against volley-sink's fault profiles (docs/sink.md):
one sink, one listener per profile, one recipient domain per case, each routed to its
listener; every outcome is read from the delivery log and checked against what the
sink received.

    multi.test    route [nothing listening, 554 greeting, good]  delivered by the third
                  host, no deferral (RFC 5321 5.1: the next host, not a retry)
    busy.test     421 greeting, the only host                    deferred 421
    tls.test      STARTTLS, policy verify (the sink's cert)      delivered over TLS
    inject.test   bytes injected behind the STARTTLS 220         deferred, never sent
    old.test      no ESMTP (EHLO 502, HELO works)                delivered
    nopipe.test   no PIPELINING, no CHUNKING                      delivered
    grey.test     greylisted for 2 s                             deferred 451 4.7.1, then delivered
    dropdot.test  the connection dropped after the dot, at times deferred "may have been
                  delivered", then delivered (a duplicate is possible, a loss is not)
    rcpt421.test  421 to RCPT                                    deferred 421, connection closed
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "conformance-1"
HOSTNAME = "sink.test"
PROFILES = '''
[profile.refuse554]
greeting = "554 5.7.1 no service here"
[profile.busy421]
greeting = "421 4.3.2 too busy"
[profile.tls]
starttls = true
[profile.inject]
starttls = true
inject_after_starttls = "250 2.0.0 injected\\r\\n"
[profile.old]
ehlo = "no-esmtp"
[profile.nopipe]
pipelining = false
chunking = false
[profile.grey]
greylist = "2s"
[profile.dropdot]
[[profile.dropdot.disconnect]]
after = "DOT"
rate = 0.5
[[profile.dropdot.disconnect]]
after = "BDAT"
match = "LAST"
rate = 0.5
[profile.rcpt421]
[[profile.rcpt421.reply]]
command = "RCPT"
reply = "421 4.7.0 try again later"
[domain."grey.test"]
profile = "grey"
'''
LISTENERS = ["refuse554", "busy421", "tls", "inject", "old", "nopipe", "dropdot", "rcpt421"]
DELIVERED = ["multi.test", "tls.test", "old.test", "nopipe.test", "grey.test", "dropdot.test"]
DEFERRED = ["busy.test", "inject.test", "rcpt421.test"]


def test(h):
    d = h.mkdir("profiles")
    profiles, cert = os.path.join(d, "profiles.toml"), os.path.join(d, "cert.pem")
    ports, extra, text = {}, [], PROFILES
    for name in LISTENERS:
        ports[name] = harness.free_port()
        text += '[listener."127.0.0.1:%d"]\nprofile = "%s"\n' % (ports[name], name)
        extra += ["--listen", "127.0.0.1:%d" % ports[name]]
    with open(profiles, "w") as f:
        f.write(text)
    sink = h.sink(extra_args=extra + ["--hostname", HOSTNAME, "--profiles", profiles,
                                      "--tls-cert-out", cert, "--seed", "3"])
    dead = harness.free_port()
    at = lambda name: "127.0.0.1:%d" % ports[name]  # noqa: E731
    routes = {"multi.test": "127.0.0.1:%d,%s,127.0.0.1:%d" % (dead, at("refuse554"), sink.port),
              "busy.test": at("busy421"), "tls.test": at("tls"), "inject.test": at("inject"),
              "old.test": at("old"), "nopipe.test": at("nopipe"), "grey.test": sink.port,
              "dropdot.test": at("dropdot"), "rcpt421.test": at("rcpt421")}
    v = h.volleyd(route_port=sink.port, routes=routes,
                  smtp_config='tls_ca_file = "%s"\n' % cert,
                  extra_config='\n[destination."tls.test"]\ntls = "verify"\n'
                               'tls_match = ["%s"]\n' % HOSTNAME)
    v.start()
    rcpts = ["ok@%s" % dom for dom in DELIVERED + DEFERRED]
    v.drop(JOB + ".job", harness.job_text(JOB, rcpts))

    def progress():
        recs = v.deliveries(JOB)
        done = {r["rcpt"] for r in recs if r["status"] == "delivered"}
        deferred = {r["rcpt"] for r in recs if r["status"] == "deferred"}
        return (all("ok@" + dom in done for dom in DELIVERED) and
                all("ok@" + dom in deferred for dom in DEFERRED) and recs)
    recs = wait_for(lambda: v.assert_alive() and progress(), 60,
                    "every case delivered or deferred")
    check(v.stop() == 0, "volleyd did not stop cleanly")
    sink.stop()
    by = {}
    for r in recs:
        by.setdefault(r["rcpt"].split("@")[1], []).append(r)
    for dom in DELIVERED + DEFERRED:
        for r in by[dom]:
            log("%-13s %-9s %s %s %s:%s %s" % (dom, r["status"], r["code"], r["enhanced"],
                                               r["host"], r["port"], r["response"][:80]))
    received = {}
    for m in sink.records():
        for rc in m["rcpts"]:
            received[rc] = received.get(rc, 0) + 1

    multi = by["multi.test"]
    check(len(multi) == 1 and multi[0]["status"] == "delivered" and
          multi[0]["port"] == sink.port,
          "multi.test: not delivered at once by the third host: %s" % multi)
    first = by["busy.test"][0]
    check(first["status"] == "deferred" and first["code"] == 421, "busy.test: %s" % first)
    tls = [r for r in by["tls.test"] if r["status"] == "delivered"]
    check(tls and tls[0].get("tls_version", "").startswith("TLSv1."),
          "tls.test: not delivered over TLS: %s" % by["tls.test"])
    first = by["inject.test"][0]
    check(first["status"] == "deferred" and "after its 220 reply to STARTTLS" in first["response"],
          "inject.test: the injection was not caught: %s" % first)
    check("ok@inject.test" not in received, "inject.test: the message reached the sink")
    for dom in ("old.test", "nopipe.test"):
        check([r["status"] for r in by[dom]] == ["delivered"], "%s: %s" % (dom, by[dom]))
    grey = by["grey.test"]
    check(grey[0]["status"] == "deferred" and grey[0]["enhanced"] == "4.7.1" and
          grey[-1]["status"] == "delivered", "grey.test: %s" % grey)
    drops = [r for r in by["dropdot.test"] if r["status"] == "deferred"]
    check(all("may have been delivered" in r["response"] for r in drops),
          "dropdot.test: a loss after the dot not marked as a possible duplicate: %s" % drops)
    check(received.get("ok@dropdot.test", 0) >= 1, "dropdot.test: the sink never accepted it")
    first = by["rcpt421.test"][0]
    check(first["status"] == "deferred" and first["code"] == 421 and
          first["enhanced"] == "4.7.0", "rcpt421.test: %s" % first)
    for dom in DEFERRED:
        check("ok@" + dom not in received, "%s: the sink accepted a message" % dom)


if __name__ == "__main__":
    harness.main(test, "conformance")
