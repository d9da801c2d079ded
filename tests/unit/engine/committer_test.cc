// committer_test.cc - the committer writes the log, then the queue, off the caller's thread
#include "engine/committer.h"

#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/delivery_log.h"
#include "queue/queue.h"

namespace volley::engine {
namespace {

using ::testing::HasSubstr;

class CommitterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("volley-committer-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "log");
    auto q = queue::Queue::Open((dir_ / "queue").string(), queue::QueueOptions{});
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
    auto log = metrics::DeliveryLog::Open((dir_ / "log").string());
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    auto job = queue_->BeginJob("j", "{}", "1:2", t0_, t0_);
    ASSERT_TRUE(job.ok()) << job.status();
    auto w = queue_->NewIntakeWriter(*job);
    for (uint32_t line = 2; line < 5; ++line) ASSERT_TRUE(w->Add(line, 0, "r").ok());
    ASSERT_TRUE(w->Commit(3).ok());
    job_no_ = job->job_no;
  }
  void TearDown() override {
    log_.reset();
    queue_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A unit delivering the first `n` due recipients, with one log line each.
  Committer::Unit Deliver(size_t n) {
    std::vector<queue::QueuedRecipient> due;
    EXPECT_TRUE(queue_->TakeDue(job_no_, 0, "", t0_ + absl::Hours(1), n, &due).ok());
    Committer::Unit unit;
    unit.batch = queue_->NewOutcomeBatch();
    for (const queue::QueuedRecipient& r : due) {
      unit.batch->Remove(r, queue::Final::kDelivered);
      metrics::DeliveryRecord rec;
      rec.ts = t0_;
      rec.job = "j";
      rec.line = r.line;
      rec.rcpt = "r@a.test";
      rec.status = "delivered";
      metrics::FormatDeliveryRecord(rec, &unit.log_bytes);
      unit.keys.emplace_back(job_no_, r.key);
    }
    return unit;
  }

  size_t Queued() {
    std::vector<queue::QueuedRecipient> due;
    EXPECT_TRUE(queue_->TakeDue(job_no_, 0, "", t0_ + absl::Hours(1), 100, &due).ok());
    return due.size();
  }

  std::string LogText() {
    std::ifstream in(log_->path());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::filesystem::path dir_;
  std::unique_ptr<queue::Queue> queue_;
  std::unique_ptr<metrics::DeliveryLog> log_;
  uint32_t job_no_ = 0;
  const absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(CommitterTest, WritesTheLogThenTheQueueAndSignalsTheEventFd) {
  Committer committer(queue_.get(), log_.get());
  ASSERT_TRUE(committer.Start().ok());
  EXPECT_FALSE(committer.busy());
  committer.Submit(Deliver(2));
  EXPECT_TRUE(committer.busy());
  pollfd p{committer.event_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no completion signalled";
  uint64_t n = 0;
  ASSERT_EQ(::read(committer.event_fd(), &n, sizeof n), static_cast<ssize_t>(sizeof n));
  std::optional<Committer::Unit> done = committer.TakeDone();
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->status.ok()) << done->status;
  EXPECT_EQ(done->keys.size(), 2u);  // handed back, for the shard to forget
  EXPECT_FALSE(committer.busy());
  EXPECT_FALSE(committer.TakeDone().has_value());  // once
  EXPECT_EQ(Queued(), 1u);
  // The queue holds the log's position after the lines it just wrote.
  auto position = queue_->ReadLogPosition();
  ASSERT_TRUE(position.ok());
  EXPECT_EQ(*position, log_->position());
  const std::string text = LogText();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_THAT(text, HasSubstr("\"status\":\"delivered\""));
}

TEST_F(CommitterTest, CommitNowAfterStopWritesOnTheCallersThread) {
  Committer committer(queue_.get(), log_.get());
  ASSERT_TRUE(committer.Start().ok());
  committer.Stop();
  Committer::Unit unit = Deliver(3);
  committer.CommitNow(&unit);
  EXPECT_TRUE(unit.status.ok()) << unit.status;
  EXPECT_EQ(Queued(), 0u);
  EXPECT_TRUE(unit.log_bytes.empty());
  auto position = queue_->ReadLogPosition();
  ASSERT_TRUE(position.ok());
  EXPECT_EQ(*position, log_->position());
}

TEST_F(CommitterTest, ALogOnlyUnitLeavesTheQueueAlone) {
  Committer committer(queue_.get(), log_.get());
  Committer::Unit unit;
  metrics::DeliveryRecord rec;
  rec.ts = t0_;
  rec.job = "j";
  rec.status = "cancelled";
  metrics::FormatDeliveryRecord(rec, &unit.log_bytes);
  committer.CommitNow(&unit);  // without Start: the start-up path
  EXPECT_TRUE(unit.status.ok());
  EXPECT_EQ(Queued(), 3u);
  EXPECT_THAT(LogText(), HasSubstr("\"status\":\"cancelled\""));
}

TEST_F(CommitterTest, LanesAreServedApartAndWaitDoneBlocksForTheirOwnUnit) {
  Committer committer(queue_.get(), log_.get(), /*lanes=*/2);
  ASSERT_TRUE(committer.Start().ok());
  EXPECT_FALSE(committer.WaitDone(0).has_value());  // nothing submitted
  ASSERT_NE(committer.event_fd(0), committer.event_fd(1));
  // Lane 1 delivers the first due recipient; lane 0 the other two. Both units
  // are built before either is written, so they cover different recipients.
  Committer::Unit one = Deliver(1);
  std::vector<queue::QueuedRecipient> due;
  ASSERT_TRUE(queue_->TakeDue(job_no_, 0, "", t0_ + absl::Hours(1), 3, &due).ok());
  ASSERT_EQ(due.size(), 3u);
  Committer::Unit two;
  two.batch = queue_->NewOutcomeBatch();
  for (size_t i = 1; i < 3; ++i) {
    two.batch->Remove(due[i], queue::Final::kDelivered);
    two.keys.emplace_back(job_no_, due[i].key);
  }
  committer.Submit(std::move(one), 1);
  committer.Submit(std::move(two), 0);
  EXPECT_TRUE(committer.busy(0));
  EXPECT_TRUE(committer.busy(1));
  std::optional<Committer::Unit> done0 = committer.WaitDone(0);
  ASSERT_TRUE(done0.has_value());
  EXPECT_TRUE(done0->status.ok()) << done0->status;
  EXPECT_EQ(done0->keys.size(), 2u);
  EXPECT_FALSE(committer.busy(0));
  std::optional<Committer::Unit> done1 = committer.WaitDone(1);
  ASSERT_TRUE(done1.has_value());
  EXPECT_EQ(done1->keys.size(), 1u);
  // Each lane's own eventfd was signalled once.
  for (size_t lane : {0u, 1u}) {
    pollfd p{committer.event_fd(lane), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "lane " << lane << " not signalled";
    uint64_t n = 0;
    ASSERT_EQ(::read(committer.event_fd(lane), &n, sizeof n), static_cast<ssize_t>(sizeof n));
    EXPECT_EQ(n, 1u);
  }
  EXPECT_EQ(Queued(), 0u);
  const std::string text = LogText();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);  // lane 1's one line
}

}  // namespace
}  // namespace volley::engine
