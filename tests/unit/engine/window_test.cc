// The delivery window over a real RocksDB queue: priorities, turns, the window
// bound, keys never taken twice, jobs marked done.
#include "engine/window.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/compose.h"
#include "gtest/gtest.h"
#include "queue/job.h"

namespace volley::engine {
namespace {

class DeliveryWindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("volley-window-test-", ::getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto q = queue::Queue::Open((dir_ / "queue").string(), queue::QueueOptions{});
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
    std::vector<std::string> warnings;
    auto creds = Credentials::Load(Config{}, &warnings);
    ASSERT_TRUE(creds.ok()) << creds.status();
    credentials_ = std::make_unique<Credentials>(*std::move(creds));
    composer_ = std::make_unique<Composer>(*credentials_);
  }
  void TearDown() override {
    for (Work* w : taken_) delete w;
    window_.reset();
    queue_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A job of `count` recipients r<line>@<id>.test, all due now, in partition 0.
  queue::JobRecord AddJob(const std::string& id, int priority, uint32_t count) {
    const std::string header =
        absl::StrCat(R"({"job": ")", id, R"(", "from": "news@sender.test", "priority": )",
                     priority, R"(, "message": "Subject: hi\n\nhello\n"})");
    auto job = queue_->BeginJob(id, header, "test", t0_, t0_);
    EXPECT_TRUE(job.ok()) << job.status();
    auto w = queue_->NewIntakeWriter(*job);
    for (uint32_t line = 2; line < count + 2; ++line) {
      queue::Recipient r;
      r.to = absl::StrCat("r", line, "@", id, ".test");
      EXPECT_TRUE(w->Add(line, 0, queue::EncodeRecipient(r)).ok());
    }
    EXPECT_TRUE(w->Commit(count).ok());
    return **queue_->FindJob(id);
  }

  void MakeWindow(size_t window) {
    place_.window = window;
    place_.board = &board_;
    window_ = std::make_unique<DeliveryWindow>(place_, queue_.get(), composer_.get());
    absl::StatusOr<std::vector<queue::JobRecord>> jobs = queue_->ListJobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    for (const queue::JobRecord& j : *jobs) ASSERT_TRUE(window_->Load(j).ok());
  }

  // Refill, keeping what was taken; the job id of each, in order.
  std::vector<std::string> Refill(absl::Time now) {
    std::vector<std::string> ids;
    EXPECT_TRUE(window_
                    ->Refill(now,
                             [&](Work* w, const absl::Status& decoded) {
                               EXPECT_TRUE(decoded.ok()) << decoded;
                               ids.push_back(w->job->record.id);
                               taken_.push_back(w);
                             })
                    .ok());
    return ids;
  }

  // Every recipient taken is delivered and written, as the committer would.
  void DeliverAll() {
    auto batch = queue_->NewOutcomeBatch();
    std::vector<std::pair<uint32_t, std::string>> keys;
    for (Work* w : taken_) {
      batch->Remove(w->entry, queue::Final::kDelivered);
      keys.push_back(window_->Release(w));
    }
    taken_.clear();
    ASSERT_TRUE(queue_->Apply(*batch).ok());
    window_->ForgetCommitted(keys);
  }

  static std::map<std::string, int> Count(const std::vector<std::string>& ids) {
    std::map<std::string, int> n;
    for (const std::string& id : ids) ++n[id];
    return n;
  }

  const absl::Time t0_ = absl::Now();
  std::filesystem::path dir_;
  std::unique_ptr<queue::Queue> queue_;
  std::unique_ptr<Credentials> credentials_;
  std::unique_ptr<Composer> composer_;
  JobBoard board_{1};
  ShardPlace place_;
  std::unique_ptr<DeliveryWindow> window_;
  std::vector<Work*> taken_;
};

TEST_F(DeliveryWindowTest, NeverTakesMoreThanTheWindow) {
  AddJob("big", 0, 50);
  MakeWindow(20);
  EXPECT_EQ(Refill(t0_).size(), 20u);
  EXPECT_EQ(window_->in_flight(), 20u);
  EXPECT_FALSE(window_->RefillDue(t0_ + absl::Seconds(1)));  // full
  EXPECT_EQ(window_->NextRefillSoon(), absl::InfiniteFuture()) << "no room";
  DeliverAll();
  EXPECT_TRUE(window_->RefillDue(t0_ + absl::Seconds(1)));
  EXPECT_EQ(window_->NextRefillSoon(), t0_ + kRefillInterval) << "more is due, and room";
  EXPECT_EQ(Refill(t0_ + absl::Seconds(1)).size(), 20u);
}

TEST_F(DeliveryWindowTest, AHigherPriorityJobTakesTheWindowFirst) {
  AddJob("low", 0, 30);
  AddJob("high", 9, 30);
  MakeWindow(20);
  EXPECT_EQ(Count(Refill(t0_)), (std::map<std::string, int>{{"high", 20}}));
}

TEST_F(DeliveryWindowTest, JobsOfOnePriorityShareTheWindow) {
  AddJob("a", 0, 2000);
  AddJob("b", 0, 2000);
  MakeWindow(2 * kTakeBatch);
  const std::map<std::string, int> n = Count(Refill(t0_));
  EXPECT_EQ(n.at("a"), static_cast<int>(kTakeBatch));
  EXPECT_EQ(n.at("b"), static_cast<int>(kTakeBatch));
}

TEST_F(DeliveryWindowTest, AResumedJobIsScannedAgainButNothingIsTakenTwice) {
  queue::JobRecord job = AddJob("j", 0, 10);
  MakeWindow(100);
  EXPECT_EQ(Refill(t0_).size(), 10u);
  // Paused and resumed while all ten are still under way (not yet committed):
  // the scan starts over from the job's first key and passes over them.
  job.paused = true;
  ASSERT_TRUE(window_->Load(job).value() != nullptr) << "a pause asks for a withdrawal";
  job.paused = false;
  ASSERT_TRUE(window_->Load(job).ok());
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(1)).empty());
  EXPECT_EQ(window_->in_flight(), 10u);
}

TEST_F(DeliveryWindowTest, AJobWithNothingLeftIsMarkedDone) {
  AddJob("j", 0, 5);
  MakeWindow(100);
  EXPECT_EQ(Refill(t0_).size(), 5u);
  DeliverAll();
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(1)).empty());
  EXPECT_TRUE(window_->jobs().empty());
  EXPECT_EQ((*queue_->FindJob("j"))->state, queue::JobState::kDone);
}

}  // namespace
}  // namespace volley::engine
