#include "engine/smtp/line_reader.h"

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

}  // namespace
}  // namespace volley::smtp
