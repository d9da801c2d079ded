#!/usr/bin/python3
"""shaping_test.py - a destination's message rate and connection limits, as the server sees them.

Two domains, each routed to a volley-sink of its own:

  rated.test     max_message_rate = "20/s", max_connections_per_destination = 3, one
                 recipient per transaction: 200 messages. The sink's record times must
                 show 20 messages a second within 5% over the run, and the sink never
                 more than 3 connections at once from volleyd.
  connrate.test  max_connection_rate = "5/s", one message per connection: 40 messages,
                 so 40 connections, which must arrive at 5 a second within 5%.

A third domain, free.test, has no limits and shares volleyd with them: its 200
recipients go at once (well under the limited run's time), so the limits are per
destination. volleyd's metrics count the waits (volley_rate_limit_waits_total).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

RATE, MAX_CONNS, N_RATED = 20.0, 3, 200
CONN_RATE, N_CONN = 5.0, 40
N_FREE = 200
TOLERANCE = 0.05


def measured_rate(times):
    """Messages per second from first to last: n - 1 intervals over the span."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def test(h):
    rated_sink = h.sink(record=True, name="rated-sink")
    conn_sink = h.sink(record=True, name="conn-sink")
    free_sink = h.sink(record=True, name="free-sink")
    config = (
        '\n[destination."rated.test"]\nmax_message_rate = "20/s"\n'
        'max_connections_per_destination = %d\nmax_recipients_per_transaction = 1\n'
        '\n[destination."connrate.test"]\nmax_connection_rate = "5/s"\n'
        'max_messages_per_connection = 1\nmax_recipients_per_transaction = 1\n' % MAX_CONNS)
    d = h.volleyd(route_port=free_sink.port,
                  routes={"rated.test": rated_sink.port, "connrate.test": conn_sink.port},
                  extra_config=config)
    d.start()
    rated = ["r%d@rated.test" % i for i in range(N_RATED)]
    conn = ["c%d@connrate.test" % i for i in range(N_CONN)]
    free = ["f%d@free.test" % i for i in range(N_FREE)]
    d.drop("shaping.job", harness.job_text("shaping", rated + conn + free))
    wait_for(lambda: d.assert_alive() and len(harness.delivered_by_rcpt(d.deliveries("shaping"),
                                                                        "shaping"))
             >= N_RATED + N_CONN + N_FREE, 90, "every recipient delivered", interval=0.5)

    m = harness.scrape(d.metrics_port)
    # Stopped, the sinks have written every record and their final stats.
    for sink in (rated_sink, conn_sink, free_sink):
        sink.stop()

    def times(domain, sink):
        return [r["ts"] for r in sink.records() for a in r["rcpts"] if a.endswith("@" + domain)]
    rated_times = times("rated.test", rated_sink)
    conn_times = times("connrate.test", conn_sink)
    free_times = times("free.test", free_sink)
    check(len(rated_times) == N_RATED, "the rated sink got %d of %d" % (len(rated_times), N_RATED))
    rate = measured_rate(rated_times)
    log("rated.test: %d messages in %.2f s: %.2f/s (limit %.0f/s)"
        % (len(rated_times), max(rated_times) - min(rated_times), rate, RATE))
    check(abs(rate - RATE) <= TOLERANCE * RATE,
          "rated.test went at %.2f messages/s, not within 5%% of %.0f/s" % (rate, RATE))
    peak = max(l["peak_connections"] for l in rated_sink.stats()["listeners"])
    check(1 <= peak <= MAX_CONNS, "rated.test: %d connections at once at the sink, limit %d"
          % (peak, MAX_CONNS))

    check(len(conn_times) == N_CONN, "the connrate sink got %d of %d" % (len(conn_times), N_CONN))
    sessions = sum(l["sessions"] for l in conn_sink.stats()["listeners"])
    check(sessions >= N_CONN, "connrate.test: %d sessions for %d one-message connections"
          % (sessions, N_CONN))
    crate = measured_rate(conn_times)
    log("connrate.test: %d connections' messages at %.2f/s (limit %.0f/s)"
        % (len(conn_times), crate, CONN_RATE))
    check(abs(crate - CONN_RATE) <= TOLERANCE * CONN_RATE,
          "connrate.test opened %.2f connections/s, not within 5%% of %.0f/s" % (crate, CONN_RATE))

    # Unlimited beside them: done long before the rated domain.
    check(len(free_times) == N_FREE, "the free sink got %d of %d" % (len(free_times), N_FREE))
    free_span = max(free_times) - min(free_times)
    rated_span = max(rated_times) - min(rated_times)
    check(free_span < rated_span / 3, "free.test took %.2f s, the rated domain %.2f s: limits "
          "leaked across destinations" % (free_span, rated_span))

    waits = m.get("volley_rate_limit_waits_total", limit="messages")
    cwaits = m.get("volley_rate_limit_waits_total", limit="connections")
    log("rate-limit waits: messages %s, connections %s" % (waits, cwaits))
    check(waits and waits >= 1, "no message-rate waits counted")
    check(cwaits and cwaits >= 1, "no connection-rate waits counted")


if __name__ == "__main__":
    harness.main(test, "shaping")
