#!/usr/bin/python3
"""tls_test.py - STARTTLS policies end to end, against aiosmtpd (python3-aiosmtpd) with
Python's ssl module on the server side, so neither end of the handshake is Volley's
TLS code talking to itself.

One volleyd, one job, a recipient per case; each domain routed to one of three servers:
    tls     aiosmtpd offering STARTTLS with a certificate for mx.tls.test
    broken  aiosmtpd offering STARTTLS whose handshake always fails
    plain   aiosmtpd without STARTTLS
Cases (domain: [destination] policy -> expected):
    opportunistic.test -> tls     (default policy)       delivered over TLS, logged
    verify.test        -> tls     verify, match ok       delivered over TLS
    badname.test       -> tls     verify, wrong name     deferred, names the mismatch
    untrusted.test     -> tls     verify, no CA file     deferred (unknown CA)... see below
    fallback.test      -> broken  opportunistic          delivered in plaintext
    required.test      -> plain   required               deferred 4.7.10, never sent
    plain.test         -> plain   opportunistic          delivered in plaintext
untrusted.test cannot have its own CA file (tls_ca_file is global), so it is covered by
the unit tests of engine/tls instead; this test trusts the test CA for all.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "tls-1"


def make_cert(h):
    d = h.mkdir("cert")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=mx.tls.test",
                    "-addext", "subjectAltName=DNS:mx.tls.test", "-days", "2",
                    "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def test(h):
    cert, key = make_cert(h)
    tls = harness.AiosmtpdServer(h, ["--tls-cert", cert, "--tls-key", key], name="tls").start()
    broken = harness.AiosmtpdServer(h, ["--tls-cert", cert, "--tls-key", key, "--tls-broken"],
                                    name="broken").start()
    plain = harness.AiosmtpdServer(h, name="plain").start()
    routes = {"opportunistic.test": tls.port, "verify.test": tls.port,
              "badname.test": tls.port, "fallback.test": broken.port,
              "required.test": plain.port, "plain.test": plain.port}
    d = h.volleyd(route_port=plain.port, routes=routes, retry_initial="30s", retry_max="1m",
                  smtp_config='tls_ca_file = "%s"\n' % cert,
                  extra_config='\n[destination."verify.test"]\ntls = "verify"\n'
                               'tls_match = ["mx.tls.test"]\n'
                               '[destination."badname.test"]\ntls = "verify"\n'
                               'tls_match = ["other.tls.test"]\n'
                               '[destination."required.test"]\ntls = "required"\n')
    d.start()
    rcpts = ["ok-%s@%s" % (dom.split(".")[0], dom) for dom in routes]
    d.drop(JOB + ".job", harness.job_text(JOB, rcpts))
    recs = wait_for(lambda: d.assert_alive() and len(d.deliveries(JOB)) >= len(rcpts) and
                    d.deliveries(JOB), 60, "one record per recipient")
    by = {r["rcpt"].split("@")[1]: r for r in recs}
    for dom, r in sorted(by.items()):
        log("%-20s %-9s %s %s %s %s" % (dom, r["status"], r["code"], r["enhanced"],
                                         r.get("tls_version", "-"), r["response"][:90]))

    for dom in ("opportunistic.test", "verify.test"):
        r = by[dom]
        check(r["status"] == "delivered", "%s: %s" % (dom, r))
        check(r.get("tls_version") in ("TLSv1.2", "TLSv1.3") and r.get("tls_cipher"),
              "%s: no TLS protocol and cipher in the record: %s" % (dom, r))
    r = by["badname.test"]
    check(r["status"] == "deferred" and r["enhanced"] == "4.7.5", "badname.test: %s" % r)
    check("TLS handshake" in r["response"] and "other.tls.test" in r["response"],
          "badname.test: the deferral does not name the failed check: %s" % r["response"])
    r = by["fallback.test"]
    check(r["status"] == "delivered" and "tls_version" not in r,
          "fallback.test: not delivered in plaintext after the failed handshake: %s" % r)
    r = by["required.test"]
    check(r["status"] == "deferred" and r["enhanced"] == "4.7.10",
          "required.test: not deferred for lack of STARTTLS: %s" % r)
    r = by["plain.test"]
    check(r["status"] == "delivered" and "tls_version" not in r, "plain.test: %s" % r)

    # What the servers saw: TLS where the log says so, and nothing for the deferred.
    seen = {}
    for server in (tls, broken, plain):
        for m in server.messages():
            for rc in m["rcpts"]:
                seen[rc.split("@")[1]] = m["tls"]
    check(seen.get("opportunistic.test") is True and seen.get("verify.test") is True,
          "the TLS server did not receive over TLS: %s" % seen)
    check(seen.get("fallback.test") is False and seen.get("plain.test") is False,
          "plaintext deliveries: %s" % seen)
    check("badname.test" not in seen and "required.test" not in seen,
          "a message went out without the TLS the policy demands: %s" % seen)
    check(d.stop() == 0, "volleyd did not stop cleanly")
    for server in (tls, broken, plain):
        server.stop()


if __name__ == "__main__":
    harness.main(test, "tls")
