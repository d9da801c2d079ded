#!/usr/bin/python3
"""inbound_test.py - volleyd's inbound listener ([inbound], docs/feedback.md) takes mail for its
domains over SMTP and stores each message in spool/feedback/new/ before answering 250.

Against volleyd with [inbound] on loopback, with Python's smtplib as the client:
- a message to an accepted domain (any case) gets 250 naming its file, and the file in
  feedback/new/ holds the envelope line (helo, mail_from, rcpt_to, peer, tls) and then exactly
  the octets sent (dot-unstuffed: a line starting with "." keeps one dot); tmp/ is left empty;
- a recipient of another domain gets 550 5.7.1 and nothing is stored;
- a message over max_message_size gets 552 (MAIL SIZE= and content) and nothing is stored;
- STARTTLS with the configured certificate (made here with openssl, trusted by the client),
  then a message, stored with "tls": true;
- with more than max_pending files waiting in feedback/new/, a message gets 452 4.3.1;
- connections over max_connections_per_ip and over max_connections get 421 at connect;
- an idle connection gets 421 4.4.2 after [inbound] timeout and is closed;
- a client over max_messages_per_minute gets 450 4.7.1 for the message past it;
- a tls_cert_file that does not exist stops volleyd at start with an error naming it.
"""
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

DOMAIN = "bounces.sender.test"
MAX_SIZE = 100 * 1024
HELO = "client.sender.test"


def make_certificate(h):
    """A self-signed certificate for 127.0.0.1 and its key, PEM files."""
    d = h.mkdir("tls")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=inbound.sender.test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:inbound.sender.test"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def inbound_config(port, cert, key, timeout="3s"):
    return ('[inbound]\nlisten = ["127.0.0.1:%d"]\ndomains = ["%s"]\nmax_message_size = "100KiB"\n'
            'max_connections = 4\nmax_connections_per_ip = 2\nmax_recipients = 5\n'
            'timeout = "%s"\ntls_cert_file = "%s"\ntls_key_file = "%s"\nmax_pending = 1\n'
            # The listener alone: what it stores stays in feedback/new/ to be read
            # here (feedback_test.py covers the processing).
            'process = false\nmax_messages_per_minute = 0\n'
            % (port, DOMAIN, timeout, cert, key))


def stored(d):
    new = d.path("feedback", "new")
    return sorted(os.listdir(new)) if os.path.isdir(new) else []


def read_stored(d, name):
    with open(d.path("feedback", "new", name), "rb") as f:
        data = f.read()
    head, _, content = data.partition(b"\n")
    return json.loads(head), content


def client(port, source=None):
    # The host given here is the name STARTTLS checks the certificate against.
    return smtplib.SMTP("127.0.0.1", port, timeout=30, local_hostname=HELO,
                        source_address=(source, 0) if source else None)


def send(s, rcpts, body, sender=""):
    """MAIL, RCPTs, DATA; the (code, text) of each step."""
    code, text = s.ehlo(HELO)
    check(code == 250, "EHLO: %d %r" % (code, text))
    out = {"mail": s.mail(sender), "rcpt": [s.rcpt(r) for r in rcpts]}
    if any(c == 250 for c, _ in out["rcpt"]):
        out["data"] = s.data(body)
    return out


def test_accept_and_store(d, port):
    body = (b"From: MAILER-DAEMON@mx.receiver.test\r\nTo: b-1@bounces.sender.test\r\n"
            b"Subject: Undelivered Mail\r\n\r\n.a line that starts with a dot\r\n"
            b"caf\xc3\xa9 8-bit\r\n..\r\nend\r\n")
    before_ms = int(time.time() * 1000)
    s = client(port)
    r = send(s, ["b-1@bounces.sender.test", "B-2@Bounces.Sender.TEST"], body)
    s.quit()
    after_ms = int(time.time() * 1000)
    check(r["mail"][0] == 250 and all(c == 250 for c, _ in r["rcpt"]),
          "MAIL/RCPT to the accepted domain: %r" % r)
    code, text = r["data"]
    check(code == 250 and text.startswith(b"2.0.0 Ok: queued as "), "end of data: %d %r" % (code, text))
    name = text.decode().split()[-1]
    check(stored(d) == [name], "feedback/new/ holds %r, not [%r]" % (stored(d), name))
    check(os.listdir(d.path("feedback", "tmp")) == [], "feedback/tmp/ is not empty")
    env, content = read_stored(d, name)
    check(content == body, "stored content differs:\n%r\n%r" % (content, body))
    check(env["mail_from"] == "" and env["helo"] == HELO and env["tls"] is False,
          "envelope: %r" % env)
    check(env["rcpt_to"] == ["b-1@bounces.sender.test", "B-2@Bounces.Sender.TEST"],
          "rcpt_to: %r" % env["rcpt_to"])
    check(env["peer"].startswith("127.0.0.1:"), "peer: %r" % env["peer"])
    check(before_ms - 1000 <= env["received_at"] <= after_ms + 1000,
          "received_at %r not within [%d, %d]" % (env["received_at"], before_ms, after_ms))
    log("accepted: 250 and %s with the envelope and the exact content" % name)
    return name


def test_refusals(d, port):
    before = stored(d)
    s = client(port)
    r = send(s, ["someone@elsewhere.test"], b"x\r\n")
    code, text = r["rcpt"][0]
    check(code == 550 and text.startswith(b"5.7.1"), "RCPT to another domain: %d %r" % (code, text))
    check("data" not in r, "DATA went ahead without a recipient")

    # SIZE= over the limit, then content over the limit.
    s.rset()
    code, text = s.mail("", ["SIZE=%d" % (MAX_SIZE + 1)])
    check(code == 552 and text.startswith(b"5.3.4"), "MAIL SIZE= over the limit: %d %r" % (code, text))
    code, _ = s.mail("")
    check(code == 250, "MAIL after the refused one: %d" % code)
    code, _ = s.rcpt("b-3@%s" % DOMAIN)
    check(code == 250, "RCPT: %d" % code)
    code, text = s.data(b"y" * 70 + b"\r\n" * 1 + (b"z" * 998 + b"\r\n") * 120)
    check(code == 552 and text.startswith(b"5.3.4"), "oversized content: %d %r" % (code, text))
    s.quit()
    check(stored(d) == before, "something was stored: %r" % stored(d))
    log("refused: 550 5.7.1 for another domain, 552 5.3.4 for SIZE= and content; nothing stored")


def test_starttls(d, port, cert):
    ctx = ssl.create_default_context(cafile=cert)
    s = client(port)
    s.ehlo(HELO)
    check(s.has_extn("starttls"), "STARTTLS not advertised")
    code, _ = s.starttls(context=ctx)
    check(code == 220, "STARTTLS: %d" % code)
    body = b"Subject: over TLS\r\n\r\nsecret\r\n"
    r = send(s, ["b-4@%s" % DOMAIN], body)
    s.quit()
    code, text = r["data"]
    check(code == 250, "end of data over TLS: %d %r" % (code, text))
    env, content = read_stored(d, text.decode().split()[-1])
    check(env["tls"] is True and content == body, "stored over TLS: %r %r" % (env, content))
    log("STARTTLS with the configured certificate: stored with tls true")


def test_max_pending(d, port):
    # max_pending 1: two files wait in new/ (nothing processes them here).
    before = stored(d)
    check(len(before) == 2, "expected the two stored messages, found %r" % before)
    s = client(port)
    r = send(s, ["b-5@%s" % DOMAIN], b"Subject: one too many\r\n\r\nx\r\n")
    s.quit()
    code, text = r["data"]
    check(code == 452 and text.startswith(b"4.3.1"), "over max_pending: %d %r" % (code, text))
    check(stored(d) == before, "stored over max_pending: %r" % stored(d))
    log("over max_pending: 452 4.3.1, nothing stored")


def greeting(sock):
    sock.settimeout(30)
    data = b""
    while not data.endswith(b"\r\n"):
        got = sock.recv(1024)
        if not got:
            break
        data += got
    return data


def connect_raw(port, source="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def accepted_from(port, source):
    """A connection from source that got the 220 greeting, retried while an earlier
    connection may still be counted (the server closes after the client sees EOF)."""
    def attempt():
        sock = connect_raw(port, source)
        if greeting(sock).startswith(b"220 "):
            return sock
        sock.close()
        time.sleep(0.3)
        return None
    return wait_for(attempt, 30, "a connection from %s to be accepted" % source)


def test_connection_bounds(port):
    # max_connections 4, max_connections_per_ip 2.
    socks = [accepted_from(port, "127.0.0.1"), accepted_from(port, "127.0.0.1"),
             accepted_from(port, "127.0.0.2")]
    over_ip = connect_raw(port)
    g = greeting(over_ip)
    check(g.startswith(b"421 4.7.0") and b"your address" in g,
          "third connection from 127.0.0.1 (max_connections_per_ip 2): %r" % g)
    check(over_ip.recv(100) == b"", "refused connection not closed")
    over_ip.close()
    socks.append(accepted_from(port, "127.0.0.3"))
    over_all = connect_raw(port, "127.0.0.4")
    g = greeting(over_all)
    check(g.startswith(b"421 4.7.0 Error: too many connections,"),
          "fifth connection (max_connections 4): %r" % g)
    for s in socks + [over_all]:
        s.close()
    log("connection bounds: 421 4.7.0 per IP and in all")


def test_idle_timeout(port):
    sock = accepted_from(port, "127.0.0.5")
    sock.sendall(b"EHLO idle.test\r\n")
    sock.settimeout(60)  # a bound for a broken server, far above [inbound] timeout
    data = b""
    while True:
        got = sock.recv(4096)
        if not got:
            break
        data += got
    sock.close()
    check(data.rstrip(b"\r\n").split(b"\r\n")[-1].startswith(b"421 4.4.2"),
          "an idle connection got %r, not 421 4.4.2 then a close" % data)
    log("idle connection: 421 4.4.2, then closed")


def test_bad_certificate(h):
    port = harness.free_port()
    missing = os.path.join(h.dir, "no-such-cert.pem")
    d = h.volleyd(route_port=harness.free_port(), name="volleyd-badcert",
                  extra_config=inbound_config(port, missing, missing))
    try:
        d.start()
    except harness.TestFailure:
        pass
    wait_for(lambda: not d.alive(), 30, "volleyd with a missing certificate to exit")
    with open(d.output, errors="replace") as f:
        out = f.read()
    check(missing in out, "volleyd's error does not name %s:\n%s" % (missing, harness.tail(d.output)))
    log("a missing tls_cert_file stops volleyd, naming the file")


def test_message_rate(h, cert, key):
    # max_messages_per_minute 2 (and max_pending high): the third message of a
    # client within the minute gets 450 4.7.1 and is not stored; logged once.
    port = harness.free_port()
    config = inbound_config(port, cert, key).replace("max_pending = 1\n", "max_pending = 100\n")
    config = config.replace("max_messages_per_minute = 0", "max_messages_per_minute = 2")
    d = h.volleyd(route_port=harness.free_port(), name="volleyd-rate", extra_config=config)
    d.start()
    wait_for(lambda: harness.connectable(port), 30, "the rate-limited listener")
    s = client(port)
    codes = []
    for i in range(3):
        r = send(s, ["b-%d@%s" % (i, DOMAIN)], b"Subject: %d\r\n\r\nx\r\n" % i)
        codes.append(r["data"])
        s.rset()
    s.quit()
    check([c for c, _ in codes] == [250, 250, 450] and codes[2][1].startswith(b"4.7.1"),
          "replies over the rate: %r" % codes)
    check(len(stored(d)) == 2, "stored over the rate: %r" % stored(d))
    with open(d.output, errors="replace") as f:
        check(f.read().count("sends more than [inbound] max_messages_per_minute") == 1,
              "the refusal is not logged once:\n" + harness.tail(d.output))
    d.stop()
    log("over max_messages_per_minute: 450 4.7.1, not stored, logged once")


def test(h):
    cert, key = make_certificate(h)
    port = harness.free_port()
    d = h.volleyd(route_port=harness.free_port(), extra_config=inbound_config(port, cert, key))
    d.start()
    wait_for(lambda: "inbound: listening on 127.0.0.1:%d" % port in open(d.output).read(), 30,
             "inbound: listening on 127.0.0.1:%d" % port)
    test_accept_and_store(d, port)
    test_refusals(d, port)
    test_starttls(d, port, cert)
    test_max_pending(d, port)
    test_connection_bounds(port)
    test_idle_timeout(port)
    d.assert_alive()
    d.stop()
    test_message_rate(h, cert, key)
    test_bad_certificate(h)


if __name__ == "__main__":
    harness.main(test, "inbound_test")
