#!/usr/bin/python3
"""sink_test.py - volley-sink end to end: smtplib and raw sockets on 127.0.0.1.

Starts volley-sink on two free ports (port 0, read back from its "listening on"
lines), sends mail through smtplib, pipelined and chunked raw sessions, an over-long
line and a few hundred concurrent connections, then stops it with SIGTERM and checks
the stats file, the JSON on stdout and the record file (each recipient exactly once).

usage: sink_test.py --bindir BUILD_DIR
"""
import argparse
import collections
import json
import os
import re
import select
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

HOSTNAME = "sink.test"
CONCURRENT = 300


def fail(msg):
    raise AssertionError(msg)


def check_eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


class Sink:
    """A running volley-sink and the files it writes."""

    def __init__(self, binary, tmp, listeners=2, extra=()):
        self.stats_path = os.path.join(tmp, "stats.json")
        self.record_path = os.path.join(tmp, "record.jsonl")
        args = [binary]
        for _ in range(listeners):
            args += ["--listen", "127.0.0.1:0"]
        args += ["--stats", self.stats_path, "--record", self.record_path,
                 "--hostname", HOSTNAME, *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.addresses = []
        deadline = time.monotonic() + 10
        buf = b""
        while len(self.addresses) < listeners:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.proc.kill()
                fail(f"sink did not start listening; stderr so far: {buf!r}")
            ready, _, _ = select.select([self.proc.stderr], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stderr.fileno(), 4096)
            buf += chunk
            self.addresses = re.findall(
                rb"volley-sink: listening on 127\.0\.0\.1:(\d+)\n", buf)
        self.ports = [int(p) for p in self.addresses]
        self.listen_names = [f"127.0.0.1:{p}" for p in self.ports]

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=20)
        check_eq(self.proc.returncode, 0, f"exit status (stderr {err!r})")
        return json.loads(out.decode())


def read_stats(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def recv_until(sock, pattern, timeout=10):
    """Read until the data received matches the regex pattern (bytes)."""
    sock.settimeout(timeout)
    data = b""
    while not re.search(pattern, data, re.M):
        chunk = sock.recv(65536)
        if not chunk:
            fail(f"EOF while waiting for {pattern!r}; got {data!r}")
        data += chunk
    return data


def reply_codes(data):
    """Final reply codes of each reply in a byte string."""
    return [line[:3].decode() for line in data.split(b"\r\n")
            if len(line) >= 4 and line[3:4] == b" "]


def smtplib_bytes(msg):
    """Octets the sink counts for bytes sent with smtplib.sendmail.

    smtplib sends bytes as they are (line ends untouched), dot-stuffed, with CRLF
    added when missing; the sink unstuffs, so it counts the original plus that CRLF.
    """
    return len(msg) + (0 if msg.endswith(b"\r\n") else 2)


class Expect:
    """What the sink should have seen."""

    def __init__(self):
        self.messages = []  # (from, [rcpts], bytes)

    def add(self, sender, rcpts, nbytes):
        self.messages.append((sender, list(rcpts), nbytes))


def test_smtplib(sink, expect):
    with smtplib.SMTP("127.0.0.1", sink.ports[0], timeout=10) as s:
        code, banner = s.ehlo("client.test")
        check_eq(code, 250, "EHLO code")
        for ext in ("pipelining", "8bitmime", "size", "enhancedstatuscodes",
                    "smtputf8", "chunking"):
            if not s.has_extn(ext):
                fail(f"EHLO does not advertise {ext}: {banner!r}")
        check_eq(s.esmtp_features["size"], "104857600", "SIZE")
        rcpts = ["smtplib1@x.test", "smtplib2@x.test", "smtplib3@x.test"]
        msg = (b"Subject: one\r\n\r\n.a line starting with a dot\r\n"
               b"..two dots\r\n.\r\nline after a lone dot\r\n")
        refused = s.sendmail("sender@x.test", rcpts, msg)
        check_eq(refused, {}, "refused recipients")
        expect.add("sender@x.test", rcpts, smtplib_bytes(msg))
        # Several messages in one session, one without a final newline.
        for i in range(5):
            msg = f"Subject: {i}\n\nbody {i}".encode()
            s.sendmail("", [f"loop{i}@x.test"], msg)
            expect.add("", [f"loop{i}@x.test"], smtplib_bytes(msg))
        check_eq(s.noop()[0], 250, "NOOP")
        check_eq(s.rset()[0], 250, "RSET")
        # Out of sequence and unknown commands.
        code, text = s.docmd("RCPT TO:<nobody@x.test>")
        check_eq((code, text[:5]), (503, b"5.5.1"), "RCPT before MAIL")
        code, text = s.docmd("FROB")
        check_eq((code, text[:5]), (500, b"5.5.2"), "unknown command")
        check_eq(s.docmd("MAIL FROM:<a@x.test>")[0], 250, "MAIL")
        code, text = s.docmd("DATA")
        check_eq((code, text[:5]), (554, b"5.5.1"), "DATA without RCPT")
    # The greeting names the host.
    s = smtplib.SMTP(timeout=10)
    code, banner = s.connect("127.0.0.1", sink.ports[1])
    check_eq((code, banner), (220, f"{HOSTNAME} ESMTP volley-sink".encode()), "greeting")
    s.quit()


def test_pipelined_and_split(sink, expect):
    sock = socket.create_connection(("127.0.0.1", sink.ports[1]))
    recv_until(sock, rb"^220 ")
    rcpts = ["pipe1@x.test", "pipe2@x.test"]
    sock.sendall(b"EHLO client.test\r\nMAIL FROM:<pipe@x.test>\r\n" +
                 b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts) +
                 b"DATA\r\n")
    got = recv_until(sock, rb"^354 ")
    check_eq(reply_codes(got), ["250", "250", "250", "250", "354"], "pipelined group")
    body = b"Subject: split\r\n\r\n..stuffed\r\nend\r\n"
    # The body and the terminator one octet per write, so that "\r\n.\r\n" reaches
    # the sink across many reads.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in body + b".\r\n":
        sock.send(bytes([b]))
        time.sleep(0.001)
    got = recv_until(sock, rb"^250 ")
    check_eq(reply_codes(got), ["250"], "end of split data")
    expect.add("pipe@x.test", rcpts, len(body) - 1)
    # End of data and the next transaction in one write (RFC 2920 allows it).
    sock.sendall(b"MAIL FROM:<pipe2@x.test>\r\nRCPT TO:<pipe3@x.test>\r\nDATA\r\n")
    recv_until(sock, rb"^354 ")
    sock.sendall(b"x\r\n.\r\nMAIL FROM:<pipe3@x.test>\r\nRCPT TO:<pipe4@x.test>\r\n"
                 b"DATA\r\n")
    got = recv_until(sock, rb"^354 ")
    check_eq(reply_codes(got), ["250", "250", "250", "354"], "dot plus next group")
    expect.add("pipe2@x.test", ["pipe3@x.test"], 3)
    sock.sendall(b"yy\r\n.\r\nQUIT\r\n")
    got = recv_until(sock, rb"^221 ")
    check_eq(reply_codes(got), ["250", "221"], "last dot and QUIT")
    expect.add("pipe3@x.test", ["pipe4@x.test"], 4)
    sock.settimeout(10)
    check_eq(sock.recv(100), b"", "EOF after QUIT")
    sock.close()


def test_bdat(sink, expect):
    sock = socket.create_connection(("127.0.0.1", sink.ports[0]))
    recv_until(sock, rb"^220 ")
    chunk1 = b"Subject: chunked\r\n\r\n"
    chunk2 = b"QUIT\r\n.\r\n"  # looks like commands; it is content
    sock.sendall(b"EHLO c\r\nMAIL FROM:<bdat@x.test>\r\nRCPT TO:<bdat1@x.test>\r\n" +
                 f"BDAT {len(chunk1)}\r\n".encode() + chunk1 +
                 f"BDAT {len(chunk2)} LAST\r\n".encode() + chunk2 + b"NOOP\r\n")
    got = recv_until(sock, rb"^250 2\.0\.0 Ok\r\n")
    check_eq(reply_codes(got), ["250", "250", "250", "250", "250", "250"], "BDAT")
    expect.add("bdat@x.test", ["bdat1@x.test"], len(chunk1) + len(chunk2))
    # An over-long command line is refused and discarded; the session goes on.
    sock.sendall(b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n")
    got = recv_until(sock, rb"^250 ")
    check_eq(got[:9], b"500 5.5.6", "over-long line")
    check_eq(reply_codes(got), ["500", "250"], "over-long line then NOOP")
    # 1 MiB without a line end, then a line end: one 500 reply.
    sock.sendall(b"A" * (1 << 20) + b"\r\nQUIT\r\n")
    got = recv_until(sock, rb"^221 ")
    check_eq(reply_codes(got), ["500", "221"], "huge line")
    sock.close()


def test_concurrent(sink, expect):
    socks = []
    for i in range(CONCURRENT):
        s = socket.create_connection(("127.0.0.1", sink.ports[i % 2]))
        socks.append(s)
    for s in socks:
        recv_until(s, rb"^220 ")
    # Everything is open at once now; check the sink counted it.
    deadline = time.monotonic() + 10
    while True:
        st = read_stats(sink.stats_path)
        if st and st["connections"] >= CONCURRENT:
            break
        if time.monotonic() > deadline:
            fail(f"stats never showed {CONCURRENT} connections: {st}")
        time.sleep(0.1)
    for i, s in enumerate(socks):
        s.sendall(f"EHLO c\r\nMAIL FROM:<c{i}@x.test>\r\nRCPT TO:<conc{i}@x.test>\r\n"
                  "DATA\r\n".encode())
    for i, s in enumerate(socks):
        recv_until(s, rb"^354 ")
        s.sendall(b"hello\r\n.\r\nQUIT\r\n")
        expect.add(f"c{i}@x.test", [f"conc{i}@x.test"], 7)
    for s in socks:
        recv_until(s, rb"^221 ")
        s.close()
    # A client that just goes away, mid-message: not counted.
    s = socket.create_connection(("127.0.0.1", sink.ports[0]))
    s.sendall(b"EHLO c\r\nMAIL FROM:<gone@x.test>\r\nRCPT TO:<gone@x.test>\r\nDATA\r\n"
              b"partial")
    recv_until(s, rb"^354 ")
    s.close()


def check_results(sink, expect, final):
    want_msgs = len(expect.messages)
    want_rcpts = sum(len(r) for _, r, _ in expect.messages)
    want_bytes = sum(b for _, _, b in expect.messages)
    check_eq(final["messages"], want_msgs, "messages")
    check_eq(final["recipients"], want_rcpts, "recipients")
    check_eq(final["bytes"], want_bytes, "bytes")
    check_eq(final["connections"], 0, "connections at exit")
    if final["peak_connections"] < CONCURRENT:
        fail(f"peak_connections {final['peak_connections']} < {CONCURRENT}")
    check_eq([l["listen"] for l in final["listeners"]], sink.listen_names, "listeners")
    check_eq(sum(l["sessions"] for l in final["listeners"]), final["sessions"],
             "per-listener sessions sum")
    for l in final["listeners"]:
        if l["peak_connections"] < CONCURRENT // 2:
            fail(f"listener peak too low: {l}")
    # Sessions: 2 smtplib + 1 pipelined + 1 BDAT + CONCURRENT + 1 dropped.
    check_eq(final["sessions"], 5 + CONCURRENT, "sessions")
    check_eq(set(final), {"sessions", "messages", "recipients", "bytes", "connections",
                          "peak_connections", "rejects", "tls_sessions", "listeners"},
             "stats keys")
    # test_smtplib's RCPT before MAIL (503) and DATA without RCPT (554).
    check_eq(final["rejects"], 2, "rejects")
    check_eq(final["tls_sessions"], 0, "tls_sessions")

    on_disk = read_stats(sink.stats_path)
    check_eq(on_disk, final, "stats file vs stdout")
    if os.path.exists(sink.stats_path + ".tmp"):
        fail("stats .tmp file left behind")

    with open(sink.record_path) as f:
        records = [json.loads(line) for line in f]
    check_eq(len(records), want_msgs, "record lines")
    seen = collections.Counter(r for rec in records for r in rec["rcpts"])
    want = collections.Counter(r for _, rcpts, _ in expect.messages for r in rcpts)
    dup = [r for r, n in seen.items() if n > 1]
    if dup:
        fail(f"recipients recorded more than once: {dup[:10]}")
    check_eq(seen, want, "recorded recipients")
    got = sorted((r["from"], r["rcpts"], r["bytes"]) for r in records)
    check_eq(got, sorted(expect.messages), "recorded messages")


def test_periodic_flush(sink, expect):
    """The record and stats files are written while the sink runs."""
    deadline = time.monotonic() + 5
    while True:
        st = read_stats(sink.stats_path)
        lines = 0
        if os.path.exists(sink.record_path):
            with open(sink.record_path) as f:
                lines = sum(1 for _ in f)
        if st and st["messages"] == len(expect.messages) and lines == len(expect.messages):
            return
        if time.monotonic() > deadline:
            fail(f"files not flushed while running: stats {st}, {lines} record lines")
        time.sleep(0.1)


def test_sigint_and_usage(binary, tmp):
    sink = Sink(binary, tmp, listeners=1)
    final = sink.stop(signal.SIGINT)
    check_eq((final["sessions"], final["messages"]), (0, 0), "idle sink stats")
    bad = subprocess.run([binary, "--listen", "nonsense"], capture_output=True,
                         timeout=10)
    check_eq(bad.returncode, 2, "exit status for a bad --listen")
    bad = subprocess.run([binary, "--bogus", "x"], capture_output=True, timeout=10)
    check_eq(bad.returncode, 2, "exit status for an unknown option")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    args = ap.parse_args()
    binary = os.path.join(args.bindir, "tools", "sink", "volley-sink")
    if not os.access(binary, os.X_OK):
        fail(f"no volley-sink at {binary}")
    with tempfile.TemporaryDirectory(prefix="sink_test.") as tmp:
        sink = Sink(binary, tmp)
        expect = Expect()
        try:
            for test in (test_smtplib, test_pipelined_and_split, test_bdat,
                         test_concurrent, test_periodic_flush):
                test(sink, expect)
                print(f"ok {test.__name__}")
            final = sink.stop()
            check_results(sink, expect, final)
            print("ok check_results")
        finally:
            if sink.proc.poll() is None:
                sink.proc.kill()
                sink.proc.wait()
        with tempfile.TemporaryDirectory(prefix="sink_test.") as tmp2:
            test_sigint_and_usage(binary, tmp2)
            print("ok test_sigint_and_usage")
    print("PASS")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
