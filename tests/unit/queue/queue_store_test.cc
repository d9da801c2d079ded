// Tests of the RocksDB queue, on a real RocksDB in a temporary folder.
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "queue/queue.h"

namespace volley::queue {
namespace {

class QueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("volley-queue-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Reopen();
  }
  void TearDown() override {
    q_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    q_.reset();
    auto q = Queue::Open(dir_.string(), options_);
    ASSERT_TRUE(q.ok()) << q.status();
    q_ = *std::move(q);
  }
  JobRecord AddJob(const std::string& id, absl::Time due, int recipients) {
    auto job = q_->BeginJob(id, "{}", "1:2", due, due);
    EXPECT_TRUE(job.ok()) << job.status();
    auto w = q_->NewIntakeWriter(*job);
    for (int i = 0; i < recipients; ++i) {
      EXPECT_TRUE(w->Add(static_cast<uint32_t>(i + 2), "r" + std::to_string(i)).ok());
    }
    EXPECT_TRUE(w->Commit(static_cast<uint64_t>(recipients)).ok());
    auto found = q_->FindJob(id);
    EXPECT_TRUE(found.ok() && found->has_value());
    return **found;
  }
  std::filesystem::path dir_;
  QueueOptions options_;
  std::unique_ptr<Queue> q_;
  const absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(QueueTest, KeysSortByJobThenDueThenLine) {
  EXPECT_LT(RecipientKey(1, t0_ + absl::Hours(5), 9), RecipientKey(2, t0_, 2));
  EXPECT_LT(RecipientKey(1, t0_, 900), RecipientKey(1, t0_ + absl::Microseconds(1), 2));
  EXPECT_LT(RecipientKey(1, t0_, 2), RecipientKey(1, t0_, 3));
  EXPECT_LT(RecipientKey(1, t0_, 255), RecipientKey(1, t0_, 256));  // big-endian, not text
}

TEST_F(QueueTest, JobRecordRoundTripsAndNumbersAreFresh) {
  const JobRecord a = AddJob("a", t0_, 3);
  const JobRecord b = AddJob("b", t0_, 1);
  EXPECT_NE(a.job_no, b.job_no);
  EXPECT_EQ(a.state, JobState::kReady);
  EXPECT_EQ(a.recipients, 3u);
  EXPECT_EQ(a.source, "1:2");
  EXPECT_EQ(a.first_due, t0_);
  Reopen();
  auto jobs = q_->ListJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id, "a");
  auto missing = q_->FindJob("zzz");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(QueueTest, TakeDueHonoursTimeCursorAndLimit) {
  const JobRecord job = AddJob("j", t0_, 5);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, "", t0_ - absl::Seconds(1), 10, &got).ok());
  EXPECT_TRUE(got.empty());  // not due yet
  ASSERT_TRUE(q_->TakeDue(job.job_no, "", t0_, 3, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].line, 2u);
  EXPECT_EQ(got[0].recipient, "r0");
  EXPECT_EQ(got[0].attempts, 0u);
  const std::string cursor = got.back().key;
  got.clear();
  ASSERT_TRUE(q_->TakeDue(job.job_no, cursor, t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].line, 5u);
}

TEST_F(QueueTest, OutcomesRemoveAndReschedule) {
  const JobRecord job = AddJob("j", t0_, 2);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  auto batch = q_->NewOutcomeBatch();
  batch->Remove(got[0]);
  batch->Reschedule(got[1], t0_ + absl::Minutes(5));
  ASSERT_TRUE(q_->Apply(*batch).ok());
  Reopen();  // outcomes are durable
  std::vector<QueuedRecipient> again;
  ASSERT_TRUE(q_->TakeDue(job.job_no, "", t0_ + absl::Minutes(1), 10, &again).ok());
  EXPECT_TRUE(again.empty());
  auto next = q_->NextDue(job.job_no);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ(**next, t0_ + absl::Minutes(5));
  ASSERT_TRUE(q_->TakeDue(job.job_no, "", t0_ + absl::Minutes(5), 10, &again).ok());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].line, 3u);
  EXPECT_EQ(again[0].attempts, 1u);
  EXPECT_EQ(again[0].recipient, "r1");
  auto last = q_->NewOutcomeBatch();
  last->Remove(again[0]);
  ASSERT_TRUE(q_->Apply(*last).ok());
  again.clear();
  ASSERT_TRUE(q_->TakeDue(job.job_no, "", t0_ + absl::Hours(1), 10, &again).ok());
  auto none = q_->NextDue(job.job_no);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(QueueTest, RepeatedIntakeOfALoadingJobDoesNotDuplicate) {
  options_.intake_batch = 10;  // so that the interrupted intake did write batches
  Reopen();
  auto job = q_->BeginJob("j", "{}", "1:2", t0_, t0_);
  ASSERT_TRUE(job.ok());
  {
    auto w = q_->NewIntakeWriter(*job);
    for (uint32_t line = 2; line < 100; ++line) ASSERT_TRUE(w->Add(line, "x").ok());
    // no Commit: as if volleyd died during intake
  }
  Reopen();
  auto found = q_->FindJob("j");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->state, JobState::kLoading);
  std::vector<QueuedRecipient> partial;
  ASSERT_TRUE(q_->TakeDue(job->job_no, "", t0_, 1000, &partial).ok());
  EXPECT_EQ(partial.size(), 90u);  // nine whole batches reached RocksDB
  auto w = q_->NewIntakeWriter(**found);
  for (uint32_t line = 2; line < 100; ++line) ASSERT_TRUE(w->Add(line, "x").ok());
  ASSERT_TRUE(w->Commit(98).ok());
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job->job_no, "", t0_, 1000, &got).ok());
  EXPECT_EQ(got.size(), 98u);
}

}  // namespace
}  // namespace volley::queue
