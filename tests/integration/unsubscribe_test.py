#!/usr/bin/python3
"""unsubscribe_test.py - volleyd's one-click unsubscribe endpoint, driven with curl.

volleyd runs with a [[token_key]] and [unsubscribe] listen on a free loopback port.
Tokens are made here in Python, independently of Volley's code (HMAC-SHA256, base32,
purpose 2 for unsubscribe). curl, as a mailbox provider would, POSTs
List-Unsubscribe=One-Click form-encoded (token in the path) and multipart (token in the
query) with tokens that verify but name a job volleyd does not have: 410 (the link is
genuine, its recipient unknown: no retry can help, and no success is claimed), never a
redirect, and each is logged once as such and recorded `unmatched` in the delivery log. A GET shows a page with a form and logs no claim. A VERP token, a token made
with another secret and a changed character get 400 and log the reason, never a claim;
PUT gets 405 with Allow. With [unsubscribe] and no [[token_key]], volleyd refuses to
start and says why.

A genuine unsubscribe, suppressed and logged `unsubscribed`, is tested end to end by
feedback_test.py, with a real job.
"""
import base64
import hashlib
import hmac
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SECRET = b"an unsubscribe secret of well over thirty-two octets"
OTHER_SECRET = b"another secret, also over thirty-two octets long"
VERIFIED = "unsubscribe: 410 for job"


def token(secret, key_id, purpose, job_no, line):
    prefix = bytes([0x10 | len(key_id)]) + key_id + struct.pack(">II", job_no, line)
    mac = hmac.new(secret, bytes([purpose]) + prefix, hashlib.sha256).digest()[:12]
    return base64.b32encode(prefix + mac).decode().rstrip("=").lower()


def curl(*args):
    """(status, headers, body) of one curl request; curl never follows a redirect here."""
    p = subprocess.run(["curl", "-sS", "--noproxy", "*", "-m", "20", "-D", "-", *args],
                       capture_output=True, timeout=60)
    check(p.returncode == 0, "curl %s: exit %d %r" % (args, p.returncode, p.stderr))
    # Bytes, not text: text mode would turn the CRLF that ends the head into LF.
    head, _, body = p.stdout.decode("utf-8", "replace").partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    log("curl %s -> %d" % (" ".join(args), status))
    return status, head, body


def output(d):
    with open(d.output, errors="replace") as f:
        return f.read()


def test(h):
    key = os.path.join(h.mkdir("keys"), "k1.key")
    with open(key, "wb") as f:
        f.write(SECRET + b"\n")
    os.chmod(key, 0o600)
    port = harness.free_port()
    extra = ('[[token_key]]\nid = "k1"\nsecret_file = "%s"\n\n'
             '[unsubscribe]\nlisten = "127.0.0.1:%d"\n' % (key, port))
    d = h.volleyd(route_port=harness.free_port(), extra_config=extra)
    d.start()
    wait_for(lambda: d.assert_alive() and harness.connectable(port), 30, "the endpoint listening")
    base = "http://127.0.0.1:%d" % port

    good = token(SECRET, b"k1", 2, 5, 3)
    status, head, body = curl("-X", "POST", "-d", "List-Unsubscribe=One-Click",
                              "%s/u/%s" % (base, good))
    check(status == 410 and "no longer known" in body, "POST: %d %s" % (status, body))
    check("Cache-Control: no-store" in head and "Location:" not in head, "POST headers:\n" + head)
    want = VERIFIED + " 5 line 3 from 127.0.0.1: "
    wait_for(lambda: want in output(d), 10, "the claim logged")
    wait_for(lambda: any(r["status"] == "unmatched" and "job number 5 line 3" in r["response"]
                         for r in d.deliveries()), 10, "the claim recorded unmatched")

    status, _, _ = curl("-F", "List-Unsubscribe=One-Click",
                        "%s/unsubscribe?token=%s" % (base, token(SECRET, b"k1", 2, 5, 4)))
    check(status == 410, "multipart POST: %d" % status)
    wait_for(lambda: VERIFIED + " 5 line 4 from 127.0.0.1: " in output(d), 10,
             "the multipart claim logged")

    claims = output(d).count(VERIFIED)
    status, _, body = curl("%s/u/%s" % (base, good))
    check(status == 200 and '<form method="post">' in body, "GET: %d %s" % (status, body))

    changed = good[:10] + ("a" if good[10] != "a" else "b") + good[11:]
    for bad in (token(SECRET, b"k1", 1, 5, 3), token(OTHER_SECRET, b"k1", 2, 5, 3), changed):
        status, _, body = curl("-X", "POST", "-d", "List-Unsubscribe=One-Click",
                               "%s/u/%s" % (base, bad))
        check(status == 400 and bad not in body, "forged %s: %d %s" % (bad, status, body))
    wait_for(lambda: output(d).count("unsubscribe: 400 from 127.0.0.1: ") >= 3, 10,
             "the refusals logged")
    status, head, _ = curl("-X", "PUT", "-d", "List-Unsubscribe=One-Click", "%s/u/%s" % (base, good))
    check(status == 405 and "Allow: GET, HEAD, POST" in head, "PUT: %d\n%s" % (status, head))
    check(output(d).count(VERIFIED) == claims, "a GET, a forged token or a PUT logged a claim")
    check(d.stop() == 0, "volleyd did not stop cleanly")

    keyless = h.volleyd(route_port=harness.free_port(), name="volleyd-keyless",
                        extra_config='[unsubscribe]\nlisten = "127.0.0.1:%d"\n' % port)
    p = subprocess.run([keyless.binary, "--config", keyless.config], cwd=keyless.dir,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode != 0 and "needs a [[token_key]]" in p.stderr,
          "volleyd without a token key: %d %s" % (p.returncode, p.stderr))


harness.main(test, "unsubscribe")
