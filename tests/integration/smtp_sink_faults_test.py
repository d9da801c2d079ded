#!/usr/bin/python3
"""smtp_sink_faults_test.py - volleyd's outcomes against Postfix's smtp-sink with its
fault flags (man smtp-sink), one smtp-sink per domain, all through one volleyd at once
(retry.initial 1s, max 2s, max_age 7s):

    domain          smtp-sink flags  what must happen
    nopipe.test     -p               no PIPELINING: a personalised job (a transaction per
                                     recipient) is delivered, attempt 1
    noesmtp.test    -e               EHLO refused (500): HELO fallback, delivered at
                                     attempt 1; the sink saw protocol SMTP, HELO volley-src.test
    rcpt5xx.test    -f RCPT          500 5.3.0 to RCPT: bounced at attempt 1, never retried
                                     (one RCPT per recipient), nothing received
    mail4xx.test    -r MAIL          450 4.3.0 to MAIL: deferred at attempts 1..n with
                                     backoff, then one `expired` record at max_age carrying
                                     the last 450; never a RCPT after a refused MAIL
    rcpt4xx.test    -r RCPT          450 4.3.0 to RCPT: deferred at attempts 1 and 2; then
                                     the sink is restarted without the fault on the same
                                     port and the recipients are delivered
    hangup.test     -q RCPT          the sink hangs up after RCPT, no reply: deferred
                                     4.4.2 (not "may have been delivered": no data was
                                     sent); delivered after a restart without the fault
    close421.test   -Q DATA          421 to DATA and hang-up: deferred 421; delivered
                                     after a restart
    close421dot.test -Q .            421 to the end of data: deferred 421 (a definite
                                     reply: not "may have been delivered"); delivered
                                     after a restart

Every sink runs with -v, so its output shows each command it got (RCPT and MAIL counts
below come from there), and with -D, so what it accepted is known (harness.PostfixSink).
Also checked for every recipient: records in time order, attempts 1, 2, 3, ..., nothing
after the terminal record, and a clean SIGTERM exit of volleyd.
"""
import collections
import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SENDER = "sender@volley-src.test"
RETRY_INITIAL, RETRY_MAX, MAX_AGE = 1.0, 2.0, 7.0
QUIET = 2.5  # after a bounce: longer than retry.initial * 1.2 plus a scheduler tick
TERMINAL = {"delivered", "bounced", "expired"}


class Scenario:
    def __init__(self, name, flags, n, personalised, kind, restart_after=0):
        self.name = name
        self.domain = name + ".test"
        self.flags = flags
        self.rcpts = ["%s-%d@%s" % (name, i + 1, self.domain) for i in range(n)]
        self.personalised = personalised
        self.kind = kind  # delivered | bounced | expired | restart
        self.restart_after = restart_after  # deferrals per recipient before the restart
        self.sink = None
        self.clean = None  # the sink without the fault, after a restart
        self.stopping_at = None  # when the faulty sink was about to be stopped
        self.restarted_at = None


SCENARIOS = [
    Scenario("nopipe", ["-p"], 4, True, "delivered"),
    Scenario("noesmtp", ["-e"], 3, False, "delivered"),
    Scenario("rcpt5xx", ["-f", "RCPT"], 2, False, "bounced"),
    Scenario("mail4xx", ["-r", "MAIL"], 2, False, "expired"),
    Scenario("rcpt4xx", ["-r", "RCPT"], 2, False, "restart", restart_after=2),
    Scenario("hangup", ["-q", "RCPT"], 2, False, "restart", restart_after=1),
    Scenario("close421", ["-Q", "DATA"], 2, False, "restart", restart_after=1),
    Scenario("close421dot", ["-Q", "."], 2, True, "restart", restart_after=1),
]


def ts_seconds(ts):
    dt = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def short(r):
    return "%s/a%s/%s %s %r" % (r.get("status"), r.get("attempt"), r.get("code"), r.get("enhanced"),
                               r.get("response"))


def commands(sink, verb):
    """Counter of the argument addresses of `verb` (MAIL or RCPT) commands the sink got
    (smtp-sink -v prints each command it reads)."""
    try:
        with open(sink.proc.output, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return collections.Counter()
    pat = re.compile(r"smtp-sink: %s (?:FROM|TO):<([^>]*)>" % verb, re.I)
    return collections.Counter(m.group(1) for m in pat.finditer(text))


def received(sink):
    """Counter of recipients in transactions the sink accepted (its -D dump)."""
    return collections.Counter(r for _, rs in sink.transactions() for r in rs)


def job_text(sc):
    if not sc.personalised:
        return harness.job_text(sc.name, sc.rcpts, sender=SENDER)
    lines = [harness.header_line(sc.name, sender=SENDER, msg=harness.message(personalised=True))]
    lines += [harness.rcpt_line(r, first_name="N%d" % i) for i, r in enumerate(sc.rcpts)]
    return "\n".join(lines) + "\n"


def test(h):
    for sc in SCENARIOS:
        sc.sink = harness.PostfixSink(h, extra_args=["-v"] + sc.flags, name="sink-" + sc.name).start()
    d = h.volleyd(route_port=SCENARIOS[0].sink.port, retry_initial="%ds" % RETRY_INITIAL,
                  retry_max="%ds" % RETRY_MAX, max_age="%ds" % MAX_AGE,
                  routes={sc.domain: sc.sink.port for sc in SCENARIOS})
    d.start()
    dropped = time.time()
    for sc in SCENARIOS:
        d.drop(sc.name + ".job", job_text(sc))
    reader = harness.JsonlReader(d.deliveries_path)

    def per_rcpt():
        per = collections.defaultdict(list)
        for r in reader.poll():
            per[r.get("rcpt")].append(r)
        return per

    def step():
        """Restart the sinks whose fault has been seen often enough; True when every
        recipient has a terminal record."""
        d.assert_alive()
        per = per_rcpt()
        for sc in SCENARIOS:
            if sc.kind != "restart" or sc.clean is not None:
                continue
            if all(sum(x["status"] == "deferred" for x in per[r]) >= sc.restart_after for r in sc.rcpts):
                sc.stopping_at = time.time()
                rc = sc.sink.stop()
                sc.clean = harness.PostfixSink(h, extra_args=["-v"], name="sink-%s-clean" % sc.name)
                sc.clean.start(port=sc.sink.port)
                sc.restarted_at = time.time()
                log("%s: restarted smtp-sink without %s on port %d (the faulty one exited %s)"
                    % (sc.name, " ".join(sc.flags), sc.sink.port, rc))
        return all(any(x["status"] in TERMINAL for x in per[r]) for sc in SCENARIOS for r in sc.rcpts)

    try:
        wait_for(step, MAX_AGE + 20, "a terminal record for every recipient", interval=0.05)
    except harness.TestFailure as e:
        per = per_rcpt()
        raise harness.TestFailure("%s; records so far: %s" % (
            e, {r: [short(x) for x in per[r]] for sc in SCENARIOS for r in sc.rcpts}))
    log("every recipient has its terminal record %.2fs after the drops" % (time.time() - dropped))

    # A bounce is never retried, and nothing follows a terminal record: watch a while.
    last_bounce = max(ts_seconds(x["ts"]) for x in reader.poll() if x["status"] == "bounced")
    settled = len(reader.poll())
    time.sleep(max(0.5, QUIET - (time.time() - last_bounce)))
    records = reader.poll()
    check(len(records) == settled, "records after every recipient was finished: %s"
          % [short(x) for x in records[settled:]])
    rc = d.stop()
    check(rc == 0, "volleyd exited with status %r on SIGTERM" % rc)
    for sc in SCENARIOS:
        for s in (sc.sink, sc.clean):
            if s is not None:
                s.stop()
    check(reader.torn == 0, "torn delivery-log lines: %s" % reader.torn_samples)

    per = collections.defaultdict(list)
    for r in records:
        per[r.get("rcpt")].append(r)
    everyone = {r for sc in SCENARIOS for r in sc.rcpts}
    check(set(per) == everyone, "records for unexpected recipients: %s" % sorted(set(per) - everyone))
    for r, recs in per.items():
        times = [ts_seconds(x["ts"]) for x in recs]
        check(times == sorted(times), "%s: records out of order: %s" % (r, [short(x) for x in recs]))
        check([x["attempt"] for x in recs] == list(range(1, len(recs) + 1)),
              "%s: attempts %s, want 1, 2, ...: %s" % (r, [x["attempt"] for x in recs],
                                                      [short(x) for x in recs]))
        check(sum(x["status"] in TERMINAL for x in recs) == 1 and recs[-1]["status"] in TERMINAL,
              "%s: want exactly one terminal record, last: %s" % (r, [short(x) for x in recs]))

    for sc in SCENARIOS:
        recs = {r: per[r] for r in sc.rcpts}
        summary = {r: [short(x) for x in v] for r, v in recs.items()}
        got = received(sc.sink)
        rcpt_cmds = commands(sc.sink, "RCPT")
        mail_cmds = commands(sc.sink, "MAIL")
        log("%s (%s): %s; sink got MAIL x%d, RCPT %s, accepted %s"
            % (sc.name, " ".join(sc.flags), {r: [x["status"] for x in v] for r, v in recs.items()},
               sum(mail_cmds.values()), dict(rcpt_cmds), dict(got)))

        if sc.kind == "delivered":
            for r, v in recs.items():
                check(len(v) == 1 and v[0]["status"] == "delivered" and v[0]["code"] == 250
                      and v[0]["port"] == sc.sink.port,
                      "%s: %s: want one delivered 250 record at attempt 1: %s" % (sc.name, r, summary[r]))
            check(got == collections.Counter(sc.rcpts), "%s: the sink accepted %s, want each of %s once"
                  % (sc.name, dict(got), sc.rcpts))
            protos = collections.Counter(t.get("X-Client-Proto") for t in sc.sink.dump_headers())
            helos = collections.Counter(t.get("X-Helo-Args") for t in sc.sink.dump_headers())
            want_proto = "SMTP" if "-e" in sc.flags else "ESMTP"
            check(set(protos) == {want_proto} and set(helos) == {"volley-src.test"},
                  "%s: the sink saw protocols %s and HELO/EHLO %s, want %s and volley-src.test"
                  % (sc.name, dict(protos), dict(helos), want_proto))
            if sc.personalised:
                check(sum(protos.values()) == len(sc.rcpts), "%s: %d transactions for %d personalised "
                      "recipients" % (sc.name, sum(protos.values()), len(sc.rcpts)))

        elif sc.kind == "bounced":
            for r, v in recs.items():
                check(len(v) == 1 and v[0]["status"] == "bounced" and v[0]["code"] == 500
                      and v[0]["enhanced"] == "5.3.0" and "command failed" in v[0]["response"],
                      "%s: %s: want one bounced 500 5.3.0 record at attempt 1: %s" % (sc.name, r, summary[r]))
                check(time.time() - ts_seconds(v[0]["ts"]) >= QUIET,
                      "test bug: watched %s for less than %ss after its bounce" % (r, QUIET))
            check(rcpt_cmds == collections.Counter(sc.rcpts), "%s: RCPTs %s, want each recipient once "
                  "(a bounce is not retried)" % (sc.name, dict(rcpt_cmds)))
            check(not got, "%s: the sink accepted a message: %s" % (sc.name, dict(got)))

        elif sc.kind == "expired":
            for r, v in recs.items():
                deferred, last = v[:-1], v[-1]
                check(2 <= len(deferred) <= 6 and all(x["status"] == "deferred" and x["code"] == 450
                                                      and x["enhanced"] == "4.3.0" for x in deferred),
                      "%s: %s: want 2..6 deferred 450 4.3.0 records before expiring: %s"
                      % (sc.name, r, summary[r]))
                check(last["status"] == "expired" and last["code"] == 450 and last["enhanced"] == "4.3.0"
                      and "expired after %d attempts" % last["attempt"] in last["response"],
                      "%s: %s: want an expired record carrying the last try's 450 4.3.0: %s"
                      % (sc.name, r, short(last)))
                age = ts_seconds(last["ts"]) - dropped
                check(MAX_AGE - 0.05 <= age <= MAX_AGE + 2.5, "%s: %s expired %.2fs after the drop, "
                      "want about max_age %gs" % (sc.name, r, age, MAX_AGE))
                gaps = [ts_seconds(b["ts"]) - ts_seconds(a["ts"]) for a, b in zip(deferred, deferred[1:])]
                want = [min(RETRY_INITIAL * 2 ** k, RETRY_MAX) for k in range(len(gaps))]
                check(all(0.8 * w - 0.02 <= g <= 1.2 * w + 1.0 for g, w in zip(gaps, want)),
                      "%s: %s: retry gaps %s, want about %s (x0.8..1.2)"
                      % (sc.name, r, ["%.2f" % g for g in gaps], want))
            attempts = max(len(v) for v in recs.values())
            check(sum(mail_cmds.values()) >= attempts, "%s: %d MAIL commands for %d attempts"
                  % (sc.name, sum(mail_cmds.values()), attempts))
            check(not rcpt_cmds, "%s: RCPT sent after MAIL was refused by a server without "
                  "PIPELINING: %s" % (sc.name, dict(rcpt_cmds)))
            check(not got, "%s: the sink accepted a message: %s" % (sc.name, dict(got)))

        elif sc.kind == "restart":
            check(sc.clean is not None, "%s: never restarted" % sc.name)
            for r, v in recs.items():
                before = [x for x in v if ts_seconds(x["ts"]) < sc.stopping_at]
                after = [x for x in v if ts_seconds(x["ts"]) >= sc.restarted_at]
                check(len(before) >= sc.restart_after and all(x["status"] == "deferred" for x in v[:-1])
                      and v[-1]["status"] == "delivered" and v[-1]["code"] == 250 and after,
                      "%s: %s: want deferred (x%d+) then delivered after the restart: %s"
                      % (sc.name, r, sc.restart_after, summary[r]))
                for x in before:
                    if sc.flags[0] == "-q":
                        # volleyd's own 451 4.4.2 (as in faults_test.py), no server reply
                        ok = (x["enhanced"] == "4.4.2" and x["code"] == 451
                              and "connection lost" in x["response"]
                              and "may have been delivered" not in x["response"])
                        want = "451 4.4.2 connection lost, not 'may have been delivered'"
                    elif sc.flags[0] == "-Q":
                        ok = (x["code"] == 421 and x["enhanced"] == "4.0.0"
                              and "may have been delivered" not in x["response"])
                        want = "421 4.0.0 from the server"
                    else:
                        ok = x["code"] == 450 and x["enhanced"] == "4.3.0"
                        want = "450 4.3.0"
                    check(ok, "%s: %s: a deferral before the restart is %s, want %s"
                          % (sc.name, r, short(x), want))
            got_clean = received(sc.clean)
            check(got_clean == collections.Counter(sc.rcpts), "%s: the restarted sink accepted %s, "
                  "want each of %s once" % (sc.name, dict(got_clean), sc.rcpts))
            if sc.flags[0] != "-Q" or sc.flags[1] != ".":
                check(not got, "%s: the faulty sink accepted a message: %s" % (sc.name, dict(got)))
            if sc.name == "rcpt4xx":
                check(all(rcpt_cmds[r] >= 2 for r in sc.rcpts), "%s: the faulty sink got RCPTs %s, "
                      "want two or more per recipient (retried)" % (sc.name, dict(rcpt_cmds)))


if __name__ == "__main__":
    harness.main(test, "smtp-sink-faults")
