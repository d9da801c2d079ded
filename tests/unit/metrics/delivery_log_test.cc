// Tests of the delivery log's file handling: positions, reading back after a
// position (also across rotations), a torn last record, rotation by size and by
// time (an injected clock), the rotated files' names and how many are kept, and
// a write that fails part-way (a real one: RLIMIT_FSIZE).
#include "metrics/delivery_log.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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
  std::unique_ptr<DeliveryLog> Open(DeliveryLogOptions options = {}) {
    auto log = DeliveryLog::Open(dir_.string(), std::move(options));
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? *std::move(log) : nullptr;
  }
  static DeliveryRecord Record(uint32_t line, DeliveryStatus status) {
    DeliveryRecord r;
    r.ts = absl::FromUnixSeconds(1'800'000'000);
    r.job = "j";
    r.line = line;
    r.rcpt = "a@b.test";
    r.status = status;
    return r;
  }
  std::string Contents(const std::string& name = "deliveries.jsonl") const {
    std::ifstream f(dir_ / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  // The files in the log directory but deliveries.jsonl, sorted.
  std::vector<std::string> Others() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      if (e.path().filename() != "deliveries.jsonl") names.push_back(e.path().filename());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  static size_t Lines(const std::string& text) {
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  }
  // Options with a clock the test moves.
  DeliveryLogOptions Clocked(uint64_t max_size, absl::Duration max_age, int keep = 14) {
    DeliveryLogOptions o;
    o.max_size = max_size;
    o.max_age = max_age;
    o.keep = keep;
    o.clock = [this] { return now_; };
    return o;
  }
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);  // 2027-01-15T08:00:00Z
  std::filesystem::path dir_;
};

TEST_F(DeliveryLogTest, LinesAfterAPositionAreWhatWasWrittenSince) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  log->Append(Record(2, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  const std::string mark = log->position();
  log->Append(Record(3, DeliveryStatus::kDeferred));
  log->Append(Record(4, DeliveryStatus::kBounced));
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
  log->Append(Record(2, DeliveryStatus::kDelivered));
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
  log->Append(Record(5, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  // The next record starts a line of its own, so the torn one cannot swallow it.
  const std::string text = Contents();
  EXPECT_NE(text.find("\"li\n{\"ts\""), std::string::npos) << text;
  auto lines = log->LinesAfter(mark);
  ASSERT_TRUE(lines.ok());
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_NE((*lines)[0].find("\"line\":5"), std::string::npos);
}

TEST_F(DeliveryLogTest, RotatesBySizeAfterTheWriteThatReachesIt) {
  const size_t one = [] {
    std::string s;
    FormatDeliveryRecord(Record(2, DeliveryStatus::kDelivered), &s);
    return s.size();
  }();
  auto log = Open(Clocked(3 * one, absl::ZeroDuration()));
  ASSERT_NE(log, nullptr);
  log->Append(Record(2, DeliveryStatus::kDelivered));
  log->Append(Record(3, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_TRUE(Others().empty());
  // This flush takes the file past max_size: it is written whole, then rotated.
  log->Append(Record(4, DeliveryStatus::kDelivered));
  log->Append(Record(5, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  ASSERT_EQ(Others(), std::vector<std::string>{"deliveries-20270115T080000Z.jsonl"});
  EXPECT_EQ(Lines(Contents("deliveries-20270115T080000Z.jsonl")), 4u);
  EXPECT_EQ(Contents(), "");
  EXPECT_EQ(log->position().substr(log->position().rfind(':')), ":0");
  log->Append(Record(6, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_EQ(Lines(Contents()), 1u);
}

TEST_F(DeliveryLogTest, RotatesByAgeBeforeTheWriteSoAFileSpansAtMostMaxAge) {
  auto log = Open(Clocked(0, absl::Hours(1)));
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Flush().ok());  // an empty file is never rotated
  now_ += absl::Hours(5);
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_TRUE(Others().empty());
  log->Append(Record(2, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());  // the file's first record: its age counts from now
  now_ += absl::Minutes(59);
  log->Append(Record(3, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_TRUE(Others().empty());
  now_ += absl::Minutes(2);
  log->Append(Record(4, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  ASSERT_EQ(Others(), std::vector<std::string>{"deliveries-20270115T140100Z.jsonl"});
  EXPECT_EQ(Lines(Contents("deliveries-20270115T140100Z.jsonl")), 2u);
  EXPECT_NE(Contents().find("\"line\":4"), std::string::npos);
  EXPECT_EQ(Lines(Contents()), 1u);
}

TEST_F(DeliveryLogTest, AgeCountsFromTheFirstRecordAcrossARestart) {
  {
    auto log = Open(Clocked(0, absl::Hours(1)));
    ASSERT_NE(log, nullptr);
    DeliveryRecord r = Record(2, DeliveryStatus::kDelivered);
    r.ts = now_;
    log->Append(r);
    ASSERT_TRUE(log->Flush().ok());
  }
  now_ += absl::Minutes(30);
  {
    auto log = Open(Clocked(0, absl::Hours(1)));
    ASSERT_NE(log, nullptr);
    log->Append(Record(3, DeliveryStatus::kDelivered));
    ASSERT_TRUE(log->Flush().ok());
    EXPECT_TRUE(Others().empty());
  }
  now_ += absl::Minutes(31);  // 61 minutes after the first record
  auto log = Open(Clocked(0, absl::Hours(1)));
  ASSERT_NE(log, nullptr);
  log->Append(Record(4, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  ASSERT_EQ(Others().size(), 1u);
  EXPECT_EQ(Lines(Contents(Others()[0])), 2u);
  EXPECT_EQ(Lines(Contents()), 1u);
}

TEST_F(DeliveryLogTest, RotatedNamesSortInRotationOrderEvenWhenTheClockStepsBack) {
  auto log = Open(Clocked(1, absl::ZeroDuration()));  // every flush rotates
  ASSERT_NE(log, nullptr);
  const auto rotate = [&](uint32_t line) {
    log->Append(Record(line, DeliveryStatus::kDelivered));
    ASSERT_TRUE(log->Flush().ok());
  };
  rotate(2);
  rotate(3);  // the same second: a counter
  rotate(4);
  now_ -= absl::Hours(1);  // the clock steps back: still after the newest
  rotate(5);
  now_ += absl::Hours(2);
  rotate(6);
  // A file that is not ours is neither counted nor touched.
  std::ofstream(dir_ / "deliveries-20270115T080000Z.jsonl.gz") << "x";
  EXPECT_EQ(Others(), (std::vector<std::string>{
                          "deliveries-20270115T080000Z-1.jsonl",
                          "deliveries-20270115T080000Z-2.jsonl",
                          "deliveries-20270115T080000Z-3.jsonl",
                          "deliveries-20270115T080000Z.jsonl",
                          "deliveries-20270115T080000Z.jsonl.gz",
                          "deliveries-20270115T090000Z.jsonl",
                      }));
  EXPECT_NE(Contents("deliveries-20270115T080000Z.jsonl").find("\"line\":2"), std::string::npos);
  EXPECT_NE(Contents("deliveries-20270115T080000Z-2.jsonl").find("\"line\":4"),
            std::string::npos);
  EXPECT_NE(Contents("deliveries-20270115T080000Z-3.jsonl").find("\"line\":5"),
            std::string::npos);
  EXPECT_NE(Contents("deliveries-20270115T090000Z.jsonl").find("\"line\":6"), std::string::npos);
}

TEST_F(DeliveryLogTest, KeepsTheNewestRotatedFilesOnly) {
  auto log = Open(Clocked(1, absl::ZeroDuration(), 2));
  ASSERT_NE(log, nullptr);
  std::ofstream(dir_ / "deliveries-old.jsonl.gz") << "x";  // not ours: left alone
  for (uint32_t line = 2; line < 7; ++line) {
    log->Append(Record(line, DeliveryStatus::kDelivered));
    ASSERT_TRUE(log->Flush().ok());
    now_ += absl::Seconds(1);
  }
  EXPECT_EQ(Others(), (std::vector<std::string>{"deliveries-20270115T080003Z.jsonl",
                                                "deliveries-20270115T080004Z.jsonl",
                                                "deliveries-old.jsonl.gz"}));
  EXPECT_NE(Contents("deliveries-20270115T080004Z.jsonl").find("\"line\":6"), std::string::npos);
  EXPECT_TRUE(absl::IsInvalidArgument(
      DeliveryLog::Open(dir_.string(), Clocked(1, absl::ZeroDuration(), 0)).status()));
}

TEST_F(DeliveryLogTest, LinesAfterReadsOnThroughEveryRotatedFile) {
  const size_t one = [] {
    std::string s;
    FormatDeliveryRecord(Record(2, DeliveryStatus::kDelivered), &s);
    return s.size();
  }();
  auto log = Open(Clocked(2 * one, absl::ZeroDuration()));
  ASSERT_NE(log, nullptr);
  log->Append(Record(2, DeliveryStatus::kDelivered));
  ASSERT_TRUE(log->Flush().ok());
  const std::string mark = log->position();  // the queue's last commit
  // Then, before the next commit, enough turns to rotate twice (a deferred
  // record is a byte shorter: three to a file).
  uint32_t line = 3;
  for (int turn = 0; turn < 6; ++turn) {
    log->Append(Record(line++, DeliveryStatus::kDeferred));
    ASSERT_TRUE(log->Flush().ok());
  }
  ASSERT_EQ(Others().size(), 2u) << "the mark's file and one more rotated";
  ASSERT_EQ(Lines(Contents()), 1u);
  const auto check = [&](const DeliveryLog& l) {
    auto lines = l.LinesAfter(mark);
    ASSERT_TRUE(lines.ok()) << lines.status();
    ASSERT_EQ(lines->size(), 6u);
    for (size_t i = 0; i < lines->size(); ++i) {
      EXPECT_NE((*lines)[i].find("\"line\":" + std::to_string(3 + i)), std::string::npos)
          << (*lines)[i];
    }
  };
  check(*log);
  // After a crash: a new process, the same files.
  log.reset();
  auto again = Open(Clocked(2 * one, absl::ZeroDuration()));
  ASSERT_NE(again, nullptr);
  check(*again);
  auto from_end = again->LinesAfter(again->position());
  ASSERT_TRUE(from_end.ok());
  EXPECT_TRUE(from_end->empty());
  // The mark's file deleted (keep, or an operator): not found, not misread.
  ASSERT_TRUE(std::filesystem::remove(dir_ / "deliveries-20270115T080000Z.jsonl"));
  EXPECT_TRUE(absl::IsNotFound(again->LinesAfter(mark).status()));
}

// FileSizeLimit - while it lives, no file of the process may grow past `bytes`
// (RLIMIT_FSIZE): a write across it stops short there, the next one fails with
// EFBIG (SIGXFSZ, which would kill the process, ignored meanwhile). A real
// partial write, as a disk filling up mid-write gives.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(uint64_t bytes) {
    EXPECT_EQ(::getrlimit(RLIMIT_FSIZE, &saved_), 0);
    old_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(bytes);
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  }
  ~FileSizeLimit() { Restore(); }
  void Restore() {
    if (done_) return;
    done_ = true;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &saved_), 0);
    ::signal(SIGXFSZ, old_);
  }

 private:
  rlimit saved_{};
  sighandler_t old_ = SIG_DFL;
  bool done_ = false;
};

TEST_F(DeliveryLogTest, AFailedFlushKeepsTheRestAndWritesEveryRecordOnce) {
  std::string records;
  for (uint32_t line = 2; line < 5; ++line) {
    FormatDeliveryRecord(Record(line, DeliveryStatus::kDelivered), &records);
  }
  // max_size 1: due for rotation after every write, so that a rotation in the
  // middle of a record would show.
  auto log = Open(Clocked(1, absl::ZeroDuration()));
  ASSERT_NE(log, nullptr);
  const std::string start = log->position();
  log->AppendFormatted(records);
  {
    FileSizeLimit limit(100);
    const absl::Status st = log->Flush();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("write"), std::string::npos) << st;
    // The first 100 bytes reached the file (part of the first record); they are
    // counted and no longer buffered, the rest is.
    EXPECT_EQ(Contents(), records.substr(0, 100));
    EXPECT_EQ(log->buffered(), records.size() - 100);
    EXPECT_EQ(log->position(), start.substr(0, start.rfind(':') + 1) + "100");
    // Tried again while the cause lasts: nothing written, nothing dropped.
    EXPECT_FALSE(log->Flush().ok());
    EXPECT_EQ(log->buffered(), records.size() - 100);
    EXPECT_EQ(log->write_errors(), 2u);
    EXPECT_TRUE(Others().empty()) << "rotated in the middle of a record";
  }
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_EQ(log->buffered(), 0u);
  // The whole records, each once, in the file that was then rotated (the write
  // ended at a record boundary and past max_size).
  const std::vector<std::string> rotated = Others();
  ASSERT_EQ(rotated.size(), 1u);
  EXPECT_EQ(Contents(rotated[0]), records);
  EXPECT_EQ(Contents(), "");
}

}  // namespace
}  // namespace volley::metrics
