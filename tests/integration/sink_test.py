#!/usr/bin/python3
"""sink_test.py - volley-sink end to end: smtplib and raw sockets on 127.0.0.0/8.

Starts volley-sink on two free ports (port 0, read back from its "listening on"
lines), sends mail through smtplib, pipelined and chunked raw sessions, an over-long
line and a few hundred concurrent connections, then stops it with SIGTERM and checks
the stats file, the JSON on stdout and the record file (each recipient exactly once).
All of that twice: with one thread, and with --threads 2 (two shards, each with its
own copy of the listeners, whose counters must add up).

Then shards, ranges and the HTTP endpoint together: --threads 2 on a range of 50
addresses (127.0.1.1-50, one port), sessions to several addresses at once, /stats
read over HTTP while they are open (live and per listener), and the final stdout
stats summed across the shards, exactly, per address. Last, the errors: a range too
large or backwards, a bad --threads or --http, too low a descriptor limit for every
listening socket, and a port already in use with several shards; and fault profiles
named by a whole range or by one address of it.

usage: sink_test.py --bindir BUILD_DIR
"""
import argparse
import collections
import json
import os
import re
import resource
import select
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HOSTNAME = "sink.test"
CONCURRENT = 300
# The stats JSON's keys: a contract (volley-load and the tests read them).
STATS_KEYS = {"sessions", "messages", "recipients", "bytes", "connections",
              "peak_connections", "rejects", "tls_sessions", "tls_resumed", "sessions_without_quit",
              "listeners"}
LISTENER_KEYS = {"listen", "sessions", "peak_connections", "connections", "messages",
                 "recipients"}
# The range test: addresses 127.0.1.1-RANGE, of which USED take CONNS_PER_ADDRESS
# sessions each, every session sending MESSAGES_PER_SESSION messages.
RANGE = 50
USED = [1, 5, 10, 14, 21, 28, 34, 42, 49, 50]
CONNS_PER_ADDRESS = 3
MESSAGES_PER_SESSION = 4


def fail(msg):
    raise AssertionError(msg)


def check_eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


class Sink:
    """A running volley-sink and the files it writes.

    listen: the --listen arguments; listeners: how many addresses they name (the
    "listening on" lines to wait for); http: wait for the "stats on" line too."""

    def __init__(self, binary, tmp, listeners=2, extra=(), listen=None, http=False):
        self.stats_path = os.path.join(tmp, "stats.json")
        self.record_path = os.path.join(tmp, "record.jsonl")
        if listen is None:
            listen = ["127.0.0.1:0"] * listeners
        args = [binary]
        for arg in listen:
            args += ["--listen", arg]
        args += ["--stats", self.stats_path, "--record", self.record_path,
                 "--hostname", HOSTNAME, *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        found = []
        self.http = None
        deadline = time.monotonic() + 10
        buf = b""
        while len(found) < listeners or (http and self.http is None):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.proc.kill()
                fail(f"sink did not start listening; stderr so far: {buf!r}")
            ready, _, _ = select.select([self.proc.stderr], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            buf += chunk
            found = re.findall(rb"volley-sink: listening on ([0-9.]+):(\d+)\n", buf)
            m = re.search(rb"volley-sink: stats on (http://[0-9.]+:\d+/stats)\n", buf)
            if m:
                self.http = m.group(1).decode()
        self.hosts = [h.decode() for h, _ in found]
        self.ports = [int(p) for _, p in found]
        self.listen_names = [f"{h}:{p}" for h, p in zip(self.hosts, self.ports)]

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
    check_eq(set(final), STATS_KEYS, "stats keys")
    # The dropped session, at least, ended without QUIT; the smtplib ones did not.
    if not 1 <= final["sessions_without_quit"] <= final["sessions"] - 2:
        fail(f"sessions_without_quit {final['sessions_without_quit']} of {final['sessions']}")
    for l in final["listeners"]:
        check_eq(set(l), LISTENER_KEYS, "listener keys")
        check_eq(l["connections"], 0, f"{l['listen']}: connections at exit")
    check_eq(sum(l["messages"] for l in final["listeners"]), want_msgs,
             "per-listener messages sum")
    check_eq(sum(l["recipients"] for l in final["listeners"]), want_rcpts,
             "per-listener recipients sum")
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

def recv_replies(sock, n, timeout=10):
    """Read until n complete replies (final lines) have arrived; returns their codes."""
    sock.settimeout(timeout)
    data = b""
    while len(reply_codes(data)) < n or not data.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            fail(f"EOF while waiting for {n} replies; got {data!r}")
        data += chunk
    return reply_codes(data)


def http_get(url, timeout=5):
    """(status, content type, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def rcpts_for(host_index):
    """Recipients per message on address 127.0.1.host_index: 1 to 3, so that the
    per-listener recipient counts differ from the message counts."""
    return 1 + host_index % 3


def test_range_threads_http(binary, tmp):
    sink = Sink(binary, tmp, listeners=RANGE, listen=[f"127.0.1.1-{RANGE}:0"], http=True,
                extra=["--threads", "2", "--http", "127.0.0.1:0"])
    socks = []
    try:
        # One port for the whole range, the addresses in order.
        check_eq(sink.hosts, [f"127.0.1.{i}" for i in range(1, RANGE + 1)], "range hosts")
        check_eq(len(set(sink.ports)), 1, "one port for the range")
        port = sink.ports[0]
        # Main thread, two shards, the HTTP thread (started right after the
        # "listening on" lines).
        deadline = time.monotonic() + 5
        while len(os.listdir(f"/proc/{sink.proc.pid}/task")) < 4:
            if time.monotonic() > deadline:
                tasks = len(os.listdir(f"/proc/{sink.proc.pid}/task"))
                fail(f"volley-sink --threads 2 --http runs {tasks} threads, want at least 4")
            time.sleep(0.05)

        # Sessions to several addresses at once: open them all, then interleave
        # their transactions round by round.
        for idx in USED:
            for _ in range(CONNS_PER_ADDRESS):
                s = socket.create_connection((f"127.0.1.{idx}", port), timeout=10)
                socks.append((idx, s))
        for _, s in socks:
            check_eq(recv_replies(s, 1), ["220"], "greeting")
            s.sendall(b"EHLO client.test\r\n")
        for _, s in socks:
            check_eq(recv_replies(s, 1), ["250"], "EHLO")
        body = b"Subject: range\r\n\r\nhello\r\n"
        records = []
        for m in range(MESSAGES_PER_SESSION):
            for n, (idx, s) in enumerate(socks):
                rcpts = [f"r{idx}-{n}-{m}-{k}@range.test" for k in range(rcpts_for(idx))]
                records.append((idx, rcpts))
                s.sendall(f"MAIL FROM:<s{idx}@range.test>\r\n".encode() +
                          b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts) +
                          b"DATA\r\n")
            for idx, s in socks:
                check_eq(recv_replies(s, 2 + rcpts_for(idx))[-1], "354", "DATA")
                s.sendall(body + b".\r\n")
            for _, s in socks:
                check_eq(recv_replies(s, 1), ["250"], "end of data")

        # Live, over HTTP, while every session is still open. Each 250 above was
        # sent after the message was counted, so the counts are exact now.
        total = len(socks) * MESSAGES_PER_SESSION
        total_rcpts = sum(len(r) for _, r in records)
        status, ctype, raw = http_get(sink.http)
        check_eq((status, ctype), (200, "application/json"), "GET /stats")
        live = json.loads(raw)
        check_eq(set(live), STATS_KEYS, "live stats keys")
        check_eq((live["sessions"], live["connections"]), (len(socks), len(socks)),
                 "live sessions and open connections")
        check_eq((live["messages"], live["recipients"]), (total, total_rcpts),
                 "live messages and recipients")
        check_eq(live["bytes"], total * len(body), "live bytes")
        check_listeners(live, sink, records, open_now=True)
        status, _, _ = http_get(sink.http.replace("/stats", "/nope"))
        check_eq(status, 404, "GET /nope")

        for _, s in socks:
            s.sendall(b"QUIT\r\n")
        for _, s in socks:
            check_eq(recv_replies(s, 1), ["221"], "QUIT")
            s.close()
        socks = []
        http_url = sink.http
        final = sink.stop()
    finally:
        for _, s in socks:
            s.close()
        if sink.proc.poll() is None:
            sink.proc.kill()
            sink.proc.wait()

    # At exit: every shard's counts, summed, exactly.
    check_eq(set(final), STATS_KEYS, "final stats keys")
    check_eq((final["sessions"], final["messages"], final["recipients"], final["bytes"]),
             (len(USED) * CONNS_PER_ADDRESS, total, total_rcpts, total * len(body)),
             "final sessions, messages, recipients, bytes")
    check_eq((final["connections"], final["peak_connections"]), (0, len(USED) * CONNS_PER_ADDRESS),
             "final connections and peak")
    check_eq((final["rejects"], final["tls_sessions"]), (0, 0), "final rejects, tls")
    check_listeners(final, sink, records, open_now=False)
    check_eq(read_stats(sink.stats_path), final, "stats file vs stdout")
    with open(sink.record_path) as f:
        recorded = [json.loads(line) for line in f]
    check_eq(sorted(r for rec in recorded for r in rec["rcpts"]),
             sorted(r for _, rcpts in records for r in rcpts), "recorded recipients")
    # The endpoint went away with the sink.
    try:
        urllib.request.urlopen(http_url, timeout=2)
        fail("the HTTP endpoint still answers after exit")
    except urllib.error.URLError:
        pass


def check_listeners(stats, sink, records, open_now):
    """Per-listener counts against what was sent to each address."""
    check_eq([l["listen"] for l in stats["listeners"]], sink.listen_names, "listeners")
    want_msgs = collections.Counter(idx for idx, _ in records)
    want_rcpts = collections.Counter()
    for idx, rcpts in records:
        want_rcpts[idx] += len(rcpts)
    for i, l in enumerate(stats["listeners"]):
        idx = i + 1
        used = idx in USED
        conns = CONNS_PER_ADDRESS if used else 0
        check_eq(set(l), LISTENER_KEYS, "listener keys")
        got = (l["sessions"], l["connections"], l["peak_connections"], l["messages"],
               l["recipients"])
        want = (conns, conns if open_now else 0, conns, want_msgs[idx], want_rcpts[idx])
        check_eq(got, want, f"{l['listen']}: sessions, connections, peak, messages, "
                 "recipients")


def test_range_profiles(binary, tmp):
    """A [listener] entry may name a whole range as written, or one of its addresses
    (which wins over the range's)."""
    path = os.path.join(tmp, "profiles.toml")
    with open(path, "w") as f:
        f.write('[profile.range]\ngreeting = "220 range.test hello"\n'
                '[profile.one]\ngreeting = "220 one.test hello"\n'
                '[profile.plain]\n'
                '[listener."127.0.2.1-4:0"]\nprofile = "range"\n'
                '[listener."127.0.2.2:0"]\nprofile = "one"\n'
                '[listener."127.0.2.3:0"]\nprofile = "default"\n')
    sink = Sink(binary, tmp, listeners=4, listen=["127.0.2.1-4:0"],
                extra=["--threads", "2", "--profiles", path])
    try:
        got = []
        for host, port in zip(sink.hosts, sink.ports):
            with socket.create_connection((host, port), timeout=10) as s:
                got.append(recv_until(s, rb"^220 ").decode().strip())
        check_eq(got, ["220 range.test hello", "220 one.test hello",
                       f"220 {HOSTNAME} ESMTP volley-sink", "220 range.test hello"],
                 "greetings by profile")
        sink.stop()
    finally:
        if sink.proc.poll() is None:
            sink.proc.kill()
            sink.proc.wait()


def run_usage(binary, args, want_rc, want_text, limit=None):
    """Run volley-sink with bad arguments; check its exit status and message."""
    def lower_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    r = subprocess.run([binary, *args], capture_output=True, timeout=20,
                       preexec_fn=lower_limit if limit else None)
    what = " ".join(args)
    check_eq(r.returncode, want_rc, f"exit status of {what} (stderr {r.stderr!r})")
    if want_text.encode() not in r.stderr:
        fail(f"{what}: stderr {r.stderr!r} lacks {want_text!r}")


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_errors(binary):
    run_usage(binary, ["--listen", "127.0.0.0-127.1.0.0:0"], 2,
              "--listen '127.0.0.0-127.1.0.0:0': 65537 addresses; a range may name at most "
              "65536")
    run_usage(binary, ["--listen", "127.0.1.9-3:0"], 2,
              "--listen '127.0.1.9-3:0': the range ends before it starts")
    run_usage(binary, ["--listen", "[::1]-5:0"], 2, "--listen '[::1]-5:0'")
    for bad in ("-1", "x", "257", ""):
        run_usage(binary, ["--listen", "127.0.0.1:0", "--threads", bad], 2,
                  "--threads must be 0..256")
    run_usage(binary, ["--listen", "127.0.0.1:0", "--buffer-ring", "maybe"], 2,
              '--buffer-ring must be on or off, not "maybe"')
    run_usage(binary, ["--listen", "127.0.0.1:0", "--http", "stats.test:80"], 2,
              "--http 'stats.test:80': want an IPv4 literal")
    # 250 addresses need 250 sockets (plus spares): more than a limit of 200.
    run_usage(binary, ["--listen", "127.0.1.1-250:0"], 1,
              "250 addresses x 1 threads need 250 listening sockets, but RLIMIT_NOFILE "
              "allows 200 descriptors", limit=200)
    run_usage(binary, ["--listen", "127.0.1.1-100:0", "--threads", "2"], 1,
              "100 addresses x 2 threads need 200 listening sockets", limit=200)
    # A port in use stays an error with several shards: SO_REUSEPORT must not
    # join another listener's group, nor one of our own addresses twice.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for threads in ("1", "2"):
            run_usage(binary, ["--listen", f"127.0.0.1:{port}", "--threads", threads], 1,
                      f"--listen '127.0.0.1:{port}': Address already in use")
    port = free_port("127.0.1.2")
    run_usage(binary, ["--threads", "2", "--listen", f"127.0.1.1-3:{port}",
                       "--listen", f"127.0.1.2:{port}"], 1,
              f"--listen '127.0.1.2:{port}': Address already in use")


def run_basic(binary, threads, extra=()):
    """The protocol and counting tests on a sink with `threads` shards."""
    with tempfile.TemporaryDirectory(prefix="sink_test.") as tmp:
        sink = Sink(binary, tmp, extra=["--threads", str(threads), *extra])
        expect = Expect()
        try:
            for test in (test_smtplib, test_pipelined_and_split, test_bdat,
                         test_concurrent, test_periodic_flush):
                test(sink, expect)
                print(f"ok {test.__name__} (threads {threads})")
            final = sink.stop()
            check_results(sink, expect, final)
            print(f"ok check_results (threads {threads})")
        finally:
            if sink.proc.poll() is None:
                sink.proc.kill()
                sink.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    args = ap.parse_args()
    binary = os.path.join(args.bindir, "tools", "sink", "volley-sink")
    if not os.access(binary, os.X_OK):
        fail(f"no volley-sink at {binary}")
    for threads in (1, 2):
        run_basic(binary, threads)
    # Each connection with a receive buffer of its own: the reactor's fallback
    # for kernels that refuse buffer rings.
    run_basic(binary, 1, extra=["--buffer-ring", "off"])
    print("ok --buffer-ring off")
    with tempfile.TemporaryDirectory(prefix="sink_test.") as tmp:
        test_sigint_and_usage(binary, tmp)
        print("ok test_sigint_and_usage")
    with tempfile.TemporaryDirectory(prefix="sink_test.") as tmp:
        test_range_threads_http(binary, tmp)
        print("ok test_range_threads_http")
    with tempfile.TemporaryDirectory(prefix="sink_test.") as tmp:
        test_range_profiles(binary, tmp)
        print("ok test_range_profiles")
    test_errors(binary)
    print("ok test_errors")
    print("PASS")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
