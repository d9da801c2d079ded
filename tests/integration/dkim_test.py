#!/usr/bin/python3
"""dkim_test.py - campaigns a mailbox provider accepts (issue 15): volleyd signs with
DKIM, adds Message-ID, Date and the one-click unsubscribe fields, and signs its VERP
return paths; an independent verifier (Debian's python3-dkim) checks every stored
message with the public keys served as TXT records by a real nsd.

Keys: made by `volleyctl dkim keygen` (RSA-2048 and Ed25519); the TXT records it prints
go into nsd's zones as printed. sender.test signs twice (RSA and Ed25519, relaxed/relaxed,
the dual signing operators do), other.test twice with simple/simple.

Receivers: two real Postfix instances (tests/integration/postfix_smtpd.py), both with
STARTTLS: "mx-a" offers CHUNKING and 8BITMIME (volleyd sends BDAT), "mx-b" offers
neither (volleyd sends DATA, dot-stuffed, and turns 8-bit bodies into quoted-printable
before it signs).

Jobs:
  plain   personalised text (folded long Subject, lines starting with '.', trailing
          blanks, a tab), one-click unsubscribe with {{unsubscribe_token}} and a mailto,
          List-Id, to both receivers
  multi   multipart/alternative with HTML, From a subdomain of sender.test (the parent's
          keys sign it), a body without placeholders (its body hash is computed once),
          to both receivers
  eight   8-bit UTF-8 single-part text from other.test (simple/simple), to both: mx-b
          gets it downgraded to quoted-printable, still verifiable
  utf8    an SMTPUTF8 message (UTF-8 recipient address and Subject) to mx-a

Checks on every stored message: each DKIM-Signature verifies; a changed body and a
changed signed header fail (the check can fail); Message-IDs are unique; a Date is
there; for the one-click jobs both List-Unsubscribe fields are in h= (over-signed:
twice); the Return-Path is a signed VERP address that `volleyctl verp decode` maps
back to the job and recipient, and a changed one does not verify.
Refused at intake, with the field named: one-click unsubscribe from a domain without a
key, a Message-ID without a placeholder, CR/LF in list_id.
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402
from postfix_smtpd import PostfixSmtpd, strip_trace_headers  # noqa: E402

import dkim  # noqa: E402  (python3-dkim)

SENDER = "news@sender.test"


def keygen(h, ctl, domain, selector, algorithm, path):
    """volleyctl dkim keygen; returns the zone-file line for the TXT record it prints."""
    r = subprocess.run([ctl, "dkim", "keygen", "--domain", domain, "--selector", selector,
                        "--algorithm", algorithm, "--out", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    check(r.returncode == 0, "volleyctl dkim keygen failed (%d): %s" % (r.returncode, r.stderr))
    check(os.stat(path).st_mode & 0o777 == 0o600, "%s is not mode 0600" % path)
    out = r.stdout.decode()
    strings = re.findall(r'"[^"]*"', out)
    check(strings, "no TXT strings in keygen output: %r" % out)
    check(all(len(s) - 2 <= 255 for s in strings), "a TXT string over 255 octets: %r" % out)
    # `volleyctl dkim record` prints it again, the same.
    r2 = subprocess.run([ctl, "dkim", "record", path, "--domain", domain, "--selector", selector],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    check(r2.returncode == 0 and re.findall(r'"[^"]*"', r2.stdout.decode()) == strings,
          "dkim record does not print what keygen printed: %r vs %r" % (r2.stdout, out))
    return "%s._domainkey TXT %s\n" % (selector, " ".join(strings))


def txt_lookup(nsd_port):
    def lookup(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        reply = harness.dns_query(nsd_port, name.rstrip("."), "TXT", tcp=True)
        for rdata in harness.dns_values(reply, 16):
            out, pos = b"", 0
            while pos < len(rdata):
                n = rdata[pos]
                out += rdata[pos + 1:pos + 1 + n]
                pos += 1 + n
            return out
        return None
    return lookup


def header_fields(msg):
    """[(lower name, value unfolded)] of a CRLF message's header section."""
    head = msg.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    fields = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + line)
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append((name.strip().lower(), value.strip()))
    return fields


def sig_tags(value):
    tags = {}
    for part in re.sub(r"\s+", "", value).split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k] = v
    return tags


def verify_all(msg, lookup, where):
    """Every DKIM-Signature of msg verifies; returns their tag dicts."""
    sigs = [sig_tags(v) for n, v in header_fields(msg) if n == "dkim-signature"]
    check(sigs, "%s: no DKIM-Signature" % where)
    for i in range(len(sigs)):
        check(verifies(msg, i, lookup),
              "%s: signature %d (%s, s=%s) does not verify" % (where, i, sigs[i].get("a"),
                                                                 sigs[i].get("s")))
    return sigs


def verifies(msg, idx, lookup):
    """dkimpy's verdict on signature idx; it raises (ValidationError) for some failures,
    a body hash mismatch among them, rather than returning False."""
    try:
        return dkim.DKIM(msg).verify(idx=idx, dnsfunc=lookup)
    except dkim.DKIMException as e:
        log("dkimpy: %s" % e)
        return False


def fails_when_tampered(msg, lookup, where):
    head, body = msg.split(b"\r\n\r\n", 1)
    changed_body = head + b"\r\n\r\n" + body + b"A line added after signing.\r\n"
    check(not verifies(changed_body, 0, lookup) and not verifies(changed_body, 1, lookup),
          "%s: a changed body still verifies" % where)
    changed_head = re.sub(rb"(?m)^Subject: ", b"Subject: Re: ", head, count=1) + b"\r\n\r\n" + body
    check(changed_head != msg, "%s: no Subject to change" % where)
    check(not verifies(changed_head, 0, lookup) and not verifies(changed_head, 1, lookup),
          "%s: a changed Subject still verifies" % where)


def crlf(raw):
    """A stored maildir message (trace fields first, LF endings) as sent (CRLF)."""
    trace, rest = strip_trace_headers(raw)
    return trace, rest.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


PLAIN = ("From: Sender News <news@sender.test>\n"
         "To: {{to}}\n"
         "Subject: Hello {{first}}, this is a long subject line that the sender folded\n"
         " onto a second line as RFC 5322 allows\n"
         "MIME-Version: 1.0\n"
         "Content-Type: text/plain; charset=us-ascii\n"
         "\n"
         "Dear {{first}},\n"
         ".a line that starts with a dot\n"
         ".\n"
         "trailing blanks   \n"
         "a\ttab and  two spaces\n"
         "\n"
         "Unsubscribe: https://unsub.sender.test/u/{{unsubscribe_token}}\n"
         "\n\n")

MULTI = ("From: \"Sender, News\" <letters@news.sender.test>\n"
         "To: {{to}}\n"
         "Subject: Multipart for {{first}}\n"
         "MIME-Version: 1.0\n"
         "Content-Type: multipart/alternative; boundary=\"b1\"\n"
         "\n"
         "--b1\n"
         "Content-Type: text/plain; charset=us-ascii\n"
         "\n"
         "Plain part, the same for everyone.\n"
         "--b1\n"
         "Content-Type: text/html; charset=us-ascii\n"
         "\n"
         "<html><body><p>HTML part</p>\n"
         ".<b>dot first</b></body></html>\n"
         "--b1--\n")

EIGHT = ("From: Other <hello@other.test>\n"
         "To: {{to}}\n"
         "Subject: Eight bit for {{first}}\n"
         "MIME-Version: 1.0\n"
         "Content-Type: text/plain; charset=utf-8\n"
         "Content-Transfer-Encoding: 8bit\n"
         "\n"
         "Grüße, {{first}}! Ça va très bien.   \n"
         ".dot line\n")

UTF8 = ("From: Sender News <news@sender.test>\n"
        "To: {{to}}\n"
        "Subject: Grüße an {{first}}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        "Héllo wörld.\n")


def job(job_id, msg, rcpts, **extra):
    header = {"job": job_id, "from": SENDER, "message": msg}
    header.update(extra)
    lines = [json.dumps(header)]
    lines.extend(json.dumps({"to": r, "vars": {"first": r.split("@")[0].title()}}) for r in rcpts)
    return "\n".join(lines) + "\n"


def test(h):
    ctl = h.binary("tools/volleyctl/volleyctl")
    keys = h.mkdir("keys")
    zones = {"sender.test": "", "other.test": ""}
    dkim_config = ""
    for domain, selector, algorithm, canon in (("sender.test", "s1", "rsa", "relaxed/relaxed"),
                                               ("sender.test", "e1", "ed25519", "relaxed/relaxed"),
                                               ("other.test", "r1", "rsa", "simple/simple"),
                                               ("other.test", "e2", "ed25519", "simple")):
        path = os.path.join(keys, "%s.%s.pem" % (selector, domain))
        zones[domain] += keygen(h, ctl, domain, selector, algorithm, path)
        dkim_config += ('[[dkim]]\ndomain = "%s"\nselector = "%s"\nkey_file = "%s"\n'
                        'canonicalization = "%s"\n\n' % (domain, selector, path, canon))
    secret = os.path.join(keys, "token-k1.key")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    nsd = h.nsd(zones)
    lookup = txt_lookup(nsd.port)

    a_rcpts = ["ann@inbox.test", "bob@inbox.test", "cy@inbox.test", "dee@inbox.test",
               "jörg@inbox.test"]
    b_rcpts = ["eve@seven.test", "fay@seven.test", "gus@seven.test"]
    mx_a = PostfixSmtpd(h, a_rcpts, domains=("inbox.test",), name="mx-a").start()
    mx_b = PostfixSmtpd(h, b_rcpts, domains=("seven.test",), name="mx-b",
                        extra_main_cf="smtpd_discard_ehlo_keywords = chunking, 8bitmime\n").start()
    d = h.volleyd(route_port=mx_a.port, routes={"seven.test": mx_b.port},
                  extra_config=dkim_config +
                  '[[token_key]]\nid = "k1"\nsecret_file = "%s"\n\n'
                  '[verp]\ndomain = "bounces.sender.test"\n' % secret)
    d.start()

    unsub = {"unsubscribe_url": "https://unsub.sender.test/one-click/{{unsubscribe_token}}?l={{first}}",
             "unsubscribe_mailto": "unsub@sender.test", "list_id": "Sender News <news.sender.test>"}
    jobs = {
        "plain": (PLAIN, ["ann@inbox.test", "bob@inbox.test", "eve@seven.test"], unsub),
        "multi": (MULTI, ["cy@inbox.test", "fay@seven.test"], {"list_id": "letters.news.sender.test"}),
        "eight": (EIGHT, ["dee@inbox.test", "gus@seven.test"], {}),
        "utf8": (UTF8, ["jörg@inbox.test"], {}),
    }
    for job_id, (msg, rcpts, extra) in jobs.items():
        d.drop(job_id + ".job", job(job_id, msg, rcpts, **extra))

    # Refused at intake, each naming its field.
    refusals = {
        "nokey.job": (job("nokey", PLAIN.replace("sender.test>", "unsigned.test>"),
                          ["ann@inbox.test"], **unsub), "no [[dkim]] key signs for the From domain unsigned.test"),
        "staticmid.job": (job("staticmid", "Message-ID: <same@sender.test>\n" + PLAIN,
                              ["ann@inbox.test"]), "Message-ID field has no placeholder"),
        "inject.job": (job("inject", PLAIN, ["ann@inbox.test"],
                           list_id="news.sender.test\r\nBcc: x@evil.test"), "list_id: contains CR or LF"),
    }
    for name, (text, _) in refusals.items():
        d.drop(name, text)

    total = sum(len(r) for _, r, _ in jobs.values())
    wait_for(lambda: d.assert_alive() and
             sum(1 for r in d.deliveries() if r.get("status") == "delivered") >= total,
             90, "%d deliveries" % total)
    not_delivered = [r for r in d.deliveries() if r.get("status") != "delivered"]
    check(not not_delivered, "records other than delivered: %s" % not_delivered)
    # Postfix answers BDAT LAST "Ok: N bytes queued as ID" and the end of DATA "Ok: queued
    # as ID": mx-a took every message by BDAT, mx-b by DATA.
    for r in d.deliveries():
        bdat = re.match(r"Ok: \d+ bytes queued as", r.get("response", "")) is not None
        want_bdat = r["rcpt"].endswith("@inbox.test")
        check(bdat == want_bdat, "%s: sent by %s, want %s (%s)" % (
            r["rcpt"], "BDAT" if bdat else "DATA", "BDAT" if want_bdat else "DATA", r.get("response")))
    for name, (_, why) in refusals.items():
        wait_for(lambda: d.exists("failed", name + ".error"), 30, "failed/%s.error" % name)
        error = d.read("failed", name + ".error")
        check(why in error, "%s refused for another reason: %r (want %r)" % (name, error, why))
        log("%s refused: %s" % (name, error.strip()))

    mx_a.wait_for_messages(len(a_rcpts), 60)
    mx_b.wait_for_messages(len(b_rcpts), 60)
    message_ids = []
    by_job = {}
    for mx, rcpts in ((mx_a, a_rcpts), (mx_b, b_rcpts)):
        for rcpt in rcpts:
            stored = mx.messages(rcpt)
            check(len(stored) == 1, "%s holds %d messages" % (rcpt, len(stored)))
            trace, msg = crlf(stored[0])
            fields = header_fields(msg)
            subject = dict(fields).get("subject", "")
            job_id = ("plain" if subject.startswith("Hello") else "multi" if "Multipart" in subject
                      else "eight" if "Eight" in subject else "utf8")
            where = "%s (%s via %s)" % (rcpt, job_id, mx.name)
            received = dict((n.lower(), v) for n, v in trace).get("received", "")
            want_proto = "UTF8SMTPS" if job_id == "utf8" else "ESMTPS"  # SMTPUTF8, STARTTLS
            check("with %s id" % want_proto in received,
                  "%s: not received with %s: %r" % (where, want_proto, received))
            sigs = verify_all(msg, lookup, where)
            check(len(sigs) == 2, "%s: %d signatures, want 2 (RSA and Ed25519)" % (where, len(sigs)))
            check(sorted(s["a"] for s in sigs) == ["ed25519-sha256", "rsa-sha256"],
                  "%s: algorithms %s" % (where, [s["a"] for s in sigs]))
            want_d = "other.test" if job_id == "eight" else "sender.test"
            for s in sigs:
                check(s["d"] == want_d, "%s: d=%s, want %s" % (where, s["d"], want_d))
                check("t" in s and "l" not in s, "%s: t= missing or l= present: %s" % (where, s))
                want_c = "simple/simple" if job_id == "eight" else "relaxed/relaxed"
                check(s.get("c", "simple/simple") in (want_c, want_c.split("/")[0]),
                      "%s: c=%s, want %s" % (where, s.get("c"), want_c))
                signed = s["h"].lower().split(":")
                for name in ("from", "to", "subject", "date"):
                    check(signed.count(name) == 2, "%s: %s not over-signed in h=%s" % (where, name, s["h"]))
                check("message-id" in signed, "%s: Message-ID not signed: h=%s" % (where, s["h"]))
                if job_id == "plain":
                    for name in ("list-unsubscribe", "list-unsubscribe-post"):
                        check(signed.count(name) == 2,
                              "%s: %s not signed (and over-signed) in h=%s" % (where, name, s["h"]))
            fails_when_tampered(msg, lookup, where)
            names = [n for n, _ in fields]
            check(names.count("message-id") == 1 and names.count("date") == 1,
                  "%s: Message-ID x%d, Date x%d" % (where, names.count("message-id"), names.count("date")))
            message_ids.append(dict(fields)["message-id"])
            check("feedback-id" in names, "%s: no Feedback-ID" % where)
            if mx is mx_b and job_id == "eight":
                check(b"Content-Transfer-Encoding: quoted-printable" in msg,
                      "%s: not downgraded to quoted-printable" % where)
            if job_id == "plain":
                fd = dict(fields)
                check(fd.get("list-unsubscribe-post") == "List-Unsubscribe=One-Click",
                      "%s: List-Unsubscribe-Post is %r" % (where, fd.get("list-unsubscribe-post")))
                lu = fd.get("list-unsubscribe", "")
                check(re.match(r"<https://unsub\.sender\.test/one-click/[a-z2-7]+\?l=%s>,\s*<mailto:unsub@sender\.test"
                               % rcpt.split("@")[0].title(), lu),
                      "%s: List-Unsubscribe is %r" % (where, lu))
                check(fd.get("list-id") == "Sender News <news.sender.test>", "%s: List-Id %r" % (where, fd.get("list-id")))
                token = re.search(r"one-click/([a-z2-7]+)", lu).group(1)
                check(("/u/%s" % token).encode() in msg, "%s: the body's token differs from the header's" % where)
            return_path = dict((n.lower(), v) for n, v in trace).get("return-path", "")
            by_job.setdefault(job_id, []).append((rcpt, return_path))
    check(len(set(message_ids)) == len(message_ids), "Message-IDs repeat: %s" % message_ids)

    # Signed VERP: each Return-Path decodes to its job and recipient.
    for job_id, pairs in by_job.items():
        for rcpt, return_path in pairs:
            addr = re.search(r"<([^>]*)>", return_path).group(1)
            check(re.match(r"b-[a-z2-7]+@bounces\.sender\.test$", addr, re.I),
                  "%s: Return-Path %r is not a VERP address" % (rcpt, return_path))
            check(len(addr.split("@")[0]) <= 64, "%s: local part over 64 octets" % addr)
            r = subprocess.run([ctl, "--config", d.config, "--json", "verp", "decode", addr],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            check(r.returncode == 0, "verp decode %s failed (%d): %s %s" % (addr, r.returncode, r.stdout, r.stderr))
            decoded = json.loads(r.stdout)
            check(decoded.get("job") == job_id and decoded.get("recipient") == rcpt,
                  "verp decode %s gave %s, want job %s recipient %s" % (addr, decoded, job_id, rcpt))
            local = addr.split("@")[0]
            flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
            bad = subprocess.run([ctl, "--config", d.config, "verp", "decode",
                                  flipped + "@bounces.sender.test"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            check(bad.returncode == 1, "a changed VERP address decoded (%d): %s" % (bad.returncode, bad.stdout))
    log("%d messages verified, %d signatures each; VERP decoded" % (len(message_ids), 2))
    rc = d.stop()
    check(rc == 0, "volleyd exited %s" % rc)


# Guarded: dkim_reload_test.py imports the helpers above.
if __name__ == "__main__":
    harness.main(test, "dkim")
