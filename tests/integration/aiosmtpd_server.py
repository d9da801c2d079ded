#!/usr/bin/python3
"""aiosmtpd_server.py - an SMTP server built on aiosmtpd (python3-aiosmtpd), a server
Volley's authors did not write, whose RCPT replies depend on the recipient's local part:

    ok-*      250 OK
    bounce-*  550 5.1.1 No such user
    defer-*   451 4.7.1 Try again later           (always)
    flaky-*   451 4.7.1 Try again later the first time that address is given in RCPT,
              250 OK every time after that
    other     550 5.1.1 No such user

Usage:
    aiosmtpd_server.py --port PORT --record FILE [--rcpt-log FILE] [--host 127.0.0.1]
                       [--tls-cert PEM --tls-key PEM [--tls-broken]] [--record-content]

--tls-cert/--tls-key offer STARTTLS with that certificate. --tls-broken offers it but
fails every handshake (the server allows only TLS 1.0, which OpenSSL 3 refuses), as a
server with a broken TLS set-up does.

--record gets one JSON line per accepted message:
    {"ts": <unix time>, "mail_from": "...", "rcpts": ["..."], "bytes": N, "subject": "...",
     "tls": bool, "peer": "<client address>", "helo": "<name the client gave in EHLO>"}
With --record-content each line also has "content_b64": the message's octets as
received (after dot-unstuffing), base64, for tests that compare them.
--rcpt-log gets one JSON line per RCPT command answered:
    {"ts": <unix time>, "rcpt": "...", "code": 451, "reply": "451 4.7.1 Try again later"}
Each line is written and flushed whole before the reply goes out, so a reader that sees
the reply's effect (a delivery-log record) finds the line in the file.

When it listens it prints "aiosmtpd_server listening on HOST:PORT" (flushed). SIGTERM or
SIGINT stops it; it exits 0. It only listens on the loopback network (127.0.0.0/8).
"""
import argparse
import base64
import collections
import email.parser
import email.policy
import ipaddress
import json
import signal
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller

REPLY_OK = "250 OK"
REPLY_BOUNCE = "550 5.1.1 No such user"
REPLY_DEFER = "451 4.7.1 Try again later"


class JsonlWriter:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", encoding="utf-8") if path else None

    def write(self, obj):
        if self.f is None:
            return
        line = json.dumps(obj, ensure_ascii=False) + "\n"
        with self.lock:
            self.f.write(line)
            self.f.flush()

    def close(self):
        if self.f is not None:
            self.f.close()


class OutcomeHandler:
    """aiosmtpd handler: handle_RCPT picks the reply by local part, handle_DATA records."""

    def __init__(self, record, rcpt_log, record_content=False):
        self.record = record
        self.record_content = record_content
        self.rcpt_log = rcpt_log
        self.rcpt_seen = collections.Counter()  # RCPTs per address, any reply
        self.messages = 0
        self.lock = threading.Lock()

    def verdict(self, address):
        local = address.rpartition("@")[0].lower()
        if local.startswith("ok-"):
            return REPLY_OK
        if local.startswith("defer-"):
            return REPLY_DEFER
        if local.startswith("flaky-"):
            with self.lock:
                first = self.rcpt_seen[address.lower()] == 1
            return REPLY_DEFER if first else REPLY_OK
        return REPLY_BOUNCE

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpt_seen[address.lower()] += 1
        reply = self.verdict(address)
        self.rcpt_log.write({"ts": time.time(), "rcpt": address, "code": int(reply[:3]),
                             "reply": reply})
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or b""
        try:
            msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
            # A raw 8-bit field (RFC 6532) comes back as an email.header.Header.
            subject = str(msg.get("Subject", ""))
        except Exception:  # a message we cannot parse is still recorded
            subject = None
        with self.lock:
            self.messages += 1
            n = self.messages
        entry = {"ts": time.time(), "mail_from": envelope.mail_from,
                 "rcpts": list(envelope.rcpt_tos), "bytes": len(content),
                 "subject": subject, "tls": session.ssl is not None,
                 "peer": session.peer[0] if session.peer else None,
                 "helo": session.host_name}
        if self.record_content:
            entry["content_b64"] = base64.b64encode(content).decode("ascii")
        self.record.write(entry)
        return "250 2.0.0 Ok: queued as m%d" % n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--record", required=True, help="JSON lines file of accepted messages")
    p.add_argument("--rcpt-log", help="JSON lines file of every RCPT and its reply")
    p.add_argument("--size-limit", type=int, default=33554432,
                   help="message size limit, advertised as SIZE in the EHLO reply")
    p.add_argument("--tls-cert", help="PEM certificate: offer STARTTLS")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")
    p.add_argument("--tls-broken", action="store_true", help="offer STARTTLS, fail the handshake")
    p.add_argument("--record-content", action="store_true",
                   help="record each message's octets too (content_b64)")
    args = p.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback or ipaddress.ip_address(args.host).version != 4:
        p.error("--host must be in 127.0.0.0/8")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    record = JsonlWriter(args.record)
    rcpt_log = JsonlWriter(args.rcpt_log)
    handler = OutcomeHandler(record, rcpt_log, record_content=args.record_content)
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_broken:
            tls_context.minimum_version = ssl.TLSVersion.TLSv1
            tls_context.maximum_version = ssl.TLSVersion.TLSv1
    controller = Controller(handler, hostname=args.host, port=args.port,
                            server_hostname="aiosmtpd.test", ready_timeout=10.0,
                            data_size_limit=args.size_limit, tls_context=tls_context)
    try:
        controller.start()
    except Exception as e:
        print("aiosmtpd_server: cannot listen on %s:%d: %s" % (args.host, args.port, e), flush=True)
        return 2
    print("aiosmtpd_server listening on %s:%d" % (args.host, args.port), flush=True)
    while not stop.wait(0.5):
        pass
    controller.stop()
    record.close()
    rcpt_log.close()
    print("aiosmtpd_server: stopped after %d messages" % handler.messages, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
