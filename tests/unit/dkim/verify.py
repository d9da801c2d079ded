#!/usr/bin/python3
"""verify.py - check dkim_crosscheck's signed messages with python3-dkim (dkimpy).

Usage: /usr/bin/python3 verify.py DIR

DIR holds <case>.data (an SMTP DATA stream: dot-stuffed, ending in ".\\r\\n"),
manifest.txt ("<case> <signature count>" per line) and dns/<name> (the TXT record of
<name> in zone-file syntax, as DnsTxtStrings writes it). For every case, every
DKIM-Signature must verify, and must fail on a copy with the body changed and on a
copy with the From field changed. Debian's python3-dkim is an implementation that
shares nothing with Volley's, so agreeing with it is evidence, not a tautology.
Exit status 0 when all hold, 1 otherwise.
"""
import os
import re
import sys

import dkim


def undata(stream):
    """The message a receiving server stores from a DATA stream (RFC 5321 4.5.2)."""
    if not stream.endswith(b"\r\n.\r\n") and stream != b".\r\n":
        raise ValueError("DATA stream does not end with CRLF . CRLF")
    lines = stream[:-3].split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


def txt_record(zone_text):
    """The record a resolver returns: the quoted strings, joined with nothing."""
    strings = re.findall(rb'"((?:[^"\\]|\\.)*)"', zone_text)
    for s in strings:
        if len(re.sub(rb"\\(\d{3}|.)", b"x", s)) > 255:
            raise ValueError("TXT string over 255 octets")
    return b"".join(re.sub(rb"\\(.)", rb"\1", s) for s in strings)


def dns_from(directory):
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        path = os.path.join(directory, "dns", name.rstrip("."))
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return txt_record(f.read())
    return dnsfunc


def split(message):
    at = message.find(b"\r\n\r\n")
    if at < 0:
        return message, b""
    return message[:at + 2], message[at + 2:]


def tamper_body(message):
    head, body = split(message)
    if not body.strip(b"\r\n"):
        return head + b"\r\nsomething added\r\n"
    # Change the first letter or digit of the body: survives every canonicalisation.
    m = re.search(rb"[A-Za-z0-9]", body)
    i = m.start()
    flipped = bytes([body[i] ^ 0x20]) if body[i:i + 1].isalpha() else b"X"
    return head + body[:i] + flipped + body[i + 1:]


def tamper_from(message):
    out, n = re.subn(rb"(?im)^(From:[^\r\n]*?)([A-Za-z0-9]+@)", rb"\1x\2", message, count=1)
    if n != 1:
        raise ValueError("no From address to change")
    return out


def verify_all(message, count, dnsfunc):
    """One result per signature: True, or why it failed (dkimpy raises on some)."""
    results = []
    for i in range(count):
        try:
            ok = dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc)
            results.append(True if ok else "signature did not verify")
        except dkim.DKIMException as e:
            results.append(str(e))
    return results


def main():
    directory = sys.argv[1]
    dnsfunc = dns_from(directory)
    failures = []
    cases = 0
    with open(os.path.join(directory, "manifest.txt")) as f:
        manifest = [line.split() for line in f if line.strip()]
    for name, count in manifest:
        count = int(count)
        cases += 1
        with open(os.path.join(directory, name + ".data"), "rb") as f:
            message = undata(f.read())
        found = len(re.findall(rb"(?im)^DKIM-Signature:", split(message)[0]))
        if found != count:
            failures.append("%s: %d DKIM-Signature fields, want %d" % (name, found, count))
            continue
        got = verify_all(message, count, dnsfunc)
        if any(r is not True for r in got):
            failures.append("%s: verification %s, want all True" % (name, got))
        for what, copy in (("body", tamper_body(message)), ("From", tamper_from(message))):
            got = verify_all(copy, count, dnsfunc)
            if any(r is True for r in got):
                failures.append("%s: changed %s still verifies: %s" % (name, what, got))
    for f in failures:
        print("FAIL " + f)
    print("verify.py: %d cases, %d failures" % (cases, len(failures)))
    return 1 if failures or cases == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
