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

// Every length around the eight-octet steps, the wanted octet at every place,
// beside octets one bit or one value away from it (which a word-at-a-time test
// could mistake), and two wanted octets: the first is the one found, as
// find_first_of says.
TEST(FindCrLfNul, AgreesWithFindFirstOfAtEveryPlace) {
  const std::string_view wanted("\r\n\0", 3);
  const std::string near_misses = std::string("\x0c\x0e\x09\x0b\x8d\x8a\x80\x01\xff\x2d\x2a", 11);
  for (size_t len = 0; len <= 40; ++len) {
    for (char filler : near_misses) {
      std::string s(len, filler);
      EXPECT_EQ(FindCrLfNul(s), std::string_view::npos) << "len " << len;
      for (size_t at = 0; at < len; ++at) {
        for (char bad : wanted) {
          std::string t = s;
          t[at] = bad;
          EXPECT_EQ(FindCrLfNul(t), at) << "len " << len << " at " << at;
          if (at + 3 < len) {
            t[at + 3] = '\n';
            EXPECT_EQ(FindCrLfNul(t), std::string_view(t).find_first_of(wanted));
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace volley::base
