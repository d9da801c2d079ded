#!/usr/bin/python3
"""metrics_counts_test.py - the counts are true: after a campaign with known outcomes,
volleyd's /metrics, its delivery log and volley-sink's own counters agree exactly
(issue 7; the catalog is docs/metrics.md).

volley-sink answers 20% of RCPTs `550 5.1.1` and, of the rest, 15% `451 4.3.2` (its
fault profile draws per command, so a deferred recipient may be deferred again, bounce,
or be delivered on a retry), and every RCPT at one domain `452 4.2.2`; it offers
STARTTLS, which volleyd's opportunistic policy takes. volleyd retries after 1-2 s and
expires recipients after MAX_AGE, so every recipient ends delivered, bounced or
expired within seconds. The job has RCPTS good
recipient lines and REJECTED bad ones; another job file is refused whole.

While the job runs, each scrape's progress series for the job must add up (total =
delivered + bounced + expired + cancelled + pending, deferred <= pending, the queued
gauge = pending) and never run ahead of the delivery log, which is written first.
Once every recipient has its final record, /metrics (plain HTTP, the text format
parsed here) must show:

  - volley_deliveries_total{result} = the delivery log's records of that status, for
    every result; per destination, the same summed; volley_outcome_classes_total
    {result, class} = the log's bounced, deferred and expired records of that class;
  - delivered = the recipients volley-sink accepted in whole messages (its record
    file), and the same addresses; volley_queue_time_seconds counts one per delivery;
  - volley_intake_jobs_total and volley_intake_recipients_total = what was dropped;
  - the finished job has no progress series any more, no jobs remain, nothing is
    queued, in flight or deferred, and the oldest queued age is 0;
  - connections: opened = volley-sink's sessions (loopback connects all reach it),
    none failed, none left open after idle_timeout; TLS sessions = volley-sink's
    handshakes, by the version the delivery log names;
  - SMTP replies: 5xx at least the bounces, 4xx at least the deferrals and expiries
    the server answered, and 4xx + 5xx at most the rejects volley-sink sent;
  - transactions at least volley-sink's messages; histogram buckets as documented;
  - free disk near statvfs's, the floor = [queue] min_free_space, RocksDB writing,
    process CPU, RSS and start time plausible, no shard busier than the wall clock;
  - the node: every volley_* sample is labelled node="NAME" and every delivery-log
    record has "node": NAME, the one value, this machine's host name (NodeName
    without [cluster] node);
  - every family of the catalog exposed (in a scrape taken while the job ran) with
    its documented type and labels, each listed label value present, and no volley_
    family the catalog does not list.
"""
import collections
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATALOG = os.path.join(ROOT, "docs", "metrics.md")
JOB = "counts-1"
RCPTS = 300
REJECTED = 2              # bad recipient lines in the job
DOMAINS = 6
MAX_AGE = 8               # seconds: deferrals end by then
MIN_FREE = 1 << 20        # [queue] min_free_space, bytes
RESULTS = ("delivered", "deferred", "bounced", "expired", "cancelled", "suppressed")
PROGRESS = ("total", "delivered", "bounced", "expired", "cancelled", "deferred", "pending")
FAULTS = """
[profile.default]
starttls = true

[[profile.default.reply]]
command = "RCPT"
rate = 0.2
reply = "550 5.1.1 No such user (counts test)"

[[profile.default.reply]]
command = "RCPT"
rate = 0.15
reply = "451 4.3.2 Try again later (counts test)"

# Every recipient at the last domain is deferred until it expires.
[profile.full]
[[profile.full.reply]]
command = "RCPT"
reply = "452 4.2.2 Mailbox full (counts test)"

[domain."%s"]
profile = "full"
""" % harness.domain(DOMAINS - 1)


def read_catalog():
    """{name: (type, {label: set of values or None for any})} from docs/metrics.md."""
    with open(CATALOG) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"^\|\s*`(\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", text, re.M):
        name, kind, cell = m.groups()
        labels = {}
        # "`a`, `b`: x, y" - the values after a colon belong to the label before it;
        # "`version` (TLSv1.2, ...)" gives examples only.
        for lm in re.finditer(r"`(\w+)`(?::([^`]*))?", cell):
            values = None
            if lm.group(2):
                values = {v.strip() for v in lm.group(2).split(",") if v.strip()}
            labels[lm.group(1)] = values
        out[name] = (kind, labels)
    check(len(out) >= 20, "%s: read only %d catalog rows" % (CATALOG, len(out)))
    return out


def exposed_types(text):
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def check_catalog(m, catalog, problems):
    types = exposed_types(m.text)
    for name, (kind, labels) in catalog.items():
        if types.get(name) != kind:
            problems.append("%s: exposed as type %r, docs/metrics.md says %s" % (name, types.get(name), kind))
            continue
        parts = [name + "_bucket", name + "_sum", name + "_count"] if kind == "histogram" else [name]
        for part in parts:
            want = set(labels) | ({"le"} if part.endswith("_bucket") else set())
            found = m.select(part)
            if not found:
                problems.append("%s: no samples" % part)
            for lk in found:
                if set(dict(lk)) != want:
                    problems.append("%s: labels %s, docs/metrics.md lists %s" % (part, sorted(dict(lk)), sorted(want)))
        for label, values in labels.items():
            if values is None:
                continue
            seen = {dict(lk).get(label) for lk in m.select(name)}
            if seen - values:
                problems.append("%s: %s values %s not in docs/metrics.md" % (name, label, sorted(seen - values)))
            # Every listed value is exported from the start (0 until counted): an
            # alert on increase() sees the first event only if the series exists.
            if values - seen:
                problems.append("%s: %s values %s listed but not exported" % (name, label, sorted(values - seen)))
    extra = {n for n in types if n.startswith("volley_")} - set(catalog)
    if extra:
        problems.append("families exported but not in docs/metrics.md: %s" % sorted(extra))


def check_progress(m, log_counts, problems, seen):
    """One scrape taken while the job runs: its progress adds up, the queued gauge is
    the pending sum, and nothing is ahead of the delivery log read after the scrape."""
    prog = {dict(lk)["state"]: v for lk, v in m.select("volley_job_recipients", job_id=JOB).items()}
    if not prog:
        return
    if set(prog) != set(PROGRESS):
        problems.append("progress states %s, want %s" % (sorted(prog), sorted(PROGRESS)))
        return
    seen.append(prog)
    where = "progress %s" % {k: int(v) for k, v in prog.items()}
    if prog["total"] != RCPTS:
        problems.append("%s: total, want %d" % (where, RCPTS))
    if sum(prog[s] for s in ("delivered", "bounced", "expired", "cancelled", "pending")) != prog["total"]:
        problems.append("%s: delivered + bounced + expired + cancelled + pending != total" % where)
    if prog["deferred"] > prog["pending"]:
        problems.append("%s: more deferred than pending" % where)
    if len(m.select("volley_job_recipients")) == len(PROGRESS):   # the only unfinished job
        queued = m.get("volley_recipients", state="queued")
        deferred = m.get("volley_recipients", state="deferred")
        if queued != prog["pending"] or deferred != prog["deferred"]:
            problems.append("%s: volley_recipients queued %s, deferred %s, want the job's pending "
                            "and deferred" % (where, queued, deferred))
    for s in ("delivered", "bounced", "expired"):
        if prog[s] > log_counts[s]:
            problems.append("%s: %s ahead of the delivery log's %d" % (where, s, log_counts[s]))


def test(h):
    catalog = read_catalog()
    faults = os.path.join(h.mkdir("faults"), "faults.toml")
    with open(faults, "w") as f:
        f.write(FAULTS)
    sink = h.sink(extra_args=["--profiles", faults, "--seed", "7"])
    d = h.volleyd(route_port=sink.port, retry_initial="1s", retry_max="2s", max_age="%ds" % MAX_AGE,
                  extra_config="\n[queue]\nmin_free_space = %d\n" % MIN_FREE)
    started = time.time()
    d.start()
    wait_for(lambda: d.assert_alive() and harness.http_get(
        "http://%s:%d/metrics" % (harness.LOOPBACK, d.metrics_port), 2)[0] == 200, 20,
        "volleyd to serve /metrics on %s:%d" % (harness.LOOPBACK, d.metrics_port))

    rcpts = harness.recipients(RCPTS, DOMAINS, "counts")
    lines = [harness.header_line(JOB)] + [harness.rcpt_line(r) for r in rcpts]
    lines.insert(5, harness.rcpt_line("not-an-address"))
    lines.insert(50, '{"to": "broken-json@d0001.test", "vars": {')
    check(len(lines) == 1 + RCPTS + REJECTED, "test bug: lines")
    # No "from": refused whole.
    d.drop("counts-refused.job", json.dumps({"job": "counts-refused", "message": harness.message()}) + "\n")
    d.drop(JOB + ".job", "\n".join(lines) + "\n")
    dropped = time.time()

    reader = harness.JsonlReader(d.deliveries_path)
    problems, samples = [], []
    running = []   # the last scrape that had the job's progress series
    terminal = {"delivered", "bounced", "expired"}

    def finished():
        d.assert_alive()
        m = harness.scrape(d.metrics_port)
        recs = [r for r in reader.poll() if r.get("job") == JOB]
        if m.select("volley_job_recipients"):
            running[:] = [m]
        check_progress(m, collections.Counter(r.get("status") for r in recs), problems, samples)
        return len({r.get("rcpt") for r in recs if r.get("status") in terminal}) == RCPTS
    wait_for(finished, MAX_AGE + 40, "a final record for each of the %d recipients" % RCPTS, 0.25)
    log("every recipient finished %.1fs after the drop; %d progress samples seen"
        % (time.time() - dropped, len(samples)))
    check(samples, "never saw the job's progress series while it ran")
    check(not problems, "while running:\n  " + "\n  ".join(problems[:20]))

    records = [r for r in harness.read_jsonl(d.deliveries_path)]
    check(all(r.get("job") == JOB for r in records), "records of other jobs: %s"
          % {r.get("job") for r in records})
    by_status = collections.Counter(r.get("status") for r in records)
    log("delivery log: %s" % dict(by_status))
    for s in ("delivered", "bounced", "deferred", "expired"):
        check(by_status[s] > 0, "test bug: the campaign made no %s record: %s" % (s, dict(by_status)))

    # The counters catch up with the log within a scrape or two.
    def counts_match():
        m = harness.scrape(d.metrics_port)
        got = {r: m.get("volley_deliveries_total", result=r) for r in RESULTS}
        return m if all(got[r] == by_status[r] for r in RESULTS) else None
    try:
        m = wait_for(counts_match, 10, "volley_deliveries_total to match the delivery log")
    except harness.TestFailure:
        m = harness.scrape(d.metrics_port)
        raise harness.TestFailure("volley_deliveries_total %s, the delivery log has %s" % (
            {r: m.get("volley_deliveries_total", result=r) for r in RESULTS},
            {r: by_status[r] for r in RESULTS}))
    log("volley_deliveries_total matches the delivery log: %s" % {r: by_status[r] for r in RESULTS})

    # Let the job finish and the connections close (idle_timeout 5s).
    def quiet():
        m = harness.scrape(d.metrics_port)
        return m if (not m.select("volley_job_recipients") and m.get("volley_connections_open") == 0
                     and m.total("volley_jobs") == 0) else None
    try:
        m = wait_for(quiet, 20, "the job's progress series to go and every connection to close")
    except harness.TestFailure as e:
        m = harness.scrape(d.metrics_port)
        raise harness.TestFailure("%s: progress %s, jobs %s, connections open %s" % (
            e, m.select("volley_job_recipients"), m.select("volley_jobs"), m.get("volley_connections_open")))
    stats = sink.fresh_stats()
    sink_rcpts = [a for rec in sink.records() for a in rec.get("rcpts", [])]
    fails = []

    def want(cond, msg):
        if not cond:
            fails.append(msg)

    # ---- the node: in every volley_* sample and every record, the host name
    node = socket.gethostname()
    want(m.nodes == {node} and not m.nodeless,
         "node labels %s, volley_* samples without one %s; want node=%r on every one"
         % (sorted(m.nodes), sorted(set(m.nodeless))[:10], node))
    record_nodes = collections.Counter(r.get("node") for r in records)
    want(set(record_nodes) == {node},
         "delivery-log records by node %s, want every one %r" % (dict(record_nodes), node))

    # ---- outcomes
    for r in RESULTS:
        want(m.get("volley_deliveries_total", result=r) == by_status[r],
             "volley_deliveries_total{result=%s} %s, the delivery log has %d"
             % (r, m.get("volley_deliveries_total", result=r), by_status[r]))
        per_dest = m.total("volley_destination_deliveries_total", result=r)
        want(per_dest == by_status[r], "volley_destination_deliveries_total{result=%s} sums to %s, "
             "want %d" % (r, per_dest, by_status[r]))
    # ---- failures by [[classify]] class: one per record, its "class"
    by_class = collections.Counter((r.get("status"), r.get("class")) for r in records
                                   if r.get("status") in ("bounced", "deferred", "expired"))
    for (status, klass), n in sorted(by_class.items()):
        got = m.get("volley_outcome_classes_total", result=status, **{"class": klass})
        want(got == n, "volley_outcome_classes_total{result=%s,class=%s} %s, the delivery log has %d"
             % (status, klass, got, n))
    for r in ("bounced", "deferred", "expired"):
        got = m.total("volley_outcome_classes_total", result=r)
        want(got == by_status[r], "volley_outcome_classes_total{result=%s} sums to %s, want %d"
             % (r, got, by_status[r]))
    log("failures by class match the delivery log: %s" % dict(by_class))
    delivered = sorted(r["rcpt"] for r in records if r.get("status") == "delivered")
    want(len(sink_rcpts) == by_status["delivered"] and sorted(sink_rcpts) == delivered,
         "volley-sink accepted %d recipients, the log has %d delivered (same addresses: %s)"
         % (len(sink_rcpts), by_status["delivered"], sorted(sink_rcpts) == delivered))
    want(m.get("volley_queue_time_seconds_count") == by_status["delivered"],
         "volley_queue_time_seconds_count %s, want one per delivery: %d"
         % (m.get("volley_queue_time_seconds_count"), by_status["delivered"]))
    qsum = m.get("volley_queue_time_seconds_sum") or 0
    want(0 < qsum <= by_status["delivered"] * (time.time() - dropped + 1),
         "volley_queue_time_seconds_sum %s for %d deliveries within %.0fs of the drop"
         % (qsum, by_status["delivered"], time.time() - dropped))

    # ---- intake
    for name, result, n in (("volley_intake_jobs_total", "accepted", 1), ("volley_intake_jobs_total", "failed", 1),
                            ("volley_intake_recipients_total", "accepted", RCPTS),
                            ("volley_intake_recipients_total", "rejected", REJECTED)):
        want(m.get(name, result=result) == n, "%s{result=%s} %s, want %d" % (name, result, m.get(name, result=result), n))

    # ---- the queue, now empty
    for state in ("queued", "in_flight", "deferred"):
        want(m.get("volley_recipients", state=state) == 0,
             "volley_recipients{state=%s} %s, want 0" % (state, m.get("volley_recipients", state=state)))
    want(m.get("volley_queue_oldest_age_seconds") == 0,
         "volley_queue_oldest_age_seconds %s with nothing queued, want 0" % m.get("volley_queue_oldest_age_seconds"))
    first = samples[0]
    want(first["total"] == RCPTS, "first progress sample %s" % first)
    for a, b in zip(samples, samples[1:]):
        if any(b[s] < a[s] for s in ("delivered", "bounced", "expired", "cancelled")):
            want(False, "progress went back: %s then %s" % (a, b))
            break

    # ---- connections and TLS
    opened = m.get("volley_connections_opened_total")
    failed = m.total("volley_connections_failed_total")
    want(opened == stats.get("sessions") and opened > 0,
         "volley_connections_opened_total %s, volley-sink counted %s sessions" % (opened, stats.get("sessions")))
    want(failed == 0, "connections failed %s, want none: %s" % (failed, m.select("volley_connections_failed_total")))
    tls = {dict(lk)["version"]: v for lk, v in m.select("volley_tls_sessions_total").items() if v}
    want(sum(tls.values()) == stats.get("tls_sessions") and sum(tls.values()) > 0,
         "volley_tls_sessions_total %s, volley-sink completed %s handshakes" % (tls, stats.get("tls_sessions")))
    log_versions = {r.get("tls_version") for r in records if r.get("host")}
    want(set(tls) == log_versions, "TLS versions counted %s, the delivery log names %s" % (sorted(tls), log_versions))

    # ---- replies and transactions
    replies = {dict(lk)["class"]: v for lk, v in m.select("volley_smtp_replies_total").items()}
    answered_4xx = sum(1 for r in records if r.get("status") in ("deferred", "expired") and 400 <= r.get("code", 0) < 500)
    want(replies.get("5xx", 0) >= by_status["bounced"], "5xx replies %s < bounces %d" % (replies, by_status["bounced"]))
    want(replies.get("4xx", 0) >= answered_4xx, "4xx replies %s < deferrals and expiries answered 4xx: %d"
         % (replies, answered_4xx))
    want(replies.get("4xx", 0) + replies.get("5xx", 0) <= stats.get("rejects", 0),
         "4xx + 5xx replies %s > the %s rejects volley-sink sent" % (replies, stats.get("rejects")))
    # Every session got a 220 greeting and every accepted recipient and message a 250.
    want(replies.get("2xx", 0) >= stats.get("sessions", 0) + stats.get("messages", 0) + len(sink_rcpts),
         "2xx replies %s < greetings + messages + recipients accepted (%s, %s, %d)"
         % (replies, stats.get("sessions"), stats.get("messages"), len(sink_rcpts)))
    tx = m.get("volley_transaction_duration_seconds_count") or 0
    want(tx >= stats.get("messages", 0) > 0, "volley_transaction_duration_seconds_count %s < volley-sink's "
         "%s messages" % (tx, stats.get("messages")))
    for name, lo, hi in (("volley_transaction_duration_seconds", 0.001, 60),
                         ("volley_queue_time_seconds", 1, 259200)):
        bounds = sorted(float(dict(lk)["le"]) for lk in m.select(name + "_bucket"))
        finite = [b for b in bounds if b != float("inf")]
        want(finite and finite[0] == lo and finite[-1] == hi and bounds[-1] == float("inf"),
             "%s buckets %s, docs/metrics.md: %g to %g" % (name, bounds, lo, hi))
        counts = [v for _, v in sorted((float(dict(lk)["le"]), v) for lk, v in m.select(name + "_bucket").items())]
        want(counts == sorted(counts) and counts and counts[-1] == m.get(name + "_count"),
             "%s buckets not cumulative up to _count: %s" % (name, counts))

    # ---- disk, RocksDB, process, shards
    want(m.get("volley_disk_free_floor_bytes") == MIN_FREE,
         "volley_disk_free_floor_bytes %s, want [queue] min_free_space %d" % (m.get("volley_disk_free_floor_bytes"), MIN_FREE))
    for path, folder in (("queue", d.queue), ("spool", d.spool)):
        st = os.statvfs(folder)
        real = st.f_bavail * st.f_frsize
        got = m.get("volley_disk_free_bytes", path=path)
        want(got is not None and abs(got - real) <= max(real * 0.05, 256 << 20),
             "volley_disk_free_bytes{path=%s} %s, statvfs says %d" % (path, got, real))
    want(m.get("volley_rocksdb_write_stopped") == 0, "volley_rocksdb_write_stopped %s" % m.get("volley_rocksdb_write_stopped"))
    want((m.get("volley_rocksdb_sst_bytes") or 0) >= 0 and m.get("volley_rocksdb_pending_compaction_bytes") is not None,
         "RocksDB gauges missing")
    start = m.get("process_start_time_seconds") or 0
    want(started - 2 <= start <= started + 10, "process_start_time_seconds %s, volleyd started at %.1f" % (start, started))
    want((m.get("process_cpu_seconds_total") or 0) > 0, "process_cpu_seconds_total %s" % m.get("process_cpu_seconds_total"))
    want((m.get("process_resident_memory_bytes") or 0) > (4 << 20),
         "process_resident_memory_bytes %s" % m.get("process_resident_memory_bytes"))
    busy = {dict(lk)["shard"]: v for lk, v in m.select("volley_shard_busy_seconds_total").items()}
    elapsed = time.time() - started
    want(busy and sum(busy.values()) > 0 and all(v <= elapsed + 1 for v in busy.values()),
         "volley_shard_busy_seconds_total %s after %.1fs" % (busy, elapsed))

    # The catalog against a scrape taken while the job ran, when every family has
    # series (volley_job_recipients only has them for unfinished jobs).
    check_catalog(running[0], catalog, fails)
    check(not fails, "%d mismatches:\n  %s" % (len(fails), "\n  ".join(fails)))
    log("metrics agree: %s; sink %s" % ({r: int(m.get("volley_deliveries_total", result=r)) for r in RESULTS},
                                         {k: stats.get(k) for k in ("sessions", "messages", "rejects", "tls_sessions")}))
    rc = d.stop()
    check(rc == 0, "volleyd exited with %r on SIGTERM" % rc)


if __name__ == "__main__":
    harness.main(test, "metrics-counts")
