#!/usr/bin/python3
"""submit_test.py - volleyctl submit: a message template and a CSV list become a job
(issue 20).

- A CSV with a BOM, CRLF line ends, quoted commas, "" quotes, UTF-8 names (Zoë,
  Łukasz, 山田太郎) and bad rows (an invalid address, a wrong field count, a quoted
  line break in a name, invalid UTF-8, an empty address) is submitted with --config:
  the bad rows are named on stderr with their CSV line numbers, the job id is printed,
  and exactly the good rows reach the receiving server (aiosmtpd_server.py, which
  accepts the ok-* local parts and records each message's octets).
- Each received message is personalised: its octets are those of `volleyctl render` of
  the recipient's line in the accepted job file, but for the Date and Message-ID fields
  (made anew for each message), and the render carries the recipient's name in the
  Subject and the body.
- --split 2 over two spools (this volleyd's and another): two jobs ID-1 and ID-2, every
  good row in exactly one, the same header but for the id; part 1 is delivered; a bad
  --split count and too few spools are usage errors (exit 2) that write nothing.
- --strict refuses the same CSV (exit 1, nothing in incoming/); the same --job again is
  refused, naming the accepted job; a template placeholder no column defines is refused
  with intake's message; without --job a sortable id is generated.
"""
import base64
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SENDER = "sender@volley-src.test"
TEMPLATE = ("From: Volley Test <sender@volley-src.test>\n"
            "To: {{name}} <{{to}}>\n"
            "Subject: Hello {{name}}\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "\n"
            "Dear {{name}},\n"
            "your city: {{city|somewhere}}.\n")

# (CSV text, line by line as written), the good rows' (address, name), the bad rows' messages.
CSV_LINES = [
    b"\xef\xbb\xbfemail,name,city\r\n",                   # 1: header, with a BOM
    b"ok-ann@d0001.test,\"Smith, Ann\",Oslo\r\n",            # 2
    b"ok-zoe@d0001.test,Zo\xc3\xab,\"Paris, \"\"Rive Gauche\"\"\"\r\n",  # 3
    b"not-an-address,Bad,X\r\n",                          # 4: bad address
    b"ok-lukasz@d0002.test,\xc5\x81ukasz,\r\n",              # 5: empty city: the default
    b"short@d0002.test,Short\r\n",                        # 6: two fields
    b"eve@d0003.test,\"Eve\r\nBcc: x@d0003.test\",Rome\r\n",  # 7-8: a line break in a name
    b"ok-yamada@d0003.test,\xe5\xb1\xb1\xe7\x94\xb0\xe5\xa4\xaa\xe9\x83\x8e,Tokyo\r\n",  # 9
    b"bytes@d0001.test,\xc3\x28,Bad\r\n",                 # 10: invalid UTF-8
    b",Nobody,Nowhere\r\n",                               # 11: empty address
    b"ok-last@d0002.test,\"O'Brien\",Cork",                  # 12: no line end at the end
]
GOOD = {"ok-ann@d0001.test": "Smith, Ann", "ok-zoe@d0001.test": "Zoë",
        "ok-lukasz@d0002.test": "Łukasz", "ok-yamada@d0003.test": "山田太郎",
        "ok-last@d0002.test": "O'Brien"}
CITY = {"ok-ann@d0001.test": "Oslo", "ok-zoe@d0001.test": 'Paris, "Rive Gauche"',
        "ok-lukasz@d0002.test": "somewhere", "ok-yamada@d0003.test": "Tokyo",
        "ok-last@d0002.test": "Cork"}


def bad_rows(csv):
    return ["%s:4: email (to): invalid address" % csv,
            "%s:6: has 2 fields; the header row has 3" % csv,
            "%s:7: vars.name: contains CR or LF" % csv,
            "%s:10: field 2: not valid UTF-8 (octet 1)" % csv,
            "%s:11: email: empty address" % csv]


def without_fresh_fields(message):
    """The message's octets without its Date and Message-ID fields, which volleyd
    makes anew for each message (render makes its own)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    kept = [f for f in head.split(b"\r\n")
            if not f.lower().startswith((b"date:", b"message-id:"))]
    return b"\r\n".join(kept) + sep + body


def run(ctl, *args):
    p = subprocess.run([ctl] + list(args), capture_output=True, timeout=120)
    log("$ volleyctl %s -> %d%s" % (" ".join(args), p.returncode,
                                     (": " + p.stderr.decode(errors="replace").strip()[:600])
                                     if p.stderr.strip() else ""))
    return p


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def test(h):
    ctl = h.binary("tools/volleyctl/volleyctl")
    server = harness.AiosmtpdServer(h, extra_args=["--record-content"]).start()
    d = h.volleyd(route_port=server.port)
    d.start()
    tpl = write(os.path.join(h.dir, "welcome.eml"), TEMPLATE.encode())
    csv = write(os.path.join(h.dir, "recipients.csv"), b"".join(CSV_LINES))

    # --strict: any bad row refuses the file, and nothing is dropped.
    strict = run(ctl, "submit", "--config", d.config, "--from", SENDER, "--template", tpl,
                 "--recipients", csv, "--job", "submit-strict", "--strict")
    err = strict.stderr.decode()
    check(strict.returncode == 1, "--strict exits %d, not 1" % strict.returncode)
    check("5 bad rows and --strict: nothing submitted" in err, "--strict says %r" % err)
    check(os.listdir(d.path("incoming")) == [] and os.listdir(d.path("tmp")) == [],
          "--strict left files: %r %r" % (os.listdir(d.path("incoming")), os.listdir(d.path("tmp"))))

    # A placeholder no column defines: intake's refusal, before anything is written.
    typo = write(os.path.join(h.dir, "typo.eml"), b"From: <sender@volley-src.test>\nSubject: {{frist}}\n\nx\n")
    t = run(ctl, "submit", "--spool", d.spool, "--from", SENDER, "--template", typo,
            "--recipients", csv, "--job", "submit-typo")
    check(t.returncode == 1, "the typo template exits %d, not 1" % t.returncode)
    check("refused: message: line 2: {{frist}}: no recipient defines \"frist\"" in t.stderr.decode(),
          "the typo template's refusal: %r" % t.stderr.decode())

    # The submit itself.
    p = run(ctl, "submit", "--config", d.config, "--from", SENDER, "--template", tpl,
            "--recipients", csv, "--job", "submit-1", "--priority", "7")
    check(p.returncode == 0, "submit exits %d, not 0" % p.returncode)
    check(p.stdout.decode() == "submit-1\n", "submit printed %r, not the job id" % p.stdout)
    lines = p.stderr.decode().splitlines()
    check(lines[:-1] == bad_rows(csv), "bad rows reported:\n%s\nwanted:\n%s"
          % ("\n".join(lines[:-1]), "\n".join(bad_rows(csv))))
    check(lines[-1] == 'volleyctl: submit: job "submit-1": 5 recipients, 5 bad rows left out; '
          '%s/incoming/submit-1.job' % d.spool, "the count line is %r" % lines[-1])

    def delivered():
        recs = [r for r in server.messages() if r.get("mail_from") == SENDER]
        return recs if len(recs) >= len(GOOD) else None
    recs = wait_for(delivered, 60, "the 5 good rows to reach the server")
    by_rcpt = {}
    for r in recs:
        for rcpt in r["rcpts"]:
            check(rcpt not in by_rcpt, "%s received twice" % rcpt)
            by_rcpt[rcpt] = r
    check(sorted(by_rcpt) == sorted(GOOD), "the server got %r, not exactly the good rows %r"
          % (sorted(by_rcpt), sorted(GOOD)))

    accepted = d.path("accepted", "submit-1.job")
    wait_for(lambda: os.path.exists(accepted), 10, "the job file in accepted/")
    with open(accepted, "rb") as f:
        job_lines = f.read().split(b"\n")
    for addr, name in GOOD.items():
        line = next(i + 1 for i, text in enumerate(job_lines)
                    if text.startswith(b'{"to":"%s"' % addr.encode()))
        r = run(ctl, "--config", d.config, "render", accepted, str(line))
        check(r.returncode == 0, "render of %s (line %d) exits %d" % (addr, line, r.returncode))
        received = base64.b64decode(by_rcpt[addr]["content_b64"])
        check(without_fresh_fields(received) == without_fresh_fields(r.stdout),
              "%s: received\n%r\nrender gives\n%r" % (addr, received, r.stdout))
        # Raw UTF-8 in the header (RFC 6532): read as text, not through email's 7-bit view.
        head, _, body = r.stdout.decode("utf-8").partition("\r\n\r\n")
        subject = [v for k, _, v in (x.partition(": ") for x in head.split("\r\n")) if k == "Subject"]
        check(subject == ["Hello " + name], "%s: Subject %r" % (addr, subject))
        want = "Dear %s,\r\nyour city: %s.\r\n" % (name, CITY[addr])
        check(body == want, "%s: body %r, not %r" % (addr, body, want))

    # The same job id again: refused, naming the accepted file; nothing replaced.
    again = run(ctl, "submit", "--spool", d.spool, "--from", SENDER, "--template", tpl,
                "--recipients", csv, "--job", "submit-1")
    check(again.returncode == 1 and "was already accepted" in again.stderr.decode()
          and "submit-1.job" in again.stderr.decode(),
          "the same --job again: %d %r" % (again.returncode, again.stderr))

    # No --job: a generated id, sortable by time, naming the list; it is delivered.
    one = write(os.path.join(h.dir, "one more.csv"), b"address,name,city\nok-new@d0004.test,New,Lima\n")
    g = run(ctl, "submit", "--spool", d.spool, "--from", SENDER, "--template", tpl,
            "--recipients", one)
    job_id = g.stdout.decode().strip()
    check(g.returncode == 0 and re.fullmatch(r"\d{8}T\d{6}Z-one_more-[0-9a-f]{8}", job_id),
          "generated id: %d %r" % (g.returncode, job_id))
    wait_for(lambda: any("ok-new@d0004.test" in r["rcpts"] for r in server.messages()), 60,
             "the generated job's recipient to reach the server")

    # --split: a bad count is a usage error; too few spools too; nothing written.
    other = os.path.join(h.dir, "node-b-spool")
    for sub in ("incoming", "tmp", "accepted"):
        os.makedirs(os.path.join(other, sub))
    for args, want in ((["--split", "0", "--out", h.dir], "--split: \"0\" is not a number of parts 1..64"),
                       (["--split", "x", "--out", h.dir], "--split: \"x\" is not a number"),
                       (["--split", "3", "--spool", d.spool + "," + other], "--split 3 needs 3 spools in --spool, 2 given")):
        bad = run(ctl, "submit", "--from", SENDER, "--template", tpl, "--recipients", csv,
                  "--job", "submit-bad-split", *args)
        check(bad.returncode == 2 and want in bad.stderr.decode(),
              "submit %s: exit %d %r, want 2 and %r" % (" ".join(args), bad.returncode, bad.stderr, want))
    check(not [f for f in os.listdir(d.path("incoming")) + os.listdir(other + "/incoming") if "bad-split" in f],
          "a refused split left files")

    # --split 2 over two nodes' spools: this volleyd's takes part 1 and delivers it,
    # the other spool holds part 2; every good row in exactly one part, same header.
    sp = run(ctl, "submit", "--from", SENDER, "--template", tpl, "--recipients", csv,
             "--job", "submit-split", "--split", "2", "--spool", d.spool + "," + other)
    check(sp.returncode == 0 and sp.stdout.decode() == "submit-split-1\nsubmit-split-2\n",
          "submit --split 2: exit %d, printed %r" % (sp.returncode, sp.stdout))
    part2 = os.path.join(other, "incoming", "submit-split-2.job")
    with open(part2, "rb") as f:
        lines2 = f.read().decode().splitlines()
    accepted1 = d.path("accepted", "submit-split-1.job")
    wait_for(lambda: os.path.exists(accepted1), 30, "part 1 in this volleyd's accepted/")
    with open(accepted1, "rb") as f:
        lines1 = f.read().decode().splitlines()
    to = lambda lines: [json.loads(x)["to"] for x in lines[1:]]
    parts = to(lines1) + to(lines2)
    check(sorted(parts) == sorted(GOOD), "the parts hold %r, not each good row once: %r" % (parts, sorted(GOOD)))
    check(len(to(lines1)) == 3 and len(to(lines2)) == 2, "round robin gave %d and %d" % (len(to(lines1)), len(to(lines2))))
    h1, h2 = json.loads(lines1[0]), json.loads(lines2[0])
    check((h1.pop("job"), h2.pop("job")) == ("submit-split-1", "submit-split-2") and h1 == h2,
          "the parts' headers differ beyond the id: %r %r" % (h1, h2))
    # Part 1's addresses were delivered once by submit-1: now a second time.
    wait_for(lambda: all(sum(r["rcpts"].count(a) for r in server.messages()) == 2 for a in to(lines1)),
             60, "part 1's recipients delivered by this node")
    d.assert_alive()


harness.main(test, "submit")
