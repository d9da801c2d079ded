#!/usr/bin/env python3
"""make_corpus.py - (re)write the seed corpora under tests/fuzz/corpus/.

    tests/fuzz/make_corpus.py

Seeds come from the golden transcripts (tests/golden/smtp/*.txt: the server's S:/R:
lines, and for fuzz_smtp_client the caller's actions too) and from the hand-written
edge cases below. Each target's input format is described at the top of its .cc file.
The output is deterministic; files are named after their source, so running this again
after a transcript changes only rewrites what changed. Files in corpus/ that this script
does not write (crashes added by hand, see README.md) are left alone.
"""
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden" / "smtp"
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
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    count = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"{count} files, {total} bytes under {CORPUS}")


if __name__ == "__main__":
    main()
