#!/usr/bin/python3
"""feedback_test.py - the whole feedback loop, end to end, with a real MTA's bounces.

A real Postfix (postfix_smtpd.py) is the recipients' MX for inbox.test. It takes every
recipient at RCPT (smtpd_reject_unlisted_recipient = no) and delivers into maildirs, so
an unknown user is bounced after the SMTP conversation: Postfix's own bounce daemon
mails an RFC 3464 DSN to the envelope sender, which is volleyd's signed VERP address
(b-<token>@bounces.sender.test); a transport map sends that domain to volleyd's
[inbound] listener (over STARTTLS, with a certificate the test makes).

Job "first" (ann, bob, cy, dee, erin; bob and cy are unknown to Postfix):
  - bob and cy: delivered, then bounced by Postfix: `bounced_async` (5.1.1,
    invalid_recipient, matched by verp, Reporting-MTA Postfix's) and suppressed;
  - ann: an ARF abuse report built as RFC 5965's example (text/rfc822-headers holding
    the headers Postfix stored, the To field redacted), sent with smtplib to the
    listener: matched by the Volley-Trace field, `complained`, suppressed;
  - dee: curl POSTs List-Unsubscribe=One-Click to the URL of her message's
    List-Unsubscribe field (pointed at the local endpoint): 200, `unsubscribed`,
    suppressed; a GET of the same URL changes nothing, a forged token gets 400;
  - erin: a DSN for her sent to a forged VERP address, and an ARF whose trace is
    altered: `unmatched`, nothing suppressed (volleyctl suppress check says so);
  - an auto-reply and a person's reply to the bounce domain: no record at all.
Job "second" to the same five: ann, bob, cy and dee get `suppressed` records at intake
and are never queued; only erin reaches Postfix. `volleyctl suppress check` and the
job's counters agree.

Then a reload of the feedback policy (issue 19): erin's mailbox is full (a DSN 5.2.2
returning her message's headers, matched by its Volley-Trace). Under the default
soft_bounce_limit (3) one soft bounce suppresses nothing; after a SIGHUP with
`[suppression] soft_bounce_limit = 1` the next one does (reason soft_bounce).
"""
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402
from postfix_smtpd import PostfixSmtpd  # noqa: E402

DOMAIN = "inbox.test"
KNOWN = ["ann@inbox.test", "dee@inbox.test", "erin@inbox.test"]
UNKNOWN = ["bob@inbox.test", "cy@inbox.test"]
EVERYONE = ["ann@inbox.test", "bob@inbox.test", "cy@inbox.test", "dee@inbox.test",
            "erin@inbox.test"]
BOUNCES = "bounces.sender.test"
MESSAGE = ("From: News <news@sender.test>\nTo: {{to}}\nSubject: Hello {{first}}\n\n"
           "Hello {{first}}, this is the newsletter.\n")


def make_cert(h, name):
    d = h.mkdir(name)
    key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=in.sender.test",
                        "-days", "2", "-keyout", key, "-out", cert],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    check(r.returncode == 0, "openssl req: %s" % r.stdout.decode(errors="replace"))
    return cert, key


def job(job_id, rcpts):
    # The public URL is the TLS proxy's; the test plays the proxy and sends the
    # request on to the endpoint's loopback port with the same path.
    header = {"unsubscribe_url": "https://u.sender.test/u/{{unsubscribe_token}}",
              "list_id": "news.sender.test"}
    lines = [harness.header_line(job_id, sender="news@sender.test", msg=MESSAGE, **header)]
    lines += [harness.rcpt_line(a, first=a.split("@")[0].capitalize()) for a in rcpts]
    return "\n".join(lines) + "\n"


def records(d, job_id=None, status=None):
    return [r for r in d.deliveries(job_id)
            if status is None or r.get("status") == status]


def volleyctl(h, d, *args):
    r = subprocess.run([h.binary("tools/volleyctl/volleyctl"), "--config", d.config, *args],
                       capture_output=True, text=True, timeout=60)
    log("volleyctl %s -> %d %s%s" % (" ".join(args), r.returncode, r.stdout.strip(),
                                     r.stderr.strip()))
    return r


def send(port, mail_from, rcpt, message):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("reports.isp.test")
        s.sendmail(mail_from, [rcpt], message)


def arf(headers, trace_ok=True):
    """An RFC 5965 abuse report (appendix B's shape) returning `headers` (the reported
    message's header block) with the recipient's address removed, as many providers do."""
    headers = re.sub(r"(?m)^To: .*$", "To: [redacted]", headers)
    if not trace_ok:
        # One character of the MAC changed: well-formed, but it does not verify.
        headers = re.sub(r"(?m)^(Volley-Trace: \w{30})(\w)", lambda m: m.group(1) +
                         ("b" if m.group(2) != "b" else "c"), headers)
    return ("From: <abuse@isp.test>\r\nTo: <fbl@%s>\r\nSubject: FW: Hello\r\n"
            "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\nMessage-ID: <arf-%d@isp.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report;\r\n"
            " boundary=\"part1_13d.2e68ed54_boundary\"\r\n\r\n"
            "--part1_13d.2e68ed54_boundary\r\nContent-Type: text/plain; charset=\"US-ASCII\"\r\n\r\n"
            "This is an email abuse report for an email message received from IP\r\n"
            "127.0.0.1 on Sun, 06 Dec 2026 11:58:00 +0000.\r\n\r\n"
            "--part1_13d.2e68ed54_boundary\r\nContent-Type: message/feedback-report\r\n\r\n"
            "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
            "Original-Mail-From: <news@sender.test>\r\nArrival-Date: Sun, 06 Dec 2026 11:58:00 +0000\r\n"
            "Source-IP: 127.0.0.1\r\nReported-Domain: sender.test\r\n\r\n"
            "--part1_13d.2e68ed54_boundary\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            "%s\r\n--part1_13d.2e68ed54_boundary--\r\n"
            % (BOUNCES, int(time.time() * 1000), headers.replace("\n", "\r\n").rstrip("\r\n")))


def dsn(rcpt):
    return ("From: MAILER-DAEMON@mx.isp.test\r\nTo: <someone@%s>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n\r\n"
            "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.isp.test\r\n\r\n"
            "Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 <%s>: User unknown\r\n\r\n"
            "--b1--\r\n" % (BOUNCES, rcpt, rcpt))


def full_mailbox_dsn(rcpt, headers):
    """A DSN for a full mailbox returning the message's header block (so that its
    Volley-Trace names the recipient), sent to the bounce domain but not to a VERP address."""
    return ("From: MAILER-DAEMON@mx.isp.test\r\nTo: <postmaster@%s>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-%d@isp.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b2\"\r\n\r\n"
            "--b2\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n\r\n"
            "--b2\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.isp.test\r\n\r\n"
            "Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: 5.2.2\r\n"
            "Diagnostic-Code: smtp; 552 5.2.2 <%s>: Mailbox full\r\n\r\n"
            "--b2\r\nContent-Type: text/rfc822-headers\r\n\r\n%s\r\n--b2--\r\n"
            % (BOUNCES, int(time.time() * 1000), rcpt, rcpt,
               headers.replace("\n", "\r\n").rstrip("\r\n")))


def stored_headers(pf, addr):
    raw = pf.messages(addr)[0].decode("utf-8", "replace")
    return raw.split("\n\n", 1)[0]


def test(h):
    ctl = h.binary("tools/volleyctl/volleyctl")
    keys = h.mkdir("keys")
    secret = os.path.join(keys, "k1.key")
    with open(secret, "wb") as f:
        f.write(b"a token secret of well over thirty-two octets, for the test\n")
    os.chmod(secret, 0o600)
    dkim_key = os.path.join(keys, "s1.pem")
    r = subprocess.run([ctl, "dkim", "keygen", "--domain", "sender.test", "--selector", "s1",
                        "--algorithm", "ed25519", "--out", dkim_key],
                       capture_output=True, timeout=60)
    check(r.returncode == 0, "dkim keygen: %r" % r.stderr)
    cert, key = make_cert(h, "inbound-cert")
    inbound_port = harness.free_port()
    unsub_port = harness.free_port()

    # The MX: takes every recipient at RCPT, bounces the unknown ones afterwards to
    # the VERP address, whose domain goes to volleyd's listener.
    transport_dir = h.mkdir("transport")
    with open(os.path.join(transport_dir, "transport"), "w") as f:
        f.write("%s smtp:[127.0.0.1]:%d\n" % (BOUNCES, inbound_port))
    pf = PostfixSmtpd(h, KNOWN, domains=(DOMAIN,), name="mx", extra_main_cf=(
        "smtpd_reject_unlisted_recipient = no\n"
        "transport_maps = texthash:%s/transport\n"
        "smtp_tls_security_level = encrypt\n"
        "smtp_tls_CAfile = %s\n"
        "smtp_tls_loglevel = 1\n" % (transport_dir, cert))).start()

    d = h.volleyd(route_port=pf.port, extra_config=(
        '[[dkim]]\ndomain = "sender.test"\nselector = "s1"\nkey_file = "%s"\n\n'
        '[[token_key]]\nid = "k1"\nsecret_file = "%s"\n\n'
        '[verp]\ndomain = "%s"\n\n'
        '[inbound]\nlisten = ["127.0.0.1:%d"]\ndomains = ["%s"]\n'
        'tls_cert_file = "%s"\ntls_key_file = "%s"\n\n'
        '[unsubscribe]\nlisten = "127.0.0.1:%d"\n'
        % (dkim_key, secret, BOUNCES, inbound_port, BOUNCES, cert, key, unsub_port)))
    d.start()
    wait_for(lambda: d.assert_alive() and harness.connectable(inbound_port)
             and harness.connectable(unsub_port), 30, "volleyd's listeners")

    d.drop("first.job", job("first", EVERYONE))
    wait_for(lambda: len(records(d, "first", "delivered")) == 5, 60, "five delivered")
    pf.wait_for_messages(3, 60)
    # Postfix bounces bob and cy to their VERP addresses; volleyd's listener takes the DSNs.
    wait_for(lambda: len(records(d, "first", "bounced_async")) == 2, 90,
             "the two DSNs from Postfix recorded")
    for r in records(d, "first", "bounced_async"):
        check(r["rcpt"] in UNKNOWN, "bounced_async for %s" % r["rcpt"])
        check(r["enhanced"] == "5.1.1" and r["class"] == "invalid_recipient", "DSN record %r" % r)
        check(r["via"] == "dsn" and r["matched_by"] == "verp", "DSN record %r" % r)
        check(r.get("reporting_mta") == "mx.postfix.test", "Reporting-MTA in %r" % r)
    check(re.search(r"TLS connection established to [^ ]*127\.0\.0\.1", pf.maillog()) is not None,
          "Postfix did not deliver the DSNs over TLS:\n" + harness.tail(pf.log_path))

    # ann complains: the ARF returns her message's headers with her address removed.
    send(inbound_port, "", "fbl@%s" % BOUNCES, arf(stored_headers(pf, "ann@inbox.test")))
    wait_for(lambda: len(records(d, "first", "complained")) == 1, 30, "the complaint recorded")
    c = records(d, "first", "complained")[0]
    check(c["rcpt"] == "ann@inbox.test" and c["matched_by"] == "trace" and
          c["feedback_type"] == "abuse", "complaint record %r" % c)

    # dee unsubscribes with one click; a GET (a link scanner) changes nothing.
    lu = re.search(r"(?m)^List-Unsubscribe: <([^>]+)>", stored_headers(pf, "dee@inbox.test"))
    check(lu is not None, "no List-Unsubscribe in dee's message")
    check(lu.group(1).startswith("https://u.sender.test/u/"), "List-Unsubscribe: " + lu.group(1))
    url = lu.group(1).replace("https://u.sender.test", "http://127.0.0.1:%d" % unsub_port)
    get = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                          url], capture_output=True, text=True, timeout=30)
    check(get.stdout == "200", "GET %s: %s" % (url, get.stdout))
    time.sleep(0.5)
    check(not records(d, "first", "unsubscribed"), "a GET unsubscribed someone")
    forged = url[:-1] + ("a" if url[-1] != "a" else "b")
    bad = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                          "-d", "List-Unsubscribe=One-Click", forged],
                         capture_output=True, text=True, timeout=30)
    check(bad.stdout == "400", "forged token: %s" % bad.stdout)
    post = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                           "-d", "List-Unsubscribe=One-Click", url],
                          capture_output=True, text=True, timeout=30)
    check(post.stdout == "200", "POST %s: %s" % (url, post.stdout))
    wait_for(lambda: len(records(d, "first", "unsubscribed")) == 1, 30, "the unsubscribe recorded")
    check(records(d, "first", "unsubscribed")[0]["rcpt"] == "dee@inbox.test", "unsubscribed whom?")

    # Forgeries about erin: a DSN to a made-up VERP address, an ARF with an altered trace.
    send(inbound_port, "", "b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@%s" % BOUNCES,
         dsn("erin@inbox.test"))
    send(inbound_port, "", "fbl@%s" % BOUNCES,
         arf(stored_headers(pf, "erin@inbox.test"), trace_ok=False))
    # And two messages that are not reports of anything.
    send(inbound_port, "erin@inbox.test", "b-x@%s" % BOUNCES,
         "From: erin@inbox.test\r\nSubject: Out of Office\r\nAuto-Submitted: auto-replied\r\n\r\n"
         "I am away.\r\n")
    send(inbound_port, "erin@inbox.test", "someone@%s" % BOUNCES,
         "From: erin@inbox.test\r\nSubject: Re: Hello\r\n\r\nThanks!\r\n")
    wait_for(lambda: len(records(d, None, "unmatched")) >= 2, 30, "the forgeries logged unmatched")
    wait_for(lambda: not os.listdir(d.path("feedback", "new")), 30, "every inbound message handled")
    for r in records(d, None, "unmatched"):
        check(r["job"] == "" and r["line"] == 0, "unmatched record names a job: %r" % r)
    check(volleyctl(h, d, "suppress", "check", "erin@inbox.test").returncode == 1,
          "erin was suppressed by a forgery")
    for a in ["ann@inbox.test", "bob@inbox.test", "cy@inbox.test", "dee@inbox.test"]:
        check(volleyctl(h, d, "suppress", "check", a).returncode == 0, "%s is not suppressed" % a)

    # The second job skips the four: suppressed at intake, never queued, never sent.
    before = len(pf.messages())
    d.drop("second.job", job("second", EVERYONE))
    wait_for(lambda: len(records(d, "second", "delivered")) == 1 and
             len(records(d, "second", "suppressed")) == 4, 60, "second job: 1 sent, 4 suppressed")
    check(records(d, "second", "delivered")[0]["rcpt"] == "erin@inbox.test", "who was sent?")
    check(sorted(r["rcpt"] for r in records(d, "second", "suppressed")) ==
          ["ann@inbox.test", "bob@inbox.test", "cy@inbox.test", "dee@inbox.test"],
          "suppressed: %r" % records(d, "second", "suppressed"))
    pf.wait_for_messages(before + 1, 30)
    time.sleep(1)
    check(len(pf.messages()) == before + 1, "Postfix got more than erin's message")
    j = volleyctl(h, d, "--json", "job", "second")
    check(j.returncode == 0 and '"suppressed":4' in j.stdout.replace(" ", ""),
          "job second: %s" % j.stdout)
    j = volleyctl(h, d, "--json", "job", "first")
    flat = j.stdout.replace(" ", "")
    check('"bounced_async":2' in flat and '"complained":1' in flat and '"unsubscribed":1' in flat,
          "job first: %s" % j.stdout)

    # A reloaded soft_bounce_limit is the one erin's next soft bounce meets.
    def erin_full():
        return [r for r in records(d, "first", "bounced_async")
                if r["rcpt"] == "erin@inbox.test" and r["class"] == "mailbox_full"]
    full = full_mailbox_dsn("erin@inbox.test", stored_headers(pf, "erin@inbox.test"))
    send(inbound_port, "", "postmaster@%s" % BOUNCES, full)
    wait_for(lambda: len(erin_full()) == 1, 30, "erin's soft bounce recorded")
    check(erin_full()[0]["matched_by"] == "trace", "soft bounce record %r" % erin_full()[0])
    check(volleyctl(h, d, "suppress", "check", "erin@inbox.test").returncode == 1,
          "one soft bounce of the default limit 3 suppressed erin")
    with open(d.config) as f:
        text = f.read()
    with open(d.config + ".new", "w") as f:
        f.write(text + "\n[suppression]\nsoft_bounce_limit = 1\n")
    os.rename(d.config + ".new", d.config)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: d.assert_alive() and
             "config reloaded from %s (1 change: suppression.soft_bounce_limit)" % d.config
             in open(d.output, errors="replace").read(), 10, "the reload logged")
    send(inbound_port, "", "postmaster@%s" % BOUNCES, full)
    wait_for(lambda: len(erin_full()) == 2, 30, "erin's second soft bounce recorded")
    ok = volleyctl(h, d, "suppress", "check", "erin@inbox.test")
    check(ok.returncode == 0 and "soft_bounce" in ok.stdout,
          "the reloaded limit 1 did not suppress erin: %s" % ok.stdout)
    check("restart volleyd to apply" not in open(d.output, errors="replace").read(),
          "soft_bounce_limit asked for a restart")
    check(d.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "feedback")
