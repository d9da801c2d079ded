// write_errors_test.cc - the queue after a write RocksDB refused, with a real
// failure: the process's descriptor limit (RLIMIT_NOFILE) lowered until RocksDB
// cannot open its next write-ahead log (EMFILE, issue 16), then raised again.
// And QueueOptions::max_open_files reaching RocksDB.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "queue/queue.h"

namespace volley::queue {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// NoDescriptorsLeft - while it lives, the process cannot open a descriptor: the
// soft RLIMIT_NOFILE is lowered to the lowest free descriptor number (the next
// open(2) would get it, and fails EMFILE instead). A descriptor closed meanwhile
// below it makes room for one open again, as in real life. Restore() (or the
// destructor) puts the limit back: a soft limit can be raised up to the hard one.
//
// Under -fsanitize=vptr (VOLLEY_SANITIZE) a type the sanitizer checks for the
// first time needs a pipe, which fails without descriptors and is reported as
// an "invalid vptr": so each test makes the calls it makes under the limit once
// before it (a rehearsal, marked so), and uses no gmock matcher under it.
class NoDescriptorsLeft {
 public:
  NoDescriptorsLeft() {
    EXPECT_EQ(::getrlimit(RLIMIT_NOFILE, &saved_), 0);
    const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    EXPECT_GE(probe, 0);
    ::close(probe);
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(probe);
    EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  }
  ~NoDescriptorsLeft() { Restore(); }
  void Restore() {
    if (restored_) return;
    restored_ = true;
    EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &saved_), 0);
  }

 private:
  rlimit saved_{};
  bool restored_ = false;
};

constexpr int kIntakeBatch = 100;
// A recipient's encoding, padded so that RocksDB's memtable (1 MiB with the
// options below) fills after some hundreds of batches and needs a new log.
const std::string kPadding(1000, 'x');

class QueueWriteErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("volley-queue-write-errors-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    queue_.reset();
    fs::remove_all(root_);
  }
  std::string dir() const { return (root_ / "queue").string(); }
  // Small memtables (write_buffer_bytes / 4 each): a full one needs a new log.
  static QueueOptions SmallMemtables() {
    QueueOptions o;
    o.write_buffer_bytes = 4u << 20;
    o.intake_batch = kIntakeBatch;
    return o;
  }
  void OpenQueue(const QueueOptions& o) {
    auto q = Queue::Open(dir(), o);
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
  }
  size_t Queued(uint32_t job_no) {
    std::vector<QueuedRecipient> got;
    EXPECT_TRUE(queue_->TakeDue(job_no, 0, "", t0_ + absl::Hours(1), 1 << 20, &got).ok());
    return got.size();
  }
  // Adds recipients from line 1 on until a write fails (or `max` lines); the
  // lines written before it are *acked.
  absl::Status AddUntilRefused(Queue::IntakeWriter* w, uint32_t max, uint32_t* acked) {
    *acked = 0;
    for (uint32_t line = 1; line <= max; ++line) {
      const absl::Status st = w->Add(line, 0, absl::StrCat(line, kPadding));
      if (!st.ok()) return st;
      if (line % kIntakeBatch == 0) *acked = line;
    }
    return absl::OkStatus();
  }

  fs::path root_;
  std::unique_ptr<Queue> queue_;
  const absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(QueueWriteErrorsTest, ARefusedWriteAppliesNothingAndWritesResumeOnceDescriptorsAreBack) {
  OpenQueue(SmallMemtables());
  auto job = queue_->BeginJob("big", "{}", "1:1", t0_, t0_);
  ASSERT_TRUE(job.ok()) << job.status();
  auto w = queue_->NewIntakeWriter(*job);
  uint32_t acked = 0;
  (void)queue_->Stats();  // rehearsal (see NoDescriptorsLeft)
  ASSERT_TRUE(queue_->Recover().ok());
  NoDescriptorsLeft limit;
  // 20 MiB of recipients is far more than a 1 MiB memtable holds.
  const absl::Status refused = AddUntilRefused(w.get(), 20000, &acked);
  ASSERT_FALSE(refused.ok()) << "RocksDB never needed a new file";
  EXPECT_FALSE(absl::IsDataLoss(refused)) << refused;
  // Plain find, not a gmock matcher: UBSan's check of a new polymorphic type
  // opens a pipe, and there is no descriptor left for one.
  EXPECT_NE(refused.message().find("Too many open files"), absl::string_view::npos) << refused;
  EXPECT_GT(acked, 0u);

  // While the cause lasts every write is refused, and Recover says it cannot
  // resume yet (RocksDB is retrying by itself), without calling it data loss.
  auto other = queue_->BeginJob("other", "{}", "1:2", t0_, t0_);
  EXPECT_FALSE(other.ok());
  EXPECT_FALSE(absl::IsDataLoss(other.status())) << other.status();
  const absl::Status still = queue_->Recover();
  EXPECT_FALSE(still.ok());
  EXPECT_FALSE(absl::IsDataLoss(still)) << still;
  EXPECT_GE(queue_->Stats().write_errors, 2u);

  limit.Restore();
  // RocksDB resumes by itself within kResumeRetryInterval; Recover may be first.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  absl::Status recovered = queue_->Recover();
  while (!recovered.ok() && absl::Now() < deadline) {
    EXPECT_FALSE(absl::IsDataLoss(recovered)) << recovered;
    absl::SleepFor(absl::Milliseconds(50));
    recovered = queue_->Recover();
  }
  ASSERT_TRUE(recovered.ok()) << recovered;

  // The refused batch applied nothing: exactly the acknowledged recipients.
  EXPECT_EQ(Queued(job->job_no), acked);
  // Intake's retry takes the job in again as a whole: the same lines are the
  // same keys, so every recipient is queued once.
  auto again = queue_->NewIntakeWriter(*job);
  uint32_t total = acked + 3 * kIntakeBatch;
  uint32_t acked_again = 0;
  ASSERT_TRUE(AddUntilRefused(again.get(), total, &acked_again).ok());
  ASSERT_TRUE(again->Commit(total).ok());
  EXPECT_EQ(Queued(job->job_no), total);
  auto progress = queue_->ReadProgress(job->job_no);
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->total, total);
  // Writes work again, and the data written before the error is all there
  // after a restart too.
  ASSERT_TRUE(queue_->BeginJob("other", "{}", "1:2", t0_, t0_).ok());
  queue_.reset();
  OpenQueue(SmallMemtables());
  EXPECT_EQ(Queued(job->job_no), total);
  auto found = queue_->FindJob("other");
  ASSERT_TRUE(found.ok());
  EXPECT_TRUE(found->has_value());
}

TEST_F(QueueWriteErrorsTest, MaxOpenFilesReachesRocksDB) {
  QueueOptions o;
  o.max_open_files = 64;
  OpenQueue(o);
  // RocksDB writes the options it runs with to OPTIONS-<number> in the folder.
  std::string options_text;
  for (const auto& e : fs::directory_iterator(dir())) {
    if (e.path().filename().string().starts_with("OPTIONS-")) {
      std::ifstream in(e.path());
      std::stringstream s;
      s << in.rdbuf();
      options_text = s.str();
    }
  }
  EXPECT_THAT(options_text, HasSubstr("max_open_files=64\n"));
}

TEST_F(QueueWriteErrorsTest, AnUnboundedMaxOpenFilesIsRefused) {
  QueueOptions o;
  o.max_open_files = -1;
  auto q = Queue::Open(dir(), o);
  ASSERT_FALSE(q.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(q.status())) << q.status();
  EXPECT_THAT(q.status().message(), HasSubstr("max_open_files = -1"));
}

}  // namespace
}  // namespace volley::queue
