#include "base/strings.h"

#include "gtest/gtest.h"

namespace volley::base {
namespace {

TEST(EqualsIgnoreCase, AsciiOnly) {
  EXPECT_TRUE(EqualsIgnoreCase("PIPELINING", "pipelining"));
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_FALSE(EqualsIgnoreCase("LAST", "LAS"));
  EXPECT_FALSE(EqualsIgnoreCase("[", "{"));  // 0x5b and 0x7b differ by 32 but are not letters
  EXPECT_FALSE(EqualsIgnoreCase("\xc3\xa9", "\xc3\x89"));  // no Unicode folding
}

TEST(Utf8SequenceLength, WellFormedOnly) {
  EXPECT_EQ(Utf8SequenceLength("\xc3\xa9", 0), 2u);
  EXPECT_EQ(Utf8SequenceLength("a\xe2\x82\xac", 1), 3u);
  EXPECT_EQ(Utf8SequenceLength("\xf0\x9f\x93\xa7", 0), 4u);
  EXPECT_EQ(Utf8SequenceLength("\xc0\xaf", 0), 0u);          // overlong '/'
  EXPECT_EQ(Utf8SequenceLength("\xed\xa0\x80", 0), 0u);      // surrogate
  EXPECT_EQ(Utf8SequenceLength("\xf4\x90\x80\x80", 0), 0u);  // past U+10FFFF
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82", 0), 0u);          // truncated
  EXPECT_EQ(Utf8SequenceLength("\x80", 0), 0u);              // continuation byte first
}

}  // namespace
}  // namespace volley::base
