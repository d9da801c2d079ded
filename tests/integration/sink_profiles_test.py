#!/usr/bin/python3
"""sink_profiles_test.py - volley-sink's fault profiles, driven with smtplib and raw
sockets on 127.0.0.0/8.

One volley-sink with one listener per profile (127.0.0.1 for the default profile, then
127.0.0.2, 127.0.0.3, ... each mapped to a profile by [listener."ADDR"]) and a
[domain."grey.test"] profile on the default listener. Checks, each against a positive
control where one makes sense:

  - a reply override with rate 1 (every RCPT 450) and one with match (only RCPTs whose
    argument contains "reject" get 550);
  - a 421 override closes the connection after the reply;
  - a disconnect rule after DOT: no reply to the end of data, EOF, nothing recorded;
  - greylisting: 451 4.7.1 on the first attempt and before the delay, then accepted;
  - ehlo = "no-esmtp": EHLO gets 502, smtplib falls back to HELO and still delivers;
  - pipelining = false: PIPELINING is not advertised (everything else still is);
  - max_connections: the connection past the limit gets 421 4.7.0 and EOF;
  - inject_after_starttls: the injected bytes arrive right behind the 220;
  - STARTTLS: smtplib + ssl trusting the --tls-cert-out certificate (and failing to
    verify without it), capabilities forgotten after TLS, mail delivered over TLS;
  - the stats (rejects, tls_sessions) and bad --profiles files (exit 2, file:line).

All of it with one thread and again with --threads 2 (a connection may then land on
either shard: max_connections and greylisting are the server's, not a shard's).

usage: sink_profiles_test.py --bindir BUILD_DIR [--keep]
"""
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log  # noqa: E402

HOSTNAME = "sink.test"
GREYLIST_SECONDS = 2

# Listener address -> profile; 127.0.0.1 (the harness's) uses "default".
LISTENERS = [
    ("127.0.0.2", "busy"),
    ("127.0.0.3", "closing"),
    ("127.0.0.4", "dropdot"),
    ("127.0.0.5", "plain"),
    ("127.0.0.6", "nopipe"),
    ("127.0.0.7", "limited"),
    ("127.0.0.8", "inject"),
]

INJECTED = b"250-injected\r\n250 INJECTED\r\n"

PROFILES = r'''
[profile.default]
starttls = true
[[profile.default.reply]]
command = "RCPT"
match = "reject"
reply = "550 5.1.1 no such user"

[profile.busy]
[[profile.busy.reply]]
command = "RCPT"
rate = 1
reply = "450 4.2.1 mailbox busy"

[profile.closing]
[[profile.closing.reply]]
command = "MAIL"
reply = "421 4.7.0 try again later"

[profile.dropdot]
[[profile.dropdot.disconnect]]
after = "DOT"

[profile.grey]
greylist = "%ds"

[profile.plain]
ehlo = "no-esmtp"

[profile.nopipe]
pipelining = false

[profile.limited]
max_connections = 2

[profile.inject]
starttls = true
inject_after_starttls = "250-injected\r\n250 INJECTED\r\n"

[domain."grey.test"]
profile = "grey"
''' % GREYLIST_SECONDS


def check_eq(got, want, what):
    check(got == want, "%s: got %r, want %r" % (what, got, want))


def free_port_on(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def recv_until(sock, pattern, timeout=10):
    """Read until the data matches the regex pattern (bytes); EOF first is a failure."""
    sock.settimeout(timeout)
    data = b""
    while not re.search(pattern, data, re.M):
        chunk = sock.recv(65536)
        if not chunk:
            raise harness.TestFailure("EOF while waiting for %r; got %r" % (pattern, data))
        data += chunk
    return data


def expect_eof(sock, what, timeout=5):
    """The server closes: recv returns b"" (and nothing else arrives first)."""
    sock.settimeout(timeout)
    try:
        got = sock.recv(65536)
    except socket.timeout:
        raise harness.TestFailure("%s: connection still open after %ss" % (what, timeout))
    except ConnectionResetError:
        return
    check_eq(got, b"", "%s: bytes before EOF" % what)


class Setup:
    def __init__(self, h, threads):
        self.dir = h.mkdir("profiles-%d" % threads)
        self.profiles_path = os.path.join(self.dir, "profiles.toml")
        self.cert_path = os.path.join(self.dir, "cert.pem")
        self.addr = {}
        text = PROFILES
        extra = ["--hostname", HOSTNAME, "--profiles", self.profiles_path,
                 "--tls-cert-out", self.cert_path, "--seed", "7", "--threads", str(threads)]
        for host, profile in LISTENERS:
            port = free_port_on(host)
            self.addr[profile] = (host, port)
            text += '\n[listener."%s:%d"]\nprofile = "%s"\n' % (host, port, profile)
            extra += ["--listen", "%s:%d" % (host, port)]
        with open(self.profiles_path, "w") as f:
            f.write(text)
        self.sink = h.sink(extra_args=extra, name="sink-%d" % threads)
        self.addr["default"] = (harness.LOOPBACK, self.sink.port)

    def smtp(self, profile):
        host, port = self.addr[profile]
        return smtplib.SMTP(host, port, local_hostname="client.test", timeout=10)

    def raw(self, profile):
        return socket.create_connection(self.addr[profile], timeout=10)


def recorded(setup, sender):
    return [r for r in setup.sink.records() if r["from"] == sender]


def wait_recorded(setup, sender, n):
    return harness.wait_for(lambda: len(recorded(setup, sender)) >= n and recorded(setup, sender),
                            10, "%d recorded message(s) from %s" % (n, sender))


MSG = b"Subject: profiles\r\n\r\nhello\r\n"


def test_override_rate_one(setup):
    with setup.smtp("busy") as s:
        try:
            s.sendmail("busy@src.test", ["a@dst.test", "b@dst.test"], MSG)
            raise harness.TestFailure("busy: recipients accepted")
        except smtplib.SMTPRecipientsRefused as e:
            check_eq(e.recipients, {"a@dst.test": (450, b"4.2.1 mailbox busy"),
                                    "b@dst.test": (450, b"4.2.1 mailbox busy")},
                     "busy: refused recipients")
    # The same mail on the default listener goes through.
    with setup.smtp("default") as s:
        check_eq(s.sendmail("ctl@src.test", ["a@dst.test"], MSG), {}, "default: refused")
    wait_recorded(setup, "ctl@src.test", 1)
    check_eq(recorded(setup, "busy@src.test"), [], "busy: recorded")


def test_override_match(setup):
    with setup.smtp("default") as s:
        refused = s.sendmail("match@src.test",
                             ["ok@dst.test", "Please-REJECT-me@dst.test", "fine@dst.test"], MSG)
    check_eq(refused, {"Please-REJECT-me@dst.test": (550, b"5.1.1 no such user")}, "match: refused")
    rec = wait_recorded(setup, "match@src.test", 1)
    check_eq(rec[0]["rcpts"], ["ok@dst.test", "fine@dst.test"], "match: recorded recipients")


def test_421_closes(setup):
    sock = setup.raw("closing")
    recv_until(sock, rb"^220 ")
    sock.sendall(b"EHLO client.test\r\n")
    recv_until(sock, rb"^250 ")
    sock.sendall(b"MAIL FROM:<closing@src.test>\r\n")
    got = recv_until(sock, rb"^421 .*\r\n")
    check_eq(got, b"421 4.7.0 try again later\r\n", "closing: reply to MAIL")
    expect_eof(sock, "closing: after 421")
    sock.close()
    # smtplib sees it as the server going away.
    with setup.smtp("closing") as s:
        s.ehlo()
        check_eq(s.mail("closing@src.test")[0], 421, "closing: smtplib MAIL code")
        try:
            s.noop()
            raise harness.TestFailure("closing: NOOP answered after 421")
        except smtplib.SMTPServerDisconnected:
            pass


def test_disconnect_after_dot(setup):
    sock = setup.raw("dropdot")
    recv_until(sock, rb"^220 ")
    sock.sendall(b"EHLO client.test\r\nMAIL FROM:<drop@src.test>\r\nRCPT TO:<a@dst.test>\r\n"
                 b"DATA\r\n")
    recv_until(sock, rb"^354 ")
    sock.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    expect_eof(sock, "dropdot: after the end of data")
    sock.close()
    with setup.smtp("dropdot") as s:
        try:
            s.sendmail("drop2@src.test", ["a@dst.test"], MSG)
            raise harness.TestFailure("dropdot: smtplib's message was answered")
        except smtplib.SMTPServerDisconnected:
            pass
    time.sleep(1.2)  # the record file is flushed every second
    check_eq(recorded(setup, "drop@src.test") + recorded(setup, "drop2@src.test"), [],
             "dropdot: recorded")


def test_greylisting(setup):
    t0 = time.monotonic()

    def attempt():
        with setup.smtp("default") as s:
            try:
                return s.sendmail("grey@src.test", ["g@grey.test"], MSG)
            except smtplib.SMTPRecipientsRefused as e:
                return e.recipients

    greylisted = {"g@grey.test": (451, b"4.7.1 Greylisted, please try again later")}
    check_eq(attempt(), greylisted, "greylist: first attempt")
    time.sleep(GREYLIST_SECONDS / 2)
    check(time.monotonic() - t0 < GREYLIST_SECONDS - 0.2, "greylist: too slow to test the delay")
    check_eq(attempt(), greylisted, "greylist: attempt before the delay")
    time.sleep(max(0, GREYLIST_SECONDS + 0.3 - (time.monotonic() - t0)))
    check_eq(attempt(), {}, "greylist: attempt after the delay")
    # Another recipient is greylisted on its own.
    with setup.smtp("default") as s:
        try:
            s.sendmail("grey@src.test", ["h@grey.test"], MSG)
            raise harness.TestFailure("greylist: a new pair was accepted at once")
        except smtplib.SMTPRecipientsRefused as e:
            check_eq(e.recipients, {"h@grey.test": greylisted["g@grey.test"]}, "greylist: new pair")
    rec = wait_recorded(setup, "grey@src.test", 1)
    check_eq([r["rcpts"] for r in rec], [["g@grey.test"]], "greylist: recorded")


def test_no_esmtp(setup):
    with setup.smtp("plain") as s:
        code, _ = s.ehlo()
        check_eq(code, 502, "no-esmtp: EHLO code")
        check_eq(s.helo()[0], 250, "no-esmtp: HELO code")
        check_eq(s.sendmail("plain@src.test", ["a@dst.test"], MSG), {}, "no-esmtp: refused")
        check(not s.does_esmtp, "no-esmtp: smtplib thinks ESMTP")
    wait_recorded(setup, "plain@src.test", 1)
    # smtplib's own fallback from EHLO to HELO inside sendmail.
    with setup.smtp("plain") as s:
        check_eq(s.sendmail("plain2@src.test", ["a@dst.test"], MSG), {}, "no-esmtp: fallback")
    wait_recorded(setup, "plain2@src.test", 1)


def test_no_pipelining(setup):
    with setup.smtp("nopipe") as s:
        check_eq(s.ehlo()[0], 250, "nopipe: EHLO code")
        check(not s.has_extn("pipelining"), "nopipe: PIPELINING advertised: %r" % s.ehlo_resp)
        for ext in ("size", "8bitmime", "smtputf8", "chunking"):
            check(s.has_extn(ext), "nopipe: %s not advertised" % ext)
    with setup.smtp("default") as s:
        s.ehlo()
        check(s.has_extn("pipelining"), "default: PIPELINING not advertised")


def test_max_connections(setup):
    held = []
    for i in range(2):
        sock = setup.raw("limited")
        got = recv_until(sock, rb"^220 ")
        check(got.startswith(b"220 " + HOSTNAME.encode()), "limited: greeting %d: %r" % (i, got))
        held.append(sock)
    third = setup.raw("limited")
    got = recv_until(third, rb"^421 .*\r\n")
    check(got.startswith(b"421 4.7.0 "), "limited: third connection got %r" % got)
    expect_eof(third, "limited: third connection")
    third.close()
    # One goes away: there is room again.
    held.pop().close()

    def greeted():
        sock = setup.raw("limited")
        try:
            return recv_until(sock, rb"^\d\d\d ").startswith(b"220 ")
        finally:
            sock.close()
    harness.wait_for(greeted, 5, "a connection to be greeted after one closed", interval=0.2)
    for sock in held:
        sock.close()


def test_inject_after_starttls(setup):
    sock = setup.raw("inject")
    recv_until(sock, rb"^220 ")
    sock.sendall(b"EHLO client.test\r\n")
    ehlo = recv_until(sock, rb"^250 ")
    check(b"250-STARTTLS\r\n" in ehlo, "inject: STARTTLS not advertised: %r" % ehlo)
    sock.sendall(b"STARTTLS\r\n")
    want = b"220 2.0.0 Ready to start TLS\r\n" + INJECTED
    got = b""
    sock.settimeout(5)
    while len(got) < len(want):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    check_eq(got, want, "inject: bytes after STARTTLS")
    sock.close()
    # Without the injection (the default profile), the 220 comes alone.
    sock = setup.raw("default")
    recv_until(sock, rb"^220 ")
    sock.sendall(b"EHLO client.test\r\n")
    recv_until(sock, rb"^250 ")
    sock.sendall(b"STARTTLS\r\n")
    got = recv_until(sock, rb"^220 .*\r\n")
    sock.settimeout(0.5)
    try:
        got += sock.recv(65536)
    except socket.timeout:
        pass
    check_eq(got, b"220 2.0.0 Ready to start TLS\r\n", "default: bytes after STARTTLS")
    sock.close()


def test_starttls(setup):
    check(os.path.exists(setup.cert_path), "no certificate at %s" % setup.cert_path)
    with open(setup.cert_path) as f:
        check(f.read().startswith("-----BEGIN CERTIFICATE-----"), "cert: not PEM")
    # Without trusting the sink's certificate, verification fails.
    s = setup.smtp("default")
    try:
        s.ehlo()
        s._host = HOSTNAME  # smtplib verifies the name it connected to; ours is sink.test
        try:
            s.starttls(context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # trusts nothing
            raise harness.TestFailure("starttls: an untrusted certificate was accepted")
        except ssl.SSLCertVerificationError:
            pass
    finally:
        s.close()
    ctx = ssl.create_default_context(cafile=setup.cert_path)
    with setup.smtp("default") as s:
        s.ehlo()
        check(s.has_extn("starttls"), "starttls: not advertised: %r" % s.ehlo_resp)
        s._host = HOSTNAME
        code, text = s.starttls(context=ctx)
        check_eq((code, text), (220, b"2.0.0 Ready to start TLS"), "starttls: reply")
        version = s.sock.version()
        check(version in ("TLSv1.2", "TLSv1.3"), "starttls: version %r" % version)
        peer = s.sock.getpeercert()
        check_eq(dict(x[0] for x in peer["subject"]).get("commonName"), HOSTNAME, "cert CN")
        # RFC 3207: the EHLO after TLS no longer offers STARTTLS.
        check_eq(s.ehlo()[0], 250, "starttls: EHLO over TLS")
        check(not s.has_extn("starttls"), "starttls: offered again over TLS")
        check(s.has_extn("pipelining"), "starttls: EHLO over TLS lost PIPELINING")
        check_eq(s.sendmail("tls@src.test", ["a@dst.test"], MSG), {}, "starttls: refused")
        check_eq(s.docmd("STARTTLS")[0], 503, "starttls: second STARTTLS")
    rec = wait_recorded(setup, "tls@src.test", 1)
    check_eq(rec[0]["bytes"], len(MSG), "starttls: recorded bytes")


def test_bad_profiles(h, binary):
    d = h.mkdir("bad")
    cases = [
        ('[profile.a]\npipelining = "yes"\n', ":2: profile.a.pipelining: must be true or false"),
        ('[[profile.a.reply]]\ncommand = "RCPT"\nreply = "450 x"\nrate = 2\n',
         ":4: profile.a.reply[1].rate: must be 0..1"),
        ('[listener."127.0.0.9:1"]\nprofile = "default"\n',
         'profiles: [listener."127.0.0.9:1"] matches no --listen address'),
    ]
    for i, (text, want) in enumerate(cases):
        path = os.path.join(d, "bad%d.toml" % i)
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([binary, "--listen", "127.0.0.1:0", "--profiles", path],
                           capture_output=True, timeout=10)
        check_eq(r.returncode, 2, "bad profiles %d: exit status (stderr %r)" % (i, r.stderr))
        check(want.encode() in r.stderr, "bad profiles %d: stderr %r lacks %r" % (i, r.stderr, want))


def test(h):
    # One shard, then two: max_connections and greylisting must hold across
    # shards (a connection may land on either), and the counts add up.
    for threads in (1, 2):
        run_profiles(h, threads)
    test_bad_profiles(h, h.binary("tools/sink/volley-sink"))
    log("ok test_bad_profiles")


def run_profiles(h, threads):
    setup = Setup(h, threads)
    for t in (test_override_rate_one, test_override_match, test_421_closes,
              test_disconnect_after_dot, test_greylisting, test_no_esmtp, test_no_pipelining,
              test_max_connections, test_inject_after_starttls, test_starttls):
        t(setup)
        log("ok %s (threads %d)" % (t.__name__, threads))
    check_eq(setup.sink.stop(), 0, "volley-sink exit status")
    final = setup.sink.stats()
    # Rejects: 2 busy RCPTs, 1 matched RCPT, the 421 to MAIL twice, 3 greylisted RCPTs.
    check_eq(final.get("rejects"), 8, "stats rejects")
    # The default and inject listeners' STARTTLS without a handshake don't count.
    check_eq(final.get("tls_sessions"), 1, "stats tls_sessions")
    check_eq(final.get("connections"), 0, "stats connections at exit")


if __name__ == "__main__":
    harness.main(test, "sink-profiles")
