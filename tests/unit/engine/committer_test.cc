// committer_test.cc - the committer writes the log, then the queue, off the caller's thread
#include "engine/committer.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/delivery_log.h"
#include "queue/queue.h"

namespace volley::engine {
namespace {

using ::testing::HasSubstr;

// LoweredLimit - while it lives, one of the process's resource limits is lowered
// (a real failure, not a mock): RLIMIT_NOFILE to the lowest free descriptor
// number, so that the next open(2) fails with EMFILE (issue 16); RLIMIT_FSIZE to
// a size, so that a write past it stops short there and the next one fails with
// EFBIG (SIGXFSZ ignored meanwhile). Restore() or the destructor puts it back:
// a soft limit can be raised again up to the hard one.
//
// Under -fsanitize=vptr (VOLLEY_SANITIZE) a type the sanitizer checks for the
// first time needs a pipe, which fails without descriptors and is reported as
// an "invalid vptr": a test that takes the descriptors away first applies a
// batch and asks for the queue's stats and recovery (a rehearsal of the calls
// made under the limit), and uses no gmock matcher under it.
class LoweredLimit {
 public:
  static LoweredLimit NoDescriptors() {
    const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    EXPECT_GE(probe, 0);
    ::close(probe);
    return LoweredLimit(RLIMIT_NOFILE, static_cast<rlim_t>(probe));
  }
  static LoweredLimit FileSize(uint64_t bytes) {
    return LoweredLimit(RLIMIT_FSIZE, static_cast<rlim_t>(bytes));
  }
  LoweredLimit(LoweredLimit&& o) noexcept
      : resource_(o.resource_), saved_(o.saved_), old_xfsz_(o.old_xfsz_), done_(o.done_) {
    o.done_ = true;
  }
  ~LoweredLimit() { Restore(); }
  void Restore() {
    if (done_) return;
    done_ = true;
    EXPECT_EQ(::setrlimit(resource_, &saved_), 0);
    if (resource_ == RLIMIT_FSIZE) ::signal(SIGXFSZ, old_xfsz_);
  }

 private:
  LoweredLimit(int resource, rlim_t soft) : resource_(resource) {
    EXPECT_EQ(::getrlimit(resource_, &saved_), 0);
    if (resource_ == RLIMIT_FSIZE) old_xfsz_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit low = saved_;
    low.rlim_cur = soft;
    EXPECT_EQ(::setrlimit(resource_, &low), 0);
  }
  int resource_;
  rlimit saved_{};
  sighandler_t old_xfsz_ = SIG_DFL;
  bool done_ = false;
};

// WaitFor - polls `cond` every 10 ms for up to `limit`.
template <typename Cond>
bool WaitFor(Cond cond, absl::Duration limit = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!cond()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

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
      rec.status = metrics::DeliveryStatus::kDelivered;
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

  // ReopenQueue - the same queue folder with small memtables (1 MiB each):
  // filling one makes RocksDB open a new write-ahead log.
  void ReopenWithSmallMemtables() {
    queue_.reset();
    queue::QueueOptions o;
    o.write_buffer_bytes = 4u << 20;
    o.intake_batch = 100;
    auto q = queue::Queue::Open((dir_ / "queue").string(), o);
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
  }

  // BreakQueueWrites - with no descriptor left, fill a memtable (a second job's
  // intake) until RocksDB needs a new log, cannot open it, and refuses writes.
  void BreakQueueWrites() {
    auto job = queue_->BeginJob("filler", "{}", "1:3", t0_, t0_);
    ASSERT_TRUE(job.ok()) << job.status();
    auto w = queue_->NewIntakeWriter(*job);
    const std::string padding(1000, 'x');
    absl::Status st;
    for (uint32_t line = 1; line <= 20000 && st.ok(); ++line) {
      st = w->Add(line, 1, absl::StrCat(line, padding));
    }
    ASSERT_FALSE(st.ok()) << "RocksDB never needed a new file";
    // Plain find, not a gmock matcher: UBSan's check of a new polymorphic type
    // opens a pipe, and there is no descriptor left for one.
    ASSERT_NE(st.message().find("Too many open files"), absl::string_view::npos) << st;
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
  rec.status = metrics::DeliveryStatus::kCancelled;
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

TEST_F(CommitterTest, AUnitTheQueueRefusesIsRetriedAndRecordedOnceWhenTheErrorClears) {
  ReopenWithSmallMemtables();
  Committer committer(queue_.get(), log_.get());
  ASSERT_TRUE(committer.Start().ok());
  // Rehearsal (see LoweredLimit): the same calls once, with descriptors left.
  ASSERT_TRUE(queue_->Apply(*queue_->NewOutcomeBatch()).ok());
  (void)queue_->Stats();
  ASSERT_TRUE(queue_->Recover().ok());
  Committer::Unit unit = Deliver(2);
  LoweredLimit limit = LoweredLimit::NoDescriptors();
  BreakQueueWrites();
  committer.Submit(std::move(unit));
  // The unit is held, not failed: the committer says it is stalled and keeps
  // trying (kRetryFirst, doubling) while the cause lasts.
  ASSERT_TRUE(WaitFor([&] { return committer.stalled(); })) << "the committer never stalled";
  absl::SleepFor(Committer::kRetryFirst * 4);
  EXPECT_FALSE(committer.TakeDone().has_value()) << "a refused unit must not come back";
  EXPECT_TRUE(committer.busy());
  const uint64_t refused = queue_->Stats().write_errors;
  EXPECT_GE(refused, 2u);

  limit.Restore();
  std::optional<Committer::Unit> done = committer.WaitDone();
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->status.ok()) << done->status;
  EXPECT_FALSE(committer.stalled());
  EXPECT_EQ(done->keys.size(), 2u);
  // Recorded exactly once, however many times the batch was applied: two
  // recipients gone, two counted delivered (the counters are merges: a batch
  // applied twice would count four).
  EXPECT_EQ(Queued(), 1u);
  auto progress = queue_->ReadProgress(job_no_);
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->delivered, 2u);
  const std::string text = LogText();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  auto position = queue_->ReadLogPosition();
  ASSERT_TRUE(position.ok());
  EXPECT_EQ(*position, log_->position());
  // The next unit goes straight through.
  Committer::Unit next = Deliver(1);
  committer.Submit(std::move(next));
  done = committer.WaitDone();
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->status.ok()) << done->status;
  EXPECT_EQ(Queued(), 0u);
}

TEST_F(CommitterTest, AFailedLogFlushIsRetriedAndWritesEveryRecordOnce) {
  Committer committer(queue_.get(), log_.get());
  ASSERT_TRUE(committer.Start().ok());
  Committer::Unit unit = Deliver(3);
  const size_t bytes = unit.log_bytes.size();
  ASSERT_GT(bytes, 200u);
  {
    // The log may grow by 100 bytes: the write stops part-way through the
    // first record (a short write), the rest fails with EFBIG.
    LoweredLimit limit = LoweredLimit::FileSize(100);
    committer.Submit(std::move(unit));
    ASSERT_TRUE(WaitFor([&] { return committer.stalled(); })) << "the committer never stalled";
    ASSERT_TRUE(WaitFor([&] { return log_->write_errors() >= 2; }));
    struct stat st {};
    ASSERT_EQ(::stat(log_->path().c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 100) << "the short write's bytes reach the file";
    EXPECT_FALSE(committer.TakeDone().has_value());
    EXPECT_EQ(Queued(), 3u) << "nothing is applied to the queue before the log is written";
  }
  std::optional<Committer::Unit> done = committer.WaitDone();
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->status.ok()) << done->status;
  EXPECT_FALSE(committer.stalled());
  // Every record once and whole: the 100 bytes are not written again, the
  // rest is not lost.
  const std::string text = LogText();
  EXPECT_EQ(text.size(), bytes);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\n', start);
    ASSERT_NE(end, std::string::npos);
    EXPECT_EQ(text.substr(start, 7), "{\"ts\":\"") << "a torn or repeated record";
    start = end + 1;
  }
  EXPECT_EQ(Queued(), 0u);
  auto position = queue_->ReadLogPosition();
  ASSERT_TRUE(position.ok());
  EXPECT_EQ(*position, log_->position());
}

TEST_F(CommitterTest, AStalledUnitGivesUpWhenToldAndComesBackResourceExhausted) {
  Committer committer(queue_.get(), log_.get());
  ASSERT_TRUE(committer.Start().ok());
  Committer::Unit unit = Deliver(1);
  LoweredLimit limit = LoweredLimit::FileSize(0);
  committer.Submit(std::move(unit));
  ASSERT_TRUE(WaitFor([&] { return committer.stalled(); }));
  committer.GiveUpWhenStalled();
  std::optional<Committer::Unit> done = committer.WaitDone();
  ASSERT_TRUE(done.has_value());
  // Whatever the error (EFBIG here), a unit given up on is ResourceExhausted:
  // the stopping shard counts it as not recorded, it does not fail.
  EXPECT_TRUE(absl::IsResourceExhausted(done->status)) << done->status;
  EXPECT_THAT(done->status.message(), HasSubstr("delivery log"));
  limit.Restore();
  EXPECT_EQ(Queued(), 3u);
}

// CorruptQueue - the real queue, but its writes say what a corrupt RocksDB says
// (DataLoss), and Recover is counted. Corruption cannot be made on demand the
// way a descriptor shortage can; this is the one stand-in in these tests.
class CorruptQueue : public queue::Queue {
 public:
  explicit CorruptQueue(queue::Queue* q) : q_(q) {}
  absl::Status Apply(OutcomeBatch&) override {
    ++applies;
    return absl::DataLossError("queue: record outcomes: Corruption: block checksum mismatch");
  }
  absl::Status Recover() override {
    ++recovers;
    return absl::OkStatus();
  }
  int applies = 0;
  int recovers = 0;

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
  absl::Status TakeDue(uint32_t job_no, uint16_t partition, std::string_view after_key,
                       absl::Time now, size_t max,
                       std::vector<queue::QueuedRecipient>* out) override {
    return q_->TakeDue(job_no, partition, after_key, now, max, out);
  }
  absl::StatusOr<std::optional<absl::Time>> NextDue(uint32_t job_no, uint16_t partition,
                                                    std::string_view after_key) override {
    return q_->NextDue(job_no, partition, after_key);
  }
  std::unique_ptr<OutcomeBatch> NewOutcomeBatch() override { return q_->NewOutcomeBatch(); }
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
  StoreStats Stats() override { return q_->Stats(); }

 private:
  queue::Queue* q_;
};

TEST_F(CommitterTest, CorruptionEndsTheUnitAtOnceWithItsReason) {
  CorruptQueue corrupt(queue_.get());
  Committer committer(&corrupt, log_.get());
  ASSERT_TRUE(committer.Start().ok());
  committer.Submit(Deliver(1));
  std::optional<Committer::Unit> done = committer.WaitDone();
  ASSERT_TRUE(done.has_value());
  // Not retried, not stalled: the shard stops volleyd with this status.
  EXPECT_TRUE(absl::IsDataLoss(done->status)) << done->status;
  EXPECT_THAT(done->status.message(), HasSubstr("block checksum mismatch"));
  EXPECT_EQ(corrupt.applies, 1);
  EXPECT_EQ(corrupt.recovers, 0);
  EXPECT_FALSE(committer.stalled());
  EXPECT_EQ(Queued(), 3u);
}

}  // namespace
}  // namespace volley::engine
