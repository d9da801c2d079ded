#!/usr/bin/python3
"""templates_test.py - templates checked before anything is queued (issue 19).

- A placeholder no recipient defines ({{frist}} where recipients define first) refuses
  the job: the file is in spool/failed/ with a .error naming the placeholder, the
  template line and "did you mean first", and nothing of it is delivered.
- {{first|there}} renders "there" at the receiving server (aiosmtpd, which accepts ok-* local parts, records the Subject)
  for a recipient without first or with an empty one; the accept log line counts the
  recipients lacking each variable.
- An expires already past refuses the job.
- volleyctl check: exit 1 and the .error's text for the typo job, exit 0 and a summary
  (recipients, the rejected line with the reason .rejects.jsonl has, lacking variables)
  for the good one.
- volleyctl render: the message of one recipient parses, has the personalised Subject,
  the fields Volley adds (Message-ID, Date) and, with a [[dkim]] key in --config, a
  DKIM-Signature for the From domain that dkimpy verifies.
"""
import email
import email.policy
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SENDER = "sender@volley-src.test"
MSG = ("From: Volley Test <sender@volley-src.test>\r\nTo: {{to}}\r\n"
       "Subject: Hello {{first|there}}\r\n\r\nYour city: {{city}}.\r\n")
TYPO_MSG = "From: Volley Test <sender@volley-src.test>\r\nSubject: x\r\n\r\nHello {{frist}},\r\n"


def run(ctl, *args):
    p = subprocess.run([ctl] + list(args), capture_output=True, text=True, timeout=120)
    log("$ volleyctl %s -> %d%s" % (" ".join(args), p.returncode,
                                     (": " + p.stderr.strip()[:300]) if p.stderr.strip() else ""))
    return p


def typo_job():
    lines = [harness.header_line("tmpl-typo", msg=TYPO_MSG)]
    lines += [harness.rcpt_line("ok-typo-%d@d0001.test" % i, first="F%d" % i) for i in range(5)]
    return "\n".join(lines) + "\n"


def defaults_job():
    lines = [harness.header_line("tmpl-defaults", msg=MSG),
             harness.rcpt_line("ok-ann@d0001.test", first="Ann", city="Oslo"),   # line 2
             harness.rcpt_line("ok-bob@d0001.test", first="Bob"),                # line 3
             harness.rcpt_line("ok-cy@d0002.test"),                              # line 4
             json.dumps({"to": "not an address"}),                            # line 5: rejected
             harness.rcpt_line("ok-dee@d0002.test", first=""),                   # line 6
             harness.rcpt_line("ok-eve@d0003.test", first="Eve")]                # line 7
    return "\n".join(lines) + "\n"


def after_prefix(text):
    """The reason of "<file>:<line>: <reason>"."""
    return text.strip().split(":1: ", 1)[1]


def test(h):
    ctl = h.binary("tools/volleyctl/volleyctl")
    server = harness.AiosmtpdServer(h).start()
    d = h.volleyd(route_port=server.port)
    d.start()

    # --- volleyctl check first, on files outside the spool: no volleyd involved.
    typo_path = os.path.join(h.dir, "typo.job")
    with open(typo_path, "w") as f:
        f.write(typo_job())
    good_path = os.path.join(h.dir, "defaults.job")
    with open(good_path, "w") as f:
        f.write(defaults_job())
    bad = run(ctl, "check", typo_path)
    check(bad.returncode == 1, "check of the typo job exits %d, not 1" % bad.returncode)
    good = run(ctl, "check", good_path)
    check(good.returncode == 0, "check of the good job exits %d, not 0: %s"
          % (good.returncode, good.stderr))
    check("%s:5: rejected: to: invalid address" % good_path in good.stdout,
          "check does not list line 5 as rejected: %r" % good.stdout)
    check('job "tmpl-defaults" would be accepted: 5 recipients, 1 rejected; lacking variables: '
          'city 4 (rendered empty), first 2 (default used)' in good.stdout,
          "check's summary is not the expected one: %r" % good.stdout)

    # --- the same files through intake
    d.drop("tmpl-typo.job", typo_job())
    d.drop("tmpl-defaults.job", defaults_job())
    past = [harness.header_line("tmpl-expired", msg=MSG, expires="2020-01-01T00:00:00Z"),
            harness.rcpt_line("ok-old@d0001.test", first="Old")]
    d.drop("tmpl-expired.job", "\n".join(past) + "\n")

    wait_for(lambda: d.exists("failed", "tmpl-typo.job.error"), 30, "the typo job refused")
    error = d.read("failed", "tmpl-typo.job.error")
    log("typo .error: %s" % error.strip())
    for want in ("incoming/tmpl-typo.job:1:", "message: line 4:", "{{frist}}",
                 'did you mean "first"?'):
        check(want in error, "the typo job's .error lacks %r: %r" % (want, error))
    check(after_prefix(error) == after_prefix(bad.stderr),
          "volleyctl check's message differs from intake's .error:\n  %r\n  %r"
          % (bad.stderr, error))
    check(d.exists("failed", "tmpl-typo.job"), "the typo job is not in failed/")

    wait_for(lambda: d.exists("failed", "tmpl-expired.job.error"), 30, "the expired job refused")
    expired = d.read("failed", "tmpl-expired.job.error")
    check("incoming/tmpl-expired.job:1: expires: 2020-01-01T00:00:00Z is in the past" in expired,
          "the expired job's .error: %r" % expired)

    delivered = lambda: [r for r in d.deliveries("tmpl-defaults") if r.get("status") == "delivered"]
    wait_for(lambda: len(delivered()) == 5, 60, "the 5 good recipients of tmpl-defaults delivered")
    with open(d.output, errors="replace") as f:
        out = f.read()
    accept = [line for line in out.splitlines() if 'job "tmpl-defaults" accepted' in line]
    check(accept, "no accept line for tmpl-defaults in volleyd's output")
    log("accept line: %s" % accept[0])
    check(accept[0].endswith("; lacking variables: city 4 (rendered empty), first 2 (default used)"),
          "the accept line does not count the lacking variables: %r" % accept[0])

    subjects = {}
    for m in server.messages():
        for r in m["rcpts"]:
            subjects[r] = m["subject"]
    want = {"ok-ann@d0001.test": "Hello Ann", "ok-bob@d0001.test": "Hello Bob",
            "ok-cy@d0002.test": "Hello there", "ok-dee@d0002.test": "Hello there",
            "ok-eve@d0003.test": "Hello Eve"}
    for rcpt, subject in want.items():
        check(subjects.get(rcpt) == subject, "%s got Subject %r, not %r"
              % (rcpt, subjects.get(rcpt), subject))
    for i in range(5):
        check("ok-typo-%d@d0001.test" % i not in subjects, "a recipient of the refused job got mail")
        check("ok-old@d0001.test" not in subjects, "a recipient of the expired job got mail")
    check(not d.deliveries("tmpl-typo") and not d.deliveries("tmpl-expired"),
          "the refused jobs have delivery-log records")
    jobs = run(ctl, "--config", d.config, "--json", "jobs")
    check(jobs.returncode == 0, "volleyctl jobs failed: %s" % jobs.stderr)
    ids = [j["id"] for j in json.loads(jobs.stdout)["jobs"]]
    check(ids == ["tmpl-defaults"], "the queue holds %r, not just tmpl-defaults" % ids)

    # --- volleyctl render: line 4 (cy, no first) with a DKIM key in the config
    key = os.path.join(h.dir, "s1.pem")
    kg = run(ctl, "dkim", "keygen", "--domain", "volley-src.test", "--selector", "s1",
             "--algorithm", "ed25519", "--out", key)
    check(kg.returncode == 0, "dkim keygen failed: %s" % kg.stderr)
    config = os.path.join(h.dir, "render.toml")
    with open(config, "w") as f:
        f.write('[[dkim]]\ndomain = "volley-src.test"\nselector = "s1"\nkey_file = "%s"\n' % key)
    r = subprocess.run([ctl, "--config", config, "render", good_path, "4"], capture_output=True,
                       timeout=60)
    check(r.returncode == 0, "render exits %d: %s" % (r.returncode, r.stderr))
    check(b"envelope: MAIL FROM:<sender@volley-src.test> RCPT TO:<ok-cy@d0002.test>" in r.stderr,
          "render's envelope line: %r" % r.stderr)
    msg = email.message_from_bytes(r.stdout, policy=email.policy.compat32)
    check(msg["Subject"] == "Hello there", "render's Subject is %r" % msg["Subject"])
    check(msg["To"] == "ok-cy@d0002.test", "render's To is %r" % msg["To"])
    check(msg["Message-ID"] and "@" in msg["Message-ID"], "render has no Message-ID")
    check(msg["Date"], "render has no Date")
    check(msg.get_payload() == "Your city: .\r\n", "render's body is %r" % msg.get_payload())
    sig = msg["DKIM-Signature"]
    check(sig and "d=volley-src.test" in sig and "s=s1" in sig,
          "render has no DKIM-Signature for volley-src.test: %r" % sig)
    check(r.stdout.endswith(b"\r\n") and b"\n" not in r.stdout.replace(b"\r\n", b""),
          "render's lines do not all end in CRLF")
    try:
        import dkim  # python3-dkim, as dkim_test.py uses
        record = "".join(s for s in kg.stdout.split('"')[1::2])
        ok = dkim.DKIM(r.stdout).verify(dnsfunc=lambda name, timeout=5: record.encode())
        check(ok, "dkimpy does not verify render's signature")
    except ImportError:
        log("python3-dkim is missing: the signature's presence is checked, not its value")

    # A rejected line and the header are not rendered.
    rej = run(ctl, "render", good_path, "5")
    check(rej.returncode == 1 and "%s:5: to: invalid address" % good_path in rej.stderr,
          "render of a rejected line: %d %r" % (rej.returncode, rej.stderr))
    hdr = run(ctl, "render", good_path, "1")
    check(hdr.returncode == 1 and "line 1 is the job header" in hdr.stderr,
          "render of line 1: %d %r" % (hdr.returncode, hdr.stderr))
    d.assert_alive()


harness.main(test, "templates")
