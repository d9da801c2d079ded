#!/usr/bin/python3
"""reload_test.py - SIGHUP reloads the config while a campaign runs (issue 19).

One destination, rated.test, routed to a volley-sink of its own, one recipient per
transaction, starts at max_message_rate = "40/s" and max_connections_per_destination
= 4. While its campaign runs:

  1. SIGHUP with a good file that lowers them to "10/s" and 2 connections (and
     changes [log] keep, which needs a restart): volleyd logs "config reloaded from
     FILE (2 changes: ...)" and "log.keep changed: restart volleyd to apply"; the
     sink then sees 10 messages a second (within 10%) and never more than 2
     connections from volleyd once the connections over the new limit have finished
     their transaction (idle ones QUIT at once, busy ones after it): the sink's
     sessions_without_quit stays 0.
  2. SIGHUP with a broken file (a bad rate on line N): volleyd logs the error with
     file, line and key, keeps running, and the sink still sees 10 a second.
  3. At the end: every recipient has exactly one terminal record (delivered), none
     was deferred (a connection cut under a transaction would defer its recipient),
     no connection failed, and the sink took each recipient once: nothing lost or
     doubled. volley_config_reloads_total counts one ok and one failed.

Then [routes]: moved.test goes to one sink; a reload sends it to another, and the
next job's recipients arrive there (intake's partitions follow the new route, and the
shards route by it), each once.

Then a third volleyd gets SIGHUP during start-up, after main blocked it (SigBlk in
/proc/PID/status) and before it is running: it must not die of it, and it reloads
once running.
"""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

N = 400
RATE_BEFORE, RATE_AFTER = 40.0, 10.0
CONNS_BEFORE, CONNS_AFTER = 4, 2
TOLERANCE = 0.10


def destination(rate, conns):
    return ('\n[destination."rated.test"]\nmax_message_rate = "%d/s"\n'
            'max_connections_per_destination = %d\nmax_recipients_per_transaction = 1\n'
            % (rate, conns))


def rewrite(path, text):
    """As an operator should: a new file renamed over the old one."""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


def output(d):
    with open(d.output, errors="replace") as f:
        return f.read()


def measured_rate(times):
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def sighup_blocked(pid):
    """main has blocked SIGHUP and nothing else (SigBlk is 1: signal 1). Not just
    bit 0: before main, the C library and the sanitizers block every signal for a
    moment and then unblock them, and a SIGHUP sent then would kill volleyd before
    any code of ours ran (no program can help that)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16) == 1
    except OSError:
        return False
    return False


def campaign(h):
    sink = h.sink(record=True, name="rated-sink")
    other = h.sink(record=False, name="other-sink")
    d = h.volleyd(route_port=other.port, routes={"rated.test": sink.port},
                  extra_config=destination(RATE_BEFORE, CONNS_BEFORE) + "\n[log]\nkeep = 14\n")
    with open(d.config) as f:
        original = f.read()
    d.start()
    rcpts = ["r%d@rated.test" % i for i in range(N)]
    d.drop("reload.job", harness.job_text("reload", rcpts))

    def delivered():
        d.assert_alive()
        return len(harness.delivered_by_rcpt(d.deliveries("reload"), "reload"))
    wait_for(lambda: delivered() >= 80, 60, "80 recipients delivered at the first rate")
    peak_before = max(l["peak_connections"] for l in sink.fresh_stats()["listeners"])
    log("before the reload: %d connections at once at the sink" % peak_before)
    check(peak_before > CONNS_AFTER, "only %d connections before the reload: lowering the "
          "limit to %d would show nothing" % (peak_before, CONNS_AFTER))

    # 1. A good file.
    good = original.replace(destination(RATE_BEFORE, CONNS_BEFORE),
                            destination(RATE_AFTER, CONNS_AFTER)).replace("keep = 14", "keep = 7")
    check(good != original, "the test's config rewrite changed nothing")
    rewrite(d.config, good)
    os.kill(d.proc.pid, signal.SIGHUP)
    reloaded_at = time.time()
    wait_for(lambda: d.assert_alive() and "config reloaded from %s" % d.config in output(d), 10,
             "the reload logged")
    out = output(d)
    line = [l for l in out.splitlines() if "config reloaded from" in l][0]
    log("volleyd: %s" % line)
    check("2 changes" in line and "max_message_rate" in line
          and "max_connections_per_destination" in line,
          "the reload line does not name the two changes: %r" % line)
    check("log.keep changed: restart volleyd to apply" in out,
          "no restart notice for [log] keep:\n%s" % harness.tail(d.output))

    # The connections over the new limit finish their transaction (a message at
    # 10/s is well under a second), then the sink never sees more than 2.
    settled = reloaded_at + 1.0
    wait_for(lambda: time.time() >= settled, 5, "the connections over the limit to close")
    samples = []
    mid_hup_at = None
    while delivered() < N - 20:
        stats = sink.stats()  # rewritten every second: a sample a second
        samples.append(sum(l["connections"] for l in stats["listeners"]))
        if mid_hup_at is None and time.time() >= settled + 6:
            # 2. A broken file, halfway through the slow part.
            broken = good.replace('max_message_rate = "%d/s"' % RATE_AFTER,
                                  'max_message_rate = "fast"')
            bad_line = broken.splitlines().index('max_message_rate = "fast"') + 1
            rewrite(d.config, broken)
            os.kill(d.proc.pid, signal.SIGHUP)
            mid_hup_at = time.time()
            wanted = "%s:%d: destination.\"rated.test\".max_message_rate" % (d.config, bad_line)
            wait_for(lambda: wanted in output(d), 10, "the refusal logged with file and line")
            refusal = [l for l in output(d).splitlines() if wanted in l][0]
            log("volleyd: %s" % refusal)
            check("reload refused" in refusal and "running config is kept" in refusal,
                  "the refusal does not say the running config is kept: %r" % refusal)
            d.assert_alive()
        time.sleep(0.25)
    check(mid_hup_at is not None, "the campaign ended before the broken file was tried")
    check(samples and max(samples) <= CONNS_AFTER, "after the reload the sink saw %d connections "
          "at once (limit %d); samples %r" % (max(samples), CONNS_AFTER, samples))
    log("after the reload: at most %d connections at once (%d samples)" % (max(samples), len(samples)))
    wait_for(lambda: delivered() >= N, 60, "every recipient delivered")
    m = harness.scrape(d.metrics_port)
    rc = d.stop()  # first: its idle connections say QUIT
    check(rc == 0, "volleyd exited %s after SIGTERM" % rc)
    sink.stop()
    dropped = sink.stats().get("sessions_without_quit")
    log("sink: %s sessions, %s ended without QUIT" % (sink.stats().get("sessions"), dropped))
    check(dropped == 0, "%s of volleyd's connections ended without QUIT: dropped, not closed"
          % dropped)

    # The rates, from the sink's own records.
    times = sorted(r["ts"] for r in sink.records() for a in r["rcpts"] if a.endswith("@rated.test"))
    after_good = [t for t in times if settled <= t < mid_hup_at]
    after_bad = [t for t in times if t >= mid_hup_at + 0.5]
    for what, ts in (("after the good reload", after_good), ("after the broken one", after_bad)):
        check(len(ts) >= 20, "%s: only %d messages to measure" % (what, len(ts)))
        rate = measured_rate(ts)
        log("%s: %d messages at %.2f/s (limit %.0f/s)" % (what, len(ts), rate, RATE_AFTER))
        check(abs(rate - RATE_AFTER) <= TOLERANCE * RATE_AFTER,
              "%s the sink saw %.2f messages/s, not within 10%% of %.0f/s"
              % (what, rate, RATE_AFTER))

    # 3. Nothing lost, nothing doubled, nothing cut.
    records = d.deliveries("reload")
    terminal = [r for r in records if r["status"] != "deferred"]
    by_rcpt = {}
    for r in terminal:
        by_rcpt.setdefault(r["rcpt"], []).append(r["status"])
    check(sorted(by_rcpt) == sorted(rcpts), "%d of %d recipients have a terminal record"
          % (len(by_rcpt), N))
    doubled = {a: s for a, s in by_rcpt.items() if s != ["delivered"]}
    check(not doubled, "recipients without exactly one delivered record: %r"
          % dict(list(doubled.items())[:5]))
    deferred = [r for r in records if r["status"] == "deferred"]
    check(not deferred, "%d deferrals (a cut connection?), first: %r" % (len(deferred),
                                                                        deferred[:1]))
    taken = [a for r in sink.records() for a in r["rcpts"]]
    check(sorted(taken) == sorted(rcpts), "the sink took %d recipients (%d distinct) for %d"
          % (len(taken), len(set(taken)), N))
    failed = m.total("volley_connections_failed_total") or 0
    check(failed == 0, "%s connections failed" % failed)
    ok = m.get("volley_config_reloads_total", result="ok")
    bad = m.get("volley_config_reloads_total", result="failed")
    last = m.get("volley_config_last_reload_success_timestamp_seconds")
    log("reloads: ok %s, failed %s, last %s" % (ok, bad, last))
    check(ok == 1 and bad == 1, "volley_config_reloads_total: ok %s, failed %s (want 1, 1)"
          % (ok, bad))
    check(last is not None and abs(last - reloaded_at) < 5,
          "the last reload's time is %s, the SIGHUP was at %.0f" % (last, reloaded_at))


def routes_change(h):
    first = h.sink(record=True, name="first-sink")
    second = h.sink(record=True, name="second-sink")
    d = h.volleyd(route_port=first.port, name="volleyd-routes",
                  routes={"moved.test": first.port})
    d.start()
    before = ["b%d@moved.test" % i for i in range(20)]
    d.drop("before.job", harness.job_text("before", before))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(
        d.deliveries("before"), "before")) == len(before), 60, "the first job delivered")
    with open(d.config) as f:
        text = f.read()
    old = '"moved.test" = "127.0.0.1:%d"' % first.port
    check(old in text, "no moved.test route in the config")
    rewrite(d.config, text.replace(old, '"moved.test" = "127.0.0.1:%d"' % second.port))
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: 'routes."moved.test"' in output(d), 10, "the routes reload logged")
    after = ["a%d@moved.test" % i for i in range(20)]
    d.drop("after.job", harness.job_text("after", after))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(
        d.deliveries("after"), "after")) == len(after), 60, "the second job delivered")
    check(d.stop() == 0, "volleyd did not stop cleanly")
    first.stop()
    second.stop()
    got_first = sorted(a for r in first.records() for a in r["rcpts"])
    got_second = sorted(a for r in second.records() for a in r["rcpts"])
    check(got_first == sorted(before), "the first sink took %r" % got_first[:5])
    check(got_second == sorted(after), "the second sink took %d recipients (%r...), want the "
          "second job's %d" % (len(got_second), got_second[:3], len(after)))
    log("routes: the first job went to the first sink, the second job to the second")


def during_startup(h):
    sink = h.sink(record=False, name="startup-sink")
    d = h.volleyd(route_port=sink.port, name="volleyd-startup")
    d.proc = harness.Proc(h, d.name, [d.binary, "--config", d.config], cwd=d.dir,
                          output=d.output)
    wait_for(lambda: sighup_blocked(d.proc.pid) or not d.alive(), 10, "main to block SIGHUP",
             interval=0.001)
    running_before = "running:" in output(d)
    os.kill(d.proc.pid, signal.SIGHUP)
    log("SIGHUP sent during start-up (volleyd %s running yet)"
        % ("was" if running_before else "was not"))
    wait_for(lambda: d.assert_alive() and "running:" in output(d), 30, "volleyd running")
    wait_for(lambda: "config reloaded from" in output(d), 10, "the waiting SIGHUP's reload")
    time.sleep(0.5)
    d.assert_alive()
    check(d.stop() == 0, "volleyd did not stop cleanly after a SIGHUP during start-up")
    check(not re.search(r"Hangup", output(d)), "a hangup was reported:\n%s" % harness.tail(d.output))


def test(h):
    campaign(h)
    routes_change(h)
    during_startup(h)


if __name__ == "__main__":
    harness.main(test, "reload")
