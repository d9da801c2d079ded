"""postfix_smtpd.py - a private, real Postfix (smtpd -> cleanup -> qmgr -> virtual) for
integration tests: mail that volleyd sends is received by Postfix's smtpd on a free
127.0.0.1 port and delivered into one maildir per test address, where a test can read
the bytes that arrived.

    from postfix_smtpd import PostfixSmtpd
    with PostfixSmtpd(h, ["ann@inbox.test", "bob@inbox.test"]) as pf:
        d = h.volleyd(route_port=pf.port)
        ...
        pf.wait_for_messages(2, 30)
        raw = pf.messages("ann@inbox.test")[0]      # bytes, LF line endings

Everything lives in a temporary directory of the harness (h.dir/<name>/): its own
main.cf and master.cf (etc/), queue_directory, data_directory, maildirs (mail/), log
(log/maillog) and a self-signed certificate for STARTTLS. It is run with
`postfix -c <etc> start` / `stop`; the system's /etc/postfix is never read or written
(none of it is needed: Postfix's own defaults are used for what etc/main.cf does not
set). As root no registration of the directory in alternate_config_directories is
needed (Postfix checks that only for unprivileged callers).

What it accepts: RCPT to an address given to the constructor (domain inbox.test by
default) is delivered by virtual(8) to mail/<domain>/<local>/ (maildir) as user nobody;
another address at that domain is refused with "550 5.1.1 ... User unknown in virtual
mailbox table"; every other domain with "554 5.7.1 ... Relay access denied"
(reject_unauth_destination, also for 127.0.0.1), and nothing can leave the machine:
default_transport and relay_transport are error(8). No header is added or rewritten
for mail from the network (local_header_rewrite_clients is empty), so a stored message
is what the client sent, CRLF turned into LF, below the header fields Postfix prepends:
Return-Path, X-Original-To, Delivered-To and Received (see strip_trace_headers).

The master daemon detaches; it is stopped by stop() (the context manager calls it, and
so does the harness' cleanup, which stops everything in h.procs), and by a small
watchdog process if the test process dies without stopping it.
"""

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time

import harness
from harness import LOOPBACK, TestFailure, log, tail, wait_for

POSTFIX = "/usr/sbin/postfix"
DAEMON_DIR = "/usr/lib/postfix/sbin"

# Postfix prepends these to a message it delivers (virtual(8): Return-Path, Delivered-To,
# X-Original-To when enabled; smtpd/cleanup: Received).
TRACE_HEADERS = ("return-path", "x-original-to", "delivered-to", "received")

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop

myhostname = mx.postfix.test
mydomain = postfix.test
myorigin = $myhostname
# Nothing is delivered by local(8): no aliases, no local users, no NIS.
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
biff = no

inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP Postfix (volley test instance)
smtpd_peername_lookup = no
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_recipient_restrictions =
# Only the test domain: no permit_mynetworks, so not even 127.0.0.1 can relay.
smtpd_relay_restrictions = reject_unauth_destination
relay_domains =
smtputf8_enable = yes
# Store what the client sent: add or rewrite no header field for network mail.
local_header_rewrite_clients =
remote_header_rewrite_domain =
append_dot_mydomain = no

# Nothing leaves this instance, not even a bounce.
default_transport = error:outbound mail is disabled in this test instance
relay_transport = error:outbound mail is disabled in this test instance
notify_classes =
delay_warning_time = 0

virtual_mailbox_domains = {domains}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}

# Retry a failed local delivery quickly (a test waits seconds, not minutes).
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s

maillog_file = {log}
maillog_file_prefixes = /var, /dev/stdout, {root}

smtpd_tls_cert_file = {etc}/cert.pem
smtpd_tls_key_file = {etc}/key.pem
smtpd_tls_security_level = {tls_level}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
"""


def _master_running(pid):
    """True while pid is a live process (a zombie is not: PID 1 here may not reap)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


_WATCHDOG = r"""
import os, signal, subprocess, sys
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
fd, postfix, conf = int(sys.argv[1]), sys.argv[2], sys.argv[3]
said = b""
while True:
    chunk = os.read(fd, 16)
    if not chunk:
        break
    said += chunk
if b"stopped" not in said:  # the test process went away without stopping Postfix
    subprocess.run([postfix, "-c", conf, "stop"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
"""


class PostfixSmtpd:
    """A private Postfix instance; see the module docstring. `addresses` are the
    mailboxes it delivers to (all must be in `domains`); tls=False leaves STARTTLS
    unoffered."""

    def __init__(self, h, addresses, domains=("inbox.test",), name="postfix", tls=True,
                 user="nobody", extra_main_cf=""):
        self.h = h
        self.name = name
        self.addresses = list(addresses)
        self.domains = list(domains)
        for a in self.addresses:
            check_domain = a.rsplit("@", 1)[-1].lower()
            if check_domain not in self.domains:
                raise TestFailure("test bug: %s is not in %s" % (a, self.domains))
        self.tls = tls
        # More main.cf lines (they win over the defaults above them), e.g.
        # "smtpd_discard_ehlo_keywords = chunking, 8bitmime".
        self.extra_main_cf = extra_main_cf
        pw = pwd.getpwnam(user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.root = h.mkdir(name)
        self.etc = os.path.join(self.root, "etc")
        self.queue = os.path.join(self.root, "queue")
        self.data = os.path.join(self.root, "data")
        self.mail = os.path.join(self.root, "mail")
        self.log_path = os.path.join(self.root, "log", "maillog")
        self.output = self.log_path  # for the harness' failure report
        self.port = None
        self.master_pid = None
        self._watchdog = None
        self._watchdog_fd = None
        self._started = False

    # ------------------------------------------------------------ set-up

    def maildir(self, addr):
        local, _, dom = addr.rpartition("@")
        return os.path.join(self.mail, dom.lower(), local)

    def _write_config(self):
        # Postfix's daemons run as `postfix` (and virtual(8) as `user`) and chdir into the
        # queue directory: they must be able to pass through the harness' 0700 directory.
        os.chmod(self.h.dir, 0o711)
        os.chmod(self.root, 0o755)
        for d in (self.etc, self.queue, os.path.dirname(self.log_path), self.mail):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.data, exist_ok=True)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        os.chmod(self.data, 0o700)
        for dom in self.domains:
            d = os.path.join(self.mail, dom)
            os.makedirs(d, exist_ok=True)
            os.chown(d, self.uid, self.gid)
        with open(os.path.join(self.etc, "vmailbox"), "w") as f:
            for a in self.addresses:
                local, _, dom = a.rpartition("@")
                f.write("%s %s/%s/\n" % (a, dom.lower(), local))  # trailing /: maildir
        if not os.path.exists(os.path.join(self.etc, "cert.pem")):
            self._make_cert()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(queue=self.queue, data=self.data, domains=", ".join(self.domains),
                                   mail=self.mail, etc=self.etc, uid=self.uid, gid=self.gid,
                                   log=self.log_path, root=self.root,
                                   tls_level="may" if self.tls else "none"))
            f.write(self.extra_main_cf)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen="%s:%d" % (LOOPBACK, self.port)))

    def _make_cert(self):
        cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-nodes", "-subj", "/CN=mx.postfix.test",
               "-addext", "subjectAltName=DNS:mx.postfix.test", "-days", "2",
               "-keyout", os.path.join(self.etc, "key.pem"),
               "-out", os.path.join(self.etc, "cert.pem")]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise TestFailure("openssl req failed (%d): %s" % (r.returncode, r.stdout.decode(errors="replace")))
        os.chmod(os.path.join(self.etc, "key.pem"), 0o600)

    def postfix(self, *args, timeout=60):
        """Run `postfix -c <etc> ARGS...`; returns (exit status, output)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        r = subprocess.run([POSTFIX, "-c", self.etc] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env=env)
        return r.returncode, r.stdout.decode(errors="replace")

    def start(self, attempts=3):
        if not os.access(POSTFIX, os.X_OK):
            raise TestFailure("%s is missing: run scripts/install-deps (package postfix)" % POSTFIX)
        for _ in range(attempts):
            self.port = harness.free_port()
            self._write_config()
            rc, out = self.postfix("start")
            if rc == 0:
                self._started = True
                self.master_pid = self._read_master_pid()
                self._start_watchdog()
                if self.h is not None and self not in self.h.procs:
                    self.h.procs.append(self)  # the harness' cleanup stops it too
                try:
                    banner = wait_for(self._greeting, 15, "Postfix smtpd to answer 220 on port %d"
                                      % self.port, interval=0.05)
                except TestFailure:
                    self.stop()
                    raise TestFailure("Postfix smtpd did not answer on port %d; maillog:\n%s"
                                      % (self.port, tail(self.log_path)))
                log("postfix master pid %s, smtpd on %s:%d: %s"
                    % (self.master_pid, LOOPBACK, self.port, banner.strip()))
                return self
            log("postfix -c %s start failed (%d) on port %d:\n%s\nmaillog:\n%s"
                % (self.etc, rc, self.port, out, tail(self.log_path, 20)))
            self._stop_master()  # in case it came half-way up
        raise TestFailure("Postfix did not start (see above)")

    def _read_master_pid(self):
        path = os.path.join(self.queue, "pid", "master.pid")
        text = wait_for(lambda: os.path.exists(path) and open(path).read().strip(), 10,
                        "Postfix's master.pid")
        return int(text.split()[0])

    def _greeting(self):
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
                s.settimeout(5)
                data = b""
                while not data.endswith(b"\r\n"):
                    chunk = s.recv(512)
                    if not chunk:
                        return None
                    data += chunk
                s.sendall(b"QUIT\r\n")
                text = data.decode(errors="replace")
                return text if text.startswith("220 ") else None
        except OSError:
            return None

    def _start_watchdog(self):
        r, w = os.pipe()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(r), POSTFIX, self.etc],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(r,), start_new_session=True)
        os.close(r)
        self._watchdog_fd = w

    def _stop_watchdog(self):
        if self._watchdog_fd is not None:
            try:
                os.write(self._watchdog_fd, b"stopped")
            except OSError:
                pass
            os.close(self._watchdog_fd)
            self._watchdog_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    # ------------------------------------------------------------ stopping

    def alive(self):
        return self.master_pid is not None and _master_running(self.master_pid)

    def _stop_master(self, timeout=30):
        rc, out = self.postfix("stop")
        pid = self.master_pid
        if pid is None:
            return rc
        deadline = time.monotonic() + timeout
        while _master_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _master_running(pid):
            log("postfix master pid %d still running %ss after `postfix stop` (%d: %s): killing it"
                % (pid, timeout, rc, out.strip()))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return rc

    def stop(self, timeout=30):
        """`postfix -c <etc> stop`, then wait until the master is gone and the port is
        closed. Safe to call twice. Returns the exit status of `postfix stop` (0 when it
        stopped a running instance), or None when it was not running."""
        if not self._started:
            self._stop_watchdog()
            return None
        self._started = False
        t0 = time.monotonic()
        rc = self._stop_master(timeout)
        self._stop_watchdog()
        try:
            wait_for(lambda: not self._connectable(), 10, "port %d to close" % self.port)
        except TestFailure as e:
            log("postfix: %s" % e)
        log("postfix stopped (%d) in %.2fs" % (rc, time.monotonic() - t0))
        return rc

    def _connectable(self):
        return harness.connectable(self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------ what arrived

    def message_paths(self, addr=None):
        """Delivered message files (maildir new/ and cur/), oldest first."""
        out = []
        for a in ([addr] if addr else self.addresses):
            for sub in ("new", "cur"):
                d = os.path.join(self.maildir(a), sub)
                try:
                    names = os.listdir(d)
                except FileNotFoundError:
                    continue
                out.extend(os.path.join(d, n) for n in names)
        out.sort(key=lambda p: (os.stat(p).st_mtime_ns, p))
        return out

    def messages(self, addr=None):
        """The bytes of each message delivered (to addr, or to anyone), oldest first."""
        result = []
        for p in self.message_paths(addr):
            with open(p, "rb") as f:
                result.append(f.read())
        return result

    def wait_for_messages(self, n, timeout, addr=None):
        """Wait until at least n messages were delivered (to addr, or in all); returns
        their paths. Delivery is asynchronous: smtpd's 250 only means queued."""
        try:
            return wait_for(lambda: len(self.message_paths(addr)) >= n and self.message_paths(addr),
                            timeout, "%d message(s) in %s" % (n, addr or "the maildirs"),
                            interval=0.05)
        except TestFailure as e:
            raise TestFailure("%s (found %d); maillog:\n%s"
                              % (e, len(self.message_paths(addr)), tail(self.log_path, 30)))

    def maillog(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def strip_trace_headers(raw):
    """Split a stored message into (the header fields Postfix prepended, the rest).
    The prepended block is the leading run of TRACE_HEADERS fields (with their folded
    continuation lines); returns ([(name, full field text)], rest bytes)."""
    fields = []
    pos = 0
    while pos < len(raw):
        m = re.match(rb"([A-Za-z-]+):", raw[pos:])
        if not m or m.group(1).decode().lower() not in TRACE_HEADERS:
            break
        end = raw.find(b"\n", pos)
        while end >= 0 and raw[end + 1:end + 2] in (b" ", b"\t"):
            end = raw.find(b"\n", end + 1)
        end = len(raw) if end < 0 else end + 1
        fields.append((m.group(1).decode(), raw[pos:end].decode(errors="replace")))
        pos = end
    return fields, raw[pos:]
