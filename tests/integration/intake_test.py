#!/usr/bin/python3
"""intake_test.py - volleyd's intake refuses broken jobs and broken recipient lines.

Structural errors (the job as a whole is refused): an unparsable header, a header without
"from", without "message", with an unknown field, with an invalid template, and a second
job with an id already taken. Each file must end in spool/failed/ with a <file>.error that
names the line, field or reason, and nothing of it may be sent.

Bad recipient lines (the job goes ahead without them): bad JSON, an invalid address,
CR/LF in a variable (header injection), an oversized value, an oversized line, a value
that would render a message line over 998 octets (RFC 5321 4.5.3.1.6). They must be
listed in spool/failed/<job>.rejects.jsonl as {"line":N,"reason":...,"text":...}, and
exactly the good lines delivered, one of them with a rendered line of exactly 998 octets.
"""
import collections
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SENDER = "sender@volley-src.test"
OVERSIZED_VALUE = 10000  # octets in one variable's value (a first name!): too long
OVERSIZED_LINE = 1024 * 1024 + 1  # a recipient line of over 1 MiB: too long as a line
# harness.message(personalised=True) has "Hello {{first_name}}," as its line 7: 7 literal
# octets, so a first name of 991 octets renders it at 998 (the most RFC 5321 allows).
LONGEST_FIRST_NAME = 991


def mentions_line(n):
    pat = re.compile(r"line\W{0,3}%d\b|:%d:" % (n, n), re.I)
    return lambda text: bool(pat.search(text))


def mentions(*words):
    return lambda text: any(w.lower() in text.lower() for w in words)


def good_rcpts(tag, n=2):
    return [harness.rcpt_line("%s-%d@d0001.test" % (tag, i), first_name="Ann") for i in range(n)]


def structural_cases():
    """(job file name, text, predicate on the .error text, what it must name)."""
    msg = harness.message()
    cases = []

    def add(name, header, pred, what):
        cases.append((name + ".job", "\n".join([header] + good_rcpts(name)) + "\n", pred, what))

    add("intake-unparsable", '{"job": "intake-unparsable", "from": "%s", "message": ' % SENDER,
        mentions_line(1), "line 1")
    add("intake-no-from", json.dumps({"job": "intake-no-from", "message": msg}),
        mentions("from"), 'the field "from"')
    add("intake-no-message", json.dumps({"job": "intake-no-message", "from": SENDER}),
        mentions("message"), 'the field "message"')
    add("intake-unknown-field",
        json.dumps({"job": "intake-unknown-field", "from": SENDER, "message": msg, "colour": "teal"}),
        mentions("colour"), 'the unknown field "colour"')
    add("intake-bad-template",
        json.dumps({"job": "intake-bad-template", "from": SENDER,
                    "message": "Subject: hi\r\n\r\nHello {{first_name\r\n"}),
        mentions("template", "message", "{{"), "the template / message")
    return cases


def test(h):
    sink = h.sink(record=True)
    d = h.volleyd(route_port=sink.port)
    d.start()
    failures = []

    # --- structural errors
    cases = structural_cases()
    for name, text, _, _ in cases:
        d.drop(name, text)
    for name, _, pred, what in cases:
        try:
            wait_for(lambda: d.assert_alive() and d.exists("failed", name + ".error"), 30,
                     "failed/%s.error" % name)
        except harness.TestFailure as e:
            failures.append("%s: %s (accepted/: %s)" % (name, e, d.exists("accepted", name)))
            continue
        error = d.read("failed", name + ".error")
        log("%s -> %s" % (name, error.strip()[:200]))
        if not d.exists("failed", name):
            failures.append("%s: .error written but the file itself is not in failed/" % name)
        if d.exists("accepted", name):
            failures.append("%s: also in accepted/" % name)
        if not pred(error):
            failures.append("%s: the .error does not name %s: %r" % (name, what, error[:300]))

    # --- duplicate job id
    d.drop("intake-dup.job", "\n".join([harness.header_line("intake-dup")] + good_rcpts("intake-dup")) + "\n")
    wait_for(lambda: d.assert_alive() and d.exists("accepted", "intake-dup.job"), 30,
             "intake-dup.job to be accepted")
    d.drop("intake-dup-again.job",
           "\n".join([harness.header_line("intake-dup")] + good_rcpts("intake-dup-again")) + "\n")
    try:
        wait_for(lambda: d.assert_alive() and d.exists("failed", "intake-dup-again.job.error"), 30,
                 "failed/intake-dup-again.job.error")
        error = d.read("failed", "intake-dup-again.job.error")
        log("intake-dup-again.job -> %s" % error.strip()[:200])
        if "intake-dup" not in error:
            failures.append("duplicate job id: the .error does not name the job id: %r" % error[:300])
    except harness.TestFailure as e:
        failures.append("duplicate job id: %s" % e)

    # --- bad recipient lines
    job = "intake-rejects"
    lines = {
        2: harness.rcpt_line("good-2@d0001.test", first_name="Ann"),
        3: '{"to": "bad-json@d0001.test", "vars": {"first_name": "Bob"',
        4: harness.rcpt_line("good-4@d0002.test", first_name="Cat"),
        5: harness.rcpt_line("not-an-address", first_name="Dan"),
        6: harness.rcpt_line("good-6@d0003.test", first_name="Eve"),
        7: harness.rcpt_line("crlf-7@d0001.test", first_name="Fay\r\nBcc: injected@d0009.test"),
        8: harness.rcpt_line("good-8@d0001.test", first_name="Gus"),
        9: harness.rcpt_line("oversized-9@d0002.test", first_name="H" * OVERSIZED_VALUE),
        10: harness.rcpt_line("good-10@d0004.test", first_name="Ida"),
        11: harness.rcpt_line("oversized-11@d0003.test", first_name="J" * OVERSIZED_LINE),
        12: harness.rcpt_line("good-12@d0005.test", first_name="Kit"),
        13: harness.rcpt_line("overlong-13@d0004.test", first_name="L" * (LONGEST_FIRST_NAME + 1)),
        14: harness.rcpt_line("good-14@d0005.test", first_name="M" * LONGEST_FIRST_NAME),
    }
    bad_lines = {3, 5, 7, 9, 11, 13}
    want_reasons = {13: "vars.first_name: renders message line 7 at 999 octets, over 998"}
    text = "\n".join([harness.header_line(job, msg=harness.message(personalised=True))]
                     + [lines[i] for i in sorted(lines)]) + "\n"
    d.drop(job + ".job", text)
    good = {i: json.loads(lines[i])["to"] for i in lines if i not in bad_lines}
    reader = harness.JsonlReader(d.deliveries_path)

    def good_delivered():
        d.assert_alive()
        return set(harness.delivered_by_rcpt(reader.poll(), job)) >= set(good.values())

    try:
        wait_for(good_delivered, 60, "the good lines of %s to be delivered" % job, interval=0.2)
    except harness.TestFailure as e:
        failures.append("%s: %s; statuses %s" % (job, e, dict(harness.status_counts(reader.records, job))))
    if not d.exists("accepted", job + ".job"):
        failures.append("%s.job with some bad lines is not in accepted/ (failed/: %s)"
                        % (job, d.exists("failed", job + ".job")))
    rejects_name = job + ".rejects.jsonl"
    try:
        wait_for(lambda: d.exists("failed", rejects_name), 10, "failed/%s" % rejects_name)
        rejects = harness.read_jsonl(d.path("failed", rejects_name))
        log("rejects: %s" % [(r.get("line"), r.get("reason")) for r in rejects])
        got_lines = collections.Counter(r.get("line") for r in rejects)
        if set(got_lines) != bad_lines or any(c != 1 for c in got_lines.values()):
            failures.append("rejects name lines %s, want each of %s once"
                            % (sorted(got_lines.elements(), key=str), sorted(bad_lines)))
        for r in rejects:
            if not isinstance(r.get("reason"), str) or not r["reason"]:
                failures.append("reject for line %r has no reason: %r" % (r.get("line"), str(r)[:200]))
            if "text" not in r:
                failures.append("reject for line %r has no text" % r.get("line"))
            if r.get("line") == 5 and "not-an-address" not in str(r.get("text", "")):
                failures.append("reject for line 5 does not carry its text: %r" % str(r)[:200])
            want = want_reasons.get(r.get("line"))
            if want is not None and r.get("reason") != want:
                failures.append("reject for line %d: reason %r, want %r" % (r["line"], r.get("reason"), want))
    except harness.TestFailure as e:
        failures.append(str(e))

    # Nothing from a refused file or a rejected line may be sent or logged as delivered.
    time.sleep(2)
    records = harness.read_jsonl(d.deliveries_path)
    refused_jobs = {n[:-4] for n, _, _, _ in cases}
    for r in records:
        if r.get("job") in refused_jobs or (r.get("job") == "intake-dup" and "again" in str(r.get("rcpt"))):
            failures.append("delivery-log record for refused input: %s" % str(r)[:200])
        if r.get("job") == job and r.get("line") in bad_lines:
            failures.append("delivery-log record for rejected line %s: %s" % (r.get("line"), str(r)[:200]))
    sent = {a for rec in sink.records() for a in rec.get("rcpts", [])}
    leaked = sorted(a for a in sent if not (a.startswith("good-") or a.startswith("intake-dup-")))
    leaked += sorted(a for a in sent if a.startswith("intake-dup-again"))
    if leaked:
        failures.append("the sink got mail for refused or rejected input: %s" % leaked[:10])
    missing = sorted(set(good.values()) - sent)
    if missing:
        failures.append("the sink did not get the good lines: %s" % missing)

    d.stop()
    if failures:
        raise harness.TestFailure("%d problems:\n  - %s" % (len(failures), "\n  - ".join(failures)))


if __name__ == "__main__":
    harness.main(test, "intake")
