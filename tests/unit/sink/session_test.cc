// session_test.cc - the volley-sink SMTP state machine, fed whole, split and byte
// by byte.
#include "tools/sink/session.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace volley::sink {
namespace {

struct Result {
  std::string replies;
  std::vector<AcceptedMessage> accepted;
};

// Feed every piece in turn to a fresh session (greeting not included).
Result RunPieces(const std::vector<std::string>& pieces, SessionOptions options = {}) {
  Session s(options);
  Result r;
  for (const std::string& p : pieces) s.Feed(p, &r.replies, &r.accepted);
  return r;
}

Result RunWhole(const std::string& input, SessionOptions options = {}) {
  return RunPieces({input}, options);
}

// Feed input one octet at a time.
Result RunBytes(const std::string& input, SessionOptions options = {}) {
  std::vector<std::string> pieces;
  for (char c : input) pieces.emplace_back(1, c);
  return RunPieces(pieces, options);
}

std::vector<std::string> Lines(const std::string& replies) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < replies.size()) {
    const size_t end = replies.find("\r\n", start);
    if (end == std::string::npos) {
      out.push_back("UNTERMINATED:" + replies.substr(start));
      break;
    }
    out.push_back(replies.substr(start, end - start));
    start = end + 2;
  }
  return out;
}

// The reply codes (first 3 chars of each final line, skipping 250- lines).
std::string Codes(const std::string& replies) {
  std::string out;
  for (const std::string& line : Lines(replies)) {
    if (line.size() >= 4 && line[3] == '-') continue;
    if (!out.empty()) out.push_back(' ');
    out += line.substr(0, 3);
  }
  return out;
}

constexpr char kEnvelope[] =
    "EHLO client.test\r\n"
    "MAIL FROM:<a@x.test>\r\n"
    "RCPT TO:<b@y.test>\r\n"
    "RCPT TO:<c@y.test>\r\n"
    "DATA\r\n";

TEST(Session, Greeting) {
  SessionOptions o;
  o.hostname = "sink.test";
  Session s(o);
  std::string out;
  s.Start(&out);
  EXPECT_EQ(out, "220 sink.test ESMTP volley-sink\r\n");
}

TEST(Session, EhloAdvertisesExtensions) {
  SessionOptions o;
  o.hostname = "sink.test";
  const Result r = RunWhole("EHLO c.test\r\n", o);
  const std::vector<std::string> want = {
      "250-sink.test",        "250-PIPELINING",          "250-SIZE 104857600",
      "250-8BITMIME",         "250-ENHANCEDSTATUSCODES", "250-SMTPUTF8",
      "250 CHUNKING"};
  EXPECT_EQ(Lines(r.replies), want);
  EXPECT_EQ(Codes(RunWhole("HELO c.test\r\n", o).replies), "250");
  EXPECT_EQ(Lines(RunWhole("HELO c.test\r\n", o).replies)[0], "250 sink.test");
}

TEST(Session, PipelinedGroupAnsweredInOneFeed) {
  Session s(SessionOptions{});
  std::string out;
  std::vector<AcceptedMessage> acc;
  s.Feed(kEnvelope, &out, &acc);
  EXPECT_EQ(Codes(out), "250 250 250 250 354");
  EXPECT_EQ(s.state(), Session::State::kData);
  // The end of data, then a whole next transaction, then QUIT, in one input.
  out.clear();
  s.Feed("Subject: hi\r\n\r\nbody\r\n.\r\n"
         "MAIL FROM:<>\r\nRCPT TO:<d@y.test>\r\nBDAT 3 LAST\r\nabcQUIT\r\nNOOP\r\n",
         &out, &acc);
  EXPECT_EQ(Codes(out), "250 250 250 250 221");
  EXPECT_TRUE(s.closed());
  ASSERT_EQ(acc.size(), 2u);
  EXPECT_EQ(acc[0].from, "a@x.test");
  EXPECT_EQ(acc[0].rcpts, (std::vector<std::string>{"b@y.test", "c@y.test"}));
  EXPECT_EQ(acc[0].recipients, 2u);
  EXPECT_EQ(acc[0].bytes, 21u);  // "Subject: hi\r\n\r\nbody\r\n"
  EXPECT_EQ(acc[1].from, "");
  EXPECT_EQ(acc[1].rcpts, (std::vector<std::string>{"d@y.test"}));
  EXPECT_EQ(acc[1].bytes, 3u);
}

TEST(Session, DataTerminatorSplitAtEveryByte) {
  const std::string body =
      "Subject: split\r\n"
      "\r\n"
      "..stuffed\r\n"
      ".\rnot the end\r\n"
      "a.\r\n"
      "\r\n"
      "..\r\n"
      "last\r\n";
  // Content after unstuffing: each line-start "." dropped.
  const uint64_t want_bytes = body.size() - 3;
  const std::string input = std::string(kEnvelope) + body + ".\r\nNOOP\r\n";
  const Result whole = RunWhole(input);
  ASSERT_EQ(whole.accepted.size(), 1u);
  EXPECT_EQ(whole.accepted[0].bytes, want_bytes);
  EXPECT_EQ(Codes(whole.replies), "250 250 250 250 354 250 250");
  for (size_t cut = 0; cut <= input.size(); ++cut) {
    const Result r = RunPieces({input.substr(0, cut), input.substr(cut)});
    EXPECT_EQ(r.replies, whole.replies) << "cut at " << cut;
    ASSERT_EQ(r.accepted.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(r.accepted[0].bytes, want_bytes) << "cut at " << cut;
  }
  const Result bytes = RunBytes(input);
  EXPECT_EQ(bytes.replies, whole.replies);
  ASSERT_EQ(bytes.accepted.size(), 1u);
  EXPECT_EQ(bytes.accepted[0].bytes, want_bytes);
}

TEST(Session, DataTable) {
  struct Case {
    std::string body;   // after DATA, up to and including the terminator
    uint64_t bytes;     // content octets counted
    std::string after;  // replies after 354
  };
  const Case cases[] = {
      {".\r\n", 0, "250"},                          // empty message
      {"x\r\n.\r\n", 3, "250"},
      {"..\r\n.\r\n", 3, "250"},                    // a stuffed lone dot
      {"...x\r\n.\r\n", 5, "250"},                  // only the first dot goes
      {"a\r\n.b\r\n.\r\n", 6, "250"},               // "." then text: dot dropped
      {"a\n.\nb\r\n.\r\n", 7, "250"},               // bare LF: not a line end
      {"a\r\r\n.\r\n", 4, "250"},                   // CR CR LF
      {"a\r\n.\r.\r\n.\r\n", 7, "250"},            // ".\r." is content
      {"a\r\n.\r\nQUIT\r\n", 3, "250 221"},         // commands follow at once
      {"RSET\r\nQUIT\r\n.\r\n", 12, "250"},         // commands inside data are data
  };
  for (const Case& c : cases) {
    for (bool bytewise : {false, true}) {
      const std::string input = std::string(kEnvelope) + c.body;
      const Result r = bytewise ? RunBytes(input) : RunWhole(input);
      EXPECT_EQ(Codes(r.replies), "250 250 250 250 354 " + c.after)
          << c.body << " bytewise=" << bytewise;
      ASSERT_EQ(r.accepted.size(), 1u) << c.body;
      EXPECT_EQ(r.accepted[0].bytes, c.bytes) << c.body << " bytewise=" << bytewise;
    }
  }
}

TEST(Session, Bdat) {
  const std::string envelope =
      "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n";
  {
    // Chunks whose content looks like commands and a DATA terminator.
    const std::string input = envelope +
                              "BDAT 6\r\nQUIT\r\n"
                              "BDAT 5\r\n.\r\n\r\n"
                              "BDAT 0 LAST\r\nNOOP\r\n";
    for (bool bytewise : {false, true}) {
      const Result r = bytewise ? RunBytes(input) : RunWhole(input);
      EXPECT_EQ(Codes(r.replies), "250 250 250 250 250 250 250") << bytewise;
      ASSERT_EQ(r.accepted.size(), 1u);
      EXPECT_EQ(r.accepted[0].bytes, 11u);
      EXPECT_EQ(r.accepted[0].recipients, 1u);
    }
  }
  {
    const Result r = RunWhole(envelope + "BDAT 4 last\r\nabcd");
    EXPECT_EQ(Codes(r.replies), "250 250 250 250");
    ASSERT_EQ(r.accepted.size(), 1u);
    EXPECT_EQ(r.accepted[0].bytes, 4u);
  }
  // Refused chunks are still read and dropped, so framing holds.
  EXPECT_EQ(Codes(RunWhole("EHLO c\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n").replies),
            "250 503 250");
  EXPECT_EQ(Codes(RunWhole("EHLO c\r\nMAIL FROM:<>\r\nBDAT 6 LAST\r\nQUIT\r\n"
                           "RCPT TO:<b@y>\r\n").replies),
            "250 250 554 503");
  // DATA and RCPT after a chunk are out of sequence; RSET recovers.
  EXPECT_EQ(Codes(RunWhole(envelope + "BDAT 1\r\nxDATA\r\nRCPT TO:<c@y>\r\nRSET\r\n"
                                      "MAIL FROM:<>\r\n").replies),
            "250 250 250 250 503 503 250 250");
  // Syntax errors.
  EXPECT_EQ(Codes(RunWhole(envelope + "BDAT\r\nBDAT x\r\nBDAT 1 FIRST\r\nBDAT -1\r\n")
                      .replies),
            "250 250 250 501 501 501 501");
  // Too big for SIZE: refused, chunk dropped, transaction gone.
  SessionOptions small;
  small.max_message_size = 10;
  const Result big = RunWhole(envelope + "BDAT 8\r\n12345678BDAT 3 LAST\r\nabcNOOP\r\n",
                              small);
  EXPECT_EQ(Codes(big.replies), "250 250 250 250 552 250");
  EXPECT_TRUE(big.accepted.empty());
}

TEST(Session, OverLongLines) {
  SessionOptions o;
  ASSERT_EQ(o.max_line_length, 4096u);
  const std::string fits = "NOOP " + std::string(4096 - 7, 'x') + "\r\n";
  ASSERT_EQ(fits.size(), 4096u);
  const std::string too_long = "NOOP " + std::string(4096 - 6, 'x') + "\r\n";
  for (bool bytewise : {false, true}) {
    auto run = bytewise ? RunBytes : RunWhole;
    EXPECT_EQ(run(fits, o).replies, "250 2.0.0 Ok\r\n");
    EXPECT_EQ(run(too_long + "NOOP\r\n", o).replies,
              "500 5.5.6 Error: command line too long\r\n250 2.0.0 Ok\r\n");
  }
  // A megabyte without a line end is never stored.
  Session s(o);
  std::string out;
  std::vector<AcceptedMessage> acc;
  const std::string chunk(1000, 'A');
  for (int i = 0; i < 1000; ++i) {
    s.Feed(chunk, &out, &acc);
    EXPECT_LE(s.buffered(), o.max_line_length);
  }
  EXPECT_EQ(out, "");
  s.Feed("\r\nQUIT\r\n", &out, &acc);
  EXPECT_EQ(Codes(out), "500 221");
}

TEST(Session, BadSequenceAndUnknown) {
  struct Case {
    std::string input;
    std::string codes;
  };
  const Case cases[] = {
      {"MAIL FROM:<a@x>\r\n", "503"},                      // before EHLO
      {"EHLO c\r\nRCPT TO:<b@y>\r\n", "250 503"},          // before MAIL
      {"EHLO c\r\nDATA\r\n", "250 503"},
      {"EHLO c\r\nMAIL FROM:<a@x>\r\nDATA\r\n", "250 250 554"},
      {"EHLO c\r\nMAIL FROM:<a@x>\r\nMAIL FROM:<a@x>\r\n", "250 250 503"},
      {"EHLO c\r\nMAIL FROM:<a@x>\r\nRSET\r\nRCPT TO:<b@y>\r\n", "250 250 250 503"},
      {"EHLO c\r\nMAIL FROM:<a@x>\r\nEHLO c\r\nRCPT TO:<b@y>\r\n", "250 250 250 503"},
      {"FOO\r\n\r\nVRFY x\r\n", "500 500 500"},
      {"EHLO\r\nHELO\r\n", "501 501"},
      {"EHLO c\r\nMAIL a@x\r\nMAIL FROM:a@x\r\nMAIL FROM:<a@x\r\n", "250 501 501 501"},
      {"EHLO c\r\nMAIL FROM:<a@x> SIZE=999999999999\r\n", "250 552"},
      {"EHLO c\r\nMAIL FROM: <a@x> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n", "250 250"},
      {"EHLO c\r\nMAIL FROM:<a@x> FOO=1\r\n", "250 555"},
      {"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<>\r\nRCPT TO:b@y\r\n", "250 250 501 501"},
      {"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA x\r\n", "250 250 250 501"},
      {"ehlo c\nmail from:<a@x>\nrcpt to:<b@y>\nnoop\nrset\nquit\n",
       "250 250 250 250 250 221"},                         // any case, bare LF
      {"QUIT\r\nNOOP\r\n", "221"},                          // nothing after QUIT
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Codes(RunWhole(c.input).replies), c.codes) << c.input;
    EXPECT_EQ(Codes(RunBytes(c.input).replies), c.codes) << c.input;
  }
  // Enhanced codes as promised.
  const Result r = RunWhole("FOO\r\nEHLO c\r\nDATA\r\nMAIL FROM:<>\r\nDATA\r\n");
  const std::vector<std::string> lines = Lines(r.replies);
  EXPECT_EQ(lines.front().substr(0, 9), "500 5.5.2");
  EXPECT_EQ(lines[lines.size() - 3].substr(0, 9), "503 5.5.1");
  EXPECT_EQ(lines[lines.size() - 2].substr(0, 9), "250 2.1.0");
  EXPECT_EQ(lines.back().substr(0, 9), "554 5.5.1");
}

TEST(Session, RecipientCap) {
  std::string input = "EHLO c\r\nMAIL FROM:<a@x>\r\n";
  for (int i = 0; i < 1001; ++i) input += "RCPT TO:<r" + std::to_string(i) + "@y>\r\n";
  input += "DATA\r\nx\r\n.\r\n";
  const Result r = RunWhole(input);
  const std::vector<std::string> lines = Lines(r.replies);
  ASSERT_EQ(lines.size(), 7u + 1 + 1001 + 1 + 1);
  EXPECT_EQ(lines[7 + 1 + 999].substr(0, 9), "250 2.1.5");
  EXPECT_EQ(lines[7 + 1 + 1000].substr(0, 9), "452 4.5.3");
  ASSERT_EQ(r.accepted.size(), 1u);
  EXPECT_EQ(r.accepted[0].recipients, 1000u);
  EXPECT_EQ(r.accepted[0].rcpts.size(), 1000u);
}

TEST(Session, CountsWithoutAddresses) {
  SessionOptions o;
  o.keep_addresses = false;
  const Result r = RunWhole(std::string(kEnvelope) + "hi\r\n.\r\n", o);
  ASSERT_EQ(r.accepted.size(), 1u);
  EXPECT_EQ(r.accepted[0].from, "");
  EXPECT_TRUE(r.accepted[0].rcpts.empty());
  EXPECT_EQ(r.accepted[0].recipients, 2u);
  EXPECT_EQ(r.accepted[0].bytes, 4u);
}

TEST(Session, MessageTooBigForData) {
  SessionOptions o;
  o.max_message_size = 5;
  const Result r = RunWhole(std::string(kEnvelope) + "123456\r\n.\r\nNOOP\r\n", o);
  EXPECT_EQ(Codes(r.replies), "250 250 250 250 354 552 250");
  EXPECT_TRUE(r.accepted.empty());
}

}  // namespace
}  // namespace volley::sink
