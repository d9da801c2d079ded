#!/usr/bin/python3
"""volleyctl_keys_test.py - volleyctl's key tools: dkim keygen and record, verp decode.

DKIM (no daemon): `dkim keygen` writes an RSA and an Ed25519 key with mode 0600 whatever
the umask, prints `S._domainkey.D. IN TXT "..."` in strings of at most 255 octets whose
p= is the key's public key as OpenSSL itself derives it from the file (`openssl pkey
-pubout`), refuses to overwrite a file (exit 1, the file unchanged), and refuses bad
options (exit 2). `dkim record` prints the same record again from the file, and
`--json` the same fields.

VERP (volleyd running): volleyd takes in a job and delivers it to volley-sink; the
job's number comes from `volleyctl job --json`. VERP addresses are made here in
Python, independently of Volley's code (HMAC-SHA256, base32), with the signing key and
with the older second key of [[token_key]]; `verp decode` names the job, line,
recipient (read from spool/accepted/) and key for each, in upper case too. A changed
character, an unsubscribe token in a VERP address and an unknown key id fail with exit
1. volleyd itself sends every message with MAIL FROM b-<token>@<verp domain>, one
recipient per transaction, and each MAIL FROM the sink recorded decodes to the recipient
it was sent to, signed by the first key. With volleyd stopped, decode still verifies
offline (exit 0) and says the job could not be looked up.
"""
import base64
import hashlib
import hmac
import json
import os
import stat
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

JOB = "verp-a"
N = 30
SECRET_NEW = b"k2: a fresh secret of well over thirty-two octets"
SECRET_OLD = b"0123456789abcdef0123456789abcdef"
VERP_DOMAIN = "bounces.volley-src.test"


def run(binary, *args):
    p = subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=120)
    log("$ volleyctl %s -> %d%s" % (" ".join(args), p.returncode,
                                     (": " + p.stderr.strip()) if p.stderr.strip() else ""))
    return p


def spki_base64(pem_path):
    der = subprocess.run(["openssl", "pkey", "-in", pem_path, "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    return der


def txt_strings(line):
    """The quoted strings of a zone line, unescaped."""
    out, i = [], line.index('"')
    while i < len(line):
        if line[i] != '"':
            check(line[i] == " ", "TXT strings not separated by one space: %r" % line)
            i += 1
            continue
        j, s = i + 1, ""
        while line[j] != '"':
            if line[j] == "\\":
                j += 1
            s += line[j]
            j += 1
        out.append(s)
        i = j + 1
    return out


def token(secret, key_id, purpose, job_no, line):
    prefix = bytes([0x10 | len(key_id)]) + key_id + struct.pack(">II", job_no, line)
    mac = hmac.new(secret, bytes([purpose]) + prefix, hashlib.sha256).digest()[:12]
    return base64.b32encode(prefix + mac).decode().rstrip("=").lower()


def verp(secret, key_id, job_no, line, purpose=1):
    return "b-%s@%s" % (token(secret, key_id, purpose, job_no, line), VERP_DOMAIN)


def test_dkim(h, ctl):
    d = h.mkdir("dkim")
    old_umask = os.umask(0o022)  # 0600 must not depend on the caller's umask
    try:
        for alg, extra in (("rsa", ["--bits", "2048"]), ("ed25519", [])):
            path = os.path.join(d, "s-%s.pem" % alg)
            p = run(ctl, "dkim", "keygen", "--domain", "sender.test", "--selector", "s2026" + alg[0],
                    "--algorithm", alg, "--out", path, *extra)
            check(p.returncode == 0, "keygen %s: %d %s" % (alg, p.returncode, p.stderr))
            mode = stat.S_IMODE(os.stat(path).st_mode)
            check(mode == 0o600, "keygen %s wrote mode %o, want 600" % (alg, mode))
            line = p.stdout.strip()
            want_name = "s2026%s._domainkey.sender.test. IN TXT " % alg[0]
            check(line.startswith(want_name + '"'), "keygen %s printed %r" % (alg, line))
            parts = txt_strings(line)
            check(all(len(s.encode()) <= 255 for s in parts), "a TXT string over 255: %r" % parts)
            record = "".join(parts)
            tags = dict(t.strip().split("=", 1) for t in record.split(";") if t.strip())
            check(tags.get("v") == "DKIM1" and tags.get("k") == alg, "record tags: %r" % tags)
            der = spki_base64(path)
            # RSA: p= is the SubjectPublicKeyInfo; Ed25519: the raw 32-octet key, which
            # is the end of its SubjectPublicKeyInfo (RFC 8463 section 4).
            want_p = base64.b64encode(der if alg == "rsa" else der[-32:]).decode()
            check(tags.get("p") == want_p, "keygen %s: p= is not the file's public key" % alg)
            if alg == "rsa":
                check(len(parts) >= 2, "a 2048-bit RSA record fits one string? %r" % parts)

            again = run(ctl, "dkim", "record", path, "--domain", "sender.test",
                        "--selector", "s2026" + alg[0])
            check(again.returncode == 0 and again.stdout == p.stdout,
                  "record %s printed another record:\n%s\n%s" % (alg, again.stdout, p.stdout))
            bare = run(ctl, "dkim", "record", path)
            check(bare.returncode == 0 and bare.stdout.strip() == line[len(want_name):],
                  "record without a name: %r" % bare.stdout)
            js = run(ctl, "--json", "dkim", "record", path)
            j = json.loads(js.stdout)
            check(j["record"] == record and j["name"] is None and j["file"] == path
                  and j["algorithm"] == alg + "-sha256", "record --json: %r" % j)

            with open(path, "rb") as f:
                before = f.read()
            p = run(ctl, "dkim", "keygen", "--domain", "sender.test", "--selector", "x",
                    "--algorithm", alg, "--out", path)
            with open(path, "rb") as f:
                after = f.read()
            check(p.returncode == 1 and "exists" in p.stderr and before == after,
                  "keygen over an existing file: %d %r" % (p.returncode, p.stderr))
    finally:
        os.umask(old_umask)

    out = os.path.join(d, "never.pem")
    for args in (["--selector", "s", "--algorithm", "rsa", "--out", out],
                 ["--domain", "sender.test", "--selector", "s", "--algorithm", "dsa", "--out", out],
                 ["--domain", "sender.test", "--selector", "s", "--algorithm", "ed25519",
                  "--bits", "2048", "--out", out],
                 ["--domain", "bad domain", "--selector", "s", "--algorithm", "rsa", "--out", out],
                 ["--domain", "sender.test", "--selector", "s", "--algorithm", "rsa", "--bits",
                  "512", "--out", out]):
        p = run(ctl, "dkim", "keygen", *args)
        check(p.returncode == 2, "keygen %s: exit %d, want 2" % (args, p.returncode))
    check(not os.path.exists(out), "a refused keygen left a file behind")
    p = run(ctl, "dkim", "record", os.path.join(d, "missing.pem"))
    check(p.returncode == 1, "record of a missing file: exit %d" % p.returncode)


def test_verp(h, ctl):
    keys = h.mkdir("keys")
    paths = {}
    for kid, secret in (("k2", SECRET_NEW), ("k1", SECRET_OLD)):
        paths[kid] = os.path.join(keys, kid + ".key")
        with open(paths[kid], "wb") as f:
            f.write(secret + b"\n")
        os.chmod(paths[kid], 0o600)
    extra = ('[verp]\ndomain = "%s"\n\n[[token_key]]\nid = "k2"\nsecret_file = "%s"\n\n'
             '[[token_key]]\nid = "k1"\nsecret_file = "%s"\n'
             % (VERP_DOMAIN, paths["k2"], paths["k1"]))
    sink = h.sink()
    sink.start()
    d = h.volleyd(route_port=sink.port, extra_config=extra)
    d.start()
    rcpts = harness.recipients(N, 3, "verp")
    d.drop("verp-a.job", harness.job_text(JOB, rcpts))
    wait_for(lambda: d.assert_alive() and len(d.deliveries(JOB)) >= N, 60,
             "every recipient delivered")
    check(d.exists("accepted", "verp-a.job"), "the job file is not in accepted/")

    cfg = ["--config", d.config]
    p = run(ctl, *cfg, "--json", "job", JOB)
    check(p.returncode == 0, "job --json: %s" % p.stderr)
    job_no = json.loads(p.stdout).get("job_no")
    check(isinstance(job_no, int) and job_no > 0, "job without a job_no: %s" % p.stdout)

    # Line L of the job file is recipient L-2 of the list (line 1 is the header).
    for line, secret, kid in ((2, SECRET_NEW, b"k2"), (17, SECRET_OLD, b"k1"),
                              (N + 1, SECRET_NEW, b"k2")):
        for address in (verp(secret, kid, job_no, line), verp(secret, kid, job_no, line).upper()):
            p = run(ctl, *cfg, "--json", "verp", "decode", address)
            check(p.returncode == 0, "decode %s: %d %s" % (address, p.returncode, p.stderr))
            j = json.loads(p.stdout)
            want = {"verified": True, "key_id": kid.decode(), "job_no": job_no, "line": line,
                    "job": JOB, "recipient": rcpts[line - 2], "verp_domain_matches": True}
            got = {k: j.get(k) for k in want}
            check(got == want, "decode %s:\n got %s\nwant %s" % (address, got, want))
    p = run(ctl, *cfg, "verp", "decode", verp(SECRET_NEW, b"k2", job_no, 5))
    check(p.returncode == 0 and ("recipient: %s" % rcpts[3]) in p.stdout.splitlines()
          and ("job: %s" % JOB) in p.stdout.splitlines(), "decode, text:\n%s" % p.stdout)

    good = verp(SECRET_NEW, b"k2", job_no, 9)
    tampered = good[:10] + ("a" if good[10] != "a" else "b") + good[11:]
    for address, why in ((tampered, ""),
                         (verp(SECRET_NEW, b"k2", job_no, 9, purpose=2), "MAC does not verify"),
                         (verp(SECRET_NEW, b"k9", job_no, 9), 'unknown key id "k9"'),
                         (verp(SECRET_OLD, b"k2", job_no, 9), "MAC does not verify")):
        p = run(ctl, *cfg, "verp", "decode", address)
        check(p.returncode == 1 and "mac: does not verify: " + why in p.stdout,
              "decode of a bad address %s: %d\n%s" % (address, p.returncode, p.stdout))
        check("recipient" not in p.stdout, "a failed check still named a recipient")

    # volleyd's own MAIL FROM: b-<token>@[verp] domain, one recipient per
    # transaction, each decoding to the recipient it was sent to.
    wait_for(lambda: len(sink.records()) >= N, 15, "the sink's record of every message")
    records = sink.records()
    for r in records:
        check(r["from"].startswith("b-") and r["from"].endswith("@" + VERP_DOMAIN)
              and len(r["rcpts"]) == 1, "not a VERP transaction: %s" % r)
    for r in records[:10]:
        p = run(ctl, *cfg, "--json", "verp", "decode", r["from"])
        j = json.loads(p.stdout)
        check(p.returncode == 0 and j["job"] == JOB and j["key_id"] == "k2"
              and [j["recipient"]] == r["rcpts"],
              "MAIL FROM %s decodes to %s, was sent to %s" % (r["from"], j, r["rcpts"]))

    check(d.stop() == 0, "volleyd did not stop cleanly")
    p = run(ctl, *cfg, "--json", "verp", "decode", good)
    j = json.loads(p.stdout)
    check(p.returncode == 0 and j["verified"] and j["line"] == 9 and j["job"] is None
          and "is volleyd running?" in j["job_error"] and j["recipient"] is None,
          "decode with volleyd stopped: %d %s" % (p.returncode, p.stdout))
    p = run(ctl, "verp", "decode", good)
    check(p.returncode == 2 and "--config" in p.stderr, "decode without --config: %d" % p.returncode)


def test(h):
    ctl = h.binary("tools/volleyctl/volleyctl")
    test_dkim(h, ctl)
    test_verp(h, ctl)


harness.main(test, "volleyctl-keys")
