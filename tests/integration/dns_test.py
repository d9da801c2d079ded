#!/usr/bin/python3
"""dns_test.py - routing by DNS: MX lookups with c-ares against a real nsd (RFC 5321 5.1).

nsd is authoritative for dnstest.test (and answers SERVFAIL for servfail.dnstest.test,
a zone it lists without a file); a DnsProxy in this process forwards to it, counts the
queries and never answers those for silent.dnstest.test. volleyd has no "*" route, so
every recipient is routed by DNS through the proxy ([dns] timeout 1s, 2 tries, IPv4
only, TTLs clamped down to 1 s), to [smtp] port = the port of one volley-sink that
listens on 127.0.53.2-5, .7 and .9-.15; nothing listens on .6 and .8. What each
domain must do (the delivery log's host is the address connected to, mx the MX host):

  order      MX 10 -> .2, MX 20 -> .3: all to .2, not a session at .3.
  equal      two MX at 10 (.4, .5), 5 messages a connection, 1 recipient a message:
             both hosts get sessions.
  deadfirst  MX 10 -> .6 (refused), MX 20 -> .7: all via .7 at attempt 1, no deferral.
  multi      one MX with A .8 (refused) and A .9: all via .9 at attempt 1.
  implicit   no MX, A .10: delivered there, mx = the domain.
  aliased    a CNAME to a domain whose MX points at .13.
  cnamemx    an MX whose exchange is a CNAME to a name with A .14.
  nullmx     MX 0 . (RFC 7505): bounced 5.1.10 at attempt 1, once, nothing sent.
  nosuch     NXDOMAIN: bounced 5.1.2.
  servfail   SERVFAIL: deferred 4.4.3, and retried.
  silent     no answer: deferred 4.4.3 only after about timeout x tries.
  zeroaddr   MX -> A 0.0.0.0: deferred 4.4.4, "unspecified".
  nomail     the name exists (a TXT record) but has no MX, A or AAAA: under IPv4 only
             (no AAAA asked, so nothing proves there is no IPv6 mail service)
             deferred 4.4.4 and retried.
  ttla       TTL 2, the MX host's A changes from .11 to .12 between two jobs.
  ttlmx      TTL 2, the MX changes from a host at .11 to another at .12.
  many       2,000 recipients: one MX query and one A query in all, no AAAA.

A second volleyd ("v6") asks A and AAAA (families ipv4_first) through a proxy of its
own, for the domains whose answer depends on AAAA:

  nomail     NODATA for MX, A and AAAA: the domain has no mail service (RFC 5321
             5.1): bounced 5.1.2 at attempt 1, promptly, once, with the reason.
  halfmail   no MX, A NODATA, AAAA SERVFAIL (the proxy's): deferred 4.4.3 and
             retried, never bounced: one failed question proves nothing.
  implicit   A .10 and AAAA NODATA: delivered at .10 as before.

DNS verdicts are logged without a connection: code 0, host "". Every recipient sent
reaches the sink once it is logged delivered; none of the failed ones does.
"""
import collections
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

ZONE = "dnstest.test"
NET = "127.0.53."
LIVE = [NET + str(i) for i in (2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14, 15)]
DEAD = [NET + "6", NET + "8"]
DNS_TIMEOUT = 1.0     # [dns] timeout, seconds
DNS_TRIES = 2         # [dns] tries
TTL = 2               # of the ttla and ttlmx records
MANY = 2000


def zone(phase):
    """The records of dnstest.test; phase 2 is after the ttl* domains moved to .12."""
    ttl_a = NET + ("11" if phase == 1 else "12")
    ttl_mx = "old.ttlmx" if phase == 1 else "new.ttlmx"
    return """
order            MX 10 mx1.order
order            MX 20 mx2.order
mx1.order        A  {n}2
mx2.order        A  {n}3
equal            MX 10 mxa.equal
equal            MX 10 mxb.equal
mxa.equal        A  {n}4
mxb.equal        A  {n}5
deadfirst        MX 10 mx1.deadfirst
deadfirst        MX 20 mx2.deadfirst
mx1.deadfirst    A  {n}6
mx2.deadfirst    A  {n}7
multi            MX 10 mx.multi
mx.multi         A  {n}8
mx.multi         A  {n}9
implicit         A  {n}10
aliased          CNAME realmail
realmail         MX 10 mx.realmail
mx.realmail      A  {n}13
cnamemx          MX 10 mxalias.cnamemx
mxalias.cnamemx  CNAME mxreal.cnamemx
mxreal.cnamemx   A  {n}14
nullmx           MX 0 .
silent           MX 10 mx.silent
mx.silent        A  {n}15
zeroaddr         MX 10 mx.zeroaddr
mx.zeroaddr      A  0.0.0.0
ttla        {t}  MX 10 mx.ttla
mx.ttla     {t}  A  {ttl_a}
ttlmx       {t}  MX 10 {ttl_mx}
old.ttlmx   {t}  A  {n}11
new.ttlmx   {t}  A  {n}12
many        300  MX 10 mx.many
mx.many     300  A  {n}15
nomail           TXT "a name without MX, A or AAAA records"
halfmail         TXT "no MX; A NODATA; AAAA answered SERVFAIL by the proxy"
""".format(n=NET, t=TTL, ttl_a=ttl_a, ttl_mx=ttl_mx)


def fqdn(name):
    return "%s.%s" % (name, ZONE)


# Domain -> how many recipients the "route" job has there.
ROUTE_JOB = collections.OrderedDict([
    ("order", 10), ("equal", 80), ("deadfirst", 10), ("multi", 10), ("implicit", 5),
    ("aliased", 5), ("cnamemx", 5), ("nullmx", 3), ("nosuch", 3), ("servfail", 3),
    ("silent", 3), ("zeroaddr", 3), ("nomail", 3),
])
# Domain -> recipients of the "v6" job, sent by the volleyd that asks AAAA too.
V6_JOB = collections.OrderedDict([("nomail", 3), ("halfmail", 3), ("implicit", 3)])
NO_MAIL_SERVICE = "no MX, A or AAAA records for %s: the domain has no mail service"


def rcpts_at(tag, name, n):
    return ["%s-%s-%03d@%s" % (tag, name, i, fqdn(name)) for i in range(n)]


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test(h):
    nsd = h.nsd({ZONE: zone(1)}, servfail_zones=[fqdn("servfail")])
    proxy = h.dns_proxy(nsd.port)
    proxy.drop.add(fqdn("silent"))
    sink = h.sink(listen_hosts=LIVE)
    for ip in DEAD:
        check(not harness.connectable(sink.port, ip), "nothing may listen on %s:%d" % (ip, sink.port))

    dns = "\n".join([
        'servers = ["%s:%d"]' % (harness.LOOPBACK, proxy.port),
        "allow_loopback = true",
        'timeout = "%ds"' % DNS_TIMEOUT,
        "tries = %d" % DNS_TRIES,
        'min_ttl = "1s"',
        'negative_min_ttl = "1s"',
        'servfail_ttl = "1s"',
        'families = "ipv4_only"',
    ])
    # equal: many short connections, so that each picks one of the two hosts anew.
    # ttla: an idle connection to .11 must not outlive the TTL and carry the second job.
    extra = ('\n[destination."%s"]\nmax_messages_per_connection = 5\n'
             'max_connections_per_destination = 4\nmax_recipients_per_transaction = 1\n'
             '\n[destination."%s"]\nidle_timeout = "1s"\n' % (fqdn("equal"), fqdn("ttla")))
    d = h.volleyd(star_route=False, smtp_config="port = %d\n" % sink.port, dns_config=dns,
                  extra_config=extra, retry_initial="1s", retry_max="2s")
    d.start()
    # The v6 volleyd: the same zone, through a proxy of its own (so that the first
    # one's "no AAAA" check stays exact), asking A and AAAA.
    proxy6 = h.dns_proxy(nsd.port, name="dns-proxy-v6")
    proxy6.servfail.add((harness.dns_name_key(fqdn("halfmail")), harness.QTYPES["AAAA"]))
    dns6 = "\n".join(line for line in dns.split("\n") if not line.startswith("families")).replace(
        "%s:%d" % (harness.LOOPBACK, proxy.port), "%s:%d" % (harness.LOOPBACK, proxy6.port))
    d6 = h.volleyd(name="volleyd-v6", star_route=False, smtp_config="port = %d\n" % sink.port,
                   dns_config=dns6, retry_initial="1s", retry_max="2s")
    d6.start()

    route = {name: rcpts_at("route", name, n) for name, n in ROUTE_JOB.items()}
    v6 = {name: rcpts_at("v6", name, n) for name, n in V6_JOB.items()}
    many = rcpts_at("many", "many", MANY)
    ttl1 = rcpts_at("ttl1", "ttla", 4) + rcpts_at("ttl1", "ttlmx", 4)
    t_drop = time.time()
    d.drop("route.job", harness.job_text("route", [r for rs in route.values() for r in rs]))
    d.drop("many.job", harness.job_text("many", many))
    d.drop("ttl1.job", harness.job_text("ttl1", ttl1))
    t_drop6 = time.time()
    d6.drop("v6.job", harness.job_text("v6", [r for rs in v6.values() for r in rs]))

    def records(job=None):
        return d.deliveries(job)

    def by_rcpt(recs):
        out = collections.defaultdict(list)
        for r in recs:
            out[r.get("rcpt")].append(r)
        return out

    def first_records(job, rcpts, status=None):
        """Each recipient's first record (of that status), once all have one."""
        got = by_rcpt(r for r in records(job) if status is None or r.get("status") == status)
        if all(got.get(a) for a in rcpts):
            return [got[a][0] for a in rcpts]
        return None

    # --- the route job: first records of every domain.
    delivered_domains = ["order", "equal", "deadfirst", "multi", "implicit", "aliased", "cnamemx"]
    want_delivered = [a for n in delivered_domains for a in route[n]]
    wait_for(lambda: d.assert_alive() and first_records("route", want_delivered, "delivered"), 60,
             "every recipient of the routable domains delivered")
    failing = [a for n in ("nullmx", "nosuch", "servfail", "silent", "zeroaddr", "nomail")
               for a in route[n]]
    wait_for(lambda: d.assert_alive() and first_records("route", failing), 60,
             "a record for every recipient of the failing domains")
    recs = records("route")
    per = by_rcpt(recs)

    # The MX host each address belongs to: a delivered record's mx must match its host.
    names_of = {NET + "2": {fqdn("mx1.order")}, NET + "3": {fqdn("mx2.order")},
                NET + "4": {fqdn("mxa.equal")}, NET + "5": {fqdn("mxb.equal")},
                NET + "7": {fqdn("mx2.deadfirst")}, NET + "9": {fqdn("mx.multi")},
                NET + "10": {fqdn("implicit")}, NET + "13": {fqdn("mx.realmail")},
                NET + "14": {fqdn("mxalias.cnamemx"), fqdn("mxreal.cnamemx")},
                NET + "15": {fqdn("mx.many")},
                NET + "11": {fqdn("mx.ttla"), fqdn("old.ttlmx")},
                NET + "12": {fqdn("mx.ttla"), fqdn("new.ttlmx")}}

    def expect_delivered(name, hosts, mx=None):
        """Every recipient at the domain delivered once, at attempt 1, with no deferral
        before, at one of hosts; mx as given (a set) or as the host's name."""
        for a in route[name]:
            rs = per[a]
            check(len(rs) == 1, "%s: one record, a delivery at once: %r" % (a, rs))
            r = rs[0]
            check(r["status"] == "delivered" and r["attempt"] == 1,
                  "%s: delivered at attempt 1: %r" % (a, r))
            check(r["host"] in hosts and r["port"] == sink.port,
                  "%s: delivered to %s port %d: %r" % (a, "/".join(sorted(hosts)), sink.port, r))
            check(r.get("mx") in (mx or names_of[r["host"]]),
                  "%s: mx %r is not the MX host of %s: %r" % (a, r.get("mx"), r["host"], r))

    # a. MX ordering: the preference 10 host takes everything.
    expect_delivered("order", {NET + "2"})
    # b. equal preferences: each host of the pair has some of the recipients.
    expect_delivered("equal", {NET + "4", NET + "5"})
    hosts = collections.Counter(per[a][0]["host"] for a in route["equal"])
    log("equal.dnstest.test deliveries per host: %r" % dict(hosts))
    check(hosts[NET + "4"] > 0 and hosts[NET + "5"] > 0,
          "equal-preference MX hosts share the load (%d connections at least): %r"
          % (ROUTE_JOB["equal"] // 5, dict(hosts)))
    # c. a refused first MX host: the second at once.
    expect_delivered("deadfirst", {NET + "7"})
    # d. a refused first address of a host: its second address at once.
    expect_delivered("multi", {NET + "9"})
    # e. implicit MX: the domain's own address, mx the domain.
    expect_delivered("implicit", {NET + "10"}, {fqdn("implicit")})
    # f. CNAMEs: the mail domain an alias; the MX exchange an alias.
    expect_delivered("aliased", {NET + "13"})
    expect_delivered("cnamemx", {NET + "14"})

    def dns_verdict(r, status, enhanced):
        check(r["status"] == status and r["enhanced"] == enhanced,
              "%s: %s %s: %r" % (r["rcpt"], status, enhanced, r))
        check(r["code"] == 0 and r["host"] == "" and r["attempt"] == 1,
              "%s: a DNS verdict, no connection, attempt 1: %r" % (r["rcpt"], r))

    # g, h. Null MX and NXDOMAIN: bounced at once (one record each checked at the end).
    for a in route["nullmx"]:
        dns_verdict(per[a][0], "bounced", "5.1.10")
    for a in route["nosuch"]:
        dns_verdict(per[a][0], "bounced", "5.1.2")
    # i, j, k. SERVFAIL, no answer, an address refused by policy: deferred.
    for a in route["servfail"] + route["silent"]:
        dns_verdict(per[a][0], "deferred", "4.4.3")
    for a in route["zeroaddr"]:
        r = per[a][0]
        dns_verdict(r, "deferred", "4.4.4")
        check("unspecified" in r["response"], "%s: the response names the reason: %r" % (a, r))
    # No MX, A NODATA, AAAA not asked (IPv4 only): not proof enough for a bounce.
    for a in route["nomail"]:
        r = per[a][0]
        dns_verdict(r, "deferred", "4.4.4")
        check("%s: no A record" % fqdn("nomail") in r["response"],
              "%s: the response names the reason: %r" % (a, r))
    # j. Not answered: the deferral waits out the resolver (c-ares doubles the timeout
    # each round: 1 s + 2 s with one server), never comes at once, and each try was sent.
    waited = min(parse_ts(per[a][0]["ts"]) for a in route["silent"]) - t_drop
    log("silent.dnstest.test deferred %.2fs after the drop; %d MX queries seen" % (
        waited, proxy.count(fqdn("silent"), "MX")))
    check(waited >= 0.75 * DNS_TIMEOUT * DNS_TRIES,
          "no answer: deferred after %.2fs, before timeout x tries (%gs)" % (
              waited, DNS_TIMEOUT * DNS_TRIES))
    check(waited <= 10, "no answer: deferred only after %.2fs" % waited)
    check(proxy.count(fqdn("silent"), "MX") >= DNS_TRIES,
          "no answer: %d tries sent, want %d" % (proxy.count(fqdn("silent"), "MX"), DNS_TRIES))

    # --- l. TTL: the first job went to .11; after the zone changes and the TTL runs
    # out, the second goes to .12.
    first = wait_for(lambda: d.assert_alive() and first_records("ttl1", ttl1), 30,
                     "a record for every recipient of ttl1")
    for r in first:
        check(r["status"] == "delivered" and r["host"] == NET + "11",
              "ttl1: delivered to %s11: %r" % (NET, r))
    mx_queries_before = proxy.count(fqdn("ttla"), "MX"), proxy.count(fqdn("ttlmx"), "MX")
    nsd.set_zone(ZONE, zone(2))
    time.sleep(TTL + 1.5)   # past the TTL, and past ttla's 1 s idle timeout
    ttl2 = rcpts_at("ttl2", "ttla", 4) + rcpts_at("ttl2", "ttlmx", 4)
    d.drop("ttl2.job", harness.job_text("ttl2", ttl2))
    second = wait_for(lambda: d.assert_alive() and first_records("ttl2", ttl2), 30,
                      "a record for every recipient of ttl2")
    for r in second:
        check(r["status"] == "delivered" and r["host"] == NET + "12",
              "ttl2: after the TTL the new zone is used, delivered to %s12: %r" % (NET, r))
        if r["rcpt"].endswith("@" + fqdn("ttlmx")):
            check(r.get("mx") == fqdn("new.ttlmx"), "ttl2: the new MX host: %r" % r)
    check(proxy.count(fqdn("ttla"), "MX") > mx_queries_before[0] and
          proxy.count(fqdn("ttlmx"), "MX") > mx_queries_before[1],
          "the expired MX answers were asked again (%r before)" % (mx_queries_before,))

    # --- m. one lookup for many recipients.
    wait_for(lambda: d.assert_alive() and first_records("many", many), 60,
             "a record for every recipient of many")
    many_recs = records("many")
    check(len(many_recs) == MANY and all(r["status"] == "delivered" and r["host"] == NET + "15"
                                         and r["attempt"] == 1 for r in many_recs),
          "many: every recipient delivered once at attempt 1 via %s15: %r" % (
              NET, collections.Counter((r["status"], r["host"]) for r in many_recs)))
    counts = (proxy.count(fqdn("many"), "MX"), proxy.count(fqdn("mx.many"), "A"),
              proxy.count(fqdn("mx.many"), "AAAA"))
    check(counts == (1, 1, 0),
          "%d recipients at one domain: want 1 MX query, 1 A query, no AAAA; got %r" % (MANY, counts))
    aaaa = [q for q in proxy.queries() if q[3] == harness.QTYPES["AAAA"]]
    check(not aaaa, 'families = "ipv4_only" yet AAAA queries were sent: %r' % aaaa[:5])

    # --- later records: deferrals are retried; bounces stay single.
    def retried():
        got = by_rcpt(r for r in records("route") if r["status"] == "deferred")
        return all(len(got.get(a, [])) >= 2
                   for n in ("servfail", "silent", "zeroaddr", "nomail") for a in route[n])
    wait_for(lambda: d.assert_alive() and retried(), 30,
             "a second deferral for every recipient of servfail, silent, zeroaddr and nomail")
    per = by_rcpt(records("route"))
    for n, enhanced in (("servfail", "4.4.3"), ("silent", "4.4.3"), ("zeroaddr", "4.4.4"),
                        ("nomail", "4.4.4")):
        for a in route[n]:
            rs = per[a]
            check(all(r["status"] == "deferred" and r["enhanced"] == enhanced for r in rs),
                  "%s: only deferrals %s: %r" % (a, enhanced, rs))
            check([r["attempt"] for r in rs[:2]] == [1, 2], "%s: attempts 1, 2: %r" % (a, rs))
    for a in route["nullmx"] + route["nosuch"]:
        check(len(per[a]) == 1, "%s: a bounce is final, no later record: %r" % (a, per[a]))
    for n in delivered_domains:
        for a in route[n]:
            check(len(per[a]) == 1, "%s: delivered once: %r" % (a, per[a]))

    # --- the v6 volleyd: A and AAAA asked.
    def v6_records():
        return by_rcpt(d6.deliveries("v6"))

    v6_all = [a for rs in v6.values() for a in rs]
    wait_for(lambda: d6.assert_alive() and all(v6_records().get(a) for a in v6_all), 60,
             "a record for every recipient of the v6 job")
    # n. No MX, A or AAAA: bounced at once, with the reason, no connection.
    per6 = v6_records()
    for a in v6["nomail"]:
        r = per6[a][0]
        dns_verdict(r, "bounced", "5.1.2")
        check(r["response"] == NO_MAIL_SERVICE % fqdn("nomail"),
              "%s: the response says why: %r" % (a, r))
        check(r.get("class") == "dns_failure", "%s: class dns_failure: %r" % (a, r))
    bounced_after = max(parse_ts(per6[a][0]["ts"]) for a in v6["nomail"]) - t_drop6
    log("nomail.dnstest.test bounced %.2fs after the drop" % bounced_after)
    check(bounced_after < 10, "no mail service: bounced %.2fs after the drop, not at once"
          % bounced_after)
    asked = tuple(proxy6.count(fqdn("nomail"), t) for t in ("MX", "A", "AAAA"))
    check(all(n >= 1 for n in asked), "nomail: MX, A and AAAA each asked: %r" % (asked,))
    # o. One failed question of the two: a DNS failure, deferred, never a bounce.
    for a in v6["halfmail"]:
        dns_verdict(per6[a][0], "deferred", "4.4.3")
    # p. The implicit MX with an A record and AAAA NODATA: delivered as before.
    for a in v6["implicit"]:
        rs = per6[a]
        check(len(rs) == 1 and rs[0]["status"] == "delivered" and rs[0]["host"] == NET + "10",
              "%s: delivered once at %s10: %r" % (a, NET, rs))

    def v6_retried():
        got = v6_records()
        return all(len([r for r in got.get(a, []) if r["status"] == "deferred"]) >= 2
                   for a in v6["halfmail"])
    wait_for(lambda: d6.assert_alive() and v6_retried(), 30,
             "a second deferral for every recipient of halfmail")
    per6 = v6_records()
    for a in v6["halfmail"]:
        check(all(r["status"] == "deferred" and r["enhanced"] == "4.4.3" for r in per6[a]),
              "%s: only deferrals 4.4.3: %r" % (a, per6[a]))
    for a in v6["nomail"]:
        check(len(per6[a]) == 1, "%s: a bounce is final, no later record: %r" % (a, per6[a]))
    d6.stop()

    # --- the sink's side: who got sessions, and what it received.
    d.stop()
    sink.stop()
    sessions = sink.listener_sessions()
    log("sink sessions per address: %r" % sessions)
    check(sessions[NET + "3"] == 0, "no session at the preference 20 host of order: %r" % sessions)
    for ip in LIVE:
        if ip != NET + "3":
            check(sessions[ip] > 0, "sessions at %s: %r" % (ip, sessions))
    check(sessions[NET + "4"] > 0 and sessions[NET + "5"] > 0,
          "both equal-preference hosts had sessions: %r" % sessions)
    received = collections.Counter(a for m in sink.records() for a in m["rcpts"])
    delivered = set(r["rcpt"] for r in d.deliveries() if r["status"] == "delivered")
    missing = delivered - set(received)
    check(not missing, "%d delivered recipients never reached the sink, e.g. %r" % (
        len(missing), sorted(missing)[:5]))
    leaked = [a for a in failing + v6["nomail"] + v6["halfmail"] if received[a]]
    check(not leaked, "recipients of failing domains reached the sink: %r" % leaked)
    twice = [a for a, n in received.items() if n > 1]
    check(not twice, "recipients received twice: %r" % twice[:5])
    log("proxy saw %d queries" % len(proxy.queries()))


harness.main(test, "dns")
