// volleyctl suppress's pure parts (tools/volleyctl/suppress.h): CSV both ways,
// import lines with their numbers, and volleyd's answers.
#include "tools/volleyctl/suppress.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::ctl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(CsvTest, FieldsAreQuotedOnlyWhenTheyMustBe) {
  EXPECT_EQ(CsvField("ann@example.test"), "ann@example.test");
  EXPECT_EQ(CsvField(""), "");
  EXPECT_EQ(CsvField("import a,b.csv line 3"), "\"import a,b.csv line 3\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField(" lead"), "\" lead\"");
  EXPECT_EQ(CsvField("a\r\nb"), "\"a\r\nb\"");
}

TEST(CsvTest, ParseIsTheInverse) {
  const std::vector<std::string> values = {
      "plain", "", "with,comma", "\"quoted\"", " spaced ", "mixed \"q\", and, commas"};
  std::string line;
  for (size_t i = 0; i < values.size(); ++i) line += (i ? "," : "") + CsvField(values[i]);
  auto fields = ParseCsvLine(line);
  ASSERT_TRUE(fields.ok()) << fields.status();
  EXPECT_EQ(*fields, values);
  EXPECT_THAT(*ParseCsvLine("a,,b,"), ElementsAre("a", "", "b", ""));
  EXPECT_THAT(*ParseCsvLine(""), ElementsAre(""));
  EXPECT_THAT(ParseCsvLine("\"open").status().message(), HasSubstr("unterminated quote"));
  EXPECT_THAT(ParseCsvLine("\"a\"b,c").status().message(), HasSubstr("after a closing quote"));
  EXPECT_THAT(ParseCsvLine("a\"b").status().message(), HasSubstr("quote inside"));
}

TEST(CsvTest, RowsRoundTripThroughTheImportReader) {
  SuppressionRow row{"ann@example.test", "brand.test", "complaint",
                     "arf from \"mx1\", 2 reports", "2026-12-06T17:00:00Z", ""};
  const std::string csv = SuppressionCsvHeader() + SuppressionCsvRow(row);
  EXPECT_EQ(SuppressionCsvHeader(), "address,scope,reason,source,added,expires\r\n");
  ImportReader reader("list.csv", ImportDefaults{});
  size_t start = 0;
  std::vector<ImportReader::Line> got;
  while (start < csv.size()) {
    const size_t nl = csv.find('\n', start);
    auto line = reader.Next(std::string_view(csv).substr(start, nl - start));
    ASSERT_TRUE(line.ok()) << line.status();
    got.push_back(*line);
    start = nl + 1;
  }
  EXPECT_TRUE(reader.csv());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[0].skip);
  EXPECT_FALSE(got[1].skip);
  EXPECT_EQ(got[1].entry.address, row.address);
  EXPECT_EQ(got[1].entry.scope, row.scope);
  EXPECT_EQ(got[1].entry.reason, row.reason);
  EXPECT_EQ(got[1].entry.source, row.source);
  EXPECT_EQ(got[1].entry.added, row.added);
  EXPECT_EQ(got[1].entry.expires, "");
}

TEST(ImportReaderTest, CsvBadLinesNameFileAndLine) {
  ImportDefaults defaults;
  defaults.reason = "unsubscribe";
  defaults.expires = "30d";
  ImportReader reader("list.csv", defaults);
  ASSERT_TRUE(reader.Next("Address, Scope,reason,source,added,expires\r").ok());
  auto ok = reader.Next("b@x.test,,,,,");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->entry.reason, "unsubscribe");
  EXPECT_EQ(ok->entry.expires, "30d");
  EXPECT_EQ(ok->entry.source, "import list.csv line 2");
  EXPECT_EQ(reader.Next("c@x.test,brand.test").status().message(),
            "list.csv:3: expected 6 fields, got 2");
  EXPECT_EQ(reader.Next("\"c@x.test,,,,,").status().message(), "list.csv:4: unterminated quote");
  EXPECT_EQ(reader.Next("nobody,,,,,").status().message(), "list.csv:5: not an address");
  EXPECT_TRUE(reader.Next("").value().skip);
  EXPECT_EQ(reader.Next(std::string(kMaxImportLine + 1, 'a')).status().message(),
            "list.csv:7: longer than 4096 octets");
  EXPECT_EQ(reader.SkipTooLong().message(), "list.csv:8: longer than 4096 octets");
  EXPECT_EQ(reader.Next("d@x.test,,,,,")->number, 9u);
}

TEST(ImportReaderTest, OneAddressALine) {
  ImportDefaults defaults;
  defaults.scope = "brand.test";
  ImportReader reader("plain.txt", defaults);
  auto first = reader.Next("  Ann@Example.test  ");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(reader.csv());
  EXPECT_EQ(first->entry.address, "Ann@Example.test");  // volleyd lower-cases it
  EXPECT_EQ(first->entry.scope, "brand.test");
  EXPECT_EQ(first->entry.reason, "manual");
  EXPECT_EQ(first->entry.source, "import plain.txt line 1");
  EXPECT_TRUE(reader.Next("# a comment").value().skip);
  EXPECT_TRUE(reader.Next("\r").value().skip);
  EXPECT_EQ(reader.Next("@blocked.test")->entry.address, "@blocked.test");
  EXPECT_EQ(reader.Next("no at sign").status().message(), "plain.txt:5: not an address");
}

TEST(AnswersTest, PageCheckAndImport) {
  auto page = ParseSuppressionPage(
      R"({"entries":[{"address":"a@x.test","scope":"","reason":"manual","source":"s",)"
      R"("added":"2026-12-06T17:00:00Z","expires":null}],"next":{"after":"a@x.test",)"
      R"("after_scope":""},"approximate_count":7})");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->rows.size(), 1u);
  EXPECT_EQ(page->rows[0].expires, "");
  EXPECT_TRUE(page->more);
  EXPECT_EQ(page->after, "a@x.test");
  EXPECT_EQ(page->approximate_count, 7u);
  EXPECT_EQ(SuppressionCsvRow(page->rows[0]),
            "a@x.test,,manual,s,2026-12-06T17:00:00Z,\r\n");
  page = ParseSuppressionPage(R"({"entries":[],"next":null})");
  ASSERT_TRUE(page.ok());
  EXPECT_FALSE(page->more);
  EXPECT_FALSE(ParseSuppressionPage(R"({"entries":[{"address":"a"}]})").ok());

  auto check = ParseCheckAnswer(R"({"suppressed":false})");
  ASSERT_TRUE(check.ok());
  EXPECT_FALSE(check->has_value());
  check = ParseCheckAnswer(
      R"({"suppressed":true,"entry":{"address":"a@x.test","scope":"b.test","reason":"complaint",)"
      R"("source":"fbl","added":"2026-12-06T17:00:00Z","expires":"2027-01-05T17:00:00Z"}})");
  ASSERT_TRUE(check.ok() && check->has_value()) << check.status();
  EXPECT_EQ(FormatSuppression(**check),
            "address: a@x.test\nscope: b.test\nreason: complaint\nsource: fbl\n"
            "added: 2026-12-06T17:00:00Z\nexpires: 2027-01-05T17:00:00Z\n");

  auto answer = ParseImportAnswer(
      R"({"added":3,"skipped":1,"errors":[{"index":2,"error":"address: empty"}]})");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->added, 3u);
  ASSERT_EQ(answer->errors.size(), 1u);
  EXPECT_EQ(answer->errors[0].first, 2u);
}

TEST(RequestsTest, EntryJsonAndQueryEscape) {
  EXPECT_EQ(SuppressionEntryJson({"a\"@x.test", "", "manual", "v", "", "30d"}),
            R"({"address":"a\"@x.test","reason":"manual","source":"v","expires":"30d"})");
  EXPECT_EQ(QueryEscape("a+b@x.test&scope=y"), "a%2Bb%40x.test%26scope%3Dy");
  EXPECT_EQ(QueryEscape("A-z_0.9~"), "A-z_0.9~");
}

}  // namespace
}  // namespace volley::ctl
