"""harness.py - shared pieces of Volley's integration tests (python3 stdlib only).

A test script does:

    import harness
    def test(h):                      # h: harness.Harness, a temporary directory
        sink = h.sink()               # volley-sink on a free 127.0.0.1 port
        d = h.volleyd(route_port=sink.port)
        d.start()
        rcpts = harness.recipients(100, 5, "t1")
        d.drop("t1.job", harness.job_text("t1", rcpts))
        harness.wait_for(lambda: ..., 60, "every recipient delivered")
    harness.main(test, "my-test")

Every process started through the harness is stopped when the test ends, passes or
fails (and is killed by the kernel if the test process itself dies: PR_SET_PDEATHSIG).
The temporary directory is removed on success and kept (its path printed) on failure,
or always with --keep. Everything listens on and connects to 127.0.0.0/8 only (127.0.0.1
unless a test names other addresses), and every mail domain is under .test.

For routing by DNS: h.nsd({"a.test": "@ MX 10 mx\nmx A 127.0.0.2\n"}) is an nsd
authoritative for the zones given, h.dns_proxy(nsd.port) a forwarder in front of it that
counts queries and can leave some unanswered, and h.sink(listen_hosts=[...]) one
volley-sink standing for several mail hosts (one port, several addresses).

For many domains and few descriptors: harness.domains_zone(n, hosts) is the zone "test"
giving d0001.test ... an MX host each (h.nsd({"test": ...})), harness.address_range()
the loopback addresses to put a sink on, d.start_with_nofile(512) volleyd under `ulimit
-n 512`, harness.FdSampler(pid) its peak descriptor count, sink.restart() the sink again on
its port (other options, e.g. without its fault profiles), and
proxy.set_receive_buffer(8 << 20) a DnsProxy that takes a burst of hundreds of queries.

For metrics: harness.scrape(d.metrics_port) reads volleyd's /metrics once (a Metrics:
get, select, total), and h.prometheus(["127.0.0.1:%d" % d.metrics_port],
rule_files=[...]) is a real Prometheus scraping it every second, queried through its
HTTP API (query, series, rules); promtool(...) runs promtool.
"""

import argparse
import collections
import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

LOOPBACK = "127.0.0.1"


class TestFailure(AssertionError):
    pass


def log(msg):
    print("[%8.3f] %s" % (time.monotonic() - _T0, msg), flush=True)


_T0 = time.monotonic()


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def wait_for(pred, timeout, what, interval=0.1):
    """Poll pred() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def connectable(port, host=LOOPBACK):
    """True when something accepts a TCP connection on host:port now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _die_with_parent():
    # Runs in the child between fork and exec: if the test process dies (even by
    # SIGKILL from a ctest timeout), the kernel kills the child too.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ---------------------------------------------------------------- job files

def domain(i):
    return "d%04d.test" % (i + 1)


def recipients(n, domains, tag, seed=1):
    """n unique addresses over `domains` domains with a Zipf skew; every domain is used
    when n >= domains. Deterministic."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(domains)]
    out = []
    for i in range(n):
        d = i if i < domains else rng.choices(range(domains), weights)[0]
        out.append("%s-%06d@%s" % (tag, i + 1, domain(d)))
    rng.shuffle(out)
    return out


def message(personalised=False, subject="Volley integration test", size=600):
    lines = [
        "From: Volley Test <sender@volley-src.test>",
        "To: undisclosed-recipients:;",
        "Subject: %s" % subject,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Hello {{first_name}}," if personalised else "Hello,",
        "",
    ]
    body = "\r\n".join(lines) + "\r\n"
    filler = "Integration test body line: nothing to see here, move along please.\r\n"
    while len(body) + len(filler) <= size:
        body += filler
    return body


def header_line(job_id, sender="sender@volley-src.test", msg=None, **extra):
    h = {"job": job_id, "from": sender, "message": msg if msg is not None else message()}
    h.update(extra)
    return json.dumps(h)


def rcpt_line(addr, **vars_):
    return json.dumps({"to": addr, "vars": vars_})


def job_text(job_id, rcpts, sender="sender@volley-src.test", msg=None):
    lines = [header_line(job_id, sender, msg)]
    lines.extend(rcpt_line(r) for r in rcpts)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading logs

def _salvage(line):
    """Records in a line that does not parse as one JSON object: a record torn by a
    crash has the next record glued on; keep the whole objects found in it."""
    found = []
    dec = json.JSONDecoder()
    i = 0
    while True:
        i = line.find("{", i)
        if i < 0:
            return found
        try:
            obj, end = dec.raw_decode(line, i)
            if isinstance(obj, dict) and "status" in obj:
                found.append(obj)
                i = end
                continue
        except ValueError:
            pass
        i += 1


class JsonlReader:
    """Reads a growing JSON Lines file incrementally; an unterminated last line waits
    for its end. `records` holds everything read so far; `torn` counts lines that did not
    parse whole (records salvaged from them are still in `records`)."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.records = []
        self.torn = 0
        self.torn_samples = []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.records
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        for raw in complete:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                self.records.append(obj)
            except ValueError:
                self.torn += 1
                if len(self.torn_samples) < 5:
                    self.torn_samples.append(text[:300])
                self.records.extend(_salvage(text))
        return self.records


def read_jsonl(path):
    r = JsonlReader(path)
    r.poll()
    return r.records


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except FileNotFoundError:
        return "(no %s)\n" % path


# ---------------------------------------------------------------- processes

class Proc:
    def __init__(self, harness, name, argv, cwd=None, output=None):
        self.name = name
        self.argv = argv
        self.output = output or os.path.join(harness.dir, "%s.out" % name)
        out = open(self.output, "ab")
        out.write(("==== %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(argv))).encode())
        out.flush()
        self.popen = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        out.close()
        harness.procs.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status (negative: signal)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log("%s (pid %d) ignored SIGTERM for %ss: killing it" % (self.name, self.pid, timeout))
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill9(self):
        if self.alive():
            self.popen.kill()
        self.popen.wait()


class Sink:
    """volley-sink on a free port, with --stats and --record files.

    listen_hosts: the loopback addresses to listen on, all on the one port (default
    just 127.0.0.1), e.g. ["127.0.0.2", "127.0.0.3"] to stand for several mail hosts.
    `port` is that port and `host` the first address. The record file does not say
    which address took a message ({"ts","from","rcpts","bytes"} only); the stats file's
    per-listener entries count sessions: listeners() / listener_sessions()."""

    def __init__(self, h, record=True, extra_args=(), listen_hosts=None, name="sink"):
        """name: the folder of its stats and record files; sinks of one test share
        the default one (filter records by recipient), or get their own by name."""
        self.h = h
        self.binary = h.binary("tools/sink/volley-sink")
        self.dir = h.mkdir(name)
        self.stats_path = os.path.join(self.dir, "stats.json")
        self.record_path = os.path.join(self.dir, "record.jsonl") if record else None
        self.extra_args = list(extra_args)
        self.listen_hosts = list(listen_hosts) if listen_hosts else [LOOPBACK]
        self.host = self.listen_hosts[0]
        self.proc = None
        self.port = None

    def start(self, attempts=3, port=None):
        """Listen on a free port, or on `port` (restart(): where a client already sends)."""
        for _ in range(attempts):
            # free_port() probes 127.0.0.1 only: another address may still have the
            # port taken, in which case volley-sink exits and the next port is tried.
            self.port = port or free_port()
            argv = [self.binary]
            for host in self.listen_hosts:
                argv += ["--listen", "%s:%d" % (host, self.port)]
            argv += ["--stats", self.stats_path]
            if self.record_path:
                argv += ["--record", self.record_path]
            argv += self.extra_args
            self.proc = Proc(self.h, "volley-sink", argv, cwd=self.dir)
            wants = ["listening on %s:%d" % (host, self.port) for host in self.listen_hosts]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.alive():
                with open(self.proc.output, errors="replace") as f:
                    text = f.read()
                if all(w in text for w in wants):
                    log("volley-sink pid %d listening on %s:%d"
                        % (self.proc.pid, ",".join(self.listen_hosts), self.port))
                    return self
                time.sleep(0.05)
            self.proc.stop(5)
            log("volley-sink did not come up on port %d; output:\n%s" % (self.port, tail(self.proc.output)))
        raise TestFailure("volley-sink did not start")

    def stats(self):
        return read_json(self.stats_path) or {}

    def fresh_stats(self, timeout=5):
        """The stats file as rewritten after this call (volley-sink rewrites it every
        second, and at exit): counters that include everything done before the call."""
        since = time.time()

        def rewritten():
            try:
                return os.stat(self.stats_path).st_mtime > since and read_json(self.stats_path)
            except FileNotFoundError:
                return None
        if self.proc is not None and not self.proc.alive():
            return self.stats()
        return wait_for(rewritten, timeout, "volley-sink to rewrite %s" % self.stats_path, 0.05)

    def listeners(self, stats=None):
        """{host: {"listen", "sessions", "peak_connections", "connections", "messages",
        "recipients"}} from the stats file (or from `stats`); sessions counts accepted
        connections, messages and recipients those accepted on connections to it."""
        stats = self.stats() if stats is None else stats
        out = {}
        for entry in stats.get("listeners", []):
            host = entry.get("listen", "").rpartition(":")[0].strip("[]")
            out[host] = entry
        return out

    def listener_sessions(self, stats=None):
        """{host: sessions accepted there}, every listen host present (0 if absent)."""
        found = self.listeners(stats)
        return {host: found.get(host, {}).get("sessions", 0) for host in self.listen_hosts}

    def records(self):
        return read_jsonl(self.record_path)

    def stop(self):
        return self.proc.stop(15) if self.proc else None

    def restart(self, extra_args=None):
        """Stop this sink and start it again on the same addresses and port (the one
        volleyd sends to), with extra_args instead of the old ones when given (e.g. []
        to drop a --profiles). The stats and record files are kept and appended to."""
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        return self.start(port=self.port)


class PostfixSink:
    """Postfix's smtp-sink on a free port, dumping every transaction (-D) after a
    marker line (-S) and printing its counters (-c)."""

    MARK = "@@VOLLEY-SMTP-SINK-DUMP@@"

    def __init__(self, h, binary="/usr/sbin/smtp-sink", extra_args=(), name="smtp-sink"):
        """extra_args: more smtp-sink options (fault flags such as -e, -p, -f RCPT, -r
        MAIL, -q RCPT, -Q DATA), given before the address; name: the process name and
        the folder (under h.dir) of its dump, so that several sinks can run at once."""
        self.h = h
        self.binary = binary
        self.extra_args = list(extra_args)
        self.name = name
        self.dir = h.mkdir(name)
        # smtp-sink must drop privileges (-u nobody) when run as root, and writes its dump
        # as that user: let it through the (0700) temporary directory into its own.
        os.chmod(h.dir, 0o711)
        os.chmod(self.dir, 0o777)
        # -D expands the template with strftime and appends a random hex suffix.
        self.dump_path = os.path.join(self.dir, "dump-")
        self.proc = None
        self.port = None

    def start(self, attempts=3, port=None):
        """Listen on a free port, or on `port` (e.g. to restart a sink where a client
        already sends; smtp-sink sets SO_REUSEADDR)."""
        if not os.access(self.binary, os.X_OK):
            raise TestFailure("%s is missing: run scripts/install-deps (package postfix)" % self.binary)
        for _ in range(attempts):
            self.port = port or free_port()
            argv = [self.binary, "-c", "-u", "nobody", "-S", self.MARK + "\\n", "-D", self.dump_path]
            argv += self.extra_args + ["%s:%d" % (LOOPBACK, self.port), "256"]
            self.proc = Proc(self.h, self.name, argv, cwd=self.dir)
            try:
                wait_for(lambda: self._connectable() or not self.proc.alive(), 10, "smtp-sink to listen")
            except TestFailure:
                pass
            if self.proc.alive() and self._connectable():
                log("smtp-sink pid %d listening on %s:%d" % (self.proc.pid, LOOPBACK, self.port))
                return self
            self.proc.stop(5)
            log("smtp-sink did not come up on port %d:\n%s" % (self.port, tail(self.proc.output)))
        raise TestFailure("smtp-sink did not start")

    def _connectable(self):
        # A bare connect is counted as a session by smtp-sink (sess=); that is fine.
        return connectable(self.port)

    def counters(self):
        """The last counters line printed by -c: {"sess":..,"quit":..,"mesg":..}."""
        try:
            with open(self.proc.output, errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return {}
        last = {}
        for chunk in text.replace("\r", "\n").split("\n"):
            fields = dict(kv.split("=", 1) for kv in chunk.split() if "=" in kv)
            if "mesg" in fields:
                try:
                    last = {k: int(v) for k, v in fields.items()}
                except ValueError:
                    pass
        return last

    def _dump_text(self):
        text = ""
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("dump-"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()
        return text

    def dump_headers(self):
        """One dict per dumped transaction of the X- fields smtp-sink writes first:
        {"X-Client-Proto": "ESMTP", "X-Helo-Args": "...", "X-Mail-Args": "<a> ...",
        "X-Rcpt-Args": ["<b>", ...]} (values as written, X-Rcpt-Args a list)."""
        out = []
        for block in self._dump_text().split(self.MARK + "\n")[1:]:
            fields = {"X-Rcpt-Args": []}
            for line in block.split("\n"):
                if not line.startswith("X-"):
                    break
                name, _, value = line.partition(": ")
                if name == "X-Rcpt-Args":
                    fields[name].append(value)
                else:
                    fields[name] = value
            out.append(fields)
        return out

    def transactions(self):
        """[(mail_from, [rcpt, ...]), ...] from the dump file."""
        text = self._dump_text()
        out = []
        for block in text.split(self.MARK + "\n")[1:]:
            sender, rcpts = None, []
            for line in block.split("\n"):
                if not line.startswith("X-"):
                    break
                name, _, value = line.partition(": ")
                addr = value.strip()
                if addr.startswith("<"):
                    addr = addr[1:addr.index(">")] if ">" in addr else addr[1:]
                if name == "X-Mail-Args":
                    sender = addr
                elif name == "X-Rcpt-Args":
                    rcpts.append(addr)
            out.append((sender, rcpts))
        return out

    def stop(self):
        return self.proc.stop(15) if self.proc else None


AIOSMTPD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aiosmtpd_server.py")


class AiosmtpdServer:
    """aiosmtpd_server.py on a free 127.0.0.1 port (retried like Sink)."""

    def __init__(self, h, extra_args=(), name="aiosmtpd"):
        """name: the folder under h.dir, so that several servers can run at once."""
        self.h = h
        self.dir = h.mkdir(name)
        self.record_path = os.path.join(self.dir, "messages.jsonl")
        self.rcpt_log_path = os.path.join(self.dir, "rcpts.jsonl")
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None

    def start(self, attempts=3):
        try:
            import aiosmtpd  # noqa: F401  (only to fail early with a clear message)
        except ImportError:
            raise TestFailure("aiosmtpd is missing: run scripts/install-deps "
                                      "(package python3-aiosmtpd)")
        for _ in range(attempts):
            self.port = free_port()
            argv = [sys.executable, AIOSMTPD_SCRIPT, "--host", LOOPBACK,
                    "--port", str(self.port), "--record", self.record_path,
                    "--rcpt-log", self.rcpt_log_path] + self.extra_args
            self.proc = Proc(self.h, "aiosmtpd", argv, cwd=self.dir)
            want = "aiosmtpd_server listening on %s:%d" % (LOOPBACK, self.port)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.alive():
                with open(self.proc.output, errors="replace") as f:
                    if want in f.read():
                        log("aiosmtpd pid %d listening on %s:%d"
                            % (self.proc.pid, LOOPBACK, self.port))
                        return self
                time.sleep(0.05)
            self.proc.stop(5)
            log("aiosmtpd did not come up on port %d; output:\n%s"
                % (self.port, tail(self.proc.output)))
        raise TestFailure("aiosmtpd_server.py did not start")

    def messages(self):
        return read_jsonl(self.record_path)

    def rcpts(self):
        return read_jsonl(self.rcpt_log_path)

    def stop(self):
        return self.proc.stop(15) if self.proc else None


# ---------------------------------------------------------------- DNS

# Query types by name, for DnsProxy.count() and dns_query().
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
DNS_MAX_MESSAGE = 65535   # the most a TCP length prefix can say
DNS_MAX_POINTERS = 64     # compression pointers followed in one name (a loop guard)


def _qtype(qtype):
    return QTYPES[qtype.upper()] if isinstance(qtype, str) else int(qtype)


def dns_name_key(name):
    """How names are compared here: lowercase, no final dot."""
    return name.lower().rstrip(".")


def dns_build_query(name, qtype, qid=None, rd=False):
    """A one-question DNS query (class IN) as bytes."""
    qid = random.randrange(0x10000) if qid is None else qid
    out = struct.pack("!HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 0)
    for label in dns_name_key(name).split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError("DNS label longer than 63 octets in %r" % name)
            out += bytes([len(raw)]) + raw
    return out + b"\0" + struct.pack("!HH", _qtype(qtype), 1)


def _dns_read_name(msg, off):
    """(name, offset after it) of the name at off, following compression pointers."""
    labels, end, hops = [], None, 0
    while True:
        if off >= len(msg):
            raise ValueError("DNS name runs past the end of the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or hops >= DNS_MAX_POINTERS:
                raise ValueError("bad DNS compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            continue
        if n == 0:
            off += 1
            break
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return ".".join(labels), (end if end is not None else off)


def dns_question(msg):
    """(name as dns_name_key, qtype) of a message's first question, or None."""
    try:
        if len(msg) < 12 or struct.unpack("!H", msg[4:6])[0] < 1:
            return None
        name, off = _dns_read_name(msg, 12)
        if off + 4 > len(msg):
            return None
        return dns_name_key(name), struct.unpack("!H", msg[off:off + 2])[0]
    except ValueError:
        return None


def _dns_rdata(msg, rtype, off, rdlen):
    rdata = msg[off:off + rdlen]
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype == 15:
        return (struct.unpack("!H", rdata[:2])[0], _dns_read_name(msg, off + 2)[0])
    if rtype in (2, 5):
        return _dns_read_name(msg, off)[0]
    if rtype == 6:
        mname, p = _dns_read_name(msg, off)
        rname, p = _dns_read_name(msg, p)
        return (mname, rname) + struct.unpack("!IIIII", msg[p:p + 20])
    return rdata


def dns_parse(msg):
    """A DNS message as {"id", "flags", "rcode", "rcode_name", "tc", "question",
    "answers", "authority"}; each record (name, type, ttl, value), value decoded for A,
    AAAA ("127.0.0.1"), MX ((pref, name)), CNAME and NS (name) and SOA ((mname, rname,
    serial, refresh, retry, expire, minimum)), else the raw rdata."""
    if len(msg) < 12:
        raise ValueError("DNS message of %d bytes is shorter than its header" % len(msg))
    qid, flags, qd, an, ns, _ = struct.unpack("!HHHHHH", msg[:12])
    off = 12
    question = None
    for _ in range(qd):
        name, off = _dns_read_name(msg, off)
        question = question or (dns_name_key(name), struct.unpack("!H", msg[off:off + 2])[0])
        off += 4
    sections = []
    for count in (an, ns):
        records = []
        for _ in range(count):
            name, off = _dns_read_name(msg, off)
            if off + 10 > len(msg):
                raise ValueError("DNS record header runs past the end of the message")
            rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            records.append((dns_name_key(name), rtype, ttl, _dns_rdata(msg, rtype, off, rdlen)))
            off += rdlen
        sections.append(records)
    return {"id": qid, "flags": flags, "rcode": flags & 0xF,
            "rcode_name": RCODES.get(flags & 0xF, str(flags & 0xF)), "tc": bool(flags & 0x0200),
            "question": question, "answers": sections[0], "authority": sections[1]}


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def dns_query(port, name, qtype, host=LOOPBACK, tcp=False, timeout=2.0):
    """Ask host:port one question (no recursion wanted) and return dns_parse() of the
    answer. Raises OSError (socket.timeout included) when nothing comes back."""
    query = dns_build_query(name, qtype)
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(query)) + query)
            length = struct.unpack("!H", _recv_exact(s, 2))[0]
            return dns_parse(_recv_exact(s, length))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(query)
        deadline = time.monotonic() + timeout
        while True:
            reply = s.recv(DNS_MAX_MESSAGE)
            if reply[:2] == query[:2]:
                return dns_parse(reply)
            if time.monotonic() >= deadline:
                raise socket.timeout("no answer with our id from %s:%d" % (host, port))


def dns_values(reply, rtype):
    """The values of the answer records of one type (name or number) in a dns_parse()."""
    rtype = _qtype(rtype)
    return [r[3] for r in reply["answers"] if r[1] == rtype]


def nsd_binary():
    for path in (shutil.which("nsd"), "/usr/sbin/nsd"):
        if path and os.access(path, os.X_OK):
            return path
    raise TestFailure("nsd is missing: run scripts/install-deps (package nsd)")


class Nsd:
    """NLnet Labs' nsd, authoritative for the zones given, on a free 127.0.0.1 port
    (UDP and TCP), in the foreground (-d) with config and zone files in h.dir/NAME.

    zones: {zone: records}, records in zone-file syntax with names relative to the zone
    ("mx1 60 IN A 127.0.0.2", "@ MX 10 mx1"); the harness writes $ORIGIN, $TTL
    (default_ttl), the SOA and an NS above them. The SOA's TTL and minimum are 1 s, so
    a negative answer may be cached for 1 s only. servfail_zones: zones listed in the
    config whose file does not exist: nsd answers SERVFAIL for them and every name
    below them (a subzone, e.g. "sf.dnstest.test" beside "dnstest.test", takes its
    names from the parent). set_zone() replaces a zone's records and waits until nsd
    serves them (SIGHUP: nsd 4 rereads changed zone files)."""

    SOA_MINIMUM = 1

    def __init__(self, h, zones, servfail_zones=(), default_ttl=60, name="nsd"):
        self.h = h
        self.binary = nsd_binary()
        self.dir = h.mkdir(name)
        self.name = name
        self.zones = {dns_name_key(z): text for z, text in zones.items()}
        self.servfail_zones = [dns_name_key(z) for z in servfail_zones]
        self.default_ttl = default_ttl
        self.serials = {z: 1 for z in self.zones}
        self.config = os.path.join(self.dir, "nsd.conf")
        self.proc = None
        self.port = None

    def _zone_path(self, zone):
        return os.path.join(self.dir, "%s.zone" % zone)

    def _write_zone(self, zone):
        text = ("$ORIGIN %s.\n$TTL %d\n"
                "@ %d IN SOA ns.%s. hostmaster.%s. %d 3600 600 86400 %d\n"
                "@ IN NS ns.%s.\n"
                % (zone, self.default_ttl, self.SOA_MINIMUM, zone, zone, self.serials[zone],
                   self.SOA_MINIMUM, zone))
        text += self.zones[zone].rstrip("\n") + "\n"
        tmp = self._zone_path(zone) + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self._zone_path(zone))

    def _write_config(self):
        d = self.dir
        lines = [
            "server:",
            "  ip-address: %s@%d" % (LOOPBACK, self.port),
            '  username: ""',
            '  chroot: ""',
            '  database: ""',
            '  zonesdir: "%s"' % d,
            '  pidfile: "%s"' % os.path.join(d, "nsd.pid"),
            '  xfrdfile: "%s"' % os.path.join(d, "xfrd.state"),
            '  zonelistfile: "%s"' % os.path.join(d, "zone.list"),
            '  logfile: "%s"' % os.path.join(d, "nsd.log"),
            "  server-count: 1",
            "  verbosity: 2",
            # Response rate limiting (on by default, 200 a second) would answer a
            # burst of queries from one client with truncated replies.
            "  rrl-ratelimit: 0",
            "remote-control:",
            "  control-enable: no",
        ]
        for zone in list(self.zones) + self.servfail_zones:
            lines += ["zone:", '  name: "%s"' % zone, '  zonefile: "%s"' % self._zone_path(zone)]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _serves(self, zone, serial):
        try:
            reply = dns_query(self.port, zone, "SOA", timeout=0.5)
        except OSError:
            return False
        return any(soa[2] == serial for soa in dns_values(reply, "SOA"))

    def start(self, attempts=3):
        for z in self.zones:
            self._write_zone(z)
        for z in self.servfail_zones:
            if z in self.zones or os.path.exists(self._zone_path(z)):
                raise TestFailure("nsd: servfail zone %s must have no zone file" % z)
        for _ in range(attempts):
            # free_port() probes TCP only; nsd exits when the UDP port is taken too.
            self.port = free_port()
            self._write_config()
            self.proc = Proc(self.h, self.name, [self.binary, "-c", self.config, "-d"], cwd=self.dir)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.alive():
                if all(self._serves(z, self.serials[z]) for z in self.zones):
                    log("nsd pid %d answering on %s:%d for %s" % (
                        self.proc.pid, LOOPBACK, self.port, ", ".join(self.zones)))
                    return self
                time.sleep(0.05)
            self.proc.stop(5)
            log("nsd did not come up on port %d; output:\n%s\nlog:\n%s" % (
                self.port, tail(self.proc.output), tail(os.path.join(self.dir, "nsd.log"))))
        raise TestFailure("nsd did not start")

    def set_zone(self, zone, records, timeout=10):
        """Replace a zone's records (as in the constructor), bump its serial, and wait
        until nsd answers with the new serial."""
        zone = dns_name_key(zone)
        if zone not in self.zones:
            raise TestFailure("nsd: set_zone of %s, which is not one of its zones" % zone)
        self.zones[zone] = records
        self.serials[zone] += 1
        self._write_zone(zone)
        deadline = time.monotonic() + timeout
        while True:
            # SIGHUP to the process started (nsd's xfrd with -d): it checks the zone
            # files' times and reloads the changed ones. Repeated in case a signal came
            # while a reload was under way.
            os.kill(self.proc.pid, signal.SIGHUP)
            hup_deadline = min(deadline, time.monotonic() + 1)
            while time.monotonic() < hup_deadline:
                if self._serves(zone, self.serials[zone]):
                    log("nsd serves %s serial %d" % (zone, self.serials[zone]))
                    return
                time.sleep(0.05)
            if time.monotonic() >= deadline or not self.proc.alive():
                raise TestFailure("nsd did not load serial %d of %s in %ss; log:\n%s" % (
                    self.serials[zone], zone, timeout, tail(os.path.join(self.dir, "nsd.log"))))

    def stop(self):
        return self.proc.stop(15) if self.proc else None


class DnsProxy:
    """A DNS forwarder in a thread of the test process: UDP and TCP on one free
    127.0.0.1 port, each query passed to upstream (nsd) and its answer relayed, so that
    a test can count what a client asked and make a server misbehave.

    count(name, qtype): queries seen for that name (any case, final dot or not) and
    type ("MX" or 15), over UDP and TCP, dropped or not. `drop`: names whose queries
    are never answered (a server that does not answer); `servfail`: names answered
    SERVFAIL by the proxy itself. Both are sets of dns_name_key() names, or of
    (dns_name_key() name, type number) pairs for one question type only, changed by
    the test at will. Stopped by Harness.cleanup like the processes."""

    UPSTREAM_TIMEOUT = 5.0
    POLL = 0.2          # how often the threads look at the stop flag, in seconds

    def __init__(self, h, upstream_port, upstream_host=LOOPBACK, name="dns-proxy"):
        self.h = h
        self.name = name
        self.output = os.path.join(h.dir, "%s.out" % name)
        self.upstream = (upstream_host, upstream_port)
        self.drop = set()
        self.servfail = set()
        self.port = None
        self._lock = threading.Lock()
        self._counts = collections.Counter()
        self._log = []
        self._stopping = threading.Event()
        self._threads = []
        self._udp = None
        self._tcp = None
        h.procs.append(self)

    def start(self, attempts=5):
        for _ in range(attempts):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((LOOPBACK, port))
            except OSError:
                tcp.close()
                udp.close()
                continue
            tcp.listen(64)
            self._tcp, self._udp, self.port = tcp, udp, port
            self._spawn(self._serve)
            log("dns proxy listening on %s:%d (UDP and TCP), forwarding to %s:%d"
                % (LOOPBACK, port, self.upstream[0], self.upstream[1]))
            return self
        raise TestFailure("dns proxy: no free port for both UDP and TCP")

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _note(self, msg, transport):
        """Count a query; returns what to do with it: "forward", "drop" or "servfail"."""
        q = dns_question(msg)
        name, qtype = q if q else ("", 0)
        action = "forward"
        with self._lock:
            if name in self.drop or (name, qtype) in self.drop:
                action = "drop"
            elif name in self.servfail or (name, qtype) in self.servfail:
                action = "servfail"
            self._counts[(name, qtype)] += 1
            self._log.append((time.time(), transport, name, qtype, action))
        return action

    @staticmethod
    def _servfail_reply(msg):
        # The query's id and question, QR set, opcode and RD kept, RA set, rcode 2.
        qid, flags = struct.unpack("!HH", msg[:4])
        question = b""
        if dns_question(msg):
            end = _dns_read_name(msg, 12)[1] + 4
            question = msg[12:end]
        flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2
        return struct.pack("!HHHHHH", qid, flags, 1 if question else 0, 0, 0, 0) + question

    def _serve(self):
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._udp, self._tcp], [], [], self.POLL)
            except (OSError, ValueError):
                return
            if self._udp in ready:
                try:
                    msg, peer = self._udp.recvfrom(DNS_MAX_MESSAGE)
                except OSError:
                    continue
                action = self._note(msg, "udp")
                if action == "servfail" and len(msg) >= 12:
                    self._udp.sendto(self._servfail_reply(msg), peer)
                elif action == "forward":
                    self._spawn(self._forward_udp, msg, peer)
            if self._tcp in ready:
                try:
                    conn, _ = self._tcp.accept()
                except OSError:
                    continue
                self._spawn(self._serve_tcp, conn)

    def _forward_udp(self, msg, peer):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(self.UPSTREAM_TIMEOUT)
                s.connect(self.upstream)
                s.send(msg)
                reply = s.recv(DNS_MAX_MESSAGE)
            self._udp.sendto(reply, peer)
        except OSError as e:
            self._error("udp forward: %s" % e)

    def _serve_tcp(self, conn):
        upstream = None
        conn.settimeout(self.POLL)
        try:
            while not self._stopping.is_set():
                try:
                    head = conn.recv(2, socket.MSG_PEEK)
                except socket.timeout:
                    continue
                if not head:
                    return
                conn.settimeout(self.UPSTREAM_TIMEOUT)
                length = struct.unpack("!H", _recv_exact(conn, 2))[0]
                msg = _recv_exact(conn, length)
                conn.settimeout(self.POLL)
                action = self._note(msg, "tcp")
                if action == "servfail" and len(msg) >= 12:
                    reply = self._servfail_reply(msg)
                elif action == "forward":
                    if upstream is None:
                        upstream = socket.create_connection(self.upstream, timeout=self.UPSTREAM_TIMEOUT)
                    upstream.sendall(struct.pack("!H", length) + msg)
                    reply = _recv_exact(upstream, struct.unpack("!H", _recv_exact(upstream, 2))[0])
                else:
                    continue
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError as e:
            self._error("tcp: %s" % e)
        finally:
            conn.close()
            if upstream is not None:
                upstream.close()

    def _error(self, text):
        if self._stopping.is_set():
            return
        with self._lock, open(self.output, "a") as f:
            f.write("%s %s\n" % (time.strftime("%H:%M:%S"), text))

    def count(self, name, qtype):
        with self._lock:
            return self._counts[(dns_name_key(name), _qtype(qtype))]

    def set_receive_buffer(self, nbytes):
        """Let the UDP socket hold nbytes of queries not yet read (SO_RCVBUFFORCE as
        root, else SO_RCVBUF up to net.core.rmem_max): the default (about 200 KiB, some
        270 queries) drops a burst of hundreds of lookups, which a client then retries
        only after its timeout. Returns the size the kernel reports."""
        try:
            self._udp.setsockopt(socket.SOL_SOCKET, 33, nbytes)  # SO_RCVBUFFORCE
        except OSError:
            self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
        return self._udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def queries(self):
        """[(unix time, "udp"/"tcp", name, qtype, action), ...] in arrival order."""
        with self._lock:
            return list(self._log)

    def alive(self):
        return self._udp is not None and not self._stopping.is_set()

    def stop(self, timeout=5):
        self._stopping.set()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        return 0


class Volleyd:
    """volleyd with a config file of its own and spool, queue and log under a fresh
    directory; the working directory is that directory too, so nothing leaks."""

    def __init__(self, h, route_port=None, name="volleyd", retry_initial="1s", retry_max="2s",
                 max_age="3d", extra_config="", smtp_config="", routes=None, star_route=True,
                 dns_config=""):
        """routes: more [routes] entries besides "*" -> route_port: {domain: port} for
        127.0.0.1:port, or {domain: "HOST:PORT[,HOST:PORT...]"} as written.
        star_route: False leaves "*" out of [routes] (route_port is then unused), so a
        domain without an entry is routed by DNS (MX). dns_config: lines of the [dns]
        table ('servers = ["127.0.0.1:5353"]\nallow_loopback = true'); extra_config must
        not hold a [dns] table of its own then."""
        self.h = h
        self.binary = h.binary("engine/volleyd")
        self.dir = h.mkdir(name)
        self.spool = os.path.join(self.dir, "spool")
        self.queue = os.path.join(self.dir, "queue")
        self.log_dir = os.path.join(self.dir, "log")
        self.route_port = route_port
        self.metrics_port = free_port()
        # Tests run in parallel: each volleyd gets its own admin port (the default,
        # 9465, would be taken by the first), unless the test sets [admin] itself.
        self.admin_port = free_port()
        if "[admin]" not in extra_config:
            extra_config = '\n[admin]\nlisten = "%s:%d"\n%s' % (LOOPBACK, self.admin_port, extra_config)
        # VOLLEY_TEST_SHARDS (tests/integration/CMakeLists.txt runs some tests
        # twice: with one shard and with several) sets [delivery] shards, unless
        # the test sets it itself.
        shards = os.environ.get("VOLLEY_TEST_SHARDS")
        if shards and "shards" not in extra_config:
            lines = extra_config.split("\n")
            at = [i for i, line in enumerate(lines) if line.replace(" ", "") == "[delivery]"]
            if at:
                lines.insert(at[0] + 1, "shards = %d" % int(shards))
                extra_config = "\n".join(lines)
            else:
                extra_config += "\n[delivery]\nshards = %d\n" % int(shards)
        if star_route and route_port is None:
            raise TestFailure('Volleyd: the "*" route needs route_port')
        # TOML allows a table once: with dns_config the [dns] table is written here.
        if dns_config and any(line.replace(" ", "").startswith("[dns]")
                              for line in extra_config.splitlines()):
            raise TestFailure("Volleyd: [dns] keys go in dns_config or in extra_config, not both")
        star = '"*" = "%s:%d"\n' % (LOOPBACK, route_port) if star_route else ""
        dns = "[dns]\n%s\n\n" % dns_config.strip("\n") if dns_config else ""
        for d in (self.spool, os.path.join(self.spool, "tmp"), os.path.join(self.spool, "incoming")):
            os.makedirs(d, exist_ok=True)
        self.config = os.path.join(self.dir, "volleyd.toml")
        with open(self.config, "w") as f:
            f.write(
                '[paths]\nspool = "%s"\nqueue = "%s"\nlog = "%s"\n\n'
                '[smtp]\nehlo_name = "volley-src.test"\n%s\n'
                '[routes]\n%s%s\n'
                '[retry]\ninitial = "%s"\nmax = "%s"\nmax_age = "%s"\n\n'
                '%s'
                '[metrics]\nlisten = "%s:%d"\n%s'
                % (self.spool, self.queue, self.log_dir, smtp_config, star,
                   "".join('"%s" = "%s"\n' % (dom, p if isinstance(p, str) else "%s:%d" % (LOOPBACK, p))
                           for dom, p in (routes or {}).items()),
                   retry_initial,
                   retry_max, max_age, dns, LOOPBACK, self.metrics_port, extra_config))
        self.output = os.path.join(h.dir, "%s.out" % name)
        self.name = name
        self.proc = None
        self.starts = 0

    @property
    def deliveries_path(self):
        return os.path.join(self.log_dir, "deliveries.jsonl")

    def start(self):
        self.proc = Proc(self.h, self.name, [self.binary, "--config", self.config], cwd=self.dir,
                         output=self.output)
        self.starts += 1
        time.sleep(0.2)
        if not self.proc.alive():
            raise TestFailure("volleyd exited at once with status %s:\n%s"
                              % (self.proc.popen.returncode, tail(self.output)))
        log("volleyd pid %d started (start #%d)" % (self.proc.pid, self.starts))
        return self

    def stop(self, timeout=30):
        rc = self.proc.stop(timeout) if self.proc else None
        log("volleyd stopped with status %s" % rc)
        return rc

    def kill9(self):
        self.proc.kill9()
        log("volleyd pid %d killed with SIGKILL" % self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def assert_alive(self):
        if not self.alive():
            raise TestFailure("volleyd died with status %s:\n%s"
                              % (self.proc.popen.returncode, tail(self.output)))
        return True

    def drop(self, name, text):
        """Write a job in spool/tmp and rename it into spool/incoming (the drop)."""
        tmp = os.path.join(self.spool, "tmp", name)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.spool, "incoming", name))
        log("dropped %s (%d bytes)" % (name, len(text)))

    def path(self, *parts):
        return os.path.join(self.spool, *parts)

    def exists(self, *parts):
        return os.path.exists(self.path(*parts))

    def read(self, *parts):
        with open(self.path(*parts), errors="replace") as f:
            return f.read()

    def deliveries(self, job=None):
        recs = read_jsonl(self.deliveries_path)
        return [r for r in recs if job is None or r.get("job") == job]

    def start_with_nofile(self, nofile):
        """start(), with volleyd's RLIMIT_NOFILE (soft and hard) set to nofile, as
        `ulimit -n NOFILE` would: prlimit(1) sets it and execs volleyd (same pid).
        Checked in /proc/PID/limits."""
        prlimit = tool_binary("prlimit", "util-linux")
        self.proc = Proc(self.h, self.name, [prlimit, "--nofile=%d:%d" % (nofile, nofile), "--",
                                             self.binary, "--config", self.config],
                         cwd=self.dir, output=self.output)
        self.starts += 1
        time.sleep(0.2)
        if not self.proc.alive():
            raise TestFailure("volleyd (ulimit -n %d) exited at once with status %s:\n%s"
                              % (nofile, self.proc.popen.returncode, tail(self.output)))
        got = nofile_limit(self.proc.pid)
        check(got == (nofile, nofile), "volleyd pid %d runs with RLIMIT_NOFILE %r, not %d"
              % (self.proc.pid, got, nofile))
        log("volleyd pid %d started with ulimit -n %d (start #%d)" % (self.proc.pid, nofile, self.starts))
        return self

    def fd_count(self):
        """Descriptors volleyd has open now (None when it is not running)."""
        return fd_count(self.proc.pid) if self.alive() else None


# ---------------------------------------------------------------- many domains, descriptors

def address_range(first, count):
    """count consecutive IPv4 addresses from `first` ("127.0.61.1"), across octets;
    all must be in 127.0.0.0/8 (the harness sends nowhere else)."""
    base = struct.unpack("!I", socket.inet_aton(first))[0]
    out = [socket.inet_ntoa(struct.pack("!I", base + i)) for i in range(count)]
    if not all(a.startswith("127.") for a in out) or out[-1].endswith(".255"):
        raise TestFailure("address_range(%s, %d) leaves 127.0.0.0/8 or takes a .255" % (first, count))
    return out


def domains_zone(n, hosts):
    """Records of the zone "test" (for h.nsd({"test": ...})) routing domain(0) ..
    domain(n-1) (d0001.test ...) by DNS, each by an MX of its own, mx.dNNNN.test, whose
    A record is hosts[i % len(hosts)]: every domain is a destination (a site) of its
    own in volleyd, however few the addresses. One zone and one file whatever n is, as
    `volley-load zone`."""
    lines = []
    for i in range(n):
        label = domain(i)[:-len(".test")]
        lines.append("%s MX 10 mx.%s\nmx.%s A %s" % (label, label, label, hosts[i % len(hosts)]))
    return "\n".join(lines) + "\n"


def fd_count(pid):
    """Open descriptors of a process (entries of /proc/PID/fd); None when it is gone."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def nofile_limit(pid):
    """(soft, hard) RLIMIT_NOFILE of a process from /proc/PID/limits, or None."""
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    fields = line.split()
                    return int(fields[3]), int(fields[4])
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeriodicSampler:
    """A thread calling self.sample() every `interval` seconds until stop(); sample()
    returns True when it took a sample, counted in `samples`. Subclasses set their
    own fields before calling this __init__, which starts the thread."""

    def __init__(self, interval):
        self.interval = interval
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self):
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set():
            if self.sample():
                self.samples += 1
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(5)


class FdSampler(PeriodicSampler):
    """A thread sampling a process's descriptor count every `interval` seconds until
    stop(): peak, last and samples taken (for a run's "descriptors at peak")."""

    def __init__(self, pid, interval=0.1):
        self.pid = pid
        self.peak = 0
        self.last = None
        super().__init__(interval)

    def sample(self):
        n = fd_count(self.pid)
        if n is None:
            return False
        self.last = n
        self.peak = max(self.peak, n)
        return True

    def stop(self):
        super().stop()
        return self.peak


def delivered_by_rcpt(records, job):
    """Counter of delivered records per recipient address for one job."""
    return collections.Counter(r.get("rcpt") for r in records
                               if r.get("job") == job and r.get("status") == "delivered")


def status_counts(records, job):
    return collections.Counter(r.get("status") for r in records if r.get("job") == job)


# ---------------------------------------------------------------- Prometheus

# Without proxies: an http_proxy in the environment must not carry loopback requests.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, timeout=10, data=None):
    """(status, body text) of a plain HTTP GET (or POST of a form when data is given);
    status 0 and the error text when nothing answered."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with _HTTP.open(urllib.request.Request(url, data=body), timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def _unescape_label(value):
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_metrics_text(text):
    """The samples of a Prometheus text exposition (format 0.0.4) as
    {(name, ((label, value), ...) sorted): float}; # lines are skipped. Raises
    ValueError naming the line when a sample line does not parse or repeats."""
    samples = {}
    for n, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = []
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            i = brace + 1
            while True:
                while i < len(line) and line[i] in " ,":
                    i += 1
                if i < len(line) and line[i] == "}":
                    i += 1
                    break
                eq = line.find("=", i)
                if eq == -1 or eq + 1 >= len(line) or line[eq + 1] != '"':
                    raise ValueError("metrics line %d: bad labels: %r" % (n, line))
                key = line[i:eq].strip()
                j = eq + 2
                while j < len(line) and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                if j >= len(line):
                    raise ValueError("metrics line %d: unterminated label value: %r" % (n, line))
                labels.append((key, _unescape_label(line[eq + 2:j])))
                i = j + 1
            rest = line[i:].split()
        else:
            name, _, tail_ = line.partition(" ")
            rest = tail_.split()
        if not rest:
            raise ValueError("metrics line %d: no value: %r" % (n, line))
        try:
            value = float(rest[0])   # float() reads NaN, +Inf and -Inf too
        except ValueError:
            raise ValueError("metrics line %d: bad value: %r" % (n, line))
        key = (name, tuple(sorted(labels)))
        if key in samples:
            raise ValueError("metrics line %d: sample repeated: %r" % (n, line))
        samples[key] = value
    return samples


class Metrics:
    """One scrape of an exporter, parsed (parse_metrics_text): get() one sample,
    select() and total() the samples of a name whose labels match.

    volleyd labels every volley_* sample node="NAME" (docs/metrics.md). The label
    is taken off here, so that tests read a family by its own labels; what it was
    is kept: `nodes` is the set of values seen, `nodeless` the volley_* samples
    that had none (a test of the label checks both)."""

    def __init__(self, samples, text=""):
        self.nodes = set()
        self.nodeless = []
        self.samples = {}
        for (name, labels), value in samples.items():
            if name.startswith("volley_"):
                node = dict(labels).get("node")
                if node is None:
                    self.nodeless.append(name)
                else:
                    self.nodes.add(node)
                    labels = tuple(lv for lv in labels if lv[0] != "node")
            self.samples[(name, labels)] = value
        self.text = text

    def select(self, name, **labels):
        """{labels dict as sorted tuple: value} of `name` with every label given equal."""
        return {lk: v for (n, lk), v in self.samples.items()
                if n == name and all(dict(lk).get(k) == str(w) for k, w in labels.items())}

    def total(self, name, **labels):
        return sum(self.select(name, **labels).values())

    def get(self, name, **labels):
        """The value of the one sample of `name` whose labels are exactly `labels`,
        or None when there is none."""
        return self.samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))

    def names(self):
        return {n for n, _ in self.samples}


def scrape(port, host=LOOPBACK, path="/metrics", timeout=10):
    """GET http://host:port/path and parse it: a Metrics. Raises TestFailure when it
    does not answer 200 or the text does not parse."""
    status, text = http_get("http://%s:%d%s" % (host, port, path), timeout)
    if status != 200:
        raise TestFailure("GET http://%s:%d%s: status %s: %s" % (host, port, path, status, text[:300]))
    try:
        return Metrics(parse_metrics_text(text), text)
    except ValueError as e:
        raise TestFailure("http://%s:%d%s: %s" % (host, port, path, e))


def tool_binary(name, package):
    for path in (shutil.which(name), "/usr/bin/" + name):
        if path and os.access(path, os.X_OK):
            return path
    raise TestFailure("%s is missing: run scripts/install-deps (package %s)" % (name, package))


def promtool(*args):
    """Run promtool with args: (exit status, output)."""
    r = subprocess.run([tool_binary("promtool", "prometheus")] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return r.returncode, r.stdout.decode("utf-8", "replace")


class PromQLError(TestFailure):
    """A query Prometheus refused (bad syntax, unknown function, ...): its message."""


class Prometheus:
    """A real Prometheus server (Debian package prometheus) in the foreground on a free
    127.0.0.1 port, with its TSDB, config and rule files in h.dir/NAME. It scrapes
    `targets` ("127.0.0.1:PORT" strings) as scrape job `job` every scrape_interval and
    evaluates the rule files given (copied in beside the config) every
    evaluation_interval. start() returns once /-/ready answers 200; the first samples
    are queryable a few seconds later (wait_for_query). Queries go through the HTTP
    API: query() returns the API's `data` and raises PromQLError for a query
    Prometheus refuses."""

    def __init__(self, h, targets, job="volley", rule_files=(), scrape_interval="1s",
                 evaluation_interval="1s", name="prometheus"):
        self.h = h
        self.binary = tool_binary("prometheus", "prometheus")
        self.dir = h.mkdir(name)
        self.name = name
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = []
        for src in rule_files:
            dst = os.path.join(self.dir, os.path.basename(src))
            shutil.copyfile(src, dst)
            self.rule_files.append(dst)
        self.config = os.path.join(self.dir, "prometheus.yml")
        self.proc = None
        self.port = None

    def _write_config(self):
        # JSON is YAML: no YAML writer needed.
        config = {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": self.job, "scrape_interval": self.scrape_interval,
                                "scrape_timeout": self.scrape_interval,
                                "static_configs": [{"targets": self.targets}]}],
        }
        with open(self.config, "w") as f:
            json.dump(config, f, indent=2)

    @property
    def url(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    def start(self, attempts=3, timeout=30):
        self._write_config()
        for _ in range(attempts):
            self.port = free_port()
            argv = [self.binary, "--config.file=" + self.config,
                    "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                    "--web.listen-address=%s:%d" % (LOOPBACK, self.port)]
            self.proc = Proc(self.h, self.name, argv, cwd=self.dir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.alive():
                if http_get(self.url + "/-/ready", 2)[0] == 200:
                    log("prometheus pid %d ready on %s:%d" % (self.proc.pid, LOOPBACK, self.port))
                    return self
                time.sleep(0.2)
            self.proc.stop(10)
            log("prometheus did not become ready on port %d; output:\n%s"
                % (self.port, tail(self.proc.output)))
        raise TestFailure("prometheus did not start")

    def api(self, path, params=None, timeout=15):
        """The `data` of a successful /api/v1/PATH answer (POSTed form params);
        PromQLError with Prometheus' error otherwise."""
        status, text = http_get(self.url + "/api/v1/" + path, timeout,
                                data=params if params is not None else None)
        try:
            answer = json.loads(text)
        except ValueError:
            raise TestFailure("prometheus /api/v1/%s: status %s, not JSON: %s" % (path, status, text[:300]))
        if answer.get("status") != "success":
            raise PromQLError("%s: %s" % (answer.get("errorType", "status %s" % status),
                                          answer.get("error", text[:300])))
        return answer["data"]

    def query(self, expr, at=None):
        """{"resultType", "result"} of an instant query of expr (now, or at unix time)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = "%.3f" % at
        return self.api("query", params)

    def series(self, match, lookback=300):
        """The label sets of the series matching selector `match` in the last lookback s."""
        now = time.time()
        return self.api("series", {"match[]": match, "start": "%.3f" % (now - lookback),
                                   "end": "%.3f" % now})

    def label_values(self, label, match=None):
        params = {"match[]": match} if match else {}
        status, text = http_get(self.url + "/api/v1/label/%s/values?%s"
                                % (urllib.parse.quote(label), urllib.parse.urlencode(params)), 15)
        answer = json.loads(text) if status else {}
        if answer.get("status") != "success":
            raise PromQLError("label values of %s (%s): %s" % (label, match, text[:300]))
        return answer["data"]

    def rules(self):
        """/api/v1/rules: {"groups": [...]}, each rule with its health and lastError."""
        return self.api("rules")

    def active_targets(self):
        return self.api("targets").get("activeTargets", [])

    def wait_for_query(self, expr, timeout=30, what=None):
        """Poll expr until it returns a non-empty result; returns that result list."""
        def ready():
            if not self.proc.alive():
                raise TestFailure("prometheus died:\n%s" % tail(self.proc.output))
            return self.query(expr)["result"]
        return wait_for(ready, timeout, what or "prometheus to return data for %s" % expr, 0.5)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stop(self):
        return self.proc.stop(15) if self.proc else None


# ---------------------------------------------------------------- the harness

class Harness:
    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.bindir = os.path.abspath(args.bindir)
        self.dir = tempfile.mkdtemp(prefix="volley-%s-" % name)
        self.procs = []

    def binary(self, rel):
        path = os.path.join(self.bindir, rel)
        if not os.access(path, os.X_OK):
            raise TestFailure("%s is not built (looked for %s)" % (os.path.basename(rel), path))
        return path

    def mkdir(self, name):
        path = os.path.join(self.dir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def sink(self, record=True, extra_args=(), listen_hosts=None, name="sink"):
        return Sink(self, record, extra_args, listen_hosts, name).start()

    def postfix_sink(self, **kw):
        return PostfixSink(self, **kw).start()

    def volleyd(self, route_port=None, **kw):
        return Volleyd(self, route_port, **kw)

    def nsd(self, zones, **kw):
        return Nsd(self, zones, **kw).start()

    def dns_proxy(self, upstream_port, **kw):
        return DnsProxy(self, upstream_port, **kw).start()

    def prometheus(self, targets, **kw):
        return Prometheus(self, targets, **kw).start()

    def cleanup(self, failed):
        for p in reversed(self.procs):
            try:
                if p.alive():
                    p.stop(10)
            except Exception as e:  # keep cleaning up the rest
                log("could not stop %s: %s" % (p.name, e))
        if failed or self.args.keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def main(test, name, add_args=None):
    parser = argparse.ArgumentParser(description=name)
    parser.add_argument("--bindir", required=True, help="the CMake build directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    if add_args:
        add_args(parser)
    args = parser.parse_args()
    # ctest sends SIGTERM on timeout in some versions: unwind so cleanup runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    h = Harness(name, args)
    failed = True
    try:
        log("%s: working in %s" % (name, h.dir))
        test(h)
        failed = False
    except TestFailure as e:
        log("FAIL: %s" % e)
    except BaseException:
        log("FAIL: unexpected error:\n%s" % traceback.format_exc())
    finally:
        if failed:
            for p in h.procs:
                if p.name.startswith("volleyd"):
                    log("tail of %s:\n%s" % (p.output, tail(p.output)))
                    break
        h.cleanup(failed)
    if failed:
        sys.exit(1)
    log("PASS: %s" % name)
