// Tests of the delivery log's file handling: positions, reading back after a
// position, and a torn last record.
#include "metrics/delivery_log.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace volley::metrics {
namespace {

class DeliveryLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("volley-dlog-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<DeliveryLog> Open() {
    auto log = DeliveryLog::Open(dir_.string());
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? *std::move(log) : nullptr;
  }
  static DeliveryRecord Record(uint32_t line, std::string_view status) {
    DeliveryRecord r;
    r.ts = absl::FromUnixSeconds(1'800'000'000);
    r.job = "j";
    r.line = line;
    r.rcpt = "a@b.test";
    r.status = status;
    return r;
  }
  std::string Contents() const {
    std::ifstream f(dir_ / "deliveries.jsonl", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::filesystem::path dir_;
};

TEST_F(DeliveryLogTest, LinesAfterAPositionAreWhatWasWrittenSince) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  log->Append(Record(2, "delivered"));
  ASSERT_TRUE(log->Flush().ok());
  const std::string mark = log->position();
  log->Append(Record(3, "deferred"));
  log->Append(Record(4, "bounced"));
  ASSERT_TRUE(log->Flush().ok());
  auto lines = log->LinesAfter(mark);
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 2u);
  EXPECT_NE((*lines)[0].find("\"line\":3"), std::string::npos) << (*lines)[0];
  EXPECT_NE((*lines)[1].find("\"status\":\"bounced\""), std::string::npos) << (*lines)[1];
  auto none = log->LinesAfter(log->position());
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  // A reopened log continues the same positions: they survive a restart.
  log.reset();
  auto again = Open();
  ASSERT_NE(again, nullptr);
  auto same = again->LinesAfter(mark);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->size(), 2u);
}

TEST_F(DeliveryLogTest, APositionInAnotherFileOrPastTheEndIsNotFound) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  log->Append(Record(2, "delivered"));
  ASSERT_TRUE(log->Flush().ok());
  const std::string mark = log->position();
  // The file is replaced (rotated) while volleyd is down.
  log.reset();
  std::filesystem::rename(dir_ / "deliveries.jsonl", dir_ / "deliveries.jsonl.1");
  auto rotated = Open();
  ASSERT_NE(rotated, nullptr);
  EXPECT_TRUE(absl::IsNotFound(rotated->LinesAfter(mark).status()));
  const std::string here = rotated->position();
  const std::string past = here.substr(0, here.rfind(':') + 1) + "999";
  EXPECT_TRUE(absl::IsNotFound(rotated->LinesAfter(past).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(rotated->LinesAfter("12:x").status()));
}

TEST_F(DeliveryLogTest, ATornLastRecordIsEndedAndNotReadBack) {
  std::filesystem::create_directories(dir_);
  {
    std::ofstream f(dir_ / "deliveries.jsonl", std::ios::binary);
    f << "{\"job\":\"j\",\"line\":2}\n{\"job\":\"j\",\"li";  // power loss mid-record
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  const std::string mark = log->position();
  log->Append(Record(5, "delivered"));
  ASSERT_TRUE(log->Flush().ok());
  // The next record starts a line of its own, so the torn one cannot swallow it.
  const std::string text = Contents();
  EXPECT_NE(text.find("\"li\n{\"ts\""), std::string::npos) << text;
  auto lines = log->LinesAfter(mark);
  ASSERT_TRUE(lines.ok());
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_NE((*lines)[0].find("\"line\":5"), std::string::npos);
}

}  // namespace
}  // namespace volley::metrics
