#!/usr/bin/python3
"""cluster_node_test.py - one volleyd of a cluster, on its share of each cluster-wide limit.

volleyd runs with [cluster] set (expected_nodes = 2) and a Redis address where nothing
listens, so its cluster agent falls back to the node's share: each cluster-scoped
limit over 2. Three domains, each routed to a volley-sink of its own:

  shared.test   scope "cluster" (the default), max_message_rate = "40/s",
                max_connections_per_destination = 4, one recipient per transaction:
                200 messages. The sink's record times must show about 20 a second
                (within 10%), and the sink never more than 2 connections at once.
  own.test      scope = "node", the same limits: 200 messages at the whole 40/s
                (within 10%), up to 4 connections: a node-scoped limit is the node's.
  flaky.test    scope "cluster", max_connections_per_destination = 2 (a share of
                one connection), 4 messages a connection, to a sink that drops 30%
                of its connections before the greeting and some during the message: every connection
                that fails must give its place back, or the one place is gone for
                good and flaky.test stalls. Every recipient still arrives.

The delivery log must hold exactly one delivered record per recipient, and at stop
volleyd must report no connection place still held.

The hook for a real Redis (once the cluster agent shares limits through it):
--redis HOST:PORT points the node there, and --share N says which part of each limit
the node is expected to get (2: half, as in the fallback with expected_nodes = 2; 1
for a lone node that Redis gives the whole limit).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

RATE, MAX_CONNS = 40.0, 4
N_SHARED, N_OWN, N_FLAKY = 200, 200, 40
TOLERANCE = 0.10
PROFILES = """
[profile.flaky]
[[profile.flaky.disconnect]]
after = "CONNECT"
rate = 0.3
[[profile.flaky.disconnect]]
after = "BDAT"
rate = 0.1
"""


def measured_rate(times):
    """Messages per second from first to last: n - 1 intervals over the span."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def add_args(parser):
    parser.add_argument("--redis", help="HOST:PORT of a Redis to share the limits through "
                        "(default: a port where nothing listens: the fallback share)")
    parser.add_argument("--share", type=int, default=2,
                        help="the node is expected to get 1/SHARE of each cluster-wide limit")


def test(h):
    redis = h.args.redis or "127.0.0.1:%d" % harness.free_port()
    share = h.args.share
    profiles = os.path.join(h.mkdir("profiles"), "flaky.toml")
    shared_sink = h.sink(record=True, name="shared-sink")
    own_sink = h.sink(record=True, name="own-sink")
    # The listener's profile is keyed by the --listen text: written once the port is known.
    flaky_sink = harness.Sink(h, record=True, name="flaky-sink")
    flaky_port = harness.free_port()
    with open(profiles, "w") as f:
        f.write(PROFILES + '\n[listener."127.0.0.1:%d"]\nprofile = "flaky"\n' % flaky_port)
    flaky_sink.extra_args = ["--profiles", profiles]
    flaky_sink.start(port=flaky_port)

    limits = ('max_message_rate = "%d/s"\nmax_connections_per_destination = %d\n'
              'max_recipients_per_transaction = 1\n' % (RATE, MAX_CONNS))
    config = (
        '\n[cluster]\nredis = "%s"\nnode = "node-a"\nexpected_nodes = 2\ntimeout = "50ms"\n'
        '\n[destination."shared.test"]\n%s'
        '\n[destination."own.test"]\nscope = "node"\n%s'
        '\n[destination."flaky.test"]\nmax_connections_per_destination = 2\n'
        'max_messages_per_connection = 4\n'
        'max_recipients_per_transaction = 1\nretry_initial = "1s"\nretry_max = "1s"\n'
        % (redis, limits, limits))
    d = h.volleyd(route_port=own_sink.port,
                  routes={"shared.test": shared_sink.port, "own.test": own_sink.port,
                          "flaky.test": flaky_sink.port},
                  extra_config=config)
    d.start()
    wait_for(lambda: d.assert_alive() and "cluster: node node-a, Redis at %s" % redis
             in open(d.output, errors="replace").read(), 10, "the cluster start line")
    shared = ["s%d@shared.test" % i for i in range(N_SHARED)]
    own = ["o%d@own.test" % i for i in range(N_OWN)]
    flaky = ["f%d@flaky.test" % i for i in range(N_FLAKY)]
    everyone = shared + own + flaky
    d.drop("cluster.job", harness.job_text("cluster", everyone))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries("cluster"),
                                                                        "cluster"))
             >= len(everyone), 120, "every recipient delivered", interval=0.5)
    check(d.stop() == 0, "volleyd did not stop cleanly")
    for sink in (shared_sink, own_sink, flaky_sink):
        sink.stop()

    # Exactly once: one delivered record each, nothing else final.
    delivered = harness.delivered_by_rcpt(d.deliveries("cluster"), "cluster")
    twice = [r for r, n in delivered.items() if n != 1]
    check(not twice, "recipients delivered more than once: %s" % twice[:5])
    check(set(delivered) == set(everyone), "delivered %d of %d recipients"
          % (len(set(delivered) & set(everyone)), len(everyone)))
    statuses = harness.status_counts(d.deliveries("cluster"), "cluster")
    log("delivery log: %s" % dict(statuses))
    check(set(statuses) <= {"delivered", "deferred"}, "unexpected outcomes: %s" % dict(statuses))

    def times(domain, sink):
        return [r["ts"] for r in sink.records() for a in r["rcpts"] if a.endswith("@" + domain)]

    def peak(sink):
        return max(l["peak_connections"] for l in sink.stats()["listeners"])

    shared_times = times("shared.test", shared_sink)
    check(len(shared_times) == N_SHARED, "the shared sink got %d of %d"
          % (len(shared_times), N_SHARED))
    want = RATE / share
    rate = measured_rate(shared_times)
    log("shared.test (scope cluster): %d messages in %.2f s: %.2f/s (limit %.0f/s, the node's "
        "share %.1f/s), peak %d connections (limit %d)"
        % (len(shared_times), max(shared_times) - min(shared_times), rate, RATE, want,
           peak(shared_sink), MAX_CONNS))
    check(abs(rate - want) <= TOLERANCE * want,
          "shared.test went at %.2f messages/s, not within 10%% of the node's share %.1f/s"
          % (rate, want))
    check(1 <= peak(shared_sink) <= max(1, MAX_CONNS // share),
          "shared.test: %d connections at once at the sink, the node's share is %d"
          % (peak(shared_sink), max(1, MAX_CONNS // share)))

    own_times = times("own.test", own_sink)
    check(len(own_times) == N_OWN, "the own sink got %d of %d" % (len(own_times), N_OWN))
    orate = measured_rate(own_times)
    log("own.test (scope node): %d messages at %.2f/s (limit %.0f/s), peak %d connections"
        % (len(own_times), orate, RATE, peak(own_sink)))
    check(abs(orate - RATE) <= TOLERANCE * RATE,
          "own.test went at %.2f messages/s, not within 10%% of its whole %.0f/s" % (orate, RATE))
    check(peak(own_sink) <= MAX_CONNS, "own.test: %d connections at once, limit %d"
          % (peak(own_sink), MAX_CONNS))

    flaky_stats = flaky_sink.stats()
    log("flaky.test: %d sessions, %d cut before QUIT, peak %d connections"
        % (flaky_stats["sessions"], flaky_stats["sessions_without_quit"], peak(flaky_sink)))
    check(flaky_stats["sessions_without_quit"] >= 2,
          "flaky.test: only %d sessions failed: the places of failed connections went untested"
          % flaky_stats["sessions_without_quit"])
    check(peak(flaky_sink) <= 1, "flaky.test: %d connections at once, the node's share is 1"
          % peak(flaky_sink))

    # Every place taken was given back (and the count was not driven below zero).
    text = open(d.output, errors="replace").read()
    m = re.search(r"cluster: agent stopped; (-?\d+) connection places still held", text)
    check(m is not None, "volleyd did not report the cluster's places at stop")
    check(int(m.group(1)) == 0, "%s connection places still held at stop" % m.group(1))


if __name__ == "__main__":
    harness.main(test, "cluster_node", add_args)
