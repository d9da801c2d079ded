// The delivery window over a real RocksDB queue: priorities, turns, the window
// bound, keys never taken twice, jobs marked done, scans that came up short
// sleeping until something can be due.
#include "engine/window.h"

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <optional>
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

// ScanCountingQueue - the real queue, counting the scans the window makes of
// it (TakeDue and NextDue calls): what the window saves is seeks.
class ScanCountingQueue : public queue::Queue {
 public:
  explicit ScanCountingQueue(queue::Queue* q) : q_(q) {}
  int scans = 0;

  absl::Status TakeDue(uint32_t job_no, uint16_t partition, std::string_view after_key,
                       absl::Time now, size_t max,
                       std::vector<queue::QueuedRecipient>* out) override {
    ++scans;
    return q_->TakeDue(job_no, partition, after_key, now, max, out);
  }
  absl::Status TakeDueAndNext(uint32_t job_no, uint16_t partition, std::string_view after_key,
                              absl::Time now, size_t max, std::vector<queue::QueuedRecipient>* out,
                              absl::Time* next_due) override {
    ++scans;
    return q_->TakeDueAndNext(job_no, partition, after_key, now, max, out, next_due);
  }
  absl::StatusOr<std::optional<absl::Time>> NextDue(uint32_t job_no, uint16_t partition,
                                                    std::string_view after_key) override {
    ++scans;
    return q_->NextDue(job_no, partition, after_key);
  }
  absl::Time TakeRequeued(uint16_t partition) override { return q_->TakeRequeued(partition); }

  absl::StatusOr<std::optional<queue::JobRecord>> FindJob(std::string_view id) override {
    return q_->FindJob(id);
  }
  absl::StatusOr<std::vector<queue::JobRecord>> ListJobs() override { return q_->ListJobs(); }
  absl::StatusOr<queue::JobRecord> BeginJob(std::string_view id, std::string_view header,
                                            std::string_view source, absl::Time queued_at,
                                            absl::Time first_due) override {
    return q_->BeginJob(id, header, source, queued_at, first_due);
  }
  std::unique_ptr<IntakeWriter> NewIntakeWriter(const queue::JobRecord& job) override {
    return q_->NewIntakeWriter(job);
  }
  std::unique_ptr<OutcomeBatch> NewOutcomeBatch() override { return q_->NewOutcomeBatch(); }
  absl::Status Apply(OutcomeBatch& batch) override { return q_->Apply(batch); }
  absl::Status MarkJobDone(const queue::JobRecord& job) override { return q_->MarkJobDone(job); }
  absl::StatusOr<std::string> ReadLogPosition() override { return q_->ReadLogPosition(); }
  absl::Status FindLines(uint32_t job_no, const std::vector<uint32_t>& lines,
                         std::vector<queue::QueuedRecipient>* out) override {
    return q_->FindLines(job_no, lines, out);
  }
  absl::StatusOr<queue::JobProgress> ReadProgress(uint32_t job_no) override {
    return q_->ReadProgress(job_no);
  }
  absl::StatusOr<queue::JobRecord> SetPaused(std::string_view id, bool paused) override {
    return q_->SetPaused(id, paused);
  }
  absl::StatusOr<queue::JobRecord> CancelJob(std::string_view id) override {
    return q_->CancelJob(id);
  }
  absl::Status ForgetJob(const queue::JobRecord& job) override { return q_->ForgetJob(job); }
  absl::Status Recover() override { return q_->Recover(); }
  StoreStats Stats() override { return q_->Stats(); }

 private:
  queue::Queue* q_;
};

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
    counting_ = std::make_unique<ScanCountingQueue>(queue_.get());
    std::vector<std::string> warnings;
    auto creds = Credentials::Load(Config{}, &warnings);
    ASSERT_TRUE(creds.ok()) << creds.status();
    credentials_ = std::make_unique<Credentials>(*std::move(creds));
    composer_ = std::make_unique<Composer>(*credentials_);
  }
  void TearDown() override {
    for (Work* w : taken_) delete w;
    window_.reset();
    counting_.reset();
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
    window_ = std::make_unique<DeliveryWindow>(place_, counting_.get(), composer_.get());
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

  // Settle - every recipient taken gets an outcome from `decide` (into the
  // batch) and leaves the window; `write`: the batch is written and the keys
  // forgotten, as the committer and Outcomes do; otherwise the caller does
  // that later with Write.
  void Settle(const std::function<void(Work*, queue::Queue::OutcomeBatch*)>& decide,
              bool write = true) {
    pending_batch_ = queue_->NewOutcomeBatch();
    pending_keys_.clear();
    for (Work* w : taken_) {
      decide(w, pending_batch_.get());
      pending_keys_.push_back(window_->Release(w));
    }
    taken_.clear();
    if (write) Write();
  }
  void Write() {
    ASSERT_TRUE(queue_->Apply(*pending_batch_).ok());
    window_->ForgetCommitted(pending_keys_);
    pending_keys_.clear();
  }

  static std::map<std::string, int> Count(const std::vector<std::string>& ids) {
    std::map<std::string, int> n;
    for (const std::string& id : ids) ++n[id];
    return n;
  }

  const absl::Time t0_ = absl::Now();
  std::filesystem::path dir_;
  std::unique_ptr<queue::Queue> queue_;
  std::unique_ptr<ScanCountingQueue> counting_;
  std::unique_ptr<queue::Queue::OutcomeBatch> pending_batch_;
  std::vector<std::pair<uint32_t, std::string>> pending_keys_;
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

// The steady state this saves: a partition whose due recipients are all taken
// and under way is not scanned again at every refill; the last outcome
// written wakes it once, to find it empty.
TEST_F(DeliveryWindowTest, AScanThatCameUpShortSleepsWhileItsRecipientsAreUnderWay) {
  AddJob("j", 0, 10);
  MakeWindow(100);
  EXPECT_EQ(Refill(t0_).size(), 10u);
  const int after_take = counting_->scans;
  for (int s = 1; s <= 5; ++s) EXPECT_TRUE(Refill(t0_ + absl::Seconds(s)).empty());
  EXPECT_EQ(counting_->scans, after_take) << "got scans while all ten were under way, want none";
  Settle([](Work* w, queue::Queue::OutcomeBatch* b) { b->Remove(w->entry, queue::Final::kDelivered); });
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(6)).empty());
  EXPECT_GT(counting_->scans, after_take) << "the last outcome written wakes the scan";
  EXPECT_TRUE(window_->jobs().empty()) << "and it finds the job done";
  EXPECT_EQ((*queue_->FindJob("j"))->state, queue::JobState::kDone);
}

// A deferral written while its partition's scan sleeps (until never: nothing
// else is left) brings the scan forward to the deferral's due time.
TEST_F(DeliveryWindowTest, ADeferralWrittenWhileTheScanSleepsIsTakenWhenDue) {
  AddJob("j", 0, 10);
  MakeWindow(100);
  EXPECT_EQ(Refill(t0_).size(), 10u);
  bool first = true;
  Settle([&](Work* w, queue::Queue::OutcomeBatch* b) {
    if (std::exchange(first, false)) {
      b->Reschedule(w->entry, t0_ + absl::Minutes(1));
    } else {
      b->Remove(w->entry, queue::Final::kDelivered);
    }
  });
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(30)).empty()) << "not due yet";
  const int asleep = counting_->scans;
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(40)).empty());
  EXPECT_EQ(counting_->scans, asleep) << "it sleeps until the deferral is due";
  ASSERT_EQ(Refill(t0_ + absl::Minutes(1)).size(), 1u);
  EXPECT_EQ(taken_[0]->entry.attempts, 1u);
  EXPECT_EQ(taken_[0]->entry.line, 2u);
}

// A deferral decided but not yet written (the committer is behind): the job
// is not done, or its range delete and the job's end would lose the recipient.
TEST_F(DeliveryWindowTest, AJobIsNotDoneWhileADeferralIsStillBeingWritten) {
  AddJob("j", 0, 3);
  MakeWindow(100);
  EXPECT_EQ(Refill(t0_).size(), 3u);
  bool first = true;
  Settle(
      [&](Work* w, queue::Queue::OutcomeBatch* b) {
        if (std::exchange(first, false)) {
          b->Reschedule(w->entry, t0_ + absl::Minutes(1));
        } else {
          b->Remove(w->entry, queue::Final::kDelivered);
        }
      },
      /*write=*/false);
  EXPECT_EQ(window_->in_flight(), 0u);
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(1)).empty());
  EXPECT_EQ(window_->jobs().size(), 1u) << "done before its outcomes were written";
  EXPECT_EQ((*queue_->FindJob("j"))->state, queue::JobState::kReady);
  Write();
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(2)).empty());
  ASSERT_EQ(Refill(t0_ + absl::Minutes(1)).size(), 1u);
  Settle([](Work* w, queue::Queue::OutcomeBatch* b) { b->Remove(w->entry, queue::Final::kDelivered); });
  EXPECT_TRUE(Refill(t0_ + absl::Minutes(2)).empty());
  EXPECT_EQ((*queue_->FindJob("j"))->state, queue::JobState::kDone);
}

// A sleeping scan does not hold back a cancel: the scan starts over and takes
// everything left, due or not.
TEST_F(DeliveryWindowTest, ACancelWakesASleepingScan) {
  queue::JobRecord job = AddJob("j", 0, 5);
  MakeWindow(100);
  EXPECT_EQ(Refill(t0_).size(), 5u);
  Settle([&](Work* w, queue::Queue::OutcomeBatch* b) {
    b->Reschedule(w->entry, t0_ + absl::Hours(1));
  });
  EXPECT_TRUE(Refill(t0_ + absl::Seconds(1)).empty());
  job.state = queue::JobState::kCancelled;
  ASSERT_TRUE(window_->Load(job).value() != nullptr);
  EXPECT_EQ(Refill(t0_ + absl::Seconds(2)).size(), 5u);
}

}  // namespace
}  // namespace volley::engine
