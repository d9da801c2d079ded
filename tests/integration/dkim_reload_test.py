#!/usr/bin/python3
"""dkim_reload_test.py - DKIM key rotation by selector without a restart (issue 19).

volleyd starts signing sender.test with selector "a" (RSA). One job of N recipients
goes to a real Postfix at 5 messages a second, one recipient per transaction, so
that it is still being sent when:

  1. SIGHUP with a file whose new [[dkim]] table (selector "b") names a key file that
     does not exist: volleyd logs the refusal with the file, keeps running, and goes
     on signing with "a".
  2. SIGHUP with a file where "b" replaces "a", its key made by `volleyctl dkim
     keygen`, and a first key for other.test ("c"): volleyd logs "config reloaded
     from FILE (1 change: dkim)" and "dkim: signing with sender.test/b,
     other.test/c", and the job's later messages (planned before the reload) are
     signed with "b".

Intake's check follows the keys: a job from other.test with one-click unsubscribe is
refused before the reload (no key signs for other.test) and taken after it, its
message signed by other.test's new key.

Both selectors' TXT records are in a local nsd zone (as an operator publishes the
new one before the reload), and every stored message is checked by an independent
verifier (python3-dkim): it carries exactly one DKIM-Signature and it verifies; the
ones signed before the good reload (by t=) carry "a", those after it "b", and both
selectors were used. Every recipient got exactly one message (nothing lost or doubled
by the reloads), and volley_config_reloads_total counts one ok and one failed.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402
from postfix_smtpd import PostfixSmtpd  # noqa: E402
from dkim_test import crlf, keygen, txt_lookup, verify_all  # noqa: E402

N = 40
RATE = 5
SENDER = "news@sender.test"
MESSAGE = ("From: Sender News <news@sender.test>\n"
           "To: {{to}}\n"
           "Subject: Rotation for {{first}}\n"
           "MIME-Version: 1.0\n"
           "Content-Type: text/plain; charset=us-ascii\n"
           "\n"
           "Dear {{first}}, this message is signed by one selector or the other.\n")


ONE_CLICK_RCPT = "one@inbox.test"
OTHER_TABLE = '[[dkim]]\ndomain = "other.test"\nselector = "c"\nkey_file = "%s"\n\n'


def one_click_job(job_id):
    header = {"job": job_id, "from": "news@other.test",
              "message": MESSAGE.replace("news@sender.test", "news@other.test"),
              "unsubscribe_url": "https://unsub.other.test/one-click/{{unsubscribe_token}}"}
    return json.dumps(header) + "\n" + json.dumps({"to": ONE_CLICK_RCPT,
                                                   "vars": {"first": "one"}}) + "\n"


def dkim_table(selector, path):
    return ('[[dkim]]\ndomain = "sender.test"\nselector = "%s"\nkey_file = "%s"\n\n'
            % (selector, path))


def rewrite(path, text):
    """As an operator should: a new file renamed over the old one."""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


def output(d):
    with open(d.output, errors="replace") as f:
        return f.read()


def test(h):
    ctl = h.binary("tools/volleyctl/volleyctl")
    keys = h.mkdir("keys")
    key_a = os.path.join(keys, "a.sender.test.pem")
    key_b = os.path.join(keys, "b.sender.test.pem")
    zone = keygen(h, ctl, "sender.test", "a", "rsa", key_a)
    zone += keygen(h, ctl, "sender.test", "b", "rsa", key_b)
    key_c = os.path.join(keys, "c.other.test.pem")
    other_zone = keygen(h, ctl, "other.test", "c", "ed25519", key_c)
    nsd = h.nsd({"sender.test": zone, "other.test": other_zone})
    secret = os.path.join(keys, "token-k1.key")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    lookup = txt_lookup(nsd.port)

    rcpts = ["r%02d@inbox.test" % i for i in range(N)]
    mx = PostfixSmtpd(h, rcpts + [ONE_CLICK_RCPT], domains=("inbox.test",), name="mx").start()
    rate = ('[destination."inbox.test"]\nmax_message_rate = "%d/s"\n'
            'max_recipients_per_transaction = 1\n' % RATE)
    d = h.volleyd(route_port=mx.port, extra_config=dkim_table("a", key_a) + rate +
                  '\n[[token_key]]\nid = "k1"\nsecret_file = "%s"\n' % secret)
    with open(d.config) as f:
        original = f.read()
    d.start()
    header = {"job": "rotate", "from": SENDER, "message": MESSAGE}
    d.drop("rotate.job", "\n".join(
        [json.dumps(header)] +
        [json.dumps({"to": r, "vars": {"first": r.split("@")[0]}}) for r in rcpts]) + "\n")

    def delivered():
        d.assert_alive()
        return len(harness.delivered_by_rcpt(d.deliveries("rotate"), "rotate"))

    # No key signs for other.test yet: intake refuses one-click unsubscribe from it.
    d.drop("oneclick1.job", one_click_job("oneclick1"))
    wait_for(lambda: d.exists("failed", "oneclick1.job.error"), 30,
             "failed/oneclick1.job.error")
    why = d.read("failed", "oneclick1.job.error")
    check("no [[dkim]] key signs for the From domain other.test" in why,
          "oneclick1 refused for another reason: %r" % why)

    # 1. A key that cannot be read: refused, signing goes on with "a".
    wait_for(lambda: delivered() >= 5, 60, "5 recipients delivered before the reloads")
    missing = os.path.join(keys, "missing.pem")
    rewrite(d.config, original.replace(dkim_table("a", key_a), dkim_table("b", missing)))
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in output(d), 10, "the refused reload logged")
    refusal = [l for l in output(d).splitlines() if "reload refused" in l][0]
    log("volleyd: %s" % refusal)
    check(missing in refusal and "selector b" in refusal,
          "the refusal does not name the key file and selector: %r" % refusal)
    at_refusal = delivered()
    check(at_refusal < N - 15, "the job was nearly sent (%d of %d) before the refused reload: "
          "too fast to show anything" % (at_refusal, N))

    # 2. The new selector.
    wait_for(lambda: delivered() >= at_refusal + 5, 30, "5 more delivered after the refusal")
    rewrite(d.config, original.replace(dkim_table("a", key_a),
                                       dkim_table("b", key_b) + OTHER_TABLE % key_c))
    os.kill(d.proc.pid, signal.SIGHUP)
    reloaded_at = time.time()
    wait_for(lambda: "dkim: signing with sender.test/b, other.test/c" in output(d), 10,
             "the key reload logged")
    out = output(d)
    line = [l for l in out.splitlines() if "config reloaded from" in l][0]
    log("volleyd: %s" % line)
    check("1 change: dkim" in line, "the reload line does not name dkim: %r" % line)
    check("dkim changed: restart" not in out, "dkim still asks for a restart")
    at_reload = delivered()
    check(at_reload < N - 5, "only %d recipients left after the reload" % (N - at_reload))

    # Intake takes the one-click job now.
    d.drop("oneclick2.job", one_click_job("oneclick2"))
    wait_for(lambda: delivered() >= N, 60, "every recipient delivered")
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(
        d.deliveries("oneclick2"), "oneclick2")) == 1, 60, "the one-click job delivered")
    refused = d.exists("failed", "oneclick2.job.error")
    check(not refused, "oneclick2 refused after the reload: %r"
          % (d.read("failed", "oneclick2.job.error") if refused else ""))
    mx.wait_for_messages(N + 1, 60)
    m = harness.scrape(d.metrics_port)
    check(d.stop() == 0, "volleyd did not stop cleanly")

    # Every message: one signature, verified; "a" before the reload, "b" after.
    signed = []  # (t=, selector)
    for rcpt in rcpts:
        stored = mx.messages(rcpt)
        check(len(stored) == 1, "%s holds %d messages" % (rcpt, len(stored)))
        _, msg = crlf(stored[0])
        sigs = verify_all(msg, lookup, rcpt)
        check(len(sigs) == 1, "%s: %d signatures, want 1" % (rcpt, len(sigs)))
        check(sigs[0].get("d") == "sender.test", "%s: d=%s" % (rcpt, sigs[0].get("d")))
        signed.append((int(sigs[0]["t"]), sigs[0]["s"]))
    stored = mx.messages(ONE_CLICK_RCPT)
    check(len(stored) == 1, "%s holds %d messages" % (ONE_CLICK_RCPT, len(stored)))
    sigs = verify_all(crlf(stored[0])[1], lookup, ONE_CLICK_RCPT)
    check([(s.get("d"), s.get("s")) for s in sigs] == [("other.test", "c")],
          "the one-click message is signed %r, want other.test/c" % sigs)
    by_a = sorted(t for t, s in signed if s == "a")
    by_b = sorted(t for t, s in signed if s == "b")
    log("%d messages signed with a (t=%s..%s), %d with b (t=%s..%s), reload at %.0f"
        % (len(by_a), by_a[:1], by_a[-1:], len(by_b), by_b[:1], by_b[-1:], reloaded_at))
    check(len(by_a) + len(by_b) == N, "selectors other than a and b: %r" % signed)
    check(len(by_a) >= at_refusal + 5, "only %d messages signed with a, %d were delivered "
          "before the good reload" % (len(by_a), at_refusal + 5))
    check(by_b, "no message signed with the reloaded selector b")
    # t= is whole seconds: a message signed in the second of the reload may carry either.
    check(max(by_a) <= int(reloaded_at) + 1, "a message signed with a at t=%d, after the reload "
          "at %.0f" % (max(by_a), reloaded_at))
    check(min(by_b) >= int(reloaded_at) - 1, "a message signed with b at t=%d, before the reload "
          "at %.0f" % (min(by_b), reloaded_at))

    records = d.deliveries("rotate")
    terminal = {}
    for r in records:
        if r["status"] != "deferred":
            terminal.setdefault(r["rcpt"], []).append(r["status"])
    check(sorted(terminal) == sorted(rcpts) and all(s == ["delivered"] for s in terminal.values()),
          "recipients without exactly one delivered record: %r"
          % {a: s for a, s in terminal.items() if s != ["delivered"]})
    ok = m.get("volley_config_reloads_total", result="ok")
    bad = m.get("volley_config_reloads_total", result="failed")
    check(ok == 1 and bad == 1, "volley_config_reloads_total: ok %s, failed %s (want 1, 1)"
          % (ok, bad))
    log("rotation: %d signed with a, %d with b, all verified, each recipient once"
        % (len(by_a), len(by_b)))


if __name__ == "__main__":
    harness.main(test, "dkim_reload")
