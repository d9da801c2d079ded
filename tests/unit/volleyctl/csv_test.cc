// csv_test.cc - the recipient list reader (tools/volleyctl/csv.h): RFC 4180
// quoting, line ends, the BOM, line numbers, bad records and the bounds, and the
// same records however the input is split.
#include "tools/volleyctl/csv.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace volley::ctl {
namespace {

std::vector<CsvRecord> Read(std::string_view text, const CsvLimits& limits = {},
                            size_t chunk = 0) {
  std::vector<CsvRecord> out;
  CsvReader reader(limits, [&](CsvRecord&& r) { out.push_back(std::move(r)); });
  if (chunk == 0) chunk = text.size() + 1;
  for (size_t i = 0; i < text.size(); i += chunk) {
    EXPECT_TRUE(reader.Feed(text.substr(i, chunk)).ok());
  }
  EXPECT_TRUE(reader.Finish().ok());
  return out;
}

using Fields = std::vector<std::string>;

TEST(CsvTest, QuotedCommasQuotesAndLineBreaks) {
  auto r = Read("email,name\r\n"
                "a@d.test,\"Smith, Ann\"\r\n"
                "b@d.test,\"say \"\"hi\"\"\"\n"
                "c@d.test,\"two\nlines\"\n"
                "d@d.test,\n");
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r[0].fields, (Fields{"email", "name"}));
  EXPECT_EQ(r[1].fields, (Fields{"a@d.test", "Smith, Ann"}));
  EXPECT_EQ(r[2].fields, (Fields{"b@d.test", "say \"hi\""}));
  EXPECT_EQ(r[3].fields, (Fields{"c@d.test", "two\nlines"}));
  EXPECT_EQ(r[4].fields, (Fields{"d@d.test", ""}));
  // Lines as an editor numbers them: the quoted line break counts.
  EXPECT_EQ(r[3].line, 4u);
  EXPECT_EQ(r[4].line, 6u);
  for (const CsvRecord& rec : r) EXPECT_EQ(rec.error, "");
}

TEST(CsvTest, BomSkippedBlankLinesIgnoredLastLineWithoutEnd) {
  auto r = Read("\xEF\xBB\xBF" "email\n\n\r\nx@d.test");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].fields, (Fields{"email"}));
  EXPECT_EQ(r[1].fields, (Fields{"x@d.test"}));
  EXPECT_EQ(r[1].line, 4u);
}

TEST(CsvTest, ABomElsewhereIsData) {
  auto r = Read("a,\xEF\xBB\xBF" "b\n");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].fields, (Fields{"a", "\xEF\xBB\xBF" "b"}));
  auto partial = Read("\xEF\xBB" "x\n");  // not a BOM: a bad field, kept as such
  ASSERT_EQ(partial.size(), 1u);
  EXPECT_EQ(partial[0].error, "field 1: not valid UTF-8 (octet 1)");
}

TEST(CsvTest, UnicodeKept) {
  auto r = Read("Zoë,Łukasz,山田太郎\n");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].fields, (Fields{"Zoë", "Łukasz", "山田太郎"}));
}

TEST(CsvTest, BadRecordsAreReportedAndReadingGoesOn) {
  auto r = Read("a,b\"c\n"
                "\"x\"y,z\n"
                "ok,\xC3\x28\n"
                "bare\rcr\n"
                "fine,row\n"
                "open,\"never closed\nmore\n");
  ASSERT_EQ(r.size(), 6u);
  EXPECT_EQ(r[0].error,
            "field 2: a quote inside an unquoted field (quote the whole field and write \"\" for "
            "a quote)");
  EXPECT_EQ(r[1].error, "field 1: text after the closing quote");
  EXPECT_EQ(r[2].error, "field 2: not valid UTF-8 (octet 1)");
  EXPECT_EQ(r[3].error, "field 1: a CR not followed by LF");
  EXPECT_EQ(r[4].error, "");
  EXPECT_EQ(r[4].fields, (Fields{"fine", "row"}));
  EXPECT_EQ(r[4].line, 5u);
  EXPECT_EQ(r[5].error, "field 2: quoted field not closed before the end of the file");
  EXPECT_EQ(r[5].line, 6u);
}

TEST(CsvTest, Bounds) {
  CsvLimits small;
  small.max_field = 4;
  small.max_record = 6;
  small.max_fields = 3;
  auto r = Read("abcde\nabc,defg\na,b,c,d\nab,cd\n", small);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].error, "field 1: longer than 4 octets");
  EXPECT_EQ(r[1].error, "longer than 6 octets");
  EXPECT_EQ(r[2].error, "more than 3 fields");
  EXPECT_EQ(r[3].error, "");
  EXPECT_EQ(r[3].line, 4u);

  small.max_records = 2;
  CsvReader reader(small, [](CsvRecord&&) {});
  absl::Status s = reader.Feed("a\nb\nc\n");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "more than 2 records");
}

TEST(CsvTest, SameRecordsHoweverSplit) {
  const std::string text =
      "\xEF\xBB\xBF" "email,name\r\na@d.test,\"Q \"\"x\"\", y\r\nz\"\r\nbad\"q,1\r\n\r\nb@d.test,Zoë";
  const auto whole = Read(text);
  for (size_t chunk = 1; chunk < 8; ++chunk) {
    const auto split = Read(text, {}, chunk);
    ASSERT_EQ(split.size(), whole.size()) << chunk;
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_EQ(split[i].fields, whole[i].fields);
      EXPECT_EQ(split[i].error, whole[i].error);
      EXPECT_EQ(split[i].line, whole[i].line);
    }
  }
  ASSERT_EQ(whole.size(), 4u);
  EXPECT_EQ(whole[1].fields, (Fields{"a@d.test", "Q \"x\", y\r\nz"}));
  EXPECT_EQ(whole[3].line, 6u);
}

TEST(CsvTest, FinishTwiceOrFeedAfterFinishFails) {
  CsvReader reader({}, [](CsvRecord&&) {});
  ASSERT_TRUE(reader.Finish().ok());
  EXPECT_EQ(reader.Finish().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(reader.Feed("x").code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace volley::ctl
