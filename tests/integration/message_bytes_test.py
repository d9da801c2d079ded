#!/usr/bin/python3
"""message_bytes_test.py - big messages in bounded memory: [delivery]
max_message_bytes_in_flight (issue 21).

A volley-sink that takes its time over every end of data (a 150 ms delay before the
reply to BDAT and to the final dot) keeps transactions open, so that volleyd's 20
connections to it would hold far more message bytes than a small bound allows:

  (a) a personalised campaign of 60 recipients with messages of about 20 KiB, under
      max_message_bytes_in_flight = 96 KiB over 2 shards (the one route is one
      shard's: two such messages at once): every recipient is delivered exactly once (the delivery log and the
      sink agree), nothing is deferred, volley_message_bytes_in_flight sampled from
      /metrics while it runs never exceeds volley_message_bytes_limit, the peak
      volleyd kept (volley_message_bytes_in_flight_peak) does not either but shows
      two messages at once, and volley_message_bytes_waits_total shows that
      transactions did wait;
  (b) then one message larger than the bound (about 300 KiB) is delivered all the
      same, alone: the peak shows it went.
"""
import collections
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

SENDER = "sender@volley-src.test"
BOUND = 96 * 1024
CAMPAIGN = "bytes-campaign"
BIG = "bytes-big"
N = 60
MESSAGE = 20 * 1024  # two fit in a shard's share of BOUND, three do not
SLOW_END_OF_DATA = """
[profile.default]

[[profile.default.reply]]
command = "BDAT"
match = "LAST"
delay = "150ms"

[[profile.default.reply]]
command = "DOT"
delay = "150ms"
"""


def message(size):
    head = ("From: Volley Test <%s>\r\nTo: {{to}}\r\nSubject: Hello {{first}}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Hello {{first}},\r\n" % SENDER)
    filler = "A line of a large message, long enough to make the bytes add up quickly.\r\n"
    return head + filler * ((size - len(head)) // len(filler))


def job(job_id, rcpts, size):
    lines = [harness.header_line(job_id, SENDER, message(size))]
    lines += [harness.rcpt_line(r, first="F%d" % i) for i, r in enumerate(rcpts)]
    return "\n".join(lines) + "\n"


class Sampler(threading.Thread):
    """Scrapes /metrics every 50 ms while the campaign runs: the bytes in flight seen
    above the limit, and the most seen."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.samples = 0
        self.most = 0
        self.over = []

    def run(self):
        while not self.stop.is_set():
            try:
                m = harness.scrape(self.port, timeout=5)
            except harness.TestFailure:
                continue
            held = m.get("volley_message_bytes_in_flight")
            limit = m.get("volley_message_bytes_limit")
            if held is not None and limit is not None:
                self.samples += 1
                self.most = max(self.most, held)
                if held > limit:
                    self.over.append((held, limit))
            self.stop.wait(0.05)


def delivered_once(d, job_id, rcpts):
    records = d.deliveries(job_id)
    statuses = collections.Counter(r.get("status") for r in records)
    check(set(statuses) == {"delivered"},
          "%s: records other than delivered: %s" % (job_id, dict(statuses)))
    per_rcpt = collections.Counter(r.get("rcpt") for r in records)
    check(set(per_rcpt) == set(rcpts) and all(c == 1 for c in per_rcpt.values()),
          "%s: want one delivered record per recipient; missing %s, more than one %s"
          % (job_id, sorted(set(rcpts) - set(per_rcpt))[:5],
             [r for r, c in per_rcpt.items() if c > 1][:5]))


def test(h):
    profiles = os.path.join(h.dir, "slow.toml")
    with open(profiles, "w") as f:
        f.write(SLOW_END_OF_DATA)
    sink = h.sink(extra_args=["--profiles", profiles])
    d = h.volleyd(route_port=sink.port,
                  extra_config='[delivery]\nshards = 2\nmax_message_bytes_in_flight = "%dKiB"\n'
                  % (BOUND // 1024))
    d.start()
    wait_for(lambda: harness.connectable(d.metrics_port), 30, "volleyd's metrics endpoint")
    m = harness.scrape(d.metrics_port)
    limit = m.get("volley_message_bytes_limit")
    # Each shard's share is the bound over the shards, rounded down.
    check(limit is not None and BOUND - 16 <= limit <= BOUND,
          "volley_message_bytes_limit is %s, want %d (split between the shards)" % (limit, BOUND))

    # (a) the campaign, under the bound.
    rcpts = ["ok-%03d@d%04d.test" % (i, i % 5 + 1) for i in range(N)]
    sampler = Sampler(d.metrics_port)
    sampler.start()
    d.drop(CAMPAIGN + ".job", job(CAMPAIGN, rcpts, MESSAGE))
    try:
        wait_for(lambda: d.assert_alive() and
                 len([r for r in d.deliveries(CAMPAIGN) if r.get("status") == "delivered"]) >= N,
                 180, "every recipient of %s delivered" % CAMPAIGN, interval=0.2)
    finally:
        sampler.stop.set()
        sampler.join(10)
    delivered_once(d, CAMPAIGN, rcpts)
    def sink_got():
        return collections.Counter(r for rec in sink.records() for r in rec.get("rcpts", []))
    # The sink writes its record file a little after it answers.
    wait_for(lambda: all(sink_got()[r] >= 1 for r in rcpts), 15, "the sink's records of every recipient")
    got = sink_got()
    check(all(got[r] == 1 for r in rcpts),
          "the sink took some recipients other than once: %s"
          % {r: got[r] for r in rcpts if got[r] != 1})
    log("sampled /metrics %d times: most bytes in flight seen %d, limit %d"
        % (sampler.samples, sampler.most, limit))
    check(sampler.samples >= 5, "only %d samples of /metrics during the campaign" % sampler.samples)
    check(not sampler.over, "volley_message_bytes_in_flight above the limit: %s" % sampler.over[:5])
    m = harness.scrape(d.metrics_port)
    peak = m.get("volley_message_bytes_in_flight_peak")
    waits = m.get("volley_message_bytes_waits_total")
    log("peak %s, waits %s" % (peak, waits))
    check(peak is not None and 0 < peak <= limit,
          "volley_message_bytes_in_flight_peak is %s, want within the limit %d" % (peak, limit))
    # The bound paces, it does not serialise: two messages fit a shard's share.
    check(peak >= 2 * MESSAGE, "volley_message_bytes_in_flight_peak is %s: never two messages "
          "of %d bytes at once, though the shard's share holds two" % (peak, MESSAGE))
    check(waits is not None and waits > 0,
          "volley_message_bytes_waits_total is %s: nothing waited, so the bound was not tested"
          % waits)
    wait_for(lambda: harness.scrape(d.metrics_port).get("volley_message_bytes_in_flight") == 0,
             10, "volley_message_bytes_in_flight back to 0")

    # (b) a message larger than the whole bound still goes, alone.
    big_rcpts = ["ok-big@d0001.test"]
    big_size = 300 * 1024
    d.drop(BIG + ".job", job(BIG, big_rcpts, big_size))
    wait_for(lambda: d.assert_alive() and d.deliveries(BIG), 120, "a record for the big message")
    delivered_once(d, BIG, big_rcpts)
    wait_for(lambda: sink_got()["ok-big@d0001.test"] >= 1, 15, "the sink's record of the big message")
    sizes = [rec.get("bytes", 0) for rec in sink.records() if "ok-big@d0001.test" in rec.get("rcpts", [])]
    check(sizes and sizes[0] >= big_size - 1024,
          "the sink's record of the big message says %s bytes, want about %d" % (sizes, big_size))
    peak = harness.scrape(d.metrics_port).get("volley_message_bytes_in_flight_peak")
    check(peak is not None and peak >= big_size - 1024,
          "volley_message_bytes_in_flight_peak %s does not show the %d-byte message" % (peak, big_size))
    check(d.stop() == 0, "volleyd did not stop cleanly")


harness.main(test, "message-bytes")
