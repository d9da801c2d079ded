// The free-space floor of intake (queue/spool.h, FREE SPACE) and the queue's
// Recover(), with a real spool folder and a real RocksDB queue.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "queue/spool.h"

namespace volley::queue {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kHeader[] =
    R"({"job":"big","from":"news@sender.test","message":"Subject: hi\r\n\r\nHello\r\n"})";

class FreeSpaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("volley-free-space-test-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    auto spool = Spool::Open((root_ / "spool").string());
    ASSERT_TRUE(spool.ok()) << spool.status();
    spool_.emplace(*std::move(spool));
    // Files are dropped and taken in at once (spool.h, WRITERS).
    spool_->SetSettleTime(absl::ZeroDuration());
    auto q = Queue::Open(queue_dir(), QueueOptions{});
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
  }
  void TearDown() override {
    queue_.reset();
    fs::remove_all(root_);
  }
  std::string queue_dir() const { return (root_ / "queue").string(); }
  // A job of n recipients, dropped into incoming/.
  void DropJob(const std::string& name, int n) {
    const fs::path tmp = root_ / "spool" / "tmp" / name;
    {
      std::ofstream out(tmp);
      out << kHeader << "\n";
      for (int i = 0; i < n; ++i) out << R"({"to":"r)" << i << R"(@d.test"})" << "\n";
    }
    fs::rename(tmp, root_ / "spool" / "incoming" / name);
  }
  absl::StatusOr<IntakeResult> Intake(const std::string& name) {
    return spool_->Intake(name, *queue_, JobLimits{}, absl::Now());
  }
  size_t Queued(uint32_t job_no) {
    std::vector<QueuedRecipient> got;
    for (uint16_t p = 0; p < kPartitions; ++p) {
      EXPECT_TRUE(queue_->TakeDue(job_no, p, "", absl::Now(), 1 << 20, &got).ok());
    }
    return got.size();
  }
  fs::path root_;
  std::optional<Spool> spool_;
  std::unique_ptr<Queue> queue_;
};

TEST_F(FreeSpaceTest, FreeBytesReadsTheFilesystem) {
  auto free = FreeBytes(root_.string());
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_GT(*free, 0u);
  EXPECT_FALSE(FreeBytes((root_ / "no-such-folder").string()).ok());
}

TEST_F(FreeSpaceTest, BelowTheFloorNothingIsTakenInAndTheFileStays) {
  // No filesystem here has 2^62 bytes free: the real statvfs path is below it.
  spool_->SetFreeSpaceFloor({{queue_dir()}, uint64_t{1} << 62, {}});
  DropJob("a.job", 3);
  auto r = Intake("a.job");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr((root_ / "spool").string()));
  EXPECT_THAT(r.status().message(), HasSubstr("min_free_space 4611686018427387904"));
  EXPECT_TRUE(fs::exists(root_ / "spool/incoming/a.job"));
  EXPECT_TRUE(fs::is_empty(root_ / "spool/failed"));
  auto job = queue_->FindJob("big");
  ASSERT_TRUE(job.ok());
  EXPECT_FALSE(job->has_value()) << "nothing may be written below the floor";
}

TEST_F(FreeSpaceTest, TheQueueFolderIsCheckedAndNamed) {
  const std::string queue = queue_dir();
  spool_->SetFreeSpaceFloor({{queue}, 1000, [queue](const std::string& path) {
                               return absl::StatusOr<uint64_t>(path == queue ? 999 : 1000);
                             }});
  DropJob("a.job", 3);
  auto r = Intake("a.job");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
  EXPECT_THAT(r.status().message(),
              HasSubstr("free space: " + queue + ": 999 bytes free (999 B), below min_free_space "
                        "1000 (1000 B)"));
  EXPECT_TRUE(fs::exists(root_ / "spool/incoming/a.job"));
}

TEST_F(FreeSpaceTest, AFloorOfZeroIsOff) {
  spool_->SetFreeSpaceFloor({{queue_dir()}, 0, [](const std::string&) {
                               return absl::StatusOr<uint64_t>(0);
                             }});
  DropJob("a.job", 3);
  auto r = Intake("a.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 3u);
}

TEST_F(FreeSpaceTest, ALongIntakeStopsAtTheFloorAndResumesWithoutDuplicates) {
  constexpr int kRecipients = 2 * kFreeSpaceCheckEvery + 5000;
  // Room for the checks before the job starts (spool and queue), then none.
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto room = std::make_shared<std::atomic<bool>>(false);
  spool_->SetFreeSpaceFloor({{queue_dir()}, 1 << 20, [calls, room](const std::string&) {
                               const bool ok = room->load() || calls->fetch_add(1) < 2;
                               return absl::StatusOr<uint64_t>(ok ? 1 << 30 : 1 << 10);
                             }});
  DropJob("big.job", kRecipients);
  auto r = Intake("big.job");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
  EXPECT_TRUE(fs::exists(root_ / "spool/incoming/big.job"));
  auto job = queue_->FindJob("big");
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_EQ((*job)->state, JobState::kLoading) << "a stopped intake is not a queued job";

  room->store(true);
  r = Intake("big.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->accepted, static_cast<uint64_t>(kRecipients));
  EXPECT_EQ(Queued(r->job_no), static_cast<size_t>(kRecipients)) << "each recipient once";
  EXPECT_TRUE(fs::exists(root_ / "spool/accepted/big.job"));
  job = queue_->FindJob("big");
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_EQ((*job)->state, JobState::kReady);
}

TEST_F(FreeSpaceTest, RecoverOnAHealthyQueueIsOk) {
  EXPECT_TRUE(queue_->Recover().ok());
  EXPECT_TRUE(queue_->Recover().ok());
}

}  // namespace
}  // namespace volley::queue
