#include "engine/smtp/reply.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace volley::smtp {
namespace {

// Parse - every reply in `input` as "code|enhanced|text", fed with a split at `split`
// (npos: whole); a parse error ends the list as "error".
std::vector<std::string> Parse(std::string_view input, size_t split = std::string::npos,
                               ReplyParserOptions opts = {}) {
  ReplyParser p(opts);
  std::vector<std::string> got;
  auto drain = [&]() -> bool {
    for (;;) {
      auto r = p.Next();
      if (!r.ok()) {
        got.push_back("error");
        return false;
      }
      if (!r->has_value()) return true;
      const Reply& reply = **r;
      got.push_back(std::to_string(reply.code) + "|" + reply.enhanced + "|" + reply.text);
    }
  };
  if (split > input.size()) split = input.size();
  p.Feed(input.substr(0, split));
  if (drain()) {
    p.Feed(input.substr(split));
    drain();
  }
  return got;
}

struct Case {
  std::string in;
  std::vector<std::string> want;
};

// Good and bad rows in one table: malformed input must be as well covered as valid.
const Case kCases[] = {
    {"250 ok\r\n", {"250||ok"}},
    {"250\r\n", {"250||"}},
    {"250 \r\n", {"250||"}},
    {"220-a\r\n220-b\r\n220 c\r\n", {"220||a\nb\nc"}},
    {"220-a\r\n220\r\n", {"220||a\n"}},
    {"250 2.1.5 Ok\r\n", {"250|2.1.5|Ok"}},
    {"250 2.1.5\r\n", {"250|2.1.5|"}},
    {"550-5.1.1 no\r\n550 5.1.1 such user\r\n", {"550|5.1.1|no\nsuch user"}},
    {"550 5.100.999 x\r\n", {"550|5.100.999|x"}},
    {"550 5.1000.1 x\r\n", {"550||5.1000.1 x"}},  // four digits: not an enhanced code
    {"550 5.1.1x\r\n", {"550||5.1.1x"}},
    {"550 5.1. x\r\n", {"550||5.1. x"}},
    {"550 3.1.1 x\r\n", {"550||3.1.1 x"}},  // class 3 does not exist
    // Class disagreeing with the code: sanitised, so a server cannot bounce a 4xx.
    {"450 5.1.1 later\r\n", {"450|4.0.0|later"}},
    {"550 2.0.0 odd\r\n", {"550|5.0.0|odd"}},
    {"250 ok\r\n251 also\r\n", {"250||ok", "251||also"}},
    {"250 a\nb\r\n", {"250||a?b"}},  // bare LF neither ends nor forges a line
    {"250 a\rb\x01\x7f\r\n", {"250||a?b??"}},
    {"250 caf\xc3\xa9\r\n", {"250||caf\xc3\xa9"}},  // UTF-8 text is kept (RFC 6531)
    {"250-a\n250 b\r\n", {}},  // one continuation line, not two lines
    {"250 ok", {}},            // incomplete
    {"250-ok\r\n", {}},
    // Malformed.
    {"25 ok\r\n", {"error"}},
    {"2500 ok\r\n", {"error"}},
    {"250ok\r\n", {"error"}},
    {"abc ok\r\n", {"error"}},
    {"150 ok\r\n", {"error"}},
    {"650 ok\r\n", {"error"}},
    {"\r\n", {"error"}},
    {" 250 ok\r\n", {"error"}},
    {"250-a\r\n251 b\r\n", {"error"}},
    {"250 ok\r\nxyz\r\n250 ok\r\n", {"250||ok", "error"}},  // error is sticky
    {"250\tok\r\n", {"error"}},
};

TEST(ReplyParser, Table) {
  for (const auto& c : kCases) {
    EXPECT_EQ(Parse(c.in), c.want) << "input: " << c.in;
  }
}

// NextReply reuses the caller's Reply: every table row, each parsed into one
// Reply that still holds a long multi-line 5xx reply with an enhanced code, must
// read as Next() reads it (nothing of the stale reply left behind).
TEST(ReplyParser, NextReplyIntoAUsedReplyAgreesWithNext) {
  for (const auto& c : kCases) {
    ReplyParser p;
    Reply reply;
    reply.code = 554;
    reply.enhanced = "5.7.1";
    reply.text = std::string(300, 'x') + "\nsecond line";
    p.Feed(c.in);
    std::vector<std::string> got;
    while (p.NextReply(&reply)) {
      got.push_back(std::to_string(reply.code) + "|" + reply.enhanced + "|" + reply.text);
    }
    if (!p.status().ok()) got.push_back("error");
    EXPECT_EQ(got, c.want) << "input: " << c.in;
  }
}

TEST(ReplyParser, EverySplitGivesTheSameReplies) {
  for (const auto& c : kCases) {
    for (size_t at = 0; at <= c.in.size(); ++at) {
      EXPECT_EQ(Parse(c.in, at), c.want) << "input: " << c.in << " split at " << at;
    }
  }
}

TEST(ReplyParser, ByteAtATime) {
  ReplyParser p;
  const std::string in = "220-one\r\n220 two\r\n";
  std::vector<int> codes;
  for (size_t i = 0; i < in.size(); ++i) {
    p.Feed(in.substr(i, 1));
    auto r = p.Next();
    ASSERT_TRUE(r.ok());
    if (r->has_value()) {
      codes.push_back((*r)->code);
      EXPECT_EQ(i, in.size() - 1) << "reply complete before its last line";
      EXPECT_EQ((*r)->text, "one\ntwo");
    }
  }
  EXPECT_EQ(codes, std::vector<int>{220});
}

TEST(ReplyParser, Bounds) {
  ReplyParserOptions opts;
  opts.max_line = 10;
  opts.max_lines = 3;
  EXPECT_EQ(Parse("250 123456\r\n", std::string::npos, opts),
            std::vector<std::string>{"250||123456"});
  EXPECT_EQ(Parse("250 1234567\r\n", std::string::npos, opts),
            std::vector<std::string>{"error"});
  // Caught before the CRLF arrives: the parser never holds a line much past the limit.
  EXPECT_EQ(Parse("250 1234567890123", std::string::npos, opts),
            std::vector<std::string>{"error"});
  EXPECT_EQ(Parse("250-a\r\n250-b\r\n250 c\r\n", std::string::npos, opts),
            std::vector<std::string>{"250||a\nb\nc"});
  EXPECT_EQ(Parse("250-a\r\n250-b\r\n250-c\r\n250 d\r\n", std::string::npos, opts),
            std::vector<std::string>{"error"});
  // The line count is per reply.
  EXPECT_EQ(Parse("250-a\r\n250 b\r\n250-c\r\n250 d\r\n", std::string::npos, opts),
            (std::vector<std::string>{"250||a\nb", "250||c\nd"}));
}

TEST(ReplyParser, ErrorNamesTheProblem) {
  ReplyParser p;
  p.Feed("2x0 hello\r\n");
  auto r = p.Next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("2x0 hello"), std::string::npos)
      << r.status();
  p.Feed("250 ok\r\n");
  EXPECT_FALSE(p.Next().ok()) << "stays in error";
}

TEST(ReplyParser, ByteAtATimeIsLinear) {
  // A 1 MiB line within a 2 MiB limit, one byte per Feed/Next.
  ReplyParserOptions opts;
  opts.max_line = 2 << 20;
  ReplyParser p(opts);
  p.Feed("250 ");
  for (size_t i = 0; i < (1u << 20); ++i) {
    p.Feed("x");
    auto r = p.Next();
    ASSERT_TRUE(r.ok() && !r->has_value());
  }
  p.Feed("\r\n");
  auto r = p.Next();
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->text.size(), 1u << 20);
}

TEST(SanitiseEnhancedCode, Table) {
  EXPECT_EQ(SanitiseEnhancedCode(250, ""), "");
  EXPECT_EQ(SanitiseEnhancedCode(250, "2.1.5"), "2.1.5");
  EXPECT_EQ(SanitiseEnhancedCode(451, "5.7.1"), "4.0.0");
  EXPECT_EQ(SanitiseEnhancedCode(550, "4.2.2"), "5.0.0");
  EXPECT_EQ(SanitiseEnhancedCode(250, "5.0.0"), "2.0.0");
}

}  // namespace
}  // namespace volley::smtp
