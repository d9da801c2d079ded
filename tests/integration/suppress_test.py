#!/usr/bin/python3
"""suppress_test.py - the suppression list through volleyd's admin API and volleyctl suppress.

A real volleyd (its list in its own RocksDB folder) and the real volleyctl:

- add, then check: exit 0 with the entry printed (address lower-cased, reason, source);
  an address not on the list exits 1; a scoped entry counts only for its From domain; a
  domain entry covers every address at the domain.
- bad input: an address with CR/LF, or without '@', is refused by volleyd with the
  field named (exit 1); a check that cannot reach volleyd exits 3 (>1: an error).
- import: a CSV file (header, good and bad records) and a plain file of one address a
  line (2,500 lines: more than one batch) report their counts and each bad line as
  FILE:N; what they added is on the list.
- list and export: every entry, and export is RFC 4180 CSV that Python's csv module
  reads back field for field (a source with a comma and quotes survives).
- round trip: the export imported into a second volleyd exports the same CSV.
- remove: exit 0, then 1 (no such entry), and the address is no longer suppressed.
- persistence: after a restart of volleyd the entries are still there.
- a [suppression] path that cannot be opened stops volleyd at start, naming it.
"""
import csv
import io
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log, wait_for  # noqa: E402


class Ctl:
    def __init__(self, h, admin_port):
        self.binary = h.binary("tools/volleyctl/volleyctl")
        self.admin = "%s:%d" % (harness.LOOPBACK, admin_port)

    def run(self, *args, admin=None):
        argv = [self.binary, "--admin", admin or self.admin] + list(args)
        # Bytes, decoded here: text=True would turn export's CRLF into LF.
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        p.stdout = p.stdout.decode("utf-8")
        p.stderr = p.stderr.decode("utf-8")
        log("$ volleyctl %s -> %d%s" % (" ".join(argv[1:])[:200], p.returncode,
                                          (": " + p.stderr.strip()[:300]) if p.stderr.strip() else ""))
        return p

    def ok(self, *args):
        p = self.run(*args)
        check(p.returncode == 0, "volleyctl %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                               p.stderr))
        return p.stdout


def start(h, name, extra_config=""):
    sink = h.sink(name="sink-" + name)
    d = h.volleyd(route_port=sink.port, name=name, extra_config=extra_config)
    d.start()
    wait_for(lambda: harness.connectable(d.admin_port), 30, "%s's admin API" % name)
    return d


def export_rows(ctl):
    text = ctl.ok("suppress", "export")
    check(text.startswith("address,scope,reason,source,added,expires\r\n"),
          "export starts with its header: %r" % text[:80])
    return list(csv.reader(io.StringIO(text, newline="")))


def test(h):
    d = start(h, "volleyd")
    ctl = Ctl(h, d.admin_port)

    # add and check
    ctl.ok("suppress", "add", "Ann@Example.test", "--reason", "complaint",
           "--source", 'fbl said "stop", twice')
    p = ctl.run("suppress", "check", "ann@EXAMPLE.test")
    check(p.returncode == 0, "ann is suppressed: %d %s" % (p.returncode, p.stderr))
    check("address: ann@example.test\n" in p.stdout and "reason: complaint\n" in p.stdout
          and 'source: fbl said "stop", twice\n' in p.stdout and "expires: never\n" in p.stdout,
          "check prints the entry: %r" % p.stdout)
    p = ctl.run("suppress", "check", "bob@example.test")
    check(p.returncode == 1 and "not suppressed" in p.stdout, "bob is not: %r" % (p,))

    ctl.ok("suppress", "add", "carl@example.test", "--scope", "brand.test", "--reason",
           "unsubscribe", "--expires", "30d")
    check(ctl.run("suppress", "check", "carl@example.test", "--from-domain", "Brand.test")
          .returncode == 0, "carl is suppressed for brand.test")
    check(ctl.run("suppress", "check", "carl@example.test", "--from-domain", "other.test")
          .returncode == 1, "carl is not suppressed for other.test")
    ctl.ok("suppress", "add", "@blocked.test")
    check(ctl.run("suppress", "check", "anyone@blocked.test").returncode == 0,
          "a domain entry covers every address at the domain")

    # bad input, and errors
    p = ctl.run("suppress", "add", "eve@example.test\r\nRCPT TO:<x@y.test>")
    check(p.returncode == 1 and "address: CR, LF" in p.stderr, "CR/LF refused: %r" % (p,))
    p = ctl.run("suppress", "add", "nobody")
    check(p.returncode == 1 and "not an address" in p.stderr, "no '@' refused: %r" % (p,))
    p = ctl.run("suppress", "add", "x@example.test", "--reason", "annoyed")
    check(p.returncode == 1 and 'reason: unknown "annoyed"' in p.stderr, "bad reason: %r" % (p,))
    p = ctl.run("suppress", "check", "x@example.test", admin="127.0.0.1:%d" % harness.free_port())
    check(p.returncode == 3 and "is volleyd running?" in p.stderr, "no volleyd: exit 3: %r" % (p,))
    p = ctl.run("suppress", "check", "x@example.test", "--scope", "a.test")
    check(p.returncode == 2, "--scope is not an option of check: %r" % (p,))

    # import: CSV
    csv_path = os.path.join(h.dir, "list.csv")
    with open(csv_path, "w") as f:
        f.write("address,scope,reason,source,added,expires\n"
                "dave@example.test,,hard_bounce,dsn 5.1.1,2026-01-02T03:04:05Z,\n"
                "erin@example.test,brand.test,,,,\n"
                "broken@example.test,brand.test\n"
                "frank@example.test,,soft_bounce,,,2030-01-01T00:00:00Z\n"
                "nobody,,,,,\n"
                "gail@example.test,,\"no such\",,,\n")
    p = ctl.run("suppress", "import", csv_path)
    check(p.returncode == 1, "an import with bad lines exits 1: %r" % (p,))
    check("list.csv: 3 added, 3 skipped" in p.stdout, "CSV import counts: %r" % p.stdout)
    for want in ("list.csv:4: expected 6 fields, got 2", "list.csv:6: not an address",
                 'list.csv:7: reason: unknown "no such"'):
        check(want in p.stderr, "import reports %r: %r" % (want, p.stderr))
    hit = ctl.ok("suppress", "check", "dave@example.test")
    check("reason: hard_bounce" in hit and "added: 2026-01-02T03:04:05Z" in hit,
          "dave kept his reason and time: %r" % hit)
    check(ctl.run("suppress", "check", "erin@example.test", "--from-domain", "brand.test")
          .returncode == 0, "erin imported in her scope")

    # import: one address a line, more than one batch
    plain = os.path.join(h.dir, "plain.txt")
    with open(plain, "w") as f:
        f.write("# unsubscribed at the old provider\n")
        for i in range(2500):
            f.write("user%04d@Old-List.test\n" % i)
        f.write("not-an-address\n")
    p = ctl.run("suppress", "import", plain, "--reason", "unsubscribe")
    check("plain.txt: 2500 added, 1 skipped" in p.stdout, "plain import counts: %r" % p.stdout)
    check("plain.txt:2502: not an address" in p.stderr, "plain import names the line: %r" % p.stderr)
    hit = ctl.ok("suppress", "check", "user2499@old-list.test")
    check("reason: unsubscribe" in hit and "source: import %s line 2501" % plain in hit,
          "the last plain entry: %r" % hit)

    # list and export
    rows = export_rows(ctl)
    entries = rows[1:]
    check(len(entries) == 2500 + 6, "export has every entry: %d" % len(entries))
    by_address = {(r[0], r[1]): r for r in entries}
    ann = by_address.get(("ann@example.test", ""))
    check(ann is not None and ann[2] == "complaint" and ann[3] == 'fbl said "stop", twice'
          and ann[5] == "", "ann's row read back by csv: %r" % (ann,))
    carl = by_address.get(("carl@example.test", "brand.test"))
    check(carl is not None and carl[5].endswith("Z"), "carl's expiry exported: %r" % (carl,))
    table = ctl.ok("suppress", "list")
    check(table.startswith("ADDRESS") and "carl@example.test" in table
          and len(table.splitlines()) == 1 + 2506, "list shows every entry")

    # round trip through a second volleyd
    export_path = os.path.join(h.dir, "export.csv")
    with open(export_path, "w", newline="") as f:
        f.write(ctl.ok("suppress", "export"))
    d2 = start(h, "volleyd2")
    ctl2 = Ctl(h, d2.admin_port)
    p = ctl2.run("suppress", "import", export_path)
    check(p.returncode == 0 and "2506 added, 0 skipped" in p.stdout, "round trip import: %r" % (p,))
    check(export_rows(ctl2) == rows, "the second list exports the same CSV")

    # remove
    ctl.ok("suppress", "remove", "ANN@example.test")
    p = ctl.run("suppress", "remove", "ann@example.test")
    check(p.returncode == 1 and "not on the list" in p.stderr, "second remove: %r" % (p,))
    check(ctl.run("suppress", "check", "ann@example.test").returncode == 1, "ann no longer")
    p = ctl.run("suppress", "remove", "carl@example.test")
    check(p.returncode == 1, "carl's entry is scoped: the global remove finds nothing")
    ctl.ok("suppress", "remove", "carl@example.test", "--scope", "brand.test")

    # persistence
    d.stop()
    d.start()
    wait_for(lambda: harness.connectable(d.admin_port), 30, "volleyd's admin API after restart")
    check(ctl.run("suppress", "check", "dave@example.test").returncode == 0,
          "dave is still suppressed after a restart")
    check(len(export_rows(ctl)) - 1 == 2506 - 2, "the count after removals and a restart")

    # a path that cannot be opened stops volleyd
    blocker = os.path.join(h.dir, "not-a-folder")
    with open(blocker, "w") as f:
        f.write("x")
    bad = h.volleyd(route_port=harness.free_port(), name="volleyd-bad",
                    extra_config='[suppression]\npath = "%s/sub"\n' % blocker)
    p = subprocess.run([bad.binary, "--config", bad.config], cwd=bad.dir, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    check(p.returncode != 0 and "[suppression] path" in out and blocker in out,
          "volleyd refuses an unusable [suppression] path: %d %r" % (p.returncode, out[-500:]))


if __name__ == "__main__":
    harness.main(test, "suppress")
