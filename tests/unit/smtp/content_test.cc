#include "engine/smtp/content.h"

#include <string>

#include "gtest/gtest.h"

namespace volley::smtp {
namespace {

TEST(PrepareData, NormalisesStuffsAndTerminates) {
  struct Case {
    std::string in, want;
    uint64_t size;
  };
  const Case cases[] = {
      {"", ".\r\n", 0},
      {"a", "a\r\n.\r\n", 3},
      {"a\r\n", "a\r\n.\r\n", 3},  // final CRLF added once only
      {"a\n", "a\r\n.\r\n", 3},
      {"a\r", "a\r\n.\r\n", 3},
      {"a\nb\rc\r\nd", "a\r\nb\r\nc\r\nd\r\n.\r\n", 12},
      {"a\r\r\nb", "a\r\n\r\nb\r\n.\r\n", 8},  // bare CR, then CRLF: two line ends
      {"a\n\rb", "a\r\n\r\nb\r\n.\r\n", 8},    // LF then CR: two line ends too
      {".", "..\r\n.\r\n", 3},
      {".\r\n", "..\r\n.\r\n", 3},  // a lone dot line must not end DATA
      {"x\n.\n..y\n", "x\r\n..\r\n...y\r\n.\r\n", 11},
      {"a.b\n .c", "a.b\r\n .c\r\n.\r\n", 10},  // only a dot at line start is stuffed
      {"\n", "\r\n.\r\n", 2},
      {"x\r\n.\r\nMAIL FROM:<evil>", "x\r\n..\r\nMAIL FROM:<evil>\r\n.\r\n", 24},
      {"x\n.\rsmuggled", "x\r\n..\r\nsmuggled\r\n.\r\n", 16},
      {std::string("nul\0byte", 8), std::string("nul\0byte\r\n.\r\n", 13), 10},
  };
  for (const auto& c : cases) {
    uint64_t size = 0;
    EXPECT_EQ(PrepareData(c.in, &size), c.want) << "input: " << c.in;
    EXPECT_EQ(size, c.size) << "input: " << c.in;
    EXPECT_EQ(PrepareData(c.in), c.want);
  }
}

TEST(CheckLineLengths, ReportsTheFirstLongLine) {
  const std::string ok(998, 'x');
  const std::string long_line(999, 'y');
  EXPECT_TRUE(CheckLineLengths("").ok());
  EXPECT_TRUE(CheckLineLengths(ok).ok());
  EXPECT_TRUE(CheckLineLengths(ok + "\r\n" + ok + "\n" + ok + "\r" + ok).ok());

  absl::Status st = CheckLineLengths("a\r\nb\n" + long_line + "\r\n" + long_line);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "line 3 is 999 octets, over 998");

  st = CheckLineLengths("a\n" + long_line);  // last line, no line end
  EXPECT_EQ(st.message(), "line 2 is 999 octets, over 998");

  st = CheckLineLengths("abcdef", 5);
  EXPECT_EQ(st.message(), "line 1 is 6 octets, over 5");
}

}  // namespace
}  // namespace volley::smtp
