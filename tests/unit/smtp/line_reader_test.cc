#include "engine/smtp/line_reader.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace volley::smtp {
namespace {

// ReadAll - the lines available after feeding `input` in pieces of `step` bytes
// (0 = all at once), or the error text as the last entry prefixed by "error: ".
std::vector<std::string> ReadAll(std::string_view input, size_t max_line, size_t step) {
  LineReader r(max_line);
  std::vector<std::string> got;
  auto drain = [&]() -> bool {
    for (;;) {
      auto line = r.Next();
      if (!line.ok()) {
        got.push_back("error: " + std::string(line.status().message()));
        return false;
      }
      if (!line->has_value()) return true;
      got.emplace_back(**line);
    }
  };
  if (step == 0) step = input.size() + 1;
  for (size_t i = 0; i < input.size(); i += step) {
    r.Feed(input.substr(i, step));
    if (!drain()) break;
  }
  return got;
}

TEST(LineReader, OnlyCrlfEndsALine) {
  struct Case {
    std::string in;
    std::vector<std::string> want;
  };
  const Case cases[] = {
      {"a\r\nb\r\n", {"a", "b"}},
      {"a\nb\r\n", {"a\nb"}},  // bare LF is part of the line
      {"a\rb\r\n", {"a\rb"}},  // bare CR too
      {"a\r\r\n", {"a\r"}},
      {"\r\n\r\n", {"", ""}},
      {"no end", {}},
      {"x\r", {}},  // CR whose LF has not arrived
  };
  for (const auto& c : cases) {
    for (size_t step : {0, 1, 2, 3}) {
      EXPECT_EQ(ReadAll(c.in, 100, step), c.want)
          << "input: " << c.in << " step " << step;
    }
  }
}

TEST(LineReader, LineLimit) {
  // Exactly max_line is fine; one more is an error, whether or not its CRLF came.
  EXPECT_EQ(ReadAll("abcd\r\n", 4, 1), (std::vector<std::string>{"abcd"}));
  EXPECT_EQ(ReadAll("abcd\r", 4, 1), (std::vector<std::string>{}));
  for (size_t step : {0, 1}) {
    std::vector<std::string> got = ReadAll("abcde\r\n", 4, step);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].rfind("error: ", 0), 0u) << got[0];
    got = ReadAll("abcde", 4, step);
    ASSERT_EQ(got.size(), 1u) << "an unfinished line is caught before its CRLF";
    EXPECT_EQ(got[0].rfind("error: ", 0), 0u) << got[0];
  }
}

TEST(LineReader, StaysInErrorAndDropsInput) {
  LineReader r(2);
  r.Feed("abc");
  EXPECT_FALSE(r.Next().ok());
  r.Feed("\r\nok\r\n");
  EXPECT_FALSE(r.Next().ok());
  EXPECT_TRUE(r.in_error());
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(LineReader, ByteAtATimeIsLinear) {
  // 4 MiB in one line, fed a byte at a time and polled after each: rescanning from the
  // start of the line each time would take ~8e12 steps and time out.
  const size_t n = 4 << 20;
  LineReader r(n);
  for (size_t i = 0; i < n; ++i) {
    r.Feed("x");
    auto got = r.Next();
    ASSERT_TRUE(got.ok());
    ASSERT_FALSE(got->has_value());
  }
  r.Feed("\r");
  ASSERT_FALSE(r.Next()->has_value());
  r.Feed("\n");
  auto got = r.Next();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->size(), n);
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(LineReader, BufferedCountsUnreturnedBytes) {
  LineReader r(100);
  r.Feed("ab\r\ncd");
  EXPECT_EQ(r.buffered(), 6u);
  ASSERT_TRUE(r.Next()->has_value());
  EXPECT_EQ(r.buffered(), 2u);
}

// ReadReport - what a BadLine::kReport reader gives for `input`, fed the way a
// server does (FeedLine, then NextLine until it needs more) in pieces of `step`
// bytes (0 = all at once): each line's text, or "<bare LF>" or "<too long>".
std::vector<std::string> ReadReport(std::string_view input, size_t max_line, size_t step,
                                    size_t* most_buffered = nullptr) {
  LineReader r(max_line, BadLine::kReport);
  std::vector<std::string> got;
  if (step == 0) step = input.size() + 1;
  for (size_t i = 0; i < input.size(); i += step) {
    std::string_view piece = input.substr(i, step);
    while (!piece.empty()) {
      const size_t used = r.FeedLine(piece);
      EXPECT_GT(used, 0u);
      // FeedLine takes no byte past the first LF: the rest is the caller's.
      EXPECT_EQ(piece.substr(0, used).find('\n'), piece.find('\n') < used
                                                      ? piece.find('\n')
                                                      : std::string_view::npos);
      piece.remove_prefix(used);
      for (Line line = r.NextLine(); line.kind != Line::Kind::kNone; line = r.NextLine()) {
        switch (line.kind) {
          case Line::Kind::kText:
            got.emplace_back(line.text);
            break;
          case Line::Kind::kBareLf:
            got.emplace_back("<bare LF>");
            break;
          case Line::Kind::kTooLong:
            got.emplace_back("<too long>");
            break;
          case Line::Kind::kNone:
            break;
        }
      }
      if (most_buffered != nullptr) *most_buffered = std::max(*most_buffered, r.buffered());
    }
  }
  return got;
}

TEST(LineReader, ReportRulesForAServer) {
  struct Case {
    std::string in;
    std::vector<std::string> want;
  };
  // max_line 4: at most 4 octets before CRLF, 6 with it, 5 before a bare LF.
  const Case cases[] = {
      {"a\r\nb\r\n", {"a", "b"}},
      {"a\nb\r\n", {"<bare LF>", "b"}},  // a bare LF ends the line, refused
      {"\n\r\n", {"<bare LF>", ""}},
      {"a\rb\r\n", {"a\rb"}},           // a bare CR is a byte of the line
      {"a\r\r\n", {"a\r"}},
      {"abcd\r\n", {"abcd"}},
      {"abcde\r\nok\r\n", {"<too long>", "ok"}},  // reading goes on
      {"abcde\nok\r\n", {"<bare LF>", "ok"}},      // 6 octets with its LF: fits
      {"abcdef\nok\r\n", {"<too long>", "ok"}},    // too long is said first
      {std::string(100, 'x') + "\r\nok\r\n", {"<too long>", "ok"}},
      {"no end", {}},
      {"x\r", {}},
  };
  for (const auto& c : cases) {
    for (size_t step : {0, 1, 2, 3}) {
      EXPECT_EQ(ReadReport(c.in, 4, step), c.want) << "input: " << c.in << " step " << step;
    }
  }
}

TEST(LineReader, ReportNeverStoresAnOverLongLine) {
  const std::string megabyte(1 << 20, 'A');
  size_t most = 0;
  EXPECT_EQ(ReadReport(megabyte + "\r\nQUIT\r\n", 4094, 1000, &most),
            (std::vector<std::string>{"<too long>", "QUIT"}));
  EXPECT_LE(most, 4096u);
}

TEST(LineReader, ResetForgetsBufferedBytesAndADroppedLine) {
  LineReader r(4, BadLine::kReport);
  r.Feed("abcdefgh");
  EXPECT_EQ(r.NextLine().kind, Line::Kind::kNone);  // now dropping that line
  r.Reset();
  r.Feed("ok\r\n");
  const Line line = r.NextLine();
  EXPECT_EQ(line.kind, Line::Kind::kText);
  EXPECT_EQ(line.text, "ok");
  r.Feed("par");
  r.Reset();
  EXPECT_EQ(r.buffered(), 0u);
}

}  // namespace
}  // namespace volley::smtp
