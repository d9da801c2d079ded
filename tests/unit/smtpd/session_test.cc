// session_test.cc - the volley-sink SMTP state machine, fed whole, split and byte
// by byte.
#include "engine/smtpd/session.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace volley::smtpd {
namespace {

struct Result {
  std::string replies;
  std::vector<AcceptedMessage> accepted;
  Output out;  // every decision, steps merged as the session made them
};

// Feed every piece in turn to a fresh session (greeting not included).
Result RunPieces(const std::vector<std::string>& pieces, SessionOptions options = {}) {
  Session s(options);
  Result r;
  for (const std::string& p : pieces) s.Feed(p, absl::UnixEpoch(), &r.out);
  r.replies = r.out.Bytes();
  r.accepted = r.out.accepted;
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
  Output out;
  s.Start(1, &out);
  ASSERT_EQ(out.steps.size(), 1u);
  EXPECT_EQ(out.steps[0].delay, absl::ZeroDuration());
  EXPECT_EQ(out.Bytes(), "220 sink.test ESMTP volley-sink\r\n");
  EXPECT_FALSE(out.close);
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
  Output out;
  s.Feed(kEnvelope, absl::UnixEpoch(), &out);
  EXPECT_EQ(Codes(out.Bytes()), "250 250 250 250 354");
  EXPECT_EQ(out.steps.size(), 1u);  // one write
  EXPECT_EQ(s.state(), Session::State::kData);
  // The end of data, then a whole next transaction, then QUIT, in one input.
  out.Clear();
  s.Feed("Subject: hi\r\n\r\nbody\r\n.\r\n"
         "MAIL FROM:<>\r\nRCPT TO:<d@y.test>\r\nBDAT 3 LAST\r\nabcQUIT\r\nNOOP\r\n",
         absl::UnixEpoch(), &out);
  EXPECT_EQ(Codes(out.Bytes()), "250 250 250 250 221");
  EXPECT_EQ(out.steps.size(), 1u);
  EXPECT_TRUE(s.closed());
  EXPECT_TRUE(out.close);
  EXPECT_EQ(out.rejects, 0u);
  const std::vector<AcceptedMessage>& acc = out.accepted;
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
  // Syntax errors. With a size, the chunk is still read and dropped; without
  // one its length is unknown, so the connection is closed.
  EXPECT_EQ(Codes(RunWhole(envelope + "BDAT 1 FIRST\r\nxBDAT 2 last last\r\nyyNOOP\r\n")
                      .replies),
            "250 250 250 501 501 250");
  for (const char* bad : {"BDAT\r\n", "BDAT x\r\n", "BDAT -1\r\n", "BDAT  LAST\r\n",
                          "BDAT 99999999999999999999\r\n"}) {
    for (bool bytewise : {false, true}) {
      const std::string input = envelope + bad + "NOOP\r\n";
      const Result r = bytewise ? RunBytes(input) : RunWhole(input);
      EXPECT_EQ(Codes(r.replies), "250 250 250 501") << bad;
      EXPECT_TRUE(r.out.close) << bad;
      EXPECT_EQ(r.out.rejects, 1u) << bad;
    }
  }
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
  Output out;
  const std::string chunk(1000, 'A');
  for (int i = 0; i < 1000; ++i) {
    s.Feed(chunk, absl::UnixEpoch(), &out);
    EXPECT_LE(s.buffered(), o.max_line_length);
  }
  EXPECT_EQ(out.Bytes(), "");
  s.Feed("\r\nQUIT\r\n", absl::UnixEpoch(), &out);
  EXPECT_EQ(Codes(out.Bytes()), "500 221");
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
      {"ehlo c\r\nmail from:<a@x>\r\nrcpt to:<b@y>\r\nnoop\r\nrset\r\nquit\r\n",
       "250 250 250 250 250 221"},                         // any case
      {"EHLO c\nMAIL FROM:<a@x>\r\n", "500 503"},          // a bare LF ends nothing
      {"EHLO c\r\nMAIL FROM:<a@x> SIZE=1 SIZE=x\r\n", "250 501"},
      {"EHLO c\r\nMAIL FROM:<a@x> BODY=BINARYMIME\r\n", "250 501"},
      {"HELO c\r\nMAIL FROM:<a@x> SIZE=10\r\n", "250 555"},   // nothing advertised
      {"HELO c\r\nMAIL FROM:<a@x> BODY=8BITMIME\r\n", "250 555"},
      {"HELO c\r\nMAIL FROM:<a@x> SMTPUTF8\r\n", "250 555"},
      {"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 4\r\n", "250 250 250 500"},
      {"STARTTLS\r\n", "502"},                             // not offered by default
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

TEST(Session, QuitReceivedOnlyAfterQuit) {
  const absl::Time t = absl::UnixEpoch();
  Session polite{SessionOptions{}};
  Output out;
  polite.Feed("ehlo c\r\nnoop\r\n", t, &out);
  EXPECT_FALSE(polite.quit_received());
  polite.Feed("quit\r\n", t, &out);
  EXPECT_TRUE(polite.quit_received());
  EXPECT_TRUE(polite.closed());
  Session dropped{SessionOptions{}};
  dropped.Feed("ehlo c\r\nmail from:<a@x>\r\nrset\r\n", t, &out);
  EXPECT_FALSE(dropped.quit_received());  // then the client hangs up
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

TEST(Session, BareLfIsNotALineEnd) {
  // Only CRLF ends a command line; a line ended by a bare LF is answered 500
  // 5.5.2 and discarded, wherever the input is split.
  const std::string input = "NOOP\nEHLO c\r\nMAIL FROM:<a@x>\n\nRSET\r\n";
  const std::string want =
      "500 5.5.2 Error: bare LF received\r\n"
      "250-localhost\r\n";
  const Result whole = RunWhole(input);
  EXPECT_EQ(whole.replies.substr(0, want.size()), want);
  EXPECT_EQ(Codes(whole.replies), "500 250 500 500 250");
  for (size_t cut = 0; cut <= input.size(); ++cut) {
    const Result r = RunPieces({input.substr(0, cut), input.substr(cut)});
    EXPECT_EQ(r.replies, whole.replies) << "cut at " << cut;
  }
  EXPECT_EQ(RunBytes(input).replies, whole.replies);
  // A CR that came in an earlier input still makes a CRLF.
  EXPECT_EQ(Codes(RunPieces({"NOOP\r", "\n", "\r", "\n"}).replies), "250 500");
}

// ---------------------------------------------------------------------------
// Fault profiles

// A profile set parsed from TOML, and sessions on its profiles.
class Profiles {
 public:
  explicit Profiles(const std::string& toml) {
    auto set = ParseProfiles(toml, "test.toml");
    EXPECT_TRUE(set.ok()) << set.status();
    if (set.ok()) set_ = *std::move(set);
  }

  SessionOptions Options(const std::string& name = "default", uint64_t seed = 1) {
    SessionOptions o;
    o.hostname = "sink.test";
    o.profiles = &set_;
    o.greylist = &greylist_;
    o.seed = seed;
    o.profile = &set_.default_profile();
    for (const Profile& p : set_.profiles()) {
      if (p.name == name) o.profile = &p;
    }
    EXPECT_EQ(o.profile->name, name);
    return o;
  }

  Greylist& greylist() { return greylist_; }

 private:
  ProfileSet set_;
  Greylist greylist_{100};
};

constexpr char kOneRcpt[] =
    "EHLO client.test\r\n"
    "MAIL FROM:<a@x.test>\r\n"
    "RCPT TO:<b@y.test>\r\n";

TEST(Profiles, ReplyOverrideRateOne) {
  Profiles p(R"(
[[profile.default.reply]]
command = "RCPT"
reply = "450 4.2.1 mailbox busy"
)");
  const std::string input = std::string(kOneRcpt) + "DATA\r\nRSET\r\n";
  for (bool bytewise : {false, true}) {
    const Result r = bytewise ? RunBytes(input, p.Options()) : RunWhole(input, p.Options());
    // Refused: no recipient, so DATA has none.
    EXPECT_EQ(Codes(r.replies), "250 250 450 554 250") << bytewise;
    EXPECT_NE(r.replies.find("450 4.2.1 mailbox busy\r\n"), std::string::npos);
    EXPECT_EQ(r.out.rejects, 2u);  // the 450 and the 554
    EXPECT_FALSE(r.out.close);
  }
}

TEST(Profiles, ReplyOverrideMatchAndNth) {
  Profiles p(R"(
[[profile.default.reply]]
command = "RCPT"
match = "Reject"
reply = "550 5.1.1 no such user"
[[profile.default.reply]]
command = "RCPT"
nth = 3
reply = "452 4.2.2 mailbox full"
)");
  const std::string input =
      "EHLO c\r\nMAIL FROM:<a@x.test>\r\n"
      "RCPT TO:<ok1@y.test>\r\n"
      "RCPT TO:<REJECT-me@y.test>\r\n"   // 2nd RCPT: matches (any case)
      "RCPT TO:<ok2@y.test>\r\n"         // 3rd RCPT: nth = 3
      "RCPT TO:<ok3@y.test>\r\n"
      "RCPT TO:<x.reject@y.test>\r\n"
      "DATA\r\nhi\r\n.\r\n";
  for (bool bytewise : {false, true}) {
    const Result r = bytewise ? RunBytes(input, p.Options()) : RunWhole(input, p.Options());
    EXPECT_EQ(Codes(r.replies), "250 250 250 550 452 250 550 354 250") << bytewise;
    ASSERT_EQ(r.accepted.size(), 1u);
    EXPECT_EQ(r.accepted[0].rcpts, (std::vector<std::string>{"ok1@y.test", "ok3@y.test"}));
    EXPECT_EQ(r.out.rejects, 3u);
  }
}

TEST(Profiles, RateIsSeededAndReproducible) {
  Profiles p(R"(
[[profile.default.reply]]
command = "RCPT"
rate = 0.25
reply = "451 4.3.0 try later"
)");
  std::string input = "EHLO c\r\nMAIL FROM:<a@x.test>\r\n";
  for (int i = 0; i < 1000; ++i) input += "RCPT TO:<r" + std::to_string(i) + "@y.test>\r\n";
  const auto run = [&](uint64_t seed) {
    SessionOptions o = p.Options("default", seed);
    o.max_recipients = 100000;
    return Codes(RunWhole(input, o).replies);
  };
  const std::string a = run(1);
  const size_t refused = static_cast<size_t>(std::count(a.begin(), a.end(), '4'));
  EXPECT_GT(refused, 180u);
  EXPECT_LT(refused, 320u);
  EXPECT_EQ(run(1), a);  // same seed, same decisions
  EXPECT_NE(run(2), a);
  // Rate 0 never fires.
  Profiles never(R"(
[[profile.default.reply]]
command = "RCPT"
rate = 0
reply = "451 4.3.0 try later"
)");
  EXPECT_EQ(Codes(RunWhole(kOneRcpt, never.Options()).replies), "250 250 250");
}

TEST(Profiles, Reply421Closes) {
  Profiles p(R"(
[[profile.default.reply]]
command = "MAIL"
reply = "421 4.7.0 try again later"
)");
  const std::string input = "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nNOOP\r\n";
  for (bool bytewise : {false, true}) {
    const Result r = bytewise ? RunBytes(input, p.Options()) : RunWhole(input, p.Options());
    EXPECT_EQ(Codes(r.replies), "250 421") << bytewise;  // nothing after the 421
    EXPECT_TRUE(r.out.close);
  }
}

TEST(Profiles, PositiveOverrideTakesEffect) {
  // A 2xx override only changes the text: EHLO still greets, here with a
  // made-up extension list; a 3xx DATA override still starts the content.
  Profiles p(R"(
[[profile.default.reply]]
command = "EHLO"
reply = "250-weird.test\n250 SIZE 1000"
[[profile.default.reply]]
command = "DATA"
reply = "354 go ahead"
)");
  const Result r = RunWhole(std::string(kOneRcpt) + "DATA\r\nx\r\n.\r\n", p.Options());
  EXPECT_EQ(Lines(r.replies)[0], "250-weird.test");
  EXPECT_EQ(Lines(r.replies)[1], "250 SIZE 1000");
  EXPECT_EQ(Codes(r.replies), "250 250 250 354 250");
  EXPECT_EQ(Lines(r.replies)[4], "354 go ahead");
  EXPECT_EQ(r.accepted.size(), 1u);
}

TEST(Profiles, RawReply) {
  Profiles p(R"(
[[profile.default.reply]]
command = "MAIL"
raw = true
reply = "250-no final line\r\n"
)");
  const Result r = RunWhole("EHLO c\r\nMAIL FROM:<a@x.test>\r\n", p.Options());
  EXPECT_EQ(r.replies.substr(r.replies.size() - 19), "250-no final line\r\n");
}

TEST(Profiles, DelaysAndTarpit) {
  Profiles p(R"(
[profile.default]
greeting_delay = "3s"
[profile.slow]
tarpit = "100ms"
[[profile.slow.reply]]
command = "RCPT"
delay = "2s"
[[profile.default.reply]]
command = "DOT"
delay = "5s"
)");
  {
    Session s(p.Options());
    Output out;
    s.Start(1, &out);
    ASSERT_EQ(out.steps.size(), 1u);
    EXPECT_EQ(out.steps[0].delay, absl::Seconds(3));
    out.Clear();
    s.Feed(std::string(kOneRcpt) + "DATA\r\nx\r\n.\r\nNOOP\r\n", absl::UnixEpoch(), &out);
    // Undelayed replies share a step; the delayed end of data starts a new one,
    // and the NOOP after it shares that one.
    ASSERT_EQ(out.steps.size(), 2u);
    EXPECT_EQ(out.steps[0].delay, absl::ZeroDuration());
    EXPECT_EQ(Codes(out.steps[0].bytes), "250 250 250 354");
    EXPECT_EQ(out.steps[1].delay, absl::Seconds(5));
    EXPECT_EQ(Codes(out.steps[1].bytes), "250 250");
  }
  {
    Session s(p.Options("slow"));
    Output out;
    s.Feed(std::string(kOneRcpt) + "QUIT\r\n", absl::UnixEpoch(), &out);
    // The tarpit delays every reply: one step each.
    ASSERT_EQ(out.steps.size(), 4u);
    EXPECT_EQ(out.steps[0].delay, absl::Milliseconds(100));
    EXPECT_EQ(out.steps[2].delay, absl::Milliseconds(2100));
    EXPECT_EQ(Codes(out.steps[2].bytes), "250");
    EXPECT_EQ(Codes(out.steps[3].bytes), "221");
    EXPECT_TRUE(out.close);
  }
}

TEST(Profiles, DisconnectAfterDot) {
  Profiles p(R"(
[[profile.default.disconnect]]
after = "DOT"
)");
  const std::string input = std::string(kOneRcpt) + "DATA\r\nhello\r\n.\r\nQUIT\r\n";
  const Result whole = RunWhole(input, p.Options());
  EXPECT_EQ(Codes(whole.replies), "250 250 250 354");  // no reply to the dot
  EXPECT_TRUE(whole.out.close);
  EXPECT_TRUE(whole.accepted.empty());
  for (size_t cut = 0; cut <= input.size(); ++cut) {
    const Result r = RunPieces({input.substr(0, cut), input.substr(cut)}, p.Options());
    EXPECT_EQ(r.replies, whole.replies) << "cut at " << cut;
    EXPECT_TRUE(r.out.close) << "cut at " << cut;
  }
  // Not before the dot: content that looks like commands is content.
  const Result early =
      RunWhole(std::string(kOneRcpt) + "DATA\r\nQUIT\r\n.x\r\n", p.Options());
  EXPECT_FALSE(early.out.close);
}

TEST(Profiles, DisconnectAfterCommandAndOnConnect) {
  Profiles p(R"(
[[profile.default.disconnect]]
after = "RCPT"
match = "drop"
[profile.gone]
[[profile.gone.disconnect]]
after = "CONNECT"
)");
  const Result r = RunWhole(
      "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<drop@y.test>\r\n"
      "RCPT TO:<b@y.test>\r\n",
      p.Options());
  EXPECT_EQ(Codes(r.replies), "250 250 250");
  EXPECT_TRUE(r.out.close);
  Session s(p.Options("gone"));
  Output out;
  s.Start(1, &out);
  EXPECT_TRUE(out.steps.empty());  // not even a greeting
  EXPECT_TRUE(out.close);
}

TEST(Profiles, Greylisting) {
  Profiles p(R"(
[profile.default]
greylist = "2s"
)");
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const auto attempt = [&](absl::Time now, const std::string& rcpt) {
    Session s(p.Options());
    Output out;
    s.Feed("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<" + rcpt + ">\r\n", now, &out);
    return Lines(out.Bytes()).back();
  };
  EXPECT_EQ(attempt(t0, "b@y.test"), "451 4.7.1 Greylisted, please try again later");
  EXPECT_EQ(attempt(t0 + absl::Seconds(1), "B@Y.test").substr(0, 3), "451");  // any case
  EXPECT_EQ(attempt(t0 + absl::Seconds(1), "c@y.test").substr(0, 3), "451");
  EXPECT_EQ(attempt(t0 + absl::Seconds(2), "b@y.test").substr(0, 3), "250");
  EXPECT_EQ(attempt(t0 + absl::Seconds(5), "b@y.test").substr(0, 3), "250");  // remembered
  EXPECT_EQ(attempt(t0 + absl::Seconds(2), "c@y.test").substr(0, 3), "451");
  EXPECT_EQ(attempt(t0 + absl::Seconds(3), "c@y.test").substr(0, 3), "250");
  EXPECT_EQ(p.greylist().size(), 2u);
}

TEST(Profiles, GreylistBound) {
  Greylist g(3);
  const absl::Time t0 = absl::FromUnixSeconds(1);
  const absl::Duration d = absl::Seconds(1);
  for (const char* r : {"a", "b", "c", "d"}) EXPECT_FALSE(g.Pass("s", r, d, t0));
  EXPECT_EQ(g.size(), 3u);
  EXPECT_TRUE(g.Pass("s", "d", d, t0 + d));
  EXPECT_FALSE(g.Pass("s", "a", d, t0 + d));  // evicted first: starts over
}

TEST(Profiles, NoEsmtp) {
  Profiles p(R"(
[profile.default]
ehlo = "no-esmtp"
)");
  Session s(p.Options());
  Output out;
  s.Start(1, &out);
  EXPECT_EQ(out.Bytes(), "220 sink.test volley-sink\r\n");
  out.Clear();
  s.Feed("EHLO c\r\nMAIL FROM:<a@x.test>\r\nHELO c\r\nMAIL FROM:<a@x.test> SIZE=10\r\n"
         "MAIL FROM:<a@x.test>\r\n",
         absl::UnixEpoch(), &out);
  EXPECT_EQ(Codes(out.Bytes()), "502 503 250 555 250");
  EXPECT_EQ(Lines(out.Bytes())[0], "502 5.5.1 Error: command not implemented");
}

TEST(Profiles, Extensions) {
  Profiles p(R"(
[profile.default]
pipelining = false
chunking = false
smtputf8 = false
eight_bit_mime = false
size_limit = 100
[profile.nosize]
size_limit = 0
)");
  const Result r = RunWhole("EHLO c\r\n", p.Options());
  EXPECT_EQ(Lines(r.replies),
            (std::vector<std::string>{"250-sink.test", "250-SIZE 100", "250 ENHANCEDSTATUSCODES"}));
  const std::string big(200, 'x');
  EXPECT_EQ(Codes(RunWhole("EHLO c\r\nMAIL FROM:<a@x> SMTPUTF8\r\nMAIL FROM:<a@x> BODY=8BITMIME\r\n"
                           "MAIL FROM:<a@x> BODY=7BIT\r\nMAIL FROM:<a@x> SIZE=101\r\n"
                           "MAIL FROM:<a@x> SIZE=100\r\nRCPT TO:<b@y>\r\nBDAT 3\r\n"
                           "DATA\r\n" + big + "\r\n.\r\n",
                           p.Options())
                      .replies),
            "250 555 555 555 552 250 250 500 354 552");
  const Result nosize = RunWhole("EHLO c\r\n", p.Options("nosize"));
  EXPECT_EQ(nosize.replies.find("SIZE"), std::string::npos);
  EXPECT_NE(nosize.replies.find("PIPELINING"), std::string::npos);
  const Result unlimited = RunWhole(std::string(kOneRcpt) + "DATA\r\n" + std::string(300, 'y') +
                                        "\r\n.\r\nMAIL FROM:<a@x> SIZE=5\r\n",
                                    p.Options("nosize"));
  EXPECT_EQ(Codes(unlimited.replies), "250 250 250 354 250 555");
  ASSERT_EQ(unlimited.accepted.size(), 1u);
  EXPECT_EQ(unlimited.accepted[0].bytes, 302u);
}

TEST(Profiles, Greetings) {
  Profiles p(R"(
[profile.banner]
greeting = "220-first line\r\n220 second line"
[profile.busy]
greeting = "421 4.3.2 busy"
[profile.refuse]
greeting = "554 5.7.1 go away"
)");
  {
    Session s(p.Options("banner"));
    Output out;
    s.Start(1, &out);
    EXPECT_EQ(out.Bytes(), "220-first line\r\n220 second line\r\n");
    EXPECT_FALSE(out.close);
  }
  {
    Session s(p.Options("busy"));
    Output out;
    s.Start(1, &out);
    EXPECT_EQ(out.Bytes(), "421 4.3.2 busy\r\n");
    EXPECT_TRUE(out.close);
  }
  {
    Session s(p.Options("refuse"));
    Output out;
    s.Start(1, &out);
    EXPECT_FALSE(out.close);
    out.Clear();
    s.Feed("EHLO c\r\nMAIL FROM:<a@x>\r\nQUIT\r\n", absl::UnixEpoch(), &out);
    EXPECT_EQ(Codes(out.Bytes()), "503 503 221");  // RFC 5321 3.1
    EXPECT_TRUE(out.close);
  }
}

TEST(Profiles, MaxConnections) {
  Profiles p(R"(
[profile.default]
max_connections = 2
)");
  for (uint64_t open : {1, 2, 3, 10}) {
    Session s(p.Options());
    Output out;
    s.Start(open, &out);
    if (open <= 2) {
      EXPECT_EQ(out.Bytes().substr(0, 4), "220 ") << open;
      EXPECT_FALSE(out.close);
    } else {
      EXPECT_EQ(out.Bytes().substr(0, 9), "421 4.7.0") << open;
      EXPECT_TRUE(out.close);
    }
  }
}

TEST(Profiles, DomainProfile) {
  Profiles p(R"(
[profile.picky]
[[profile.picky.reply]]
command = "RCPT"
reply = "550 5.1.1 no such user"
match = "nobody"
[[profile.picky.reply]]
command = "DOT"
reply = "554 5.7.1 content rejected"
[domain."Picky.test"]
profile = "picky"
)");
  // RCPT to the domain follows its profile; others follow the listener's.
  const Result r = RunWhole(
      "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<nobody@picky.TEST>\r\n"
      "RCPT TO:<nobody@other.test>\r\nRCPT TO:<somebody@picky.test>\r\nDATA\r\nx\r\n.\r\n"
      "MAIL FROM:<a@x.test>\r\nRCPT TO:<somebody@picky.test>\r\nDATA\r\nx\r\n.\r\n",
      p.Options());
  // The first transaction's first recipient is in other.test: its end of data
  // is accepted; the second's is in picky.test: refused.
  EXPECT_EQ(Codes(r.replies), "250 250 550 250 250 354 250 250 250 354 554");
  EXPECT_EQ(r.accepted.size(), 1u);
  EXPECT_EQ(r.out.rejects, 2u);
}

TEST(Profiles, StartTls) {
  Profiles p(R"(
[profile.default]
starttls = true
[profile.inject]
starttls = true
inject_after_starttls = "250 injected\r\n"
)");
  const std::string input =
      "EHLO c\r\nMAIL FROM:<a@x>\r\nSTARTTLS\r\nRSET\r\nSTARTTLS\r\nNOOP\r\nNOOP\r\n";
  for (size_t cut = 0; cut <= input.size(); ++cut) {
    Session s(p.Options());
    Output out;
    s.Feed(input.substr(0, cut), absl::UnixEpoch(), &out);
    // As the server does: once TLS starts, later input is ciphertext, never
    // fed to the session as it is.
    if (!out.start_tls) s.Feed(input.substr(cut), absl::UnixEpoch(), &out);
    const std::vector<std::string> lines = Lines(out.Bytes());
    ASSERT_GE(lines.size(), 4u);
    EXPECT_EQ(lines[3], "250-STARTTLS");
    // STARTTLS in a transaction: refused; after RSET: 220, and the plaintext
    // after it (the NOOPs) is dropped, never answered.
    EXPECT_EQ(Codes(out.Bytes()), "250 250 503 250 220") << "cut at " << cut;
    EXPECT_TRUE(out.start_tls) << "cut at " << cut;
    EXPECT_TRUE(s.tls());
    // Over TLS: back to the start (RFC 3207 4.2), STARTTLS no longer offered.
    out.Clear();
    s.Feed("MAIL FROM:<a@x>\r\nEHLO c\r\nSTARTTLS\r\n", absl::UnixEpoch(), &out);
    EXPECT_EQ(Codes(out.Bytes()), "503 250 503");
    EXPECT_EQ(out.Bytes().find("STARTTLS"), std::string::npos);
    EXPECT_FALSE(out.start_tls);
  }
  {
    Session s(p.Options("inject"));
    Output out;
    s.Feed("EHLO c\r\nSTARTTLS\r\n", absl::UnixEpoch(), &out);
    ASSERT_EQ(out.steps.size(), 1u);
    const std::string& b = out.steps[0].bytes;
    EXPECT_EQ(b.substr(b.size() - 44), "220 2.0.0 Ready to start TLS\r\n250 injected\r\n");
    EXPECT_TRUE(out.start_tls);
  }
  // Before EHLO, after HELO, with an argument.
  EXPECT_EQ(Codes(RunWhole("STARTTLS\r\nHELO c\r\nSTARTTLS\r\nEHLO c\r\nSTARTTLS x\r\n",
                           p.Options())
                      .replies),
            "503 250 503 250 501");
}

TEST(Profiles, StartTlsRefusedByOverride) {
  Profiles p(R"(
[profile.default]
starttls = true
inject_after_starttls = "junk"
[[profile.default.reply]]
command = "STARTTLS"
reply = "454 4.7.0 TLS not available"
)");
  const Result r = RunWhole("EHLO c\r\nSTARTTLS\r\nNOOP\r\n", p.Options());
  EXPECT_EQ(Codes(r.replies), "250 454 250");
  EXPECT_EQ(r.replies.find("junk"), std::string::npos);
  EXPECT_FALSE(r.out.start_tls);
}

}  // namespace
}  // namespace volley::smtpd
