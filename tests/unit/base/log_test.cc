#include "base/log.h"

#include <string>

#include "gtest/gtest.h"

namespace volley::base {
namespace {

TEST(FormatLogLine, SeverityWordAfterTheProgram) {
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kInfo, "running"), "volleyd: running\n");
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kWarning, "low"), "volleyd: warning: low\n");
  EXPECT_EQ(FormatLogLine("volley-sink", Severity::kError, "x"), "volley-sink: error: x\n");
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kFatal, "gone"), "volleyd: fatal: gone\n");
}

TEST(FormatLogLine, LineBreaksInTheMessageCannotForgeALine) {
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kInfo, "550 no\r\nvolleyd: fake"),
            "volleyd: 550 no  volleyd: fake\n");
}

TEST(FormatLogLine, LongMessagesAreCut) {
  const std::string line = FormatLogLine("p", Severity::kInfo, std::string(kMaxLogLine + 100, 'x'));
  EXPECT_EQ(line.size(), kMaxLogLine + 4);  // "p: " and the LF
  EXPECT_EQ(line.back(), '\n');
}

}  // namespace
}  // namespace volley::base
