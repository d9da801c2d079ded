#include "base/cli.h"

#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace volley::base {
namespace {

// Parse - run ParseCommandLine over `args` (program name first) with one
// --config option; the exit status it asks for, or nullopt to go on.
std::optional<int> Parse(std::vector<const char*> args, std::string* config) {
  CLI::App app{"test program", "prog"};
  app.add_option("--config", *config)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  std::optional<int> got =
      ParseCommandLine(app, static_cast<int>(args.size()), args.data(), "usage: prog\n");
  testing::internal::GetCapturedStdout();
  testing::internal::GetCapturedStderr();
  return got;
}

TEST(ParseCommandLine, ExitStatuses) {
  struct Case {
    std::vector<const char*> args;
    std::optional<int> want;
    std::string want_config;
  };
  const Case cases[] = {
      {{"prog"}, std::nullopt, ""},
      {{"prog", "--config", "a.toml"}, std::nullopt, "a.toml"},
      {{"prog", "--config=b.toml"}, std::nullopt, "b.toml"},
      {{"prog", "--config", "a", "--config", "b"}, std::nullopt, "b"},  // the last wins
      {{"prog", "--help"}, 0, ""},
      {{"prog", "-h"}, 0, ""},
      {{"prog", "--bogus"}, 2, ""},
      {{"prog", "--config"}, 2, ""},  // a missing value
      {{"prog", "extra"}, 2, ""},
  };
  for (const Case& c : cases) {
    std::string config;
    EXPECT_EQ(Parse(c.args, &config), c.want) << c.args.size() << " args, " << c.args.back();
    if (!c.want) {
      EXPECT_EQ(config, c.want_config) << c.args.back();
    }
  }
}

TEST(ParseCommandLine, ErrorNamesTheFlagThenTheUsage) {
  CLI::App app{"test program", "prog"};
  std::string config;
  app.add_option("--config", config);
  const char* args[] = {"prog", "--confg", "x.toml"};
  testing::internal::CaptureStderr();
  EXPECT_EQ(ParseCommandLine(app, 3, args, "usage: prog [--config FILE]\n"), 2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.rfind("prog: ", 0), 0u) << err;
  EXPECT_NE(err.find("--confg"), std::string::npos) << err;
  EXPECT_NE(err.find("\nusage: prog [--config FILE]\n"), std::string::npos) << err;
}

TEST(ParseCommandLine, HelpGoesToStdout) {
  CLI::App app{"test program", "prog"};
  std::string config;
  app.add_option("--config", config, "the config file");
  const char* args[] = {"prog", "--help"};
  testing::internal::CaptureStdout();
  EXPECT_EQ(ParseCommandLine(app, 2, args, "usage: prog\n"), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("the config file"), std::string::npos);
}

TEST(ParseCommandLine, VersionGoesToStdoutAndExitsZero) {
  CLI::App app{"test program", "prog"};
  const char* args[] = {"prog", "--version"};
  testing::internal::CaptureStdout();
  EXPECT_EQ(ParseCommandLine(app, 2, args, "usage: prog\n"), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "prog " VOLLEY_VERSION "\n");
}

}  // namespace
}  // namespace volley::base
