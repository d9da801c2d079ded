#!/usr/bin/python3
"""load_counts_test.py - volley-load counts recipients and messages apart (issue 21).

`volley-load run` drops a shared (non-personalised) job of N_SHARED recipients over
DOMAINS domains into a real volleyd delivering into volley-sink, then a personalised
one. volleyd sends a shared message to up to 100 recipients of a domain in one
transaction ([smtp] max_recipients_per_transaction), so the shared job is at least
sum(ceil(n_d / 100)) messages, far fewer than recipients; the personalised job is one
message per recipient. volley-load's report must say N recipients delivered and as many
messages as the sink took, counted from the delivery log's txn (docs/delivery-log.md).
The fewest messages possible, from the job file volleyd accepted (recipients per
domain), is a floor: a domain's recipients may go out in more transactions than that
when the window hands them to the shard in several turns, which the sink sees too.
"""
import collections
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log  # noqa: E402

N_SHARED, N_PERSONAL, DOMAINS, PER_TRANSACTION = 1000, 60, 7, 100


def run_load(h, d, job, n, personalised):
    argv = [h.binary("bench/volley-load"), "run", "--spool", d.spool, "--log", d.log_dir,
            "--recipients", str(n), "--domains", str(DOMAINS), "--job", job, "--json",
            "--timeout", "120", "--no-progress"]
    if personalised:
        argv.append("--personalised")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    check(p.returncode == 0, "volley-load %s exited %d: %s" % (job, p.returncode, p.stderr[-2000:]))
    return json.loads(p.stdout)


def accepted_domains(d, job):
    """Recipients per domain of the job file volleyd accepted."""
    path = os.path.join(d.spool, "accepted", job + ".job")
    per = collections.Counter()
    with open(path) as f:
        next(f)  # the header
        for line in f:
            if line.strip():
                per[json.loads(line)["to"].rsplit("@", 1)[1]] += 1
    return per


def test(h):
    sink = h.sink(record=False)
    d = h.volleyd(route_port=sink.port)
    d.start()

    before = sink.fresh_stats().get("messages", 0)
    shared = run_load(h, d, "load-shared", N_SHARED, personalised=False)
    per_domain = accepted_domains(d, "load-shared")
    check(sum(per_domain.values()) == N_SHARED and len(per_domain) == DOMAINS,
          "the job file: %s" % dict(per_domain))
    want = sum((n + PER_TRANSACTION - 1) // PER_TRANSACTION for n in per_domain.values())
    log("shared: %d recipients over %s: at least %d messages; report: %d delivered, %s messages, "
        "%.1f recipients/s, %s messages/s"
        % (N_SHARED, sorted(per_domain.values(), reverse=True), want, shared["delivered"],
           shared["messages_delivered"], shared["recipients_per_second"],
           shared["messages_delivered_per_second"]))
    check(shared["delivered"] == N_SHARED, "shared: %d delivered, want %d" % (shared["delivered"], N_SHARED))
    messages = shared["messages_delivered"]
    check(messages is not None and want <= messages < N_SHARED // 5,
          "shared: volley-load says %s messages, want from %d (one per 100 recipients of a "
          "domain) to well under the %d recipients" % (messages, want, N_SHARED))
    check(shared["recipients_per_second"] == shared["messages_per_second"],
          "messages_per_second keeps its old meaning, recipients: %s" % shared)
    check(shared["recipients_per_second"] > shared["messages_delivered_per_second"] > 0,
          "shared: recipients/s above messages/s: %s" % shared)
    # The sink saw the same messages (its counter is rewritten once a second).
    harness.wait_for(lambda: sink.fresh_stats().get("messages", 0) - before >= messages, 10,
                     "the sink to count %d messages" % messages)
    got = sink.fresh_stats().get("messages", 0) - before
    check(got == messages, "the sink counted %d messages, the delivery log %d" % (got, messages))

    personal = run_load(h, d, "load-personal", N_PERSONAL, personalised=True)
    log("personalised: %d delivered, %s messages" % (personal["delivered"], personal["messages_delivered"]))
    check(personal["delivered"] == N_PERSONAL and personal["messages_delivered"] == N_PERSONAL,
          "personalised: one message per recipient: %s" % personal)
    check(d.stop() == 0, "volleyd did not stop cleanly")


if __name__ == "__main__":
    harness.main(test, "load_counts")
