#!/usr/bin/python3
"""metrics_test.py - the dashboard and the alert rules against a real Prometheus
scraping a real volleyd (issue 7).

deploy/grafana/volley-dashboard.json and deploy/prometheus/alerts.yml are only worth
something if every expression in them means something: a misspelt metric, a label
value volleyd never exports, or a PromQL slip shows up in Grafana as an empty panel
and in Prometheus as an alert that never fires. So:

  (a) promtool checks alerts.yml, prometheus.yml (with its rule file), and runs the
      rule unit tests of deploy/prometheus/alerts_test.yml;
  (b) a real Prometheus (Debian package prometheus) scrapes volleyd every second and
      loads a copy of alerts.yml, while volleyd sends a small campaign that makes
      every kind of series: deliveries, 5xx bounces (a volley-sink reply rule) and
      4xx deferrals (its greylisting), STARTTLS, MX routing through nsd (one domain
      delivered, one NXDOMAIN), a destination that refuses connections (its
      recipients stay deferred, so the job stays unfinished and has progress series),
      a rejected recipient line and a refused job file, and a second volley-sink that
      defers every RCPT "451 4.7.0 ... try again later" (class rate_limited, which the
      default [[backoff]] rule backs off). Then every target's expr in
      the dashboard (its variables resolved as Grafana would: label_values() through
      the API, $__rate_interval = 1m, $__range = 5m) must parse and return data, and
      every vector selector in it (metric name with its label matchers) must select
      series; every alert expr must parse, and each of its selectors must select
      series (an alert condition itself is usually empty);
  (c) /api/v1/rules has loaded every rule of alerts.yml, each healthy (evaluated
      without error), and the scrape target is up;
  (d) the series the issue-20 panels and alerts read say what happened: failures by
      class add up to volley_deliveries_total per result and the 5.1.1 bounces are
      invalid_recipient; the rate-limiting destination, and only it, has a backoff
      level; volley_build_info names volleyd's --version.

The cluster panels read volley_cluster_* (volley_cluster_redis_up,
volley_cluster_fallback), which a volleyd exports only with [cluster] set; this
test runs one volleyd without it. Their expressions must still parse and evaluate,
but a selector of a volley_cluster_* family may select nothing and an expression
made only of such selectors may return no data (logged, not a failure); every
other selector and expression is held to the rules above. The per-node panels
that read other families (deliveries, connections, queued by node) are checked in
full: the node label is on every volley_* series.

A failure names the panel or alert and the expression.
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "volley-dashboard.json")
DATASOURCE_YML = os.path.join(ROOT, "deploy", "grafana", "provisioning", "datasources",
                              "volley-prometheus.yml")
PROVIDER_YML = os.path.join(ROOT, "deploy", "grafana", "provisioning", "dashboards", "volley.yml")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
ALERTS_TEST = os.path.join(ROOT, "deploy", "prometheus", "alerts_test.yml")
PROM_CONFIG = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")

SCRAPE_JOB = "volley"          # the job name deploy/prometheus/prometheus.yml gives
ZONE = "metrics.test"
SENDER = "sender@volley-src.test"
JOB = "metrics-campaign"
# Grafana's built-in variables, as a panel would expand them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300",
            "__interval_ms": "15000", "__range_ms": "300000"}
# Vector selectors: a metric name of ours (or `up`) and its label matchers if any.
SELECTOR_RE = re.compile(r"(?<![\w:])((?:volley|process)_[A-Za-z0-9_:]*|up)\b\s*(\{[^}]*\})?")
NAME_RE = re.compile(r"(?<![\w:])((?:volley|process)_[A-Za-z0-9_:]*)")
# Families exported only with [cluster] set (docs/cluster.md): see the docstring.
CLUSTER_ONLY = "volley_cluster_"
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
FAULTS = """
[profile.default]
starttls = true

[[profile.default.reply]]
command = "RCPT"
match = "bounce-"
reply = "550 5.1.1 No such user (metrics test)"

[profile.grey]
greylist = "1s"

[domain."flaky.test"]
profile = "grey"
"""
# The second sink: every RCPT deferred as rate limiting, so its route backs off.
SLOW_FAULTS = """
[[profile.default.reply]]
command = "RCPT"
reply = "451 4.7.0 Too many messages, try again later (metrics test)"
"""


def promtool_checks():
    rc, out = harness.promtool("check", "rules", ALERTS)
    log("promtool check rules %s: exit %d\n%s" % (ALERTS, rc, out.strip()))
    check(rc == 0, "promtool check rules %s failed (exit %d):\n%s" % (ALERTS, rc, out))
    rc, out = harness.promtool("check", "config", PROM_CONFIG)
    log("promtool check config %s: exit %d" % (PROM_CONFIG, rc))
    check(rc == 0, "promtool check config %s failed (exit %d):\n%s" % (PROM_CONFIG, rc, out))
    check(re.search(r"job_name:\s*%s\s*$" % SCRAPE_JOB, open(PROM_CONFIG).read(), re.M),
          "%s: no scrape job named %r, which the dashboard and alerts select"
          % (PROM_CONFIG, SCRAPE_JOB))
    # The unit tests run with the rule file's folder as the working directory, as the
    # test file names it relative to itself.
    rc, out = harness.promtool("test", "rules", ALERTS_TEST)
    log("promtool test rules %s: exit %d\n%s" % (ALERTS_TEST, rc, out.strip()))
    check(rc == 0, "promtool test rules %s failed (exit %d):\n%s" % (ALERTS_TEST, rc, out))


def load_dashboard():
    """The dashboard, after the static checks a Grafana import depends on."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    check(dash.get("uid") and dash.get("title") and isinstance(dash.get("schemaVersion"), int),
          "%s: uid, title and schemaVersion are needed" % DASHBOARD)
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds_var = [v for v in variables.values() if v.get("type") == "datasource"]
    check(len(ds_var) == 1 and ds_var[0].get("query") == "prometheus",
          "%s: want one datasource variable of type prometheus, have %s" % (DASHBOARD, ds_var))
    ds_ref = "${%s}" % ds_var[0]["name"]
    # The provisioned datasource is the variable's default.
    with open(DATASOURCE_YML) as f:
        uids = re.findall(r"^\s*uid:\s*['\"]?([\w-]+)", f.read(), re.M)
    check(uids == [ds_var[0].get("current", {}).get("value")],
          "%s provisions datasource uid %s, but the dashboard's %s defaults to %r"
          % (DATASOURCE_YML, uids, ds_ref, ds_var[0].get("current", {}).get("value")))
    with open(PROVIDER_YML) as f:
        provider = f.read()
    check(re.search(r"^\s*type:\s*file\s*$", provider, re.M) and re.search(r"^\s*path:\s*\S", provider, re.M),
          "%s: a file provider with a path is needed" % PROVIDER_YML)
    ids = set()
    for p in dash["panels"]:
        title = p.get("title")
        check(isinstance(p.get("id"), int) and p["id"] not in ids, "panel %r: id %r missing or repeated"
              % (title, p.get("id")))
        ids.add(p["id"])
        gp = p.get("gridPos", {})
        check(all(isinstance(gp.get(k), int) for k in "hwxy") and gp["x"] + gp["w"] <= 24,
              "panel %r: bad gridPos %s" % (title, gp))
        if p.get("type") == "row":
            continue
        check(p.get("targets"), "panel %r has no targets" % title)
        refs = [t.get("refId") for t in p["targets"]]
        check(len(set(refs)) == len(refs), "panel %r: refIds repeated: %s" % (title, refs))
        for obj in [p] + p["targets"]:
            ds = obj.get("datasource", {})
            check(ds.get("type") == "prometheus" and ds.get("uid") == ds_ref,
                  "panel %r: datasource %s, want the %s variable" % (title, ds, ds_ref))
    return dash, variables


def substitute(expr, values, where):
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        raise harness.TestFailure("%s: unknown variable $%s in %s" % (where, name, expr))
    return VAR_RE.sub(one, expr)


def resolve_variables(prom, variables):
    """{name: value} as Grafana would expand the query variables (in order), each
    label_values() asked of Prometheus; a variable with no values fails."""
    values = dict(BUILTINS)
    for name, v in variables.items():
        if v.get("type") == "datasource":
            continue
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query or "")
        check(v.get("type") == "query" and m, "variable %s: only label_values(SELECTOR, LABEL) "
              "queries are checked here, not %r" % (name, query))
        selector = substitute(m.group(1), values, "variable %s" % name)
        found = prom.label_values(m.group(2), selector)
        check(found, "variable %s: label_values(%s, %s) has no values" % (name, selector, m.group(2)))
        current = v.get("current", {}).get("value")
        if v.get("includeAll") and (current in ("$__all", ["$__all"]) or v.get("multi")):
            # A regex inside a PromQL string: its backslashes are escaped once more.
            values[name] = "(%s)" % "|".join(re.escape(x).replace("\\", "\\\\") for x in found)
        else:
            check(current in found, "variable %s: its default %r is not among %s" % (name, current, found))
            values[name] = current
        log("variable %s = %s" % (name, values[name]))
    return values


def selectors(expr):
    return [(m.group(1), m.group(2) or "") for m in SELECTOR_RE.finditer(expr)]


def check_selectors(prom, where, expr, problems):
    """Every vector selector of expr, alone, selects series now."""
    for name, matchers in selectors(expr):
        sel = name + matchers
        try:
            n = len(prom.query(sel)["result"])
        except harness.PromQLError as e:
            problems.append("%s: selector %s does not parse: %s" % (where, sel, e))
            continue
        if n == 0 and name.startswith(CLUSTER_ONLY):
            log("%s: selector %s selects nothing: [cluster] is off here" % (where, sel))
            continue
        if n == 0:
            have = len(prom.series(name))
            problems.append("%s: selector %s selects nothing (%s) in: %s"
                            % (where, sel, "%d series of %s exist" % (have, name) if have
                               else "no series named %s at all" % name, expr))


def check_dashboard(prom, dash, values):
    problems = []
    checked = 0
    for p in dash["panels"]:
        for t in p.get("targets", []):
            where = "panel %r (refId %s)" % (p.get("title"), t.get("refId"))
            raw = t.get("expr", "")
            if not raw.strip():
                problems.append("%s: empty expr" % where)
                continue
            try:
                expr = substitute(raw, values, where)
            except harness.TestFailure as e:
                problems.append(str(e))
                continue
            check_selectors(prom, where, expr, problems)
            try:
                result = prom.query(expr)["result"]
            except harness.PromQLError as e:
                problems.append("%s: does not parse or evaluate: %s\n    %s" % (where, e, expr))
                continue
            checked += 1
            names = [name for name, _ in selectors(expr)]
            if not result and names and all(n.startswith(CLUSTER_ONLY) for n in names):
                log("%s: no data without [cluster], as expected" % where)
                continue
            if not result:
                problems.append("%s: returns no data:\n    %s" % (where, expr))
    log("dashboard: %d target expressions evaluated" % checked)
    return problems


def check_alerts(prom):
    """Every alerting rule loaded from the copy of alerts.yml: parsed, healthy, and
    each selector of its expr selects series."""
    with open(ALERTS) as f:
        text = f.read()
    want = re.findall(r"^\s*-\s*alert:\s*(\S+)\s*$", text, re.M)
    exprs_in_file = len(re.findall(r"^\s*expr:", text, re.M))
    check(want and exprs_in_file == len(want), "%s: %d alerts but %d exprs" % (ALERTS, len(want), exprs_in_file))

    def loaded():
        rules = [r for g in prom.rules()["groups"] for r in g["rules"]]
        return rules if len(rules) == len(want) and all(r.get("health") == "ok" for r in rules) else None
    try:
        rules = wait_for(loaded, 15, "every rule of alerts.yml loaded and evaluated", 0.5)
    except harness.TestFailure as e:
        rules = [r for g in prom.rules()["groups"] for r in g["rules"]]
        raise harness.TestFailure("%s: %s" % (e, [(r.get("name"), r.get("health"), r.get("lastError"))
                                                   for r in rules]))
    check(sorted(r["name"] for r in rules) == sorted(want),
          "rules loaded %s, want %s" % (sorted(r["name"] for r in rules), sorted(want)))
    problems = []
    for r in rules:
        where = "alert %s" % r["name"]
        check(r.get("type") == "alerting", "%s: loaded as %s" % (where, r.get("type")))
        if r.get("lastError"):
            problems.append("%s: evaluation error: %s" % (where, r["lastError"]))
        labels, ann = r.get("labels", {}), r.get("annotations", {})
        if labels.get("severity") not in ("warning", "critical"):
            problems.append("%s: severity label %r" % (where, labels.get("severity")))
        if not ann.get("summary") or not ann.get("description"):
            problems.append("%s: summary and description annotations are needed" % where)
        if not r.get("duration"):
            problems.append("%s: no for:" % where)
        expr = r["query"]
        try:
            state = prom.query(expr)["result"]
            log("%s: %d series would be pending/firing now" % (where, len(state)))
        except harness.PromQLError as e:
            problems.append("%s: does not parse or evaluate: %s\n    %s" % (where, e, expr))
        check_selectors(prom, where, expr, problems)
        for name in NAME_RE.findall(expr):
            if not prom.series(name):
                problems.append("%s: metric %s has no series" % (where, name))
    log("alerts: %d rules loaded, healthy, selectors checked" % len(rules))
    return problems


def check_issue20_series(prom, h, bounces_5_1_1, slow_port):
    """The outcome classes, backoff levels and build info the issue-20 panels and
    alerts read, against what the campaign did."""
    problems = []
    job = 'job="%s"' % SCRAPE_JOB

    def values(expr, key):
        return {r["metric"].get(key, ""): float(r["value"][1]) for r in prom.query(expr)["result"]}

    # One class per failure record: the sums per result match volley_deliveries_total.
    # Both come from one scrape, but a deferral may fall between reading the two
    # (the stuck recipients keep being retried): agreeing once is enough.
    def classes_add_up():
        by_class = values("sum by (result) (volley_outcome_classes_total{%s})" % job, "result")
        by_result = values('sum by (result) (volley_deliveries_total{%s, result=~"bounced|deferred|expired"})'
                           % job, "result")
        return (by_class, by_result) if by_class == by_result else None
    try:
        log("failures by class add up: %s" % (wait_for(classes_add_up, 15, "classes to add up", 1),))
    except harness.TestFailure:
        problems.append("volley_outcome_classes_total by result %s != volley_deliveries_total %s"
                        % (values("sum by (result) (volley_outcome_classes_total{%s})" % job, "result"),
                           values("sum by (result) (volley_deliveries_total{%s})" % job, "result")))
    invalid = values('sum(volley_outcome_classes_total{%s, result="bounced", class="invalid_recipient"})'
                     % job, "")
    if invalid.get("") != bounces_5_1_1:
        problems.append("bounced invalid_recipient = %s, want the %d 5.1.1 bounces" % (invalid, bounces_5_1_1))
    limited = values('sum(volley_outcome_classes_total{%s, result="deferred", class="rate_limited"})' % job, "")
    if not limited.get("", 0) > 0:
        problems.append("no deferral counted as rate_limited: %s" % limited)

    # The route that answered 4.7.0 rate limiting is backed off (its name is the
    # static route's HOST:PORT). Levels are set once a second; a level lasts 5
    # minutes. (The other sink's route greylists flaky.test, which the default
    # rules may count as rate limiting too: it is not asserted either way here.)
    slow_route = "%s:%d" % (harness.LOOPBACK, slow_port)

    def slow_level():
        levels = values("max by (destination) (volley_destination_backoff_level{%s})" % job, "destination")
        return levels if levels.get(slow_route, 0) > 0 else None
    try:
        log("backoff levels: %s" % wait_for(slow_level, 15, "a backoff level for %s" % slow_route, 1))
    except harness.TestFailure:
        problems.append("volley_destination_backoff_level of %s is not above 0: %s"
                        % (slow_route, values("volley_destination_backoff_level{%s}" % job, "destination")))

    out = subprocess.run([h.binary("engine/volleyd"), "--version"], capture_output=True, text=True)
    version = out.stdout.split()[-1] if out.stdout.split() else ""
    info = prom.query("volley_build_info{%s}" % job)["result"]
    if len(info) != 1 or info[0]["metric"].get("version") != version or info[0]["value"][1] != "1":
        problems.append("volley_build_info %s, want version %r (volleyd --version) and value 1"
                        % (info, version))
    return problems


def test(h):
    t0 = time.monotonic()
    promtool_checks()
    dash, variables = load_dashboard()

    nsd = h.nsd({ZONE: "mx1 A 127.0.0.1\ndns MX 10 mx1\n"})
    faults = os.path.join(h.mkdir("faults"), "faults.toml")
    with open(faults, "w") as f:
        f.write(FAULTS)
    sink = h.sink(extra_args=["--profiles", faults])
    slow_faults = os.path.join(h.mkdir("faults"), "slow.toml")
    with open(slow_faults, "w") as f:
        f.write(SLOW_FAULTS)
    slow_sink = h.sink(extra_args=["--profiles", slow_faults], name="slow-sink")
    dead_port = harness.free_port()   # nothing listens: its recipients stay deferred
    check(not harness.connectable(dead_port), "test bug: port %d is taken" % dead_port)
    dns = "\n".join(['servers = ["%s:%d"]' % (harness.LOOPBACK, nsd.port), "allow_loopback = true",
                     'timeout = "1s"', 'families = "ipv4_only"'])
    d = h.volleyd(star_route=False,
                  routes={"ok.test": sink.port, "flaky.test": sink.port, "stuck.test": dead_port,
                          "slow.test": slow_sink.port},
                  smtp_config="port = %d\n" % sink.port, dns_config=dns,
                  retry_initial="1s", retry_max="2s", max_age="1h")
    d.start()
    prom = h.prometheus(["%s:%d" % (harness.LOOPBACK, d.metrics_port)], job=SCRAPE_JOB,
                        rule_files=[ALERTS])

    ok = ["ok-%02d@ok.test" % i for i in range(20)]
    bounce = ["bounce-%02d@ok.test" % i for i in range(4)]
    flaky = ["flaky-%02d@flaky.test" % i for i in range(4)]   # greylisted once
    by_dns = ["dns-%02d@dns.%s" % (i, ZONE) for i in range(5)]
    nxdomain = ["nx-%02d@nosuch.%s" % (i, ZONE) for i in range(2)]
    stuck = ["stuck-%02d@stuck.test" % i for i in range(2)]
    slow = ["slow-%02d@slow.test" % i for i in range(2)]     # deferred, rate_limited
    rcpts = ok + bounce + flaky + by_dns + nxdomain + stuck + slow
    lines = [harness.header_line(JOB)] + [harness.rcpt_line(r) for r in rcpts]
    lines.insert(3, harness.rcpt_line("not-an-address"))   # a rejected recipient line
    d.drop(JOB + ".job", "\n".join(lines) + "\n")
    d.drop("metrics-refused.job", json.dumps({"job": "metrics-refused", "message": harness.message()}) + "\n")

    final = {"delivered": ok + flaky + by_dns, "bounced": bounce + nxdomain}
    reader = harness.JsonlReader(d.deliveries_path)

    def settled():
        d.assert_alive()
        recs = reader.poll()
        done = {(r.get("rcpt"), r.get("status")) for r in recs}
        deferred = {r.get("rcpt") for r in recs if r.get("status") == "deferred"}
        return (all((a, s) in done for s, rs in final.items() for a in rs)
                and all(a in deferred for a in stuck + flaky + slow))
    wait_for(settled, 45, "every recipient's outcome (stuck ones deferred)", 0.2)
    wait_for(lambda: d.exists("failed", "metrics-refused.job.error"), 15, "the refused job in failed/")
    log("campaign settled: %s" % dict(harness.status_counts(reader.poll(), JOB)))

    # Enough scrapes after the outcomes for every rate() to see them move.
    prom.wait_for_query('volley_intake_jobs_total{job="%s", result="failed"} > 0' % SCRAPE_JOB, 20,
                        "prometheus to see the refused job")
    prom.wait_for_query('sum(volley_deliveries_total{job="%s", result="delivered"}) >= %d'
                        % (SCRAPE_JOB, len(final["delivered"])), 20,
                        "prometheus to see every delivery")
    time.sleep(3)
    targets = prom.active_targets()
    check(len(targets) == 1 and targets[0].get("health") == "up" and not targets[0].get("lastError"),
          "scrape target not healthy: %s" % [(t.get("scrapeUrl"), t.get("health"), t.get("lastError"))
                                            for t in targets])

    values = resolve_variables(prom, variables)
    problems = check_dashboard(prom, dash, values)
    problems += check_alerts(prom)
    problems += check_issue20_series(prom, h, len(bounce), slow_sink.port)
    check(not problems, "%d problems:\n  %s" % (len(problems), "\n  ".join(problems)))
    d.assert_alive()
    log("done in %.1fs" % (time.monotonic() - t0))


if __name__ == "__main__":
    harness.main(test, "metrics")
