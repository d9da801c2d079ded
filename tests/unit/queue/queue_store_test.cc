// Tests of the RocksDB queue, on a real RocksDB in a temporary folder.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "queue/queue.h"
#include "rocksdb/db.h"
#include "rocksdb/perf_context.h"
#include "rocksdb/perf_level.h"

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
      EXPECT_TRUE(w->Add(static_cast<uint32_t>(i + 2), 0, "r" + std::to_string(i)).ok());
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
  EXPECT_LT(RecipientKey(1, 0, t0_ + absl::Hours(5), 9), RecipientKey(2, 0, t0_, 2));
  EXPECT_LT(RecipientKey(1, 0, t0_, 900), RecipientKey(1, 0, t0_ + absl::Microseconds(1), 2));
  EXPECT_LT(RecipientKey(1, 0, t0_, 2), RecipientKey(1, 0, t0_, 3));
  EXPECT_LT(RecipientKey(1, 0, t0_, 255), RecipientKey(1, 0, t0_, 256));  // big-endian, not text
}

TEST_F(QueueTest, PartitionsSortWithinAJobAndHashTheSameEverywhere) {
  // A job's keys stay together (one range for MarkJobDone), partition first.
  EXPECT_LT(RecipientKey(1, 63, t0_ + absl::Hours(5), 9), RecipientKey(2, 0, t0_, 2));
  EXPECT_LT(RecipientKey(1, 0, t0_ + absl::Hours(5), 9), RecipientKey(1, 1, t0_, 2));
  // Stored in keys: these values must never change (FNV-1a 32 mod 64).
  EXPECT_EQ(PartitionOf(""), 2166136261u % kPartitions);
  EXPECT_EQ(PartitionOf("a"), 0xe40c292cu % kPartitions);
  std::set<uint16_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const uint16_t p = PartitionOf("d" + std::to_string(i) + ".test");
    ASSERT_LT(p, kPartitions);
    seen.insert(p);
  }
  EXPECT_EQ(seen.size(), kPartitions);  // 1,000 domains reach every partition
}

TEST_F(QueueTest, EachPartitionIsScannedOnItsOwnAndAJobIsDroppedWhole) {
  auto job = q_->BeginJob("p", "{}", "1:2", t0_, t0_);
  ASSERT_TRUE(job.ok());
  {
    auto w = q_->NewIntakeWriter(*job);
    for (uint32_t line = 2; line < 12; ++line) {
      ASSERT_TRUE(w->Add(line, static_cast<uint16_t>(line % 3), "x").ok());
    }
    ASSERT_TRUE(w->Commit(10).ok());
  }
  size_t total = 0;
  for (uint16_t p = 0; p < 4; ++p) {
    std::vector<QueuedRecipient> got;
    ASSERT_TRUE(q_->TakeDue(job->job_no, p, "", t0_, 100, &got).ok());
    for (const QueuedRecipient& r : got) {
      EXPECT_EQ(r.partition, p);
      EXPECT_EQ(r.line % 3, p);
    }
    auto next = q_->NextDue(job->job_no, p);
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(next->has_value(), !got.empty()) << "partition " << p;
    // A deferral stays in its partition.
    if (!got.empty()) {
      auto batch = q_->NewOutcomeBatch();
      batch->Reschedule(got[0], t0_ + absl::Minutes(5));
      ASSERT_TRUE(q_->Apply(*batch).ok());
      std::vector<QueuedRecipient> later;
      ASSERT_TRUE(q_->TakeDue(job->job_no, p, "", t0_ + absl::Hours(1), 100, &later).ok());
      ASSERT_EQ(later.size(), got.size());
      EXPECT_EQ(later.back().line, got[0].line);
      EXPECT_EQ(later.back().attempts, 1u);
    }
    total += got.size();
  }
  EXPECT_EQ(total, 10u);
  ASSERT_TRUE(q_->MarkJobDone(*job).ok());
  for (uint16_t p = 0; p < 3; ++p) {
    auto next = q_->NextDue(job->job_no, p);
    ASSERT_TRUE(next.ok());
    EXPECT_FALSE(next->has_value()) << "partition " << p << " survived MarkJobDone";
  }
}

TEST_F(QueueTest, AQueueOfTheOldKeyLayoutIsRefusedNotMisread) {
  q_.reset();
  std::filesystem::remove_all(dir_);
  {
    // What a volleyd before partitions left: 16-byte keys, no format stamp.
    rocksdb::Options o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {"recipients", rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir_.string(), families, &handles, &raw).ok());
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[1], std::string(16, '\1'),
                         std::string(8, '\0')).ok());
    for (auto* h : handles) ASSERT_TRUE(raw->DestroyColumnFamilyHandle(h).ok());
    delete raw;
  }
  auto q = Queue::Open(dir_.string(), options_);
  ASSERT_FALSE(q.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(q.status())) << q.status();
  EXPECT_NE(q.status().message().find("queue format 1"), std::string::npos) << q.status();
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
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ - absl::Seconds(1), 10, &got).ok());
  EXPECT_TRUE(got.empty());  // not due yet
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 3, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].line, 2u);
  EXPECT_EQ(got[0].recipient, "r0");
  EXPECT_EQ(got[0].attempts, 0u);
  const std::string cursor = got.back().key;
  got.clear();
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, cursor, t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].line, 5u);
}

// A scan that comes up short learns, from the same seek, when the partition
// has something due next; one that fills its batch is told more may be due.
TEST_F(QueueTest, TakeDueAndNextSaysWhenThePartitionIsDueNext) {
  const JobRecord job = AddJob("j", t0_, 4);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 4u);
  auto batch = q_->NewOutcomeBatch();
  batch->Reschedule(got[0], t0_ + absl::Minutes(7));
  batch->Postpone(got[1], t0_ + absl::Minutes(3));
  ASSERT_TRUE(q_->Apply(*batch).ok());

  std::vector<QueuedRecipient> now;
  absl::Time next = absl::InfinitePast();
  ASSERT_TRUE(q_->TakeDueAndNext(job.job_no, 0, "", t0_, 10, &now, &next).ok());
  ASSERT_EQ(now.size(), 2u) << "lines 4 and 5 are due, 2 and 3 moved on";
  EXPECT_EQ(next, t0_ + absl::Minutes(3)) << "got " << next << ", want the postponed one";

  now.clear();
  ASSERT_TRUE(q_->TakeDueAndNext(job.job_no, 0, "", t0_, 1, &now, &next).ok());
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(next, absl::InfinitePast()) << "the batch filled: more may be due";

  now.clear();
  ASSERT_TRUE(q_->TakeDueAndNext(job.job_no, 0, "", t0_ + absl::Hours(1), 10, &now, &next).ok());
  EXPECT_EQ(now.size(), 4u);
  EXPECT_EQ(next, absl::InfiniteFuture()) << "nothing after them";

  // After the partition's last key: the next job's keys are not this one's.
  AddJob("k", t0_ + absl::Minutes(1), 1);
  now.clear();
  const std::string last = RecipientKey(job.job_no, 0, t0_ + absl::Minutes(7), 2);
  ASSERT_TRUE(q_->TakeDueAndNext(job.job_no, 0, last, t0_, 10, &now, &next).ok());
  EXPECT_TRUE(now.empty());
  EXPECT_EQ(next, absl::InfiniteFuture());
}

// The owner of a partition learns the earliest due time a written batch moved
// a recipient to there, once, and only after the write.
TEST_F(QueueTest, TakeRequeuedReportsTheEarliestWrittenDeferralOnce) {
  const JobRecord job = AddJob("j", t0_, 3);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(q_->TakeRequeued(0), absl::InfiniteFuture()) << "nothing moved yet";

  auto batch = q_->NewOutcomeBatch();
  batch->Reschedule(got[0], t0_ + absl::Minutes(9));
  batch->Postpone(got[1], t0_ + absl::Minutes(2));
  batch->Remove(got[2], Final::kDelivered);
  EXPECT_EQ(q_->TakeRequeued(0), absl::InfiniteFuture()) << "not written yet";
  ASSERT_TRUE(q_->Apply(*batch).ok());
  EXPECT_EQ(q_->TakeRequeued(1), absl::InfiniteFuture()) << "another partition";
  EXPECT_EQ(q_->TakeRequeued(0), t0_ + absl::Minutes(2));
  EXPECT_EQ(q_->TakeRequeued(0), absl::InfiniteFuture()) << "told once";

  // Two batches before the owner asks: the earlier of the two.
  std::vector<QueuedRecipient> moved;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Hours(1), 10, &moved).ok());
  ASSERT_EQ(moved.size(), 2u);
  auto first = q_->NewOutcomeBatch();
  first->Reschedule(moved[0], t0_ + absl::Hours(3));
  ASSERT_TRUE(q_->Apply(*first).ok());
  auto second = q_->NewOutcomeBatch();
  second->Reschedule(moved[1], t0_ + absl::Hours(2));
  ASSERT_TRUE(q_->Apply(*second).ok());
  EXPECT_EQ(q_->TakeRequeued(0), t0_ + absl::Hours(2));
}

// A deferred recipient keeps the reply that deferred it, so that an expiry
// without another try can still say why (engine/outcomes.cc). It survives a
// reopen and a postponement, is cut to its bound at a UTF-8 boundary, and an
// entry without one (every entry written before there was one) reads as before.
TEST_F(QueueTest, ARescheduledRecipientKeepsItsLastReply) {
  const JobRecord job = AddJob("j", t0_, 3);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0].last_reply.empty());
  const std::string recipient = got[0].recipient;
  auto batch = q_->NewOutcomeBatch();
  got[0].last_reply = "451 4.7.1 Greylisted, please try again later";
  got[0].last_class = "rate_limited";
  batch->Reschedule(got[0], t0_ + absl::Minutes(5));
  // Too long, ending in a two-byte character that the bound would split.
  got[1].last_reply = std::string(kMaxLastReplyBytes - 1, 'x') + "\xc3\xa9";
  got[1].last_class = "other";
  batch->Reschedule(got[1], t0_ + absl::Minutes(5));
  batch->Reschedule(got[2], t0_ + absl::Minutes(5));  // no reply to keep
  ASSERT_TRUE(q_->Apply(*batch).ok());
  Reopen();
  std::vector<QueuedRecipient> again;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Minutes(5), 10, &again).ok());
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0].last_reply, "451 4.7.1 Greylisted, please try again later");
  EXPECT_EQ(again[0].last_class, "rate_limited");
  EXPECT_EQ(again[0].attempts, 1u);
  EXPECT_EQ(again[0].recipient, recipient);
  EXPECT_EQ(again[1].last_reply, std::string(kMaxLastReplyBytes - 1, 'x'));
  EXPECT_EQ(again[1].last_class, "other");
  EXPECT_TRUE(again[2].last_reply.empty());
  EXPECT_TRUE(again[2].last_class.empty());
  EXPECT_EQ(again[2].attempts, 1u);
  // A postponement keeps it; so does the next deferral's count.
  auto later = q_->NewOutcomeBatch();
  later->Postpone(again[0], t0_ + absl::Minutes(10));
  ASSERT_TRUE(q_->Apply(*later).ok());
  std::vector<QueuedRecipient> last;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Minutes(10), 10, &last).ok());
  ASSERT_EQ(last.size(), 3u);
  const auto it = std::find_if(last.begin(), last.end(),
                               [&](const QueuedRecipient& r) { return r.line == again[0].line; });
  ASSERT_NE(it, last.end());
  EXPECT_EQ(it->last_reply, "451 4.7.1 Greylisted, please try again later");
  EXPECT_EQ(it->attempts, 1u);
}

// A last reply whose lengths do not fit is no fatal error of the scan: the entry
// comes back with the rest as its recipient, which the shard then bounces as
// unreadable (queue/README.md, "Entries that cannot be read").
TEST_F(QueueTest, ACorruptLastReplyLeavesTheEntryUnreadableNotTheScan) {
  const JobRecord job = AddJob("j", t0_, 2);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  const std::string key = got[0].key;
  q_.reset();
  {
    rocksdb::Options o;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {"recipients", rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir_.string(), families, &handles, &raw).ok());
    // One attempt, the last-reply bit, then a reply length of 0xFF00.
    const std::string value("\x80\x00\x00\x01\xFF\x00\x01", 7);
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[1], key, value).ok());
    for (auto* h : handles) ASSERT_TRUE(raw->DestroyColumnFamilyHandle(h).ok());
    delete raw;
  }
  Reopen();
  std::vector<QueuedRecipient> again;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &again).ok());
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].attempts, 1u);
  EXPECT_EQ(again[0].recipient, std::string("\xFF\x00\x01", 3));
  EXPECT_TRUE(again[0].last_reply.empty());
  EXPECT_EQ(again[1].recipient, got[1].recipient);
}

TEST_F(QueueTest, OutcomesRemoveAndReschedule) {
  const JobRecord job = AddJob("j", t0_, 2);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  auto batch = q_->NewOutcomeBatch();
  batch->Remove(got[0], Final::kDelivered);
  batch->Reschedule(got[1], t0_ + absl::Minutes(5));
  ASSERT_TRUE(q_->Apply(*batch).ok());
  Reopen();  // outcomes are durable
  std::vector<QueuedRecipient> again;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Minutes(1), 10, &again).ok());
  EXPECT_TRUE(again.empty());
  auto next = q_->NextDue(job.job_no, 0);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ(**next, t0_ + absl::Minutes(5));
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Minutes(5), 10, &again).ok());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].line, 3u);
  EXPECT_EQ(again[0].attempts, 1u);
  EXPECT_EQ(again[0].recipient, "r1");
  auto last = q_->NewOutcomeBatch();
  last->Remove(again[0], Final::kBounced);
  ASSERT_TRUE(q_->Apply(*last).ok());
  again.clear();
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Hours(1), 10, &again).ok());
  auto none = q_->NextDue(job.job_no, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(QueueTest, PostponeMovesWithoutCountingAnAttempt) {
  const JobRecord job = AddJob("j", t0_, 2);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  auto batch = q_->NewOutcomeBatch();
  batch->Postpone(got[0], t0_ + absl::Seconds(30));
  batch->Reschedule(got[1], t0_ + absl::Seconds(30));
  ASSERT_TRUE(q_->Apply(*batch).ok());
  Reopen();
  std::vector<QueuedRecipient> again;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Seconds(29), 10, &again).ok());
  EXPECT_TRUE(again.empty());  // moved, not left where it was
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Seconds(30), 10, &again).ok());
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].recipient, "r0");
  EXPECT_EQ(again[0].attempts, 0u);  // postponed: no attempt
  EXPECT_EQ(again[1].attempts, 1u);  // deferred: one
  auto progress = q_->ReadProgress(job.job_no);
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->deferred, 1u);  // only the deferred one counts as deferred
}

TEST_F(QueueTest, NextDueAfterACursorSkipsWhatWasTaken) {
  const JobRecord job = AddJob("j", t0_, 4);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 4u);
  auto batch = q_->NewOutcomeBatch();
  batch->Remove(got[0], Final::kDelivered);
  batch->Remove(got[1], Final::kDelivered);
  batch->Reschedule(got[2], t0_ + absl::Minutes(7));
  ASSERT_TRUE(q_->Apply(*batch).ok());
  // got[3] is still queued at t0_ (in flight, say): before the cursor.
  auto from_start = q_->NextDue(job.job_no, 0);
  ASSERT_TRUE(from_start.ok() && from_start->has_value());
  EXPECT_EQ(**from_start, t0_);
  auto after = q_->NextDue(job.job_no, 0, got[3].key);
  ASSERT_TRUE(after.ok() && after->has_value());
  EXPECT_EQ(**after, t0_ + absl::Minutes(7));
  std::vector<QueuedRecipient> later;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Hours(1), 10, &later).ok());
  auto last = q_->NewOutcomeBatch();
  for (const auto& r : later) last->Remove(r, Final::kDelivered);
  ASSERT_TRUE(q_->Apply(*last).ok());
  auto none = q_->NextDue(job.job_no, 0, got[3].key);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// Tombstones counted by RocksDB itself: a scan must not walk the deleted
// recipients of the job after its own (what made the end of a campaign slow).
TEST_F(QueueTest, ScansStopAtTheirJobsEndWhateverIsDeletedBeyond) {
  const JobRecord first = AddJob("first", t0_, 10);
  const JobRecord second = AddJob("second", t0_, 5000);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(second.job_no, 0, "", t0_, 10000, &got).ok());
  ASSERT_EQ(got.size(), 5000u);
  auto batch = q_->NewOutcomeBatch();
  for (const auto& r : got) batch->Remove(r, Final::kDelivered);
  ASSERT_TRUE(q_->Apply(*batch).ok());  // 5000 tombstones right after "first"

  std::vector<QueuedRecipient> mine;
  ASSERT_TRUE(q_->TakeDue(first.job_no, 0, "", t0_, 100, &mine).ok());
  ASSERT_EQ(mine.size(), 10u);
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  rocksdb::get_perf_context()->Reset();
  std::vector<QueuedRecipient> none;
  ASSERT_TRUE(q_->TakeDue(first.job_no, 0, mine.back().key, t0_ + absl::Hours(1), 100, &none).ok());
  EXPECT_TRUE(none.empty());
  auto next = q_->NextDue(first.job_no, 0, mine.back().key);
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  const uint64_t skipped = rocksdb::get_perf_context()->internal_delete_skipped_count;
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  EXPECT_LT(skipped, 10u) << "the scans walked into the next job's tombstones";
}

TEST_F(QueueTest, RepeatedIntakeOfALoadingJobDoesNotDuplicate) {
  options_.intake_batch = 10;  // so that the interrupted intake did write batches
  Reopen();
  auto job = q_->BeginJob("j", "{}", "1:2", t0_, t0_);
  ASSERT_TRUE(job.ok());
  {
    auto w = q_->NewIntakeWriter(*job);
    for (uint32_t line = 2; line < 100; ++line) ASSERT_TRUE(w->Add(line, 0, "x").ok());
    // no Commit: as if volleyd died during intake
  }
  Reopen();
  auto found = q_->FindJob("j");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->state, JobState::kLoading);
  std::vector<QueuedRecipient> partial;
  ASSERT_TRUE(q_->TakeDue(job->job_no, 0, "", t0_, 1000, &partial).ok());
  EXPECT_EQ(partial.size(), 90u);  // nine whole batches reached RocksDB
  auto w = q_->NewIntakeWriter(**found);
  for (uint32_t line = 2; line < 100; ++line) ASSERT_TRUE(w->Add(line, 0, "x").ok());
  ASSERT_TRUE(w->Commit(98).ok());
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job->job_no, 0, "", t0_, 1000, &got).ok());
  EXPECT_EQ(got.size(), 98u);
  auto progress = q_->ReadProgress(job->job_no);
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->total, 98u);  // counted at the commit only, not per attempt
}

// Intake stages a batch and writes it partition by partition (key order):
// every recipient still lands in its own partition, with its own value, in
// line order, across whole batches and the part-batch the commit writes.
TEST_F(QueueTest, IntakeInterleavedAcrossPartitionsKeepsEveryRecipientItsOwn) {
  options_.intake_batch = 16;
  Reopen();
  auto job = q_->BeginJob("j", "{}", "1:2", t0_, t0_);
  ASSERT_TRUE(job.ok());
  constexpr uint32_t kPartitions = 7;
  constexpr uint32_t kLines = 200;
  auto w = q_->NewIntakeWriter(*job);
  for (uint32_t line = 2; line < 2 + kLines; ++line) {
    // Lengths differ from line to line, so a value read at another's offset shows.
    const std::string r = absl::StrCat("r", line, std::string(line % 5, 'x'), "@d.test");
    ASSERT_TRUE(w->Add(line, static_cast<uint16_t>(line % kPartitions), r).ok());
  }
  ASSERT_TRUE(w->Commit(kLines).ok());
  size_t total = 0;
  for (uint16_t p = 0; p < kPartitions; ++p) {
    std::vector<QueuedRecipient> got;
    ASSERT_TRUE(q_->TakeDue(job->job_no, p, "", t0_, 1000, &got).ok());
    uint32_t expected_line = p < 2 ? p + kPartitions : p;
    for (const QueuedRecipient& r : got) {
      EXPECT_EQ(r.line, expected_line) << "partition " << p;
      EXPECT_EQ(r.recipient, absl::StrCat("r", r.line, std::string(r.line % 5, 'x'), "@d.test"));
      EXPECT_EQ(r.attempts, 0u);
      expected_line += kPartitions;
    }
    total += got.size();
  }
  EXPECT_EQ(total, kLines);
}

TEST_F(QueueTest, ProgressCountsOutcomesWithTheQueueChange) {
  const JobRecord job = AddJob("j", t0_, 5);
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 5u);
  auto batch = q_->NewOutcomeBatch();
  batch->Remove(got[0], Final::kDelivered);
  batch->Remove(got[1], Final::kBounced);
  batch->Reschedule(got[2], t0_ + absl::Minutes(5));
  batch->Reschedule(got[3], t0_ + absl::Minutes(5));
  ASSERT_TRUE(q_->Apply(*batch).ok());
  Reopen();  // the counters are durable, like the outcomes
  auto p = q_->ReadProgress(job.job_no);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->total, 5u);
  EXPECT_EQ(p->delivered, 1u);
  EXPECT_EQ(p->bounced, 1u);
  EXPECT_EQ(p->deferred, 2u);
  EXPECT_EQ(p->deferrals, 2u);
  EXPECT_EQ(p->pending(), 3u);

  // A second deferral of one recipient is another deferral, not another
  // deferred recipient; its final outcome takes it out of "deferred".
  std::vector<QueuedRecipient> retry;
  ASSERT_TRUE(q_->TakeDue(job.job_no, 0, "", t0_ + absl::Minutes(5), 10, &retry).ok());
  ASSERT_EQ(retry.size(), 3u);  // line 6 (never tried) and the two deferred
  auto second = q_->NewOutcomeBatch();
  for (const auto& r : retry) {
    if (r.attempts == 0) {
      second->Remove(r, Final::kCancelled);
    } else if (r.line == got[2].line) {
      second->Reschedule(r, t0_ + absl::Minutes(15));
    } else {
      second->Remove(r, Final::kExpired);
    }
  }
  ASSERT_TRUE(q_->Apply(*second).ok());
  p = q_->ReadProgress(job.job_no);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->deferred, 1u);
  EXPECT_EQ(p->deferrals, 3u);
  EXPECT_EQ(p->expired, 1u);
  EXPECT_EQ(p->cancelled, 1u);
  EXPECT_EQ(p->pending(), 1u);
  auto none = q_->ReadProgress(job.job_no + 100);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->total, 0u);
}

TEST_F(QueueTest, SuppressedAndFeedbackAreCountedAndIntakeSuppressedOnce) {
  auto job = q_->BeginJob("s", "{}", "1:2", t0_, t0_);
  ASSERT_TRUE(job.ok()) << job.status();
  auto w = q_->NewIntakeWriter(*job);
  for (uint32_t line = 2; line <= 4; ++line) ASSERT_TRUE(w->Add(line, 0, "r").ok());
  // Lines 5 and 6 were on the suppression list: never queued, counted.
  ASSERT_TRUE(w->Commit(3, /*suppressed=*/2).ok());
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job->job_no, 0, "", t0_, 10, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  auto batch = q_->NewOutcomeBatch();
  batch->Remove(got[0], Final::kDelivered);
  batch->Remove(got[1], Final::kSuppressed);  // added to the list meanwhile
  batch->Count(job->job_no, Counted::kComplained);
  batch->Count(job->job_no, Counted::kBouncedAsync, 2);
  batch->Count(job->job_no, Counted::kUnsubscribed);
  ASSERT_TRUE(q_->Apply(*batch).ok());
  Reopen();
  auto p = q_->ReadProgress(job->job_no);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->total, 5u);
  EXPECT_EQ(p->delivered, 1u);
  EXPECT_EQ(p->suppressed, 3u);
  EXPECT_EQ(p->complained, 1u);
  EXPECT_EQ(p->bounced_async, 2u);
  EXPECT_EQ(p->unsubscribed, 1u);
  EXPECT_EQ(p->pending(), 1u);
}

TEST_F(QueueTest, ProgressWrittenBeforeTheFeedbackCountersReadsOnAsZero) {
  const JobRecord job = AddJob("old", t0_, 4);
  q_.reset();
  {
    // What a volleyd before the feedback counters wrote: seven 8-byte fields
    // (total 4, delivered 1), with no merge operands after it.
    rocksdb::Options o;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {"recipients", rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir_.string(), families, &handles, &raw).ok());
    std::string key(1, 'P');
    for (int shift = 24; shift >= 0; shift -= 8) {
      key.push_back(static_cast<char>((job.job_no >> shift) & 0xff));
    }
    std::string value(7 * 8, '\0');
    value[0] = 4;  // total, little-endian
    value[8] = 1;  // delivered
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[0], key, value).ok());
    for (auto* h : handles) ASSERT_TRUE(raw->DestroyColumnFamilyHandle(h).ok());
    delete raw;
  }
  Reopen();
  auto before = q_->ReadProgress(job.job_no);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->total, 4u);
  EXPECT_EQ(before->delivered, 1u);
  EXPECT_EQ(before->complained, 0u);
  auto batch = q_->NewOutcomeBatch();
  batch->Count(job.job_no, Counted::kComplained);
  ASSERT_TRUE(q_->Apply(*batch).ok());
  auto after = q_->ReadProgress(job.job_no);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->total, 4u);
  EXPECT_EQ(after->delivered, 1u);
  EXPECT_EQ(after->complained, 1u);
}

TEST_F(QueueTest, PauseResumeAndCancelAreDurableAndChecked) {
  const JobRecord job = AddJob("j", t0_, 2);
  auto paused = q_->SetPaused("j", true);
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_TRUE(paused->paused);
  Reopen();
  auto found = q_->FindJob("j");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_TRUE((*found)->paused);
  EXPECT_EQ((*found)->header_json, "{}");  // the rest of the record is intact
  EXPECT_EQ((*found)->recipients, 2u);
  auto resumed = q_->SetPaused("j", false);
  ASSERT_TRUE(resumed.ok());
  EXPECT_FALSE(resumed->paused);

  EXPECT_TRUE(absl::IsNotFound(q_->SetPaused("nope", true).status()));
  EXPECT_TRUE(absl::IsNotFound(q_->CancelJob("nope").status()));

  auto cancelled = q_->CancelJob("j");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_TRUE(q_->CancelJob("j").ok());  // cancelling twice is no error
  EXPECT_TRUE(absl::IsFailedPrecondition(q_->SetPaused("j", true).status()));

  // A job still loading cannot be controlled yet; a finished one no more.
  auto loading = q_->BeginJob("l", "{}", "1:3", t0_, t0_);
  ASSERT_TRUE(loading.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(q_->SetPaused("l", true).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(q_->CancelJob("l").status()));
  const JobRecord other = AddJob("d", t0_, 1);
  ASSERT_TRUE(q_->MarkJobDone(other).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(q_->CancelJob("d").status()));

  // Done keeps a cancelled job's state, so the record says how it ended.
  ASSERT_TRUE(q_->MarkJobDone(job).ok());
  found = q_->FindJob("j");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->state, JobState::kCancelled);
  EXPECT_EQ(JobStateName(JobState::kCancelled), "cancelled");
}

TEST_F(QueueTest, MarkJobDoneDropsTheJobsKeysAndNoOtherJobs) {
  const JobRecord a = AddJob("a", t0_, 3);
  const JobRecord b = AddJob("b", t0_, 3);
  ASSERT_TRUE(q_->MarkJobDone(a).ok());
  auto next = q_->NextDue(a.job_no, 0);
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(b.job_no, 0, "", t0_, 10, &got).ok());
  EXPECT_EQ(got.size(), 3u);
  auto found = q_->FindJob("a");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->state, JobState::kDone);
}

TEST_F(QueueTest, ForgetJobRemovesRecordRecipientsAndCounters) {
  auto job = q_->BeginJob("j", "{}", "1:2", t0_, t0_);
  ASSERT_TRUE(job.ok());
  {
    auto w = q_->NewIntakeWriter(*job);
    for (uint32_t line = 2; line < 20; ++line) ASSERT_TRUE(w->Add(line, 0, "x").ok());
  }
  const JobRecord keep = AddJob("k", t0_, 2);
  ASSERT_TRUE(q_->ForgetJob(*job).ok());
  auto found = q_->FindJob("j");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  std::vector<QueuedRecipient> got;
  ASSERT_TRUE(q_->TakeDue(job->job_no, 0, "", t0_, 100, &got).ok());
  EXPECT_TRUE(got.empty());
  ASSERT_TRUE(q_->TakeDue(keep.job_no, 0, "", t0_, 100, &got).ok());
  EXPECT_EQ(got.size(), 2u);
}

}  // namespace
}  // namespace volley::queue
