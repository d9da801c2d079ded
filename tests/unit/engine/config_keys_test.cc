// config_keys_test - docs/config.md and the config reader list the same keys.
//
// The documented keys are read from docs/config.md's tables: the first cell of
// each row of a table under a "## [section]" heading (or a heading naming
// "[[section]]"), written `key`, or `section[].key` / `section.key` where one
// table covers several sections. A table under a heading without a section
// ("### STARTTLS policies") lists values, not keys, and is skipped. The keys of
// [destination."NAME"] are its own table's and the second [smtp] table's (the
// keys a destination may override). The accepted keys come from
// engine::AcceptedConfigKeys, built from the very maps the reader uses.
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/config.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

std::set<std::string> DocumentedKeys(const std::string& markdown) {
  static const std::regex kHeadingSection(R"(^#+ .*?\[\[?([a-z_]+))");
  static const std::regex kKeyToken(R"(`([a-z_][a-z0-9_]*)(?:\[\])?(?:\.([a-z_][a-z0-9_]*))?`)");
  std::set<std::string> keys;
  std::string section;
  std::map<std::string, int> tables_seen;  // per section, to find [smtp]'s second table
  bool in_code = false;
  bool in_table = false;
  std::istringstream lines(markdown);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("```", 0) == 0) {
      in_code = !in_code;
      continue;
    }
    if (in_code) continue;
    if (line.rfind("#", 0) == 0) {
      std::smatch m;
      section = std::regex_search(line, m, kHeadingSection) ? m[1].str() : "";
      in_table = false;
      continue;
    }
    if (line.rfind("|", 0) != 0) {
      in_table = false;
      continue;
    }
    if (!in_table) {
      in_table = true;
      if (!section.empty()) ++tables_seen[section];
    }
    if (section.empty()) continue;
    const std::string first_cell = line.substr(1, line.find('|', 1) - 1);
    for (auto it = std::sregex_iterator(first_cell.begin(), first_cell.end(), kKeyToken);
         it != std::sregex_iterator(); ++it) {
      const std::smatch& m = *it;
      const std::string key = m[2].matched ? m[1].str() + "." + m[2].str()
                                           : section + "." + m[1].str();
      keys.insert(key);
      if (section == "smtp" && tables_seen[section] == 2 && !m[2].matched) {
        keys.insert("destination." + m[1].str());
      }
    }
  }
  return keys;
}

std::string ReadDoc() {
  std::ifstream in(std::string(VOLLEY_SOURCE_DIR) + "/docs/config.md");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ConfigKeys, DocsListEveryAcceptedKeyAndNoOther) {
  const std::string doc = ReadDoc();
  ASSERT_FALSE(doc.empty()) << "cannot read docs/config.md";
  const std::set<std::string> documented = DocumentedKeys(doc);
  const std::vector<std::string> accepted_list = AcceptedConfigKeys();
  const std::set<std::string> accepted(accepted_list.begin(), accepted_list.end());
  for (const std::string& key : accepted) {
    EXPECT_TRUE(documented.count(key)) << key << " is accepted but not in docs/config.md";
  }
  for (const std::string& key : documented) {
    EXPECT_TRUE(accepted.count(key)) << key << " is in docs/config.md but not accepted";
  }
}

// The parser must see what it is meant to: a key added on one side only fails.
TEST(ConfigKeys, TheDocParserFindsKeysWhereTheDocPutsThem) {
  const std::set<std::string> keys = DocumentedKeys(
      "## [smtp]\n\n| key | default |\n| --- | --- |\n| `port` | `25` |\n\ntext\n\n"
      "| key | default |\n| --- | --- |\n| `connect_timeout` | `\"30s\"` |\n\n"
      "### STARTTLS policies (`tls`)\n\n| value |\n| --- |\n| `off` |\n\n"
      "```toml\n# [x]\n| `not_a_key` |\n```\n"
      "## Egress sources ([[source]])\n\n| key |\n| --- |\n| `name` |\n\n"
      "## [[dkim]] and [verp]\n\n| key |\n| --- |\n| `dkim[].domain` |\n| `verp.domain` |\n"
      "| `min_ttl`, `max_ttl` | x |\n");
  const std::set<std::string> want = {
      "smtp.port", "smtp.connect_timeout", "destination.connect_timeout", "source.name",
      "dkim.domain", "verp.domain", "dkim.min_ttl", "dkim.max_ttl"};
  EXPECT_EQ(keys, want);
}

}  // namespace
}  // namespace volley::engine
