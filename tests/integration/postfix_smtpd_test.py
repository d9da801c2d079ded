#!/usr/bin/python3
"""postfix_smtpd_test.py - volleyd delivers into a real Postfix (smtpd -> cleanup ->
qmgr -> virtual(8) maildirs; tests/integration/postfix_smtpd.py), and every message
arrives byte for byte as the job asked for.

Two jobs:
  plain   one message for three recipients (one transaction, three RCPTs), written
          with bare LF line endings, no final line break, a lone "." line, lines
          starting with ".", UTF-8 text, a 997-octet line and a 998-octet line that
          starts with "." (999 octets on the wire once dot-stuffed);
  merge   a personalised template (one transaction per recipient) with the job's
          `headers`, a VERP `return_path`, placeholders in headers and body (with
          and without spaces inside the braces), numbers and booleans rendered as
          written, `{{to}}` overridden by a `to` variable, a recipient without vars
          (placeholders render empty), mixed CRLF and LF line endings, and one recipient
          Postfix does not know (550 5.1.1: bounced, never retried).

Checks: each mailbox holds exactly one message, equal byte for byte to the message
rendered by the rules of docs/jobs.md (CRLF stored as LF) below the trace fields
Postfix prepends (Return-Path, X-Original-To, Delivered-To, Received); Return-Path is
the envelope sender (the rendered return_path); the delivery log has one `delivered`
record per recipient whose response is Postfix's "Ok: queued as <id>" (after DATA) or
"Ok: <N> bytes queued as <id>" with N the rendered message's size (after BDAT), whose id is
the one in that message's Received field and in Postfix's maillog ("status=sent"); the
unknown recipient has one `bounced` 550 5.1.1 record and Postfix saw its RCPT once.
When volleyd does STARTTLS (probed: see volleyd_tls_support), Received must show the
TLS version and cipher; until then that check is skipped with a note, and the messages
must have come in plain ESMTP. One connection carries them all, so transactions go
pipelined behind one another (volley_transactions_pipelined_total at least 1), and
still every one arrives once, byte for byte, and the unknown recipient is asked once.
The unknown recipient's transaction (BDAT refused: nobody to deliver to) is not the
last, so the one behind it goes out before that failure is known: Postfix takes its
MAIL, and it is delivered at attempt 1 like the rest (a 451 4.5.0 deferral would show).
"""
import collections
import datetime
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402
from postfix_smtpd import PostfixSmtpd, strip_trace_headers  # noqa: E402

SENDER = "sender@volley-src.test"
PLAIN_JOB = "pf-plain"
MERGE_JOB = "pf-merge"
PLAIN_RCPTS = ["ann@inbox.test", "bob@inbox.test", "cid@inbox.test"]
UNKNOWN = "nobody-here@inbox.test"
RETRY_INITIAL = 1.0
QUIET = 2.5  # > retry.initial * 1.2 jitter + the engine's tick: a retry would show by then

UTF8_LINE = "Grüße aus Köln – “quoted” ✓ 日本語 🙂"
LONG_997 = "L" * 997
DOT_998 = "." + "D" * 997

PLAIN_MESSAGE = "\n".join([
    "From: Volley Test <sender@volley-src.test>",
    "To: undisclosed-recipients:;",
    "Subject: byte-exact plain",
    "Date: Sat, 28 Nov 2026 12:00:00 +0000",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    "Hello,",
    ".",
    "..",
    ".a line that starts with a dot",
    " a line that starts with a space, and trailing spaces   ",
    "tab\tseparated\tfields",
    UTF8_LINE,
    "",
    "",
    LONG_997,
    DOT_998,
    "The last line has no line break after it.",
])

MERGE_MESSAGE = (
    "From: Volley Test <sender@volley-src.test>\n"
    "To: {{to}}\r\n"
    "Subject: Your code {{ code }}\n"
    "Date: Sat, 28 Nov 2026 12:00:00 +0000\n"
    "Message-ID: <pf-merge-{{id}}@volley-src.test>\n"
    "X-Folded: first part\n"
    "\tsecond part for {{id}}\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Hello {{first_name}},\r\n"
    "\n"
    ".{{first_name}} starts this line with a dot.\n"
    ".\n"
    "Price: {{price}} {{currency}}; VIP: {{vip}}; tags {{a}}{{b}} glued.\n"
    "Not a placeholder: }} and { {x} } stay as they are.\n"
    + UTF8_LINE + "\r\n"
    + LONG_997 + "\n"
    "Bye {{ first_name }}.\n"
)
MERGE_HEADERS = {"X-Campaign": "pf-merge", "List-Unsubscribe": "<mailto:unsub@volley-src.test>"}
RETURN_PATH = "bounce+{{id}}@volley-src.test"

# (address, the raw JSON text of vars or None, the values as they must render)
MERGE_RCPTS = [
    ("dan@inbox.test", '{"id": "1001", "first_name": "Dan", "code": "A-1", "price": 1.50, '
     '"currency": "EUR", "vip": true, "a": "x", "b": "y"}',
     {"id": "1001", "first_name": "Dan", "code": "A-1", "price": "1.50", "currency": "EUR",
      "vip": "true", "a": "x", "b": "y"}),
    ("eve@inbox.test", '{"id": "1002", "first_name": "Jörg-Ève", "code": "B-2", "price": -2e3, '
     '"vip": false, "to": "Eve Example <eve@inbox.test>"}',
     {"id": "1002", "first_name": "Jörg-Ève", "code": "B-2", "price": "-2e3", "vip": "false",
      "to": "Eve Example <eve@inbox.test>"}),
    # Not last: the transactions behind its failed one go pipelined behind it.
    (UNKNOWN, '{"id": "1004", "first_name": "Nobody"}', {"id": "1004", "first_name": "Nobody"}),
    ("fay@inbox.test", None, {}),
]
MERGE_DELIVERED = [a for a, _, _ in MERGE_RCPTS if a != UNKNOWN]

PLACEHOLDER = re.compile(r"\{\{[ \t]*([A-Za-z0-9_.-]{1,64})[ \t]*\}\}")


def render(template, values, rcpt, headers=None):
    """The message docs/jobs.md says is sent, as bytes with CRLF line endings."""
    def sub(m):
        name = m.group(1)
        if name in values:
            return values[name]
        return rcpt if name == "to" else ""
    text = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    text += PLACEHOLDER.sub(sub, template)
    lines = re.split(r"\r?\n", text)
    if lines[-1] == "":
        lines.pop()
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def stored_form(wire):
    """What a maildir holds for a message sent as `wire`: CRLF becomes LF."""
    return wire.replace(b"\r\n", b"\n")


def ts_seconds(ts):
    dt = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def first_difference(want, got):
    i = next((k for k in range(min(len(want), len(got))) if want[k] != got[k]), min(len(want), len(got)))
    lo = max(0, i - 60)
    return ("lengths want %d got %d; first difference at byte %d:\n  want ...%r\n  got  ...%r"
            % (len(want), len(got), i, want[lo:i + 60], got[lo:i + 60]))


def volleyd_tls_support(h):
    """(supported, why): whether this volleyd knows the [smtp] tls key. volleyd refuses
    an unknown key at start-up with "smtp.KEY: unknown key", checking keys in order, so a
    config with `tls` and then a key no volleyd knows tells which one it stopped at,
    without starting anything."""
    probe_dir = h.mkdir("tls-probe")
    cfg = os.path.join(probe_dir, "probe.toml")
    with open(cfg, "w") as f:
        f.write('[paths]\nspool = "%s/spool"\nqueue = "%s/queue"\nlog = "%s/log"\n'
                '[smtp]\ntls = "opportunistic"\nzz_not_a_key_probe = 1\n'
                % (probe_dir, probe_dir, probe_dir))
    try:
        r = subprocess.run([h.binary("engine/volleyd"), "--config", cfg], cwd=probe_dir,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
    except subprocess.TimeoutExpired:
        return False, "the probe volleyd did not exit"
    out = r.stdout.decode(errors="replace").strip()
    if "smtp.tls" in out:
        return False, "volleyd refuses the [smtp] tls key: %s" % out
    if "zz_not_a_key_probe" in out:
        return True, "volleyd accepts [smtp] tls = \"opportunistic\""
    return False, "unexpected probe answer (%s): %s" % (r.returncode, out)


def test(h):
    tls_supported, tls_why = volleyd_tls_support(h)
    log("TLS probe: %s" % tls_why)
    mailboxes = PLAIN_RCPTS + MERGE_DELIVERED
    with PostfixSmtpd(h, mailboxes) as pf:
        # One connection carries every transaction, so the ones behind the first go
        # pipelined (max_transactions_in_flight, default 4): Postfix takes a MAIL right
        # behind the last one's BDAT chunk, also behind the unknown recipient's failed one.
        d = h.volleyd(route_port=pf.port, retry_initial="%ds" % RETRY_INITIAL, retry_max="2s",
                      smtp_config="max_connections_per_destination = 1\n")
        d.start()
        t0 = time.monotonic()

        d.drop(PLAIN_JOB + ".job", harness.job_text(PLAIN_JOB, PLAIN_RCPTS, sender=SENDER,
                                                   msg=PLAIN_MESSAGE))
        header = json.dumps({"job": MERGE_JOB, "from": SENDER, "return_path": RETURN_PATH,
                             "headers": MERGE_HEADERS, "message": MERGE_MESSAGE}, ensure_ascii=False)
        lines = [header]
        for addr, vars_text, _ in MERGE_RCPTS:
            lines.append('{"to": "%s"%s}' % (addr, ', "vars": ' + vars_text if vars_text else ""))
        d.drop(MERGE_JOB + ".job", "\n".join(lines) + "\n")

        reader = harness.JsonlReader(d.deliveries_path)
        want_status = {(PLAIN_JOB, a): "delivered" for a in PLAIN_RCPTS}
        want_status.update({(MERGE_JOB, a): "delivered" for a in MERGE_DELIVERED})
        want_status[(MERGE_JOB, UNKNOWN)] = "bounced"

        def all_decided():
            d.assert_alive()
            got = {(r.get("job"), r.get("rcpt")): r.get("status") for r in reader.poll()}
            return all(got.get(k) == v for k, v in want_status.items())

        try:
            wait_for(all_decided, 30, "every recipient's outcome in the delivery log")
        except harness.TestFailure as e:
            raise harness.TestFailure("%s; records: %s; maillog:\n%s" % (
                e, [(r.get("job"), r.get("rcpt"), r.get("status"), r.get("code"), r.get("response"))
                    for r in reader.poll()], harness.tail(pf.log_path, 30)))
        log("every outcome is in the delivery log (%.2fs)" % (time.monotonic() - t0))
        pf.wait_for_messages(len(mailboxes), 30)
        log("every message is in its maildir (%.2fs)" % (time.monotonic() - t0))

        # A bounce must not be retried: give a retry the time to show up.
        settled = len(reader.poll())
        bounce = [r for r in reader.poll() if r.get("rcpt") == UNKNOWN][0]
        time.sleep(max(0.0, QUIET - (time.time() - ts_seconds(bounce["ts"]))))
        records = reader.poll()
        check(len(records) == settled, "records after every recipient was decided: %s"
              % records[settled:])
        pipelined = harness.scrape(d.metrics_port).get("volley_transactions_pipelined_total")
        log("transactions pipelined behind another: %s" % pipelined)
        check(pipelined is not None and pipelined >= 1,
              "volley_transactions_pipelined_total is %s: no transaction went pipelined into "
              "Postfix, so that was not tested" % pipelined)
        check(d.stop() == 0, "volleyd did not exit cleanly")
        maillog = pf.maillog()
        check(pf.stop() == 0, "postfix stop failed")

    check(reader.torn == 0, "torn delivery-log lines: %s" % reader.torn_samples)
    per = collections.defaultdict(list)
    for r in records:
        per[(r.get("job"), r.get("rcpt"))].append(r)
    check(set(per) == set(want_status), "records for %s, want %s" % (sorted(per), sorted(want_status)))

    # ---- the unknown recipient: one bounce, from Postfix's RCPT reply, asked once
    recs = per[(MERGE_JOB, UNKNOWN)]
    check(len(recs) == 1 and recs[0]["status"] == "bounced" and recs[0]["code"] == 550
          and recs[0]["enhanced"] == "5.1.1" and recs[0]["attempt"] == 1
          and "User unknown in virtual mailbox table" in recs[0]["response"],
          "%s: want one bounced 550 5.1.1 'User unknown in virtual mailbox table' record at "
          "attempt 1, got %s" % (UNKNOWN, recs))
    rejects = re.findall(r"NOQUEUE: reject: RCPT from .*to=<%s>" % re.escape(UNKNOWN), maillog)
    check(len(rejects) == 1, "Postfix rejected RCPT %s %d times, want once (a bounce is not "
          "retried)" % (UNKNOWN, len(rejects)))

    # ---- every delivered message: bytes, envelope, queue id, TLS
    # Volley adds a Feedback-ID to both jobs (docs/jobs.md, "Fields Volley adds"), and a
    # Message-ID to the plain one, whose template has none (the merge template's has a
    # placeholder, so it is kept); both templates have a Date.
    want_bytes = {}
    for a in PLAIN_RCPTS:
        want_bytes[a] = (PLAIN_JOB, render(PLAIN_MESSAGE, {}, a,
                                           {"Feedback-ID": "%s:volley-src.test" % PLAIN_JOB}),
                         SENDER)
    merge_headers = dict([("Feedback-ID", "%s:volley-src.test" % MERGE_JOB)] + list(MERGE_HEADERS.items()))
    for a, _, values in MERGE_RCPTS:
        if a != UNKNOWN:
            # "bounce+@volley-src.test" (no id) is still a valid address: used as is.
            want_bytes[a] = (MERGE_JOB, render(MERGE_MESSAGE, values, a, merge_headers),
                             render(RETURN_PATH, values, a).decode().strip())
    # Sanity of the test itself: the wire form has the edge cases it claims to have.
    plain_wire = want_bytes["ann@inbox.test"][1]
    check(b"\r\n.\r\n" in plain_wire and ("\r\n%s\r\n" % DOT_998).encode() in plain_wire
          and plain_wire.endswith(b"after it.\r\n") and b"\n\n" not in plain_wire
          and max(len(x) for x in plain_wire.split(b"\r\n")) == 998,
          "test bug: the plain message lacks an edge case")
    check(b"Price: 1.50 EUR; VIP: true; tags xy glued." in want_bytes["dan@inbox.test"][1]
          and b"To: Eve Example <eve@inbox.test>\r\n" in want_bytes["eve@inbox.test"][1]
          and b"Hello ,\r\n" in want_bytes["fay@inbox.test"][1]
          and want_bytes["fay@inbox.test"][2] == "bounce+@volley-src.test",
          "test bug: merge rendering")

    queue_ids = {}
    tls_seen = []
    tls_fields = {}
    bdat = {}
    for a, (job, wire, env_from) in want_bytes.items():
        raw = pf.messages(a)
        check(len(raw) == 1, "%s: %d messages in the maildir, want 1" % (a, len(raw)))
        trace, body = strip_trace_headers(raw[0])
        names = [n.lower() for n, _ in trace]
        check(names == ["return-path", "x-original-to", "delivered-to", "received"],
              "%s: Postfix's trace fields are %s, want Return-Path, X-Original-To, Delivered-To, "
              "Received" % (a, names))
        if job == PLAIN_JOB:
            # The one message of the plain job's transaction: its Message-ID names the
            # job and the first recipient's line, with 48 random bits.
            mid = re.match(rb"Message-ID: <pf-plain\.[2-4]\.[0-9a-f]{12}@volley-src\.test>\n", body)
            check(mid, "%s: the stored message does not start with Volley's Message-ID: %r"
                  % (a, body[:80]))
            wire = mid.group(0).replace(b"\n", b"\r\n") + wire
            want_bytes[a] = (job, wire, env_from)
        want = stored_form(wire)
        check(body == want, "%s (%s): stored message differs from the rendered job message: %s"
              % (a, job, first_difference(want, body)))
        fields = dict((n.lower(), v) for n, v in trace)
        check(fields["return-path"] == "Return-Path: <%s>\n" % env_from,
              "%s: %r, want the envelope sender <%s>" % (a, fields["return-path"].strip(), env_from))
        check(fields["delivered-to"] == "Delivered-To: %s\n" % a, "%s: %r" % (a, fields["delivered-to"]))
        received = fields["received"]
        m = re.search(r"by mx\.postfix\.test \(Postfix\) with (ESMTPS?A?) id ([0-9A-F]+)", received)
        check(m and received.startswith("Received: from volley-src.test (unknown [127.0.0.1])"),
              "%s: unexpected Received field %r" % (a, received))
        proto, qid = m.group(1), m.group(2)
        queue_ids[a] = qid
        tls = re.search(r"\(using (TLSv[\d.]+) with cipher (\S+)", received)
        tls_seen.append((a, proto, tls.group(1, 2) if tls else None))

        recs = per[(job, a)]
        check(len(recs) == 1, "%s: %d records, want one delivered: %s" % (a, len(recs), recs))
        r = recs[0]
        # Postfix answers the end of DATA with "Ok: queued as ID" and BDAT LAST (CHUNKING)
        # with "Ok: N bytes queued as ID", N the octets it received: the message as sent.
        check(r["status"] == "delivered" and r["code"] == 250 and r["enhanced"] == "2.0.0"
              and r["response"] in ("Ok: queued as %s" % qid, "Ok: %d bytes queued as %s" % (len(wire), qid))
              and r["attempt"] == 1 and r["host"] == harness.LOOPBACK and r["port"] == pf.port,
              "%s: record %s, want delivered 250 2.0.0 \"Ok: queued as %s\" (or \"Ok: %d bytes queued "
              "as %s\" after BDAT) at attempt 1 from %s:%d"
              % (a, r, qid, len(wire), qid, harness.LOOPBACK, pf.port))
        tls_fields[a] = {k: v for k, v in r.items() if k.startswith("tls")}
        bdat[a] = "bytes queued" in r["response"]
        check(re.search(r"%s: to=<%s>, relay=virtual, .*status=sent \(delivered to maildir\)"
                        % (qid, re.escape(a)), maillog),
              "%s: no 'status=sent' line for queue id %s in Postfix's maillog" % (a, qid))

    plain_ids = {queue_ids[a] for a in PLAIN_RCPTS}
    merge_ids = [queue_ids[a] for a in MERGE_DELIVERED]
    log("queue ids: plain job %s, merge job %s; sent with BDAT: %s"
        % (sorted(plain_ids), merge_ids, sorted(a for a, b in bdat.items() if b) or "none"))
    check(len(plain_ids) == 1, "the plain job's recipients came in %d transactions, want one "
          "(one domain, the same message)" % len(plain_ids))
    check(len(set(merge_ids)) == len(merge_ids), "personalised messages share a queue id")
    check("improper command pipelining" not in maillog,
          "Postfix saw improper command pipelining:\n%s"
          % "\n".join(x for x in maillog.splitlines() if "improper" in x))
    for line in maillog.splitlines():
        if "disconnect from" in line:
            log("postfix: %s" % line.split(": ", 1)[-1])

    # ---- TLS (guarded until volleyd does STARTTLS)
    log("Received protocols: %s" % tls_seen)
    if tls_supported:
        bad = [x for x in tls_seen if x[1] != "ESMTPS" or not x[2] or x[2][0] not in ("TLSv1.2", "TLSv1.3")]
        check(not bad, "messages not received over TLS 1.2/1.3 although volleyd supports "
              "STARTTLS (opportunistic by default) and Postfix offers it: %s" % bad)
        check("TLS connection established from" in maillog, "no TLS connection in Postfix's maillog")
        # If the delivery log names the TLS version and cipher, they must be Postfix's.
        for a, proto, tls in tls_seen:
            f = tls_fields.get(a, {})
            check(f.get("tls_version", tls[0]) == tls[0] and f.get("tls_cipher", tls[1]) == tls[1],
                  "%s: the delivery log says %s, Postfix's Received field %s" % (a, f, tls))
        log("TLS checked: every message came over %s; delivery-log TLS fields: %s"
            % (sorted({x[2] for x in tls_seen}), sorted({k for f in tls_fields.values() for k in f})
               or "none"))
    else:
        print("NOTE: SKIPPED the STARTTLS check: %s. Only checked that the messages came in "
              "plain ESMTP." % tls_why, flush=True)
        plain = [x for x in tls_seen if x[1] != "ESMTP" or x[2]]
        check(not plain, "volleyd looks TLS-less to the probe but the messages came over TLS: %s "
              "(fix volleyd_tls_support)" % plain)


if __name__ == "__main__":
    harness.main(test, "postfix-smtpd")
