#!/usr/bin/env python3
"""make_corpus.py - (re)write the seed corpora under tests/fuzz/corpus/.

    tests/fuzz/make_corpus.py

Seeds come from the golden transcripts (tests/golden/smtp/*.txt: the server's S:/R:
lines, and for fuzz_smtp_client the caller's actions too) and from the hand-written
edge cases below (for fuzz_dkim and fuzz_token, all of them). Each target's input format is described at the top of its .cc file.
The output is deterministic; files are named after their source, so running this again
after a transcript changes only rewrites what changed. Files in corpus/ that this script
does not write (crashes added by hand, see README.md) are left alone.
"""
import base64
import hashlib
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden" / "smtp"
# fuzz_report: the report parser's unit-test corpus, with CRLF line ends as over SMTP.
REPORTS = HERE.parent / "unit" / "feedback" / "corpus"
CORPUS = HERE / "corpus"

# fuzz_smtp_client markers: 0xFF then an op byte (fuzz_smtp_client.cc, INPUT).
SPLIT, START, QUIT, EOF, TIMEOUT, IOERROR = 0, 1, 2, 3, 4, 5
CONSUME, CONSUME_SOME, LITERAL_FF, START_INVALID, HOLD, TLS_OK = 6, 7, 8, 9, 10, 11


def op(code, p=0):
    return bytes([0xFF, (p << 4) | code])


def unescape(text):
    """R: lines: \\r \\n \\\\ \\xHH escapes, no CRLF added."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            c = text[i + 1]
            if c == "r":
                out += b"\r"
            elif c == "n":
                out += b"\n"
            elif c == "\\":
                out += b"\\"
            elif c == "x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 2
            i += 2
            continue
        out += text[i].encode()
        i += 1
    return bytes(out)


def options_byte(line):
    """fuzz_smtp_client's byte 0 from a transcript's '! options' line."""
    b = 0
    opts = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
    b |= {"off": 0, "opportunistic": 1, "required": 2}.get(opts.get("tls", "off"), 0)
    if opts.get("pipelining") == "off":
        b |= 4
    if opts.get("chunking") == "on":
        b |= 8
    if "transactions" in opts:
        b |= 0x40  # 3 transactions in flight (and small reply bounds)
    if "pipeline" in opts:
        n = int(opts["pipeline"])
        b |= (1 if n <= 64 else 2 if n <= 200 else 0) << 4
    return b


def envelope_byte(line):
    """An envelope of MakeEnvelope() shaped like a transcript's '! start' line."""
    to = re.search(r"to=(\S+)", line).group(1).split(",")
    b = (min(len(to), 4) - 1) & 3
    if any(ord(c) > 127 for c in line):
        b |= 0x80
    if "from=<>" in line:
        b |= 1 << 5
    return b


def read_transcript(path):
    """(server bytes, fuzz_smtp_client input) for one golden transcript."""
    server = bytearray()
    client = bytearray([0])
    in_run = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.rstrip("\n")
        if line.startswith("S: ") or line == "S:":
            data = line[3:].encode() + b"\r\n"
        elif line.startswith("R: "):
            data = unescape(line[3:])
        else:
            data = None
        if data is not None:
            server += data
            client += data.replace(b"\xff", op(LITERAL_FF))
            in_run = True
            continue
        if in_run:
            client += op(SPLIT)
            in_run = False
        if line.startswith("! options"):
            client[0] = options_byte(line)
        elif line.startswith("! start"):
            client += op(START) + bytes([envelope_byte(line)])
        elif line.startswith("! quit"):
            client += op(QUIT)
        elif line.startswith("! eof"):
            client += op(EOF)
        elif line.startswith("! timeout"):
            client += op(TIMEOUT)
        elif line.startswith("! ioerror"):
            client += op(IOERROR)
        elif line.startswith("! tls-established"):
            client += op(TLS_OK)
    return bytes(server), bytes(client)


def crlf(*lines):
    return b"".join(l + b"\r\n" for l in lines)


# Hand-written server streams: multi-line replies, 421, bad codes, long lines.
EHLO_ALL = crlf(b"250-mx.dst.test", b"250-PIPELINING", b"250-SIZE 1000",
                b"250-8BITMIME", b"250-SMTPUTF8", b"250-ENHANCEDSTATUSCODES",
                b"250-CHUNKING", b"250 STARTTLS")
REPLY_CASES = {
    "multiline_greeting": crlf(b"220-mx.dst.test ESMTP", b"220-second", b"220 third"),
    "ehlo_all": EHLO_ALL,
    "421_after_250": crlf(b"250 2.1.0 Ok", b"421 4.7.0 closing"),
    "enhanced_mismatch": crlf(b"250 5.1.1 odd", b"550 2.0.0 odder", b"451 4.3.0 ok"),
    "enhanced_forms": crlf(b"250 2.1.5", b"250 2.1.5x", b"250 2.1234.5 no",
                           b"250 3.1.1 class3", b"354 2.0.0 go", b"250-2.0.0 a",
                           b"250 5.0.0 b"),
    "code_change": crlf(b"250-one", b"251 two"),
    "bad_code_four_digits": crlf(b"2500 ok"),
    "bad_code_no_space": crlf(b"250ok"),
    "bad_code_class": crlf(b"199 no", b"600 no"),
    "bare_line_ends": b"250-a\nb\r\n250 c\rd\r\n250 \x00\x7f\x1b[0m\r\n",
    "cr_split": b"250 ok\r",
    "empty_texts": crlf(b"250", b"250-", b"250 "),
    "long_line": b"250 " + b"x" * 5000 + b"\r\n",
    "long_line_unfinished": b"250-" + b"y" * 600,
    "many_lines": crlf(*[b"250-line %d" % i for i in range(120)], b"250 end"),
    "8bit_text": crlf("250 café ☃".encode()),
    "crlf_inside": b"250-a\r\r\n250 b\n\r\n",
}

# Hand-written client sessions (options byte first).
GREETING = crlf(b"220 mx.dst.test ESMTP")
EHLO_PIPE = crlf(b"250-mx.dst.test", b"250-PIPELINING", b"250-8BITMIME",
                 b"250 SIZE 100000")
CLIENT_CASES = {
    "greeting_421": bytes([0]) + crlf(b"421 4.3.2 go away"),
    "greeting_554_quit": bytes([0]) + crlf(b"554 5.7.1 no") + op(SPLIT) + crlf(b"221 bye"),
    "greeting_bad_code": bytes([0]) + crlf(b"2200 hi"),
    "ehlo_421": bytes([0]) + GREETING + op(SPLIT) + crlf(b"421 4.7.0 later"),
    "ehlo_4xx": bytes([0]) + GREETING + op(SPLIT) + crlf(b"451 try later") + op(SPLIT)
    + crlf(b"221 bye"),
    "early_data_after_greeting": bytes([0]) + GREETING + crlf(b"250 fake ehlo"),
    "unsolicited_while_idle": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + crlf(b"250 what") + op(START) + b"\x00",
    "421_while_idle": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + crlf(b"421 4.4.2 idle timeout") + op(START) + b"\x00",
    "all_caps_two_txns": bytes([0]) + GREETING + op(SPLIT) + EHLO_ALL + op(SPLIT)
    + op(START) + b"\x0d" + crlf(b"250 2.1.0 ok", b"250 2.1.5 ok", b"250 2.1.5 ok",
                                 b"354 go") + op(SPLIT) + crlf(b"250 2.0.0 queued")
    + op(START) + b"\x92" + crlf(b"250 ok", b"250 ok", b"250 ok", b"354 go") + op(SPLIT)
    + crlf(b"250 queued") + op(QUIT) + crlf(b"221 bye"),
    "no_pipelining_8bit": bytes([0]) + GREETING + op(SPLIT)
    + crlf(b"250-mx", b"250 SIZE") + op(SPLIT) + op(START) + b"\x11"
    + crlf(b"250 ok") + op(SPLIT) + crlf(b"250 ok") + op(SPLIT) + crlf(b"250 ok")
    + op(SPLIT) + crlf(b"354 go") + op(SPLIT) + crlf(b"250 ok"),
    "mail_refused_then_rset": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + op(START) + b"\x01" + crlf(b"550 5.7.1 sender", b"503 5.5.1 need mail",
                                 b"503 5.5.1 need mail", b"503 need rcpt")
    + op(START) + b"\x00" + crlf(b"250 2.0.0 reset") + op(SPLIT)
    + crlf(b"250 ok", b"250 ok", b"354 go") + op(SPLIT) + crlf(b"250 ok"),
    "data_refused": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + op(START) + b"\x00" + crlf(b"250 ok", b"250 ok", b"451 4.3.0 no data now"),
    "rset_refused": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + op(START) + b"\x00" + crlf(b"250 ok", b"550 no", b"554 no valid")
    + op(START) + b"\x00" + crlf(b"500 what rset") + op(SPLIT) + crlf(b"221 bye"),
    "eof_after_dot": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + op(START) + b"\x00" + crlf(b"250 ok", b"250 ok", b"354 go") + op(EOF),
    "timeout_in_rcpt": bytes([0x10]) + GREETING + op(SPLIT) + EHLO_PIPE + op(SPLIT)
    + op(START) + b"\x03" + crlf(b"250 ok") + op(TIMEOUT),
    "hold_partial_writes": bytes([0]) + op(HOLD) + GREETING + op(CONSUME_SOME, 1)
    + op(CONSUME) + EHLO_PIPE + op(SPLIT) + op(START) + b"\x00" + op(CONSUME_SOME, 5)
    + crlf(b"250 ok", b"250 ok", b"354 go") + op(CONSUME) + op(SPLIT)
    + crlf(b"250 ok") + op(IOERROR),
    "invalid_envelopes": bytes([0]) + op(START_INVALID, 0) + GREETING + op(SPLIT)
    + EHLO_PIPE + b"".join(op(START_INVALID, p) for p in range(7)),
    "quit_during_handshake": bytes([0]) + GREETING + op(QUIT) + EHLO_PIPE + op(SPLIT)
    + crlf(b"221 bye"),
    "starttls_injection": bytes([1]) + GREETING + op(SPLIT) + EHLO_ALL + op(SPLIT)
    + crlf(b"220 2.0.0 go", b"250-fake", b"250 PIPELINING"),
    "starttls_required_ok": bytes([2]) + GREETING + op(SPLIT) + EHLO_ALL + op(SPLIT)
    + crlf(b"220 go") + op(TLS_OK) + EHLO_PIPE + op(START) + b"\x00"
    + crlf(b"250 ok", b"250 ok", b"354 go") + op(SPLIT) + crlf(b"250 ok"),
    "starttls_plaintext_in_handshake": bytes([0x81]) + GREETING + op(SPLIT) + EHLO_ALL
    + op(SPLIT) + crlf(b"220 go") + op(SPLIT) + crlf(b"250 ok"),
    "bdat_no_pipelining": bytes([0x0c]) + GREETING + op(SPLIT)
    + crlf(b"250-mx", b"250 CHUNKING") + op(SPLIT) + op(START) + b"\x08"
    + crlf(b"250 ok") + op(SPLIT) + crlf(b"250 ok") + op(SPLIT) + crlf(b"250 ok"),
    # A failed transaction, then one that sends nothing (no SMTPUTF8): the RSET owed
    # must still come before the next MAIL.
    "rset_owed_across_unsent_transaction": bytes([0]) + GREETING + op(SPLIT) + EHLO_PIPE
    + op(SPLIT) + op(START) + b"\x00" + crlf(b"250 ok", b"550 no", b"554 no valid")
    + op(START) + b"\xe0" + op(START) + b"\x00" + crlf(b"250 ok"),
    "size_limit": bytes([0]) + GREETING + op(SPLIT) + crlf(b"250-mx", b"250 SIZE 100")
    + op(SPLIT) + op(START) + b"\x18",
    "small_reply_bounds": bytes([0x40]) + GREETING + op(SPLIT)
    + crlf(*[b"250-x%d" % i for i in range(6)], b"250 end"),
}

# fuzz_dkim: whole messages, line ends of every kind.
BULK = (b"Received: from a by b; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        b"From: News <news@News.Example>\r\n"
        b"To: reader@dst.test\r\n"
        b"Subject: This week's news, with a subject long enough that it folds\r\n"
        b"\tover the next line\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        b"Message-ID: <1@news.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"List-Unsubscribe: <https://news.example/u/1>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"X-Mailer: Volley\r\n"
        b"\r\n"
        b"Hello,  reader.\r\n"
        b"\r\n"
        b".a line that starts with a dot\r\n"
        b"\tindented \t line with trailing space \r\n"
        b"\r\n"
        b"\r\n")
DKIM_CASES = {
    "bulk_crlf": BULK,
    "bulk_lf": BULK.replace(b"\r\n", b"\n"),
    "bulk_cr": BULK.replace(b"\r\n", b"\r"),
    "mixed_line_ends": b"From: a@b.test\nTo: c@d.test\r\nSubject: x\r\r\n"
    b"\n\rbody\r\r\n \t \n\r\n\n",
    "from_display_quoted": b"From: \"Doe, John @ Home\" <John.Doe@Example.COM>"
    b" (comment @x.test)\r\nTo: r@x.test\r\n\r\nhi\r\n",
    "from_folded": b"From:\r\n \"J\\\"D\"\r\n\t<jd@\r\n FOLD.test>\r\n\r\nhi",
    "from_comments": b"From: (a (nested \\) @c) x@Y.test (trail)\r\n\r\n",
    "from_group": b"From: Team: a@A.test, b@b.test;\r\nSubject: s\r\n\r\nx\r\n",
    "from_empty_group": b"From: undisclosed-recipients:;\r\n\r\nx\r\n",
    "from_domain_literal": b"From: x@[192.0.2.1]\r\n\r\nx\r\n",
    "from_list": b"From: a, b@First.test, c@second.test\r\n\r\n",
    "from_space_before_colon": b"FROM \t: A@B.TEST\r\n\r\nx",
    "no_from": b"To: a@b.test\r\nSubject: no sender\r\n\r\nbody\r\n",
    "header_only": b"From: a@b.test\r\nSubject: no body",
    "empty_body_blank_lines": b"From: a@b.test\r\n\r\n\r\n\r\n\r\n",
    "whitespace_body": b"From: a@b.test\r\n\r\n  \r\n\t\r\na  b\t\tc \r\n \r\n\r\n"
    b"last line without ending \t",
    "repeated_fields": b"From: a@b.test\r\nSubject: one\r\nTo: x@y.test\r\n"
    b"subject:two\r\nTO  :  z@y.test\r\nReply-To: r@b.test\r\nX-Fuzz: 1\r\n"
    b"from: second@c.test\r\nx-fuzz:\t2\r\n\r\nbody\r\n",
    "continuation_first": b" leading continuation\r\nFrom: a@b.test\r\n\r\nx\r\n",
    "colonless_line": b"not a field\r\n continued: yes\r\nFrom: a@b.test\r\n"
    b"Subject\r\n\r\nx\r\n",
    "long_lines": b"From: a@b.test\r\nSubject: " + b"w " * 600 + b"\r\n\r\n"
    + b"x" * 2000 + b"\r\n" + b" \t" * 300 + b"y\r\n",
    "eight_bit": "From: Jos\u00e9 <jose@b\u00fccher.example>\r\nSubject: caf\u00e9\r\n"
    "\r\ncaf\u00e9 \u2603\r\n".encode(),
}

# fuzz_token: token-shaped strings (version 1, key ids that the harness knows, a MAC
# that verifies for no key) and VERP addresses, valid and subtly not.
def token(first, key_id, job, line, mac=None):
    if mac is None:
        mac = hashlib.sha256(b"fuzz_token seed %d %d" % (job, line)).digest()[:12]
    raw = bytes([first]) + key_id + job.to_bytes(4, "big") + line.to_bytes(4, "big") + mac
    return base64.b32encode(raw).decode().rstrip("=").lower().encode()


TOKEN_CASES = {
    "k1": token(0x12, b"k1", 17, 2),
    "a_upper": token(0x11, b"a", 0, 0).upper(),
    "long_id": token(0x18, b"ABCdef78", 0xFFFFFFFF, 0xFFFFFFFF),
    "unknown_id": token(0x12, b"zz", 1, 1),
    "version_2": token(0x22, b"k1", 1, 1),
    "id_length_0": token(0x10, b"", 1, 1),
    "id_length_9": token(0x19, b"k1234567x", 1, 1),
    "id_not_alnum": token(0x12, b"k-", 1, 1),
    "one_octet_short": token(0x12, b"k1", 1, 1)[:-2],
    "unused_bits_set": token(0x12, b"k1", 1, 1)[:-1] + b"7",
    "bad_character": token(0x12, b"k1", 1, 1)[:10] + b"1" + token(0x12, b"k1", 1, 1)[11:],
    "too_long": b"a" * 48,
    "verp": b"b-" + token(0x12, b"k1", 5, 6) + b"@bounces.test",
    "verp_bracketed": b" \t<B-" + token(0x12, b"k1", 5, 6).upper() + b"@X.TEST>\r\n",
    "verp_two_at": b"b-" + token(0x11, b"a", 5, 6) + b"@x@bounces.test",
    "verp_no_domain": b"b-" + token(0x11, b"a", 5, 6) + b"@",
    "verp_no_prefix": token(0x11, b"a", 5, 6) + b"@bounces.test",
}


# fuzz_report: shapes the unit corpus does not have (report_test.cc builds the big
# ones; these stay small, within scripts/fuzz's -max_len).
def _lines(*lines):
    return b"".join(l.encode() + b"\r\n" for l in lines)


_DSN_HEAD = _lines(
    "From: MAILER-DAEMON@mx.example.test",
    "Subject: Undelivered Mail Returned to Sender",
    "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
    "",
)
REPORT_CASES = {
    "nested_multiparts": _lines("From: a@example.test")
    + b"".join(
        _lines(f'Content-Type: multipart/mixed; boundary="b{i}"', "", f"--b{i}") for i in range(40)
    )
    + _lines("Content-Type: message/delivery-status", "", "Final-Recipient: rfc822; x@y.test",
           "Action: failed", ""),
    "nested_messages": _lines("From: a@example.test")
    + b"".join(_lines("Content-Type: message/rfc822", "") for _ in range(40))
    + _lines("Volley-Trace: deep", "Message-ID: <deep@example.test>", "", "body"),
    "dsn_unclosed": _DSN_HEAD
    + _lines("--b", "Content-Type: message/delivery-status", "", "Reporting-MTA: dns; mx.example.test",
           "", "Final-Recipient: rfc822; a@example.test", "Action: failed", "Status: 5.1.1"),
    "dsn_base64_bad": _DSN_HEAD
    + _lines("--b", "Content-Type: message/delivery-status", "Content-Transfer-Encoding: base64", "",
           "RmluYWwtUmVjaXBpZW50OiByZmM4MjI7IGFAYi50ZXN0CkFjdGlvbjogZmFpbGVkCg==!!**", "--b--"),
    "dsn_no_blank_lines": _DSN_HEAD
    + _lines("--b", "Content-Type: message/delivery-status", "",
           "Reporting-MTA: dns; mx.example.test", "Final-Recipient: rfc822; a@example.test",
           "Action: failed", "Final-Recipient: rfc822; b@example.test", "Action: delayed",
           "Status: 4.4.1", "--b--"),
    "bounce_nul_8bit": b"From: MAILER-DAEMON@x.test\r\nSubject: failure notice\r\n\r\n"
    + b"<a@b.test>:\r\n550 5.1.1 \x00\xff\xfe no such user\r\n\r\n"
    + b"--- Below this line is a copy of the message.\r\n\r\nVolley-Trace: t\x80\r\n",
    "arf_many_rcpts": _lines(
        "From: fbl@example.test",
        "Content-Type: multipart/report; report-type=feedback-report; boundary=f",
        "",
        "--f",
        "Content-Type: message/feedback-report",
        "",
        "Feedback-Type: Fraud (phishing)",
    )
    + b"".join(_lines(f"Original-Rcpt-To: <u{i}@example.test>") for i in range(5))
    + _lines("", "--f--"),
}


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    for path in sorted(GOLDEN.glob("*.txt")):
        server, client = read_transcript(path)
        stem = path.stem
        # Reply parser and line reader: default bounds, chunks of 1 to 4 and 1 to 64.
        write("fuzz_reply_parser", stem, bytes([0x30, 0x11]) + server)
        if stem in ("pipelined_two_messages", "rcpt_rejected_rset"):
            write("fuzz_line_reader", stem, bytes([0x1f, 0x22]) + server)
        write("fuzz_smtp_client", stem, client)
    for name, data in REPLY_CASES.items():
        write("fuzz_reply_parser", name, bytes([0x00, 0x01]) + data)
        write("fuzz_line_reader", name, bytes([0x0f, 0x05]) + data)
    # A few with small bounds (max_line 16 / 5, max_lines 3 / 1).
    for name in ("multiline_greeting", "ehlo_all", "long_line_unfinished"):
        data = REPLY_CASES[name]
        write("fuzz_reply_parser", name + "_small", bytes([0x36, 0x42]) + data)
        write("fuzz_line_reader", name + "_small", bytes([0x04, 0x42]) + data)
    for name, data in CLIENT_CASES.items():
        write("fuzz_smtp_client", name, data)
    for name, data in DKIM_CASES.items():
        write("fuzz_dkim", name, data)
    for name, data in TOKEN_CASES.items():
        write("fuzz_token", name, data)
    for path in sorted(REPORTS.glob("*.eml")):
        write("fuzz_report", path.stem, path.read_bytes().replace(b"\n", b"\r\n"))
    for name, data in REPORT_CASES.items():
        write("fuzz_report", name, data)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    count = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"{count} files, {total} bytes under {CORPUS}")


if __name__ == "__main__":
    main()
