#include "base/toml_reader.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"

namespace volley::base {
namespace {

toml::table Parse(const std::string& text) {
  auto root = ParseToml(text, "t.toml");
  EXPECT_TRUE(root.ok()) << root.status();
  return root.ok() ? *std::move(root) : toml::table{};
}

absl::StatusOr<int> ParseNumber(std::string_view text) {
  int n = 0;
  if (!absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &n)) {
    return absl::InvalidArgumentError("not a number");
  }
  return n;
}

TEST(ParseToml, SyntaxErrorNamesFileAndLine) {
  auto root = ParseToml("a = 1\nb = \n", "t.toml");
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(std::string(root.status().message()).rfind("t.toml:2: ", 0), 0u) << root.status();
}

// Each getter on one value of a [s] table: the error it gives, or "" for none.
TEST(Getters, RefuseWithFileLineKeyAndReason) {
  const TomlFile file{"t.toml"};
  struct Case {
    std::string value;  // the TOML of `v`, on line 2
    std::function<absl::Status(const toml::node&)> get;
    std::string want;
  };
  std::string s;
  int64_t i = 0;
  bool b = false;
  int n = 0;
  const Case cases[] = {
      {"\"x\"", [&](auto& v) { return GetString(file, v, "s.v", &s); }, ""},
      {"\"\"", [&](auto& v) { return GetString(file, v, "s.v", &s); }, "t.toml:2: s.v: must not be empty"},
      {"\"\"", [&](auto& v) { return GetString(file, v, "s.v", &s, {10, true}); }, ""},
      {"\"abcd\"", [&](auto& v) { return GetString(file, v, "s.v", &s, {3, false}); },
       "t.toml:2: s.v: longer than 3 octets"},
      {"1", [&](auto& v) { return GetString(file, v, "s.v", &s); }, "t.toml:2: s.v: must be a string"},
      {"5", [&](auto& v) { return GetInt(file, v, "s.v", 1, 5, &i); }, ""},
      {"6", [&](auto& v) { return GetInt(file, v, "s.v", 1, 5, &i); }, "t.toml:2: s.v: must be 1..5"},
      {"0", [&](auto& v) { return GetInt(file, v, "s.v", 1, 5, &i); }, "t.toml:2: s.v: must be 1..5"},
      {"\"5\"", [&](auto& v) { return GetInt(file, v, "s.v", 1, 5, &i); },
       "t.toml:2: s.v: must be an integer"},
      {"true", [&](auto& v) { return GetBool(file, v, "s.v", &b); }, ""},
      {"1", [&](auto& v) { return GetBool(file, v, "s.v", &b); }, "t.toml:2: s.v: must be true or false"},
      {"\"12\"", [&](auto& v) { return GetParsed(file, v, "s.v", &ParseNumber, "a number", &n); }, ""},
      {"\"x\"", [&](auto& v) { return GetParsed(file, v, "s.v", &ParseNumber, "a number", &n); },
       "t.toml:2: s.v: not a number"},
      {"12", [&](auto& v) { return GetParsed(file, v, "s.v", &ParseNumber, "a number", &n); },
       "t.toml:2: s.v: must be a number"},
  };
  for (const Case& c : cases) {
    const toml::table root = Parse("[s]\nv = " + c.value + "\n");
    const absl::Status got = c.get(*root["s"]["v"].node());
    EXPECT_EQ(std::string(got.message()), c.want) << c.value;
  }
  EXPECT_EQ(n, 12);
}

TEST(ReadTable, EveryKeyToItsHandlerAndNoOther) {
  const TomlFile file{"t.toml"};
  int64_t a = 0;
  int64_t b = 0;
  const TomlKeys keys = {
      {"a", [&](auto& v, auto k) { return GetInt(file, v, k, 0, 9, &a); }},
      {"b", [&](auto& v, auto k) { return GetInt(file, v, k, 0, 9, &b); }},
  };
  toml::table root = Parse("[s]\na = 1\nb = 2\n");
  ASSERT_TRUE(ReadTable(file, *root.get("s"), "s", keys).ok());
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
  root = Parse("[s]\na = 1\nc = 3\n");
  EXPECT_EQ(ReadTable(file, *root.get("s"), "s", keys).message(), "t.toml:3: s.c: unknown key");
  EXPECT_EQ(ReadTable(file, *root.get("s"), "s", keys, "unknown key (a and b only)").message(),
            "t.toml:3: s.c: unknown key (a and b only)");
  root = Parse("s = 1\n");
  EXPECT_EQ(ReadTable(file, *root.get("s"), "s", keys).message(), "t.toml:1: s: must be a table");
  EXPECT_EQ(TomlKeyNames(keys), (std::vector<std::string>{"a", "b"}));
}

TEST(TablesOf, ArraysOfTablesOnlyAndBounded) {
  const TomlFile file{"t.toml"};
  toml::table root = Parse("[[r]]\nx = 1\n[[r]]\nx = 2\n");
  auto arr = TablesOf(file, *root.get("r"), "r", "rule", 2);
  ASSERT_TRUE(arr.ok());
  EXPECT_EQ((*arr)->size(), 2u);
  EXPECT_EQ(TablesOf(file, *root.get("r"), "r", "rule", 1).status().message(),
            "t.toml:1: r: 2 rules; at most 1");
  root = Parse("r = 1\n");
  EXPECT_EQ(TablesOf(file, *root.get("r"), "r", "rule", 2).status().message(),
            "t.toml:1: r: must be an array of tables: write each rule as [[r]]");
}

}  // namespace
}  // namespace volley::base
