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

// 2026-12-06T20:10:47.123Z
constexpr int64_t kSomeMoment = 1796587847123;

TEST(FormatLogLine, ADaemonsLineStartsWithItsTimeAndAlwaysSaysItsSeverity) {
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kInfo, "running", LogPrefix::kTime, kSomeMoment),
            "2026-12-06T20:10:47.123Z volleyd: info: running\n");
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kWarning, "low", LogPrefix::kTime, kSomeMoment + 1),
            "2026-12-06T20:10:47.124Z volleyd: warning: low\n");
  // Milliseconds keep their zeros.
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kError, "x", LogPrefix::kTime, 1796587847005),
            "2026-12-06T20:10:47.005Z volleyd: error: x\n");
}

TEST(FormatLogLine, UnderTheJournalTheLineStartsWithItsPriority) {
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kInfo, "running", LogPrefix::kJournalPriority),
            "<6>volleyd: info: running\n");
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kWarning, "w", LogPrefix::kJournalPriority),
            "<4>volleyd: warning: w\n");
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kError, "e", LogPrefix::kJournalPriority),
            "<3>volleyd: error: e\n");
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kFatal, "f", LogPrefix::kJournalPriority),
            "<2>volleyd: fatal: f\n");
}

TEST(FormatLogLine, APeerCannotForgeADaemonLineEither) {
  EXPECT_EQ(FormatLogLine("volleyd", Severity::kInfo, "550 no\n2026-01-01T00:00:00.000Z volleyd",
                          LogPrefix::kTime, kSomeMoment),
            "2026-12-06T20:10:47.123Z volleyd: info: 550 no 2026-01-01T00:00:00.000Z volleyd\n");
}

}  // namespace
}  // namespace volley::base
