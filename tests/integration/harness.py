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
or always with --keep. Everything listens on and connects to 127.0.0.1 only, and every
mail domain is under .test.
"""

import argparse
import collections
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

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
    """volley-sink on a free port, with --stats and --record files."""

    def __init__(self, h, record=True, extra_args=()):
        self.h = h
        self.binary = h.binary("tools/sink/volley-sink")
        self.dir = h.mkdir("sink")
        self.stats_path = os.path.join(self.dir, "stats.json")
        self.record_path = os.path.join(self.dir, "record.jsonl") if record else None
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None

    def start(self, attempts=3):
        for _ in range(attempts):
            self.port = free_port()
            argv = [self.binary, "--listen", "%s:%d" % (LOOPBACK, self.port),
                    "--stats", self.stats_path]
            if self.record_path:
                argv += ["--record", self.record_path]
            argv += self.extra_args
            self.proc = Proc(self.h, "volley-sink", argv, cwd=self.dir)
            want = "listening on %s:%d" % (LOOPBACK, self.port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.alive():
                with open(self.proc.output, errors="replace") as f:
                    if want in f.read():
                        log("volley-sink pid %d listening on %s:%d" % (self.proc.pid, LOOPBACK, self.port))
                        return self
                time.sleep(0.05)
            self.proc.stop(5)
            log("volley-sink did not come up on port %d; output:\n%s" % (self.port, tail(self.proc.output)))
        raise TestFailure("volley-sink did not start")

    def stats(self):
        return read_json(self.stats_path) or {}

    def records(self):
        return read_jsonl(self.record_path)

    def stop(self):
        return self.proc.stop(15) if self.proc else None


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


class Volleyd:
    """volleyd with a config file of its own and spool, queue and log under a fresh
    directory; the working directory is that directory too, so nothing leaks."""

    def __init__(self, h, route_port, name="volleyd", retry_initial="1s", retry_max="2s",
                 max_age="3d", extra_config="", smtp_config="", routes=None):
        """routes: more [routes] entries besides "*" -> route_port: {domain: port} for
        127.0.0.1:port, or {domain: "HOST:PORT[,HOST:PORT...]"} as written."""
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
        for d in (self.spool, os.path.join(self.spool, "tmp"), os.path.join(self.spool, "incoming")):
            os.makedirs(d, exist_ok=True)
        self.config = os.path.join(self.dir, "volleyd.toml")
        with open(self.config, "w") as f:
            f.write(
                '[paths]\nspool = "%s"\nqueue = "%s"\nlog = "%s"\n\n'
                '[smtp]\nehlo_name = "volley-src.test"\n%s\n'
                '[routes]\n"*" = "%s:%d"\n%s\n'
                '[retry]\ninitial = "%s"\nmax = "%s"\nmax_age = "%s"\n\n'
                '[metrics]\nlisten = "%s:%d"\n%s'
                % (self.spool, self.queue, self.log_dir, smtp_config, LOOPBACK, route_port,
                   "".join('"%s" = "%s"\n' % (dom, p if isinstance(p, str) else "%s:%d" % (LOOPBACK, p))
                           for dom, p in (routes or {}).items()),
                   retry_initial,
                   retry_max, max_age, LOOPBACK, self.metrics_port, extra_config))
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


def delivered_by_rcpt(records, job):
    """Counter of delivered records per recipient address for one job."""
    return collections.Counter(r.get("rcpt") for r in records
                               if r.get("job") == job and r.get("status") == "delivered")


def status_counts(records, job):
    return collections.Counter(r.get("status") for r in records if r.get("job") == job)


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

    def sink(self, record=True, extra_args=()):
        return Sink(self, record, extra_args).start()

    def postfix_sink(self, **kw):
        return PostfixSink(self, **kw).start()

    def volleyd(self, route_port, **kw):
        return Volleyd(self, route_port, **kw)

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
