#include "base/json.h"

#include <string>

#include "gtest/gtest.h"

namespace volley::base {
namespace {

std::string Quote(std::string_view in) {
  std::string out;
  AppendJsonString(&out, in);
  return out;
}

TEST(AppendJsonString, EscapesWhatWouldBreakARecord) {
  struct Case { std::string in, want; };
  const Case cases[] = {
      {"plain", "\"plain\""},
      {"a\"b\\c", "\"a\\\"b\\\\c\""},
      {"line\r\nnext", "\"line\\r\\nnext\""},
      {std::string("nul\0x", 5), "\"nul\\u0000x\""},
      {"tab\there\x7f", "\"tab\\there\\u007f\""},
      {"caf\xc3\xa9", "\"caf\xc3\xa9\""},           // valid UTF-8 passes through
      {"bad\xc3", "\"bad\\u00c3\""},                // truncated sequence
      {"\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\""},  // surrogate is not UTF-8
      {"\xe2\x82\xac", "\"\xe2\x82\xac\""},
      // Plain runs around whatever needs a look, at the start, middle and end.
      {"", "\"\""},
      {"\"", "\"\\\"\""},
      {"ann@d0001.test", "\"ann@d0001.test\""},
      {"\x01lead", "\"\\u0001lead\""},
      {"trail\x1f", "\"trail\\u001f\""},
      {"a\xc3\xa9" "b\\c\x80" "d", "\"a\xc3\xa9" "b\\\\c\\u0080d\""},
      {"\xf0\x9f\x93\xa8\xf0\x9f", "\"\xf0\x9f\x93\xa8\\u00f0\\u009f\""},
      {"x\xff", "\"x\\u00ff\""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(Quote(c.in), c.want) << "input: " << c.in;
  }
}

}  // namespace
}  // namespace volley::base
