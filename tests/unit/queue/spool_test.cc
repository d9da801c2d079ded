// Intake of job files from a real spool folder into a real RocksDB queue.
#include "queue/spool.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::queue {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kHeader[] =
    R"({"job":"JOBID","from":"news@sender.test","message":"Subject: hi\r\n\r\nHello {{name|friend}}\r\n"})";

std::string Header(const std::string& id) {
  std::string h = kHeader;
  h.replace(h.find("JOBID"), 5, id);
  return h;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("volley-spool-test-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    auto spool = Spool::Open((root_ / "spool").string());
    ASSERT_TRUE(spool.ok()) << spool.status();
    spool_.emplace(*std::move(spool));
    // The tests drop a file and take it in at once; WritersTest puts the settle
    // time back.
    spool_->SetSettleTime(absl::ZeroDuration());
    auto q = Queue::Open((root_ / "queue").string(), QueueOptions{});
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
  }
  void TearDown() override {
    queue_.reset();
    fs::remove_all(root_);
  }
  void Drop(const std::string& name, const std::string& text) {
    const fs::path tmp = root_ / "spool" / "tmp" / name;
    std::ofstream(tmp) << text;
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

TEST_F(SpoolTest, AcceptsAJobAndMovesItToAccepted) {
  Drop("a.job", Header("a") + "\n" + R"({"to":"x@d1.test","vars":{"name":"X"}})" + "\n" +
                    R"({"to":"y@d2.test"})" + "\r\n\n");
  EXPECT_THAT(spool_->ListIncoming(), ::testing::ElementsAre("a.job"));
  auto r = Intake("a.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job, "a");
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->rejected, 0u);
  EXPECT_TRUE(fs::exists(root_ / "spool/accepted/a.job"));
  EXPECT_FALSE(fs::exists(root_ / "spool/incoming/a.job"));
  EXPECT_EQ(Queued(r->job_no), 2u);
  auto job = queue_->FindJob("a");
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_EQ((*job)->state, JobState::kReady);
}

TEST_F(SpoolTest, IgnoresDotFiles) {
  std::ofstream(root_ / "spool/incoming/.partial") << "x";
  EXPECT_TRUE(spool_->ListIncoming().empty());
}

TEST_F(SpoolTest, ScanIncomingSaysWhatItIgnoresAndWhy) {
  const fs::path in = root_ / "spool/incoming";
  std::ofstream(in / ".partial") << "x";
  fs::create_directory(in / "folder");
  std::ofstream(root_ / "elsewhere.job") << Header("e") << "\n";
  fs::create_symlink(root_ / "elsewhere.job", in / "link.job");
  ASSERT_EQ(::mkfifo((in / "pipe.job").c_str(), 0600), 0);
  Drop("real.job", Header("real") + "\n");
  const IncomingScan scan = spool_->ScanIncoming();
  EXPECT_THAT(scan.files, ::testing::ElementsAre("real.job"));
  using P = std::pair<std::string, Ignored>;
  EXPECT_THAT(scan.ignored, ::testing::ElementsAre(P{".partial", Ignored::kDotFile},
                                                   P{"folder", Ignored::kDirectory},
                                                   P{"link.job", Ignored::kSymlink},
                                                   P{"pipe.job", Ignored::kFifo}));
  // A symlink named as a file is never followed, even when asked for by name.
  auto r = Intake("link.job");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->waiting.has_value());
  EXPECT_EQ(r->waiting->reason, WaitReason::kGone);
  EXPECT_TRUE(fs::is_symlink(in / "link.job"));
}

TEST(FailedFileNameTest, EveryRefusedFileKeepsItsOwnError) {
  struct Case {
    std::string name;
    std::vector<std::string> taken;
    std::string want;
  };
  const Case cases[] = {
      {"a.job", {}, "a.job"},
      {"a.job", {"a.job", "a.job.error"}, "a.job.1"},
      {"a.job", {"a.job", "a.job.error", "a.job.1", "a.job.1.error"}, "a.job.2"},
      // A .error left without its file (a crash between the two) is not reused.
      {"a.job", {"a.job.error"}, "a.job.1"},
      {"a.job", {"a.job"}, "a.job.1"},
      // The rejects files' names stay theirs.
      {"spring.rejects.jsonl", {}, "spring.rejects.jsonl.1"},
      // "<name>.error" must fit NAME_MAX (255).
      {std::string(300, 'x'), {}, std::string(255 - 6 - 11, 'x')},
  };
  for (const Case& c : cases) {
    const std::string got = FailedFileName(c.name, [&c](const std::string& n) {
      return std::find(c.taken.begin(), c.taken.end(), n) != c.taken.end();
    });
    EXPECT_EQ(got, c.want) << c.name;
  }
  // Cut at a UTF-8 boundary: 119 two-octet characters fit, half of one does not.
  std::string long_utf8;
  for (int i = 0; i < 200; ++i) long_utf8 += "\xc3\xa9";
  EXPECT_EQ(FailedFileName(long_utf8, [](const std::string&) { return false; }).size(), 238u);
}

TEST(AcceptedFileNameTest, ATakenNameGetsACounter) {
  auto taken = [](const std::string& n) { return n == "a.job" || n == "a.job.1"; };
  EXPECT_EQ(AcceptedFileName("a.job", taken), "a.job.2");
  EXPECT_EQ(AcceptedFileName("b.job", taken), "b.job");
}

TEST_F(SpoolTest, TheSameBadFileDroppedTwiceLeavesTwoErrors) {
  Drop("bad.job", "{not json\n");
  ASSERT_TRUE(absl::IsInvalidArgument(Intake("bad.job").status()));
  Drop("bad.job", R"({"job":"n","from":"a@b.test"})" "\n");
  ASSERT_TRUE(absl::IsInvalidArgument(Intake("bad.job").status()));
  EXPECT_THAT(ReadFile(root_ / "spool/failed/bad.job.error"), HasSubstr("incoming/bad.job:1: json: "));
  EXPECT_THAT(ReadFile(root_ / "spool/failed/bad.job.1.error"),
              HasSubstr("incoming/bad.job:1: message: missing"));
  EXPECT_EQ(ReadFile(root_ / "spool/failed/bad.job"), "{not json\n");
  EXPECT_EQ(ReadFile(root_ / "spool/failed/bad.job.1"), R"({"job":"n","from":"a@b.test"})" "\n");
}

TEST_F(SpoolTest, JobIdsThatAreNotFileNamesAreRefused) {
  for (const char* id : {".", ".."}) {
    const std::string name = std::string(id == std::string(".") ? "dot" : "dotdot") + ".job";
    Drop(name, Header(id) + "\n" + R"({"to":"a@d.test"})" "\n");
    auto r = Intake(name);
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_THAT(ReadFile(root_ / "spool/failed" / (name + ".error")),
                HasSubstr("incoming/" + name + ":1: job: must not start with '.'"));
  }
  EXPECT_FALSE(fs::exists(root_ / "spool/failed/..rejects.jsonl"));
  EXPECT_FALSE(fs::exists(root_ / "spool/failed/.rejects.jsonl"));
}

// WRITERS (spool.h): a file still being written is left alone, whatever it holds.
class WritersTest : public SpoolTest {
 protected:
  void SetUp() override {
    SpoolTest::SetUp();
    spool_->SetSettleTime(absl::Seconds(1));
  }
  // Intake as if `later` had passed since the file was last written.
  absl::StatusOr<IntakeResult> IntakeAfter(const std::string& name, absl::Duration later) {
    return spool_->Intake(name, *queue_, JobLimits{}, absl::Now() + later);
  }
  std::optional<WaitReason> WaitOf(const absl::StatusOr<IntakeResult>& r) {
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || !r->waiting.has_value()) return std::nullopt;
    return r->waiting->reason;
  }
  const std::string two_ = Header("w") + "\n" + R"({"to":"a@d.test"})" "\n" +
                           R"({"to":"b@d.test"})" "\n";
};

TEST_F(WritersTest, AFileModifiedWithinTheSettleTimeWaits) {
  Drop("w.job", two_);
  auto r = IntakeAfter("w.job", absl::ZeroDuration());
  EXPECT_EQ(WaitOf(r), WaitReason::kRecentlyModified);
  EXPECT_THAT(r->waiting->detail, HasSubstr("settle_time 1.0s"));
  EXPECT_GT(r->waiting->settles_at, absl::Now());
  EXPECT_TRUE(fs::exists(root_ / "spool/incoming/w.job"));
  EXPECT_FALSE(queue_->FindJob("w")->has_value());
  auto later = IntakeAfter("w.job", absl::Seconds(2));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_FALSE(later->waiting.has_value());
  EXPECT_EQ(later->accepted, 2u);
}

TEST_F(WritersTest, AFileRenamedInDoesNotWaitOutTheSettleTime) {
  Drop("r.job", two_);
  // Modified just now, but seen arriving by rename: complete when it came.
  auto r = spool_->Intake("r.job", *queue_, JobLimits{}, absl::Now(), Arrival::kRenamedIn);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->waiting.has_value());
  EXPECT_EQ(r->accepted, 2u);
  // The other checks stand: a renamed-in file whose last line lacks its LF waits.
  Drop("rn.job", Header("rn") + "\n" + R"({"to":"a@d.test"})" "\n" + R"({"to":"b@d)");
  auto n = spool_->Intake("rn.job", *queue_, JobLimits{}, absl::Now(), Arrival::kRenamedIn);
  EXPECT_EQ(WaitOf(n), WaitReason::kNoFinalLf);
  EXPECT_FALSE(queue_->FindJob("rn")->has_value());
}

TEST_F(WritersTest, AnEmptyFileAndALastLineWithoutLfWait) {
  Drop("e.job", "");
  EXPECT_EQ(WaitOf(IntakeAfter("e.job", absl::Seconds(2))), WaitReason::kEmpty);
  Drop("n.job", Header("n") + "\n" + R"({"to":"a@d.test"})" "\n" + R"({"to":"b@d)");
  EXPECT_EQ(WaitOf(IntakeAfter("n.job", absl::Seconds(2))), WaitReason::kNoFinalLf);
  EXPECT_TRUE(fs::exists(root_ / "spool/incoming/n.job"));
  EXPECT_FALSE(queue_->FindJob("n")->has_value());
  // The writer finishes the line: the whole file is taken.
  std::ofstream(root_ / "spool/incoming/n.job", std::ios::app) << R"(.test"})" "\n";
  auto r = IntakeAfter("n.job", absl::Seconds(2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->waiting.has_value());
  EXPECT_EQ(r->accepted, 2u);
}

TEST_F(WritersTest, AFileOpenForWritingWaitsWhereALeaseCanBeTaken) {
  Drop("o.job", two_);
  {
    std::ofstream writer(root_ / "spool/incoming/o.job", std::ios::app);
    ASSERT_TRUE(writer.is_open());
    auto r = IntakeAfter("o.job", absl::Seconds(2));
    ASSERT_TRUE(r.ok()) << r.status();
    if (!r->lease_unavailable.empty()) {
      GTEST_SKIP() << "no lease on this filesystem: " << r->lease_unavailable;
    }
    EXPECT_EQ(WaitOf(r), WaitReason::kOpenForWriting);
    EXPECT_FALSE(queue_->FindJob("w")->has_value());
  }
  auto r = IntakeAfter("o.job", absl::Seconds(2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->waiting.has_value());
  EXPECT_EQ(r->accepted, 2u);
}

TEST_F(WritersTest, AFileThatGrowsDuringItsIntakeIsDroppedAndTakenAgainWhole) {
  Drop("g.job", two_);
  const fs::path path = root_ / "spool/incoming/g.job";
  int checks = 0;
  // The job check runs after the header is read and before any recipient:
  // the writer appends then, as a slow writer would.
  spool_->SetJobCheck([&](const JobHeader&, const Template&) {
    if (checks++ == 0) std::ofstream(path, std::ios::app) << R"({"to":"c@d.test"})" "\n";
    return absl::OkStatus();
  });
  auto r = IntakeAfter("g.job", absl::Seconds(2));
  EXPECT_EQ(WaitOf(r), WaitReason::kChangedWhileRead);
  EXPECT_FALSE(queue_->FindJob("w")->has_value()) << "what was queued of it is dropped";
  EXPECT_TRUE(fs::exists(path));
  auto again = IntakeAfter("g.job", absl::Seconds(2));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->waiting.has_value());
  EXPECT_FALSE(again->resumed);
  EXPECT_EQ(again->accepted, 3u);
  std::vector<QueuedRecipient> queued;
  for (uint16_t p = 0; p < kPartitions; ++p) {
    ASSERT_TRUE(queue_->TakeDue(again->job_no, p, "", absl::Now() + absl::Seconds(3), 100, &queued).ok());
  }
  EXPECT_EQ(queued.size(), 3u) << "every recipient once";
}

TEST_F(SpoolTest, StructuralErrorsMoveTheFileToFailedWithTheReason) {
  struct Case {
    std::string name, text, want;
  };
  const Case cases[] = {
      {"json.job", "{not json\n", "incoming/json.job:1: "},
      {"nofrom.job", R"({"job":"n","message":"Subject: x\r\n\r\nb"})" "\n", "incoming/nofrom.job:1: from: "},
      {"nomsg.job", R"({"job":"n","from":"a@b.test"})" "\n", "incoming/nomsg.job:1: message: "},
      {"unknown.job", R"({"job":"n","from":"a@b.test","message":"Subject: x\r\n\r\nb","colour":1})" "\n",
       "incoming/unknown.job:1: colour: "},
      {"tpl.job", R"({"job":"n","from":"a@b.test","message":"Subject: {{x\r\n\r\nb"})" "\n",
       "incoming/tpl.job:1: message: "},
  };
  for (const auto& c : cases) {
    Drop(c.name, c.text);
    auto r = Intake(c.name);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_TRUE(fs::exists(root_ / "spool/failed" / c.name)) << c.name;
    EXPECT_FALSE(fs::exists(root_ / "spool/incoming" / c.name)) << c.name;
    EXPECT_THAT(ReadFile(root_ / "spool/failed" / (c.name + ".error")), HasSubstr(c.want))
        << c.name;
  }
}

TEST_F(SpoolTest, BadRecipientLinesAreRejectedAndTheRestProceeds) {
  Drop("r.job", Header("r") + "\n" +
                    R"({"to":"ok1@d.test"})" "\n"
                    "{broken\n"
                    R"({"to":"not-an-address"})" "\n"
                    R"({"to":"ok2@d.test","vars":{"name":"a\r\nBcc: x@evil.test"}})" "\n"
                    R"({"to":"ok3@d.test","vars":{"name":")" + std::string(5000, 'v') + "\"}}\n" +
                    R"({"to":"ok4@d.test"})" "\n");
  auto r = Intake("r.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->rejected, 4u);
  EXPECT_EQ(Queued(r->job_no), 2u);
  const std::string rejects = ReadFile(root_ / "spool/failed/r.rejects.jsonl");
  EXPECT_THAT(rejects, HasSubstr("\"line\":3,"));
  EXPECT_THAT(rejects, HasSubstr("\"line\":4,"));
  EXPECT_THAT(rejects, HasSubstr("\"line\":5,"));
  EXPECT_THAT(rejects, HasSubstr("\"line\":6,"));
  EXPECT_THAT(rejects, ::testing::Not(HasSubstr("\"line\":2,")));
  EXPECT_THAT(rejects, HasSubstr("vars.name"));
}

TEST_F(SpoolTest, ARecipientWhoseValuesRenderALineOver998OctetsIsRejected) {
  // kHeader's line 3 is "Hello {{name|friend}}": 6 literal octets.
  const std::string long_line = R"({"to":"long@d.test","vars":{"name":")";
  Drop("w.job", Header("w") + "\n" +
                    R"({"to":"ok1@d.test","vars":{"name":")" + std::string(992, 'n') + "\"}}\n" +
                    long_line + std::string(993, 'n') + "\"}}\n" +
                    R"({"to":"ok2@d.test"})" "\n");
  auto r = Intake("w.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->rejected, 1u);
  EXPECT_EQ(Queued(r->job_no), 2u);
  EXPECT_TRUE(fs::exists(root_ / "spool/accepted/w.job"));
  EXPECT_EQ(ReadFile(root_ / "spool/failed/w.rejects.jsonl"),
            R"({"file":"incoming/w.job","line":3,"reason":"vars.name: renders message line 3 at 999 octets, over 998","text":"{\"to\":\"long@d.test\",\"vars\":{\"name\":\")" +
                std::string(200 - long_line.size(), 'n') + "\"}\n");
}

TEST_F(SpoolTest, ATemplateWithoutPlaceholdersTakesAnyValues) {
  // Nothing a recipient carries reaches the message, so nothing is too long.
  Drop("n.job", R"({"job":"n","from":"a@b.test","message":"Subject: x\r\n\r\nHello\r\n"})" "\n" +
                    std::string(R"({"to":"a@d.test","vars":{"name":")") +
                    std::string(4096, 'n') + "\"}}\n");
  auto r = Intake("n.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->rejected, 0u);
  EXPECT_FALSE(fs::exists(root_ / "spool/failed/n.rejects.jsonl"));
}

TEST_F(SpoolTest, AJobIdIsAcceptedOnce) {
  Drop("d1.job", Header("dup") + "\n" + R"({"to":"a@d.test"})" "\n");
  auto first = Intake("d1.job");
  ASSERT_TRUE(first.ok()) << first.status();
  Drop("d2.job", Header("dup") + "\n" + R"({"to":"b@d.test"})" "\n");
  auto second = Intake("d2.job");
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(ReadFile(root_ / "spool/failed/d2.job.error"),
              HasSubstr("incoming/d2.job:1: job: \"dup\" was already accepted"));
  EXPECT_EQ(Queued(first->job_no), 1u);
}

TEST_F(SpoolTest, AFileLeftInIncomingAfterItsCommitIsNotQueuedTwice) {
  Drop("c.job", Header("c") + "\n" + R"({"to":"a@d.test"})" "\n");
  auto first = Intake("c.job");
  ASSERT_TRUE(first.ok());
  // As if volleyd died between the commit and the move: the same file (same
  // inode) is back in incoming/.
  fs::rename(root_ / "spool/accepted/c.job", root_ / "spool/incoming/c.job");
  auto again = Intake("c.job");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->resumed);
  EXPECT_TRUE(fs::exists(root_ / "spool/accepted/c.job"));
  EXPECT_EQ(Queued(first->job_no), 1u);
}

TEST_F(SpoolTest, AnInterruptedIntakeResumesOnlyFromItsOwnFile) {
  const std::string text = Header("i") + "\n" + R"({"to":"a@d.test"})" "\n" +
                           R"({"to":"b@d.test"})" "\n";
  Drop("i.job", text);
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "spool/incoming/i.job").c_str(), &st), 0);
  const std::string source = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  // As if volleyd died during the intake of i.job: the job is loading (its
  // recipient batch may or may not have reached RocksDB).
  const absl::Time t = absl::Now();
  auto job = queue_->BeginJob("i", Header("i"), source, t, t);
  ASSERT_TRUE(job.ok()) << job.status();
  {
    auto w = queue_->NewIntakeWriter(*job);
    ASSERT_TRUE(w->Add(2, PartitionOf("d.test"), EncodeRecipient(Recipient{"a@d.test", {}})).ok());
  }
  // Another file with the same job id must not be mixed into it.
  Drop("other.job", Header("i") + "\n" + R"({"to":"z@d.test"})" "\n");
  auto other = Intake("other.job");
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(ReadFile(root_ / "spool/failed/other.job.error"),
              HasSubstr("\"i\" is being taken in from another file"));
  // The job's own file resumes it: every recipient once.
  auto resumed = Intake("i.job");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE(resumed->resumed);
  EXPECT_EQ(resumed->accepted, 2u);
  EXPECT_EQ(Queued(job->job_no), 2u);
  EXPECT_TRUE(fs::exists(root_ / "spool/accepted/i.job"));
}

TEST_F(SpoolTest, OverlongRecipientLineIsRejectedNotStored) {
  JobLimits limits;
  limits.max_recipient_line = 100;
  Drop("l.job", Header("l") + "\n" + R"({"to":"a@d.test","vars":{"name":")" +
                    std::string(500, 'z') + "\"}}\n" + R"({"to":"b@d.test"})" "\n");
  auto r = spool_->Intake("l.job", *queue_, limits, absl::Now());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->rejected, 1u);
  EXPECT_THAT(ReadFile(root_ / "spool/failed/l.rejects.jsonl"), HasSubstr("\"line\":2,"));
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

// Issue 15: what intake refuses before anything is queued, and what it checks per
// recipient for one-click unsubscribe links.
TEST_F(SpoolTest, JobCheckAndMessageHeadersRefuseBeforeQueueing) {
  spool_->SetJobCheck([](const JobHeader& h, const Template&) -> absl::Status {
    if (!h.unsubscribe_url.empty()) return absl::InvalidArgumentError("unsubscribe_url: no key");
    return absl::OkStatus();
  });
  Drop("a.job",
       R"({"job":"a","from":"n@sender.test","unsubscribe_url":"https://u.sender.test/x","message":"Subject: hi\n\nx\n"})"
       "\n{\"to\":\"r@x.test\"}\n");
  absl::StatusOr<IntakeResult> got = Intake("a.job");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(ReadFile(root_ / "spool" / "failed" / "a.job.error"),
              HasSubstr("a.job:1: unsubscribe_url: no key"));
  Drop("b.job",
       R"({"job":"b","from":"n@sender.test","message":"Message-ID: <x@sender.test>\nSubject: hi\n\nx\n"})"
       "\n{\"to\":\"r@x.test\"}\n");
  got = Intake("b.job");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(ReadFile(root_ / "spool" / "failed" / "b.job.error"),
              HasSubstr("b.job:1: message: its Message-ID field has no placeholder"));
  // Neither job was queued.
  EXPECT_FALSE(queue_->FindJob("a")->has_value());
  EXPECT_FALSE(queue_->FindJob("b")->has_value());
}

TEST_F(SpoolTest, UnsubscribeUrlTooLongForOneRecipientRejectsThatLine) {
  Drop("c.job",
       R"({"job":"c","from":"n@sender.test","unsubscribe_url":"https://u.sender.test/?n={{name}}","message":"Subject: hi\n\nx\n"})"
       "\n{\"to\":\"ok@x.test\",\"vars\":{\"name\":\"Ann\"}}\n"
       "{\"to\":\"long@x.test\",\"vars\":{\"name\":\"" + std::string(400, '<') + "\"}}\n");
  absl::StatusOr<IntakeResult> got = Intake("c.job");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->accepted, 1u);
  EXPECT_EQ(got->rejected, 1u);
  EXPECT_THAT(ReadFile(root_ / "spool" / "failed" / "c.rejects.jsonl"),
              HasSubstr("unsubscribe_url: renders longer than 900 octets"));
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

// Intake with the suppression list's check (spool.h, SUPPRESSION): a real list
// in the test's folder.
class SpoolSuppressionTest : public SpoolTest {
 protected:
  void SetUp() override {
    SpoolTest::SetUp();
    auto list = SuppressionList::Open((root_ / "suppression").string(), SuppressionOptions{});
    ASSERT_TRUE(list.ok()) << list.status();
    list_ = *std::move(list);
  }
  void TearDown() override {
    list_.reset();
    SpoolTest::TearDown();
  }
  void Suppress(std::string address, std::string scope = "") {
    Suppression e;
    e.address = std::move(address);
    e.scope = std::move(scope);
    e.reason = SuppressionReason::kComplaint;
    e.source = "test";
    e.added = absl::Now();
    ASSERT_TRUE(list_->Add(e).ok());
  }
  struct Handed {
    std::string job;
    uint32_t line;
    std::string address;
    std::string entry;
  };
  // Hooks that record what they are handed, in order, with the commit.
  void SetHooks() {
    IntakeSuppression s;
    s.list = list_.get();
    s.on_suppressed = [this](const JobRecord& job, uint32_t line, std::string_view address,
                             const Suppression& entry) {
      handed_.push_back({job.id, line, std::string(address), entry.address});
      events_.push_back("suppressed");
      return on_suppressed_status_;
    };
    s.before_commit = [this](const JobRecord& job, uint64_t n) {
      // The job is not ready yet: a crash here leaves it to be taken in again.
      auto record = queue_->FindJob(job.id);
      EXPECT_TRUE(record.ok() && record->has_value());
      if (record.ok() && record->has_value()) {
        EXPECT_EQ((*record)->state, JobState::kLoading);
      }
      events_.push_back("before_commit " + std::to_string(n));
      return absl::OkStatus();
    };
    spool_->SetSuppression(std::move(s));
  }
  std::unique_ptr<SuppressionList> list_;
  std::vector<Handed> handed_;
  std::vector<std::string> events_;
  absl::Status on_suppressed_status_;
};

TEST_F(SpoolSuppressionTest, SuppressedRecipientsAreNotQueuedAndAreHandedToTheCallback) {
  Suppress("Complained@d1.test");
  Suppress("@blocked.test");
  Suppress("brand-only@d1.test", "other-brand.test");  // another From domain: not this job
  Suppress("scoped@d1.test", "sender.test");           // the job's From domain
  SetHooks();
  Drop("s.job", Header("s") + "\n" +
                    R"({"to":"ok1@d1.test"})" "\n"
                    R"({"to":"complained@D1.test"})" "\n"
                    R"({"to":"anyone@blocked.test"})" "\n"
                    R"({"to":"brand-only@d1.test"})" "\n"
                    R"({"to":"scoped@d1.test"})" "\n"
                    "{broken\n");
  auto r = Intake("s.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->suppressed, 3u);
  EXPECT_EQ(r->rejected, 1u);
  EXPECT_EQ(Queued(r->job_no), 2u);
  ASSERT_EQ(handed_.size(), 3u);
  EXPECT_EQ(handed_[0].job, "s");
  EXPECT_EQ(handed_[0].line, 3u);
  EXPECT_EQ(handed_[0].address, "complained@D1.test");  // as the job wrote it
  EXPECT_EQ(handed_[0].entry, "complained@d1.test");
  EXPECT_EQ(handed_[1].line, 4u);
  EXPECT_EQ(handed_[1].entry, "@blocked.test");
  EXPECT_EQ(handed_[2].line, 6u);
  EXPECT_EQ(handed_[2].entry, "scoped@d1.test");
  EXPECT_THAT(events_, ::testing::ElementsAre("suppressed", "suppressed", "suppressed",
                                              "before_commit 3"));
  auto job = queue_->FindJob("s");
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_EQ((*job)->state, JobState::kReady);
  EXPECT_EQ((*job)->recipients, 2u);
}

TEST_F(SpoolSuppressionTest, NoHookQueuesEveryRecipientAsBefore) {
  Suppress("complained@d1.test");
  Drop("n.job", Header("n") + "\n" + R"({"to":"complained@d1.test"})" "\n");
  auto r = Intake("n.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->suppressed, 0u);
}

TEST_F(SpoolSuppressionTest, NothingSuppressedMeansNoBeforeCommit) {
  SetHooks();
  Drop("c.job", Header("c") + "\n" + R"({"to":"fine@d1.test"})" "\n");
  auto r = Intake("c.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_TRUE(events_.empty());
}

TEST_F(SpoolSuppressionTest, AFailingCallbackLeavesTheFileToBeTakenInAgain) {
  Suppress("complained@d1.test");
  SetHooks();
  // Even InvalidArgument from the caller must not read as "job refused".
  on_suppressed_status_ = absl::InvalidArgumentError("committer refused");
  Drop("f.job", Header("f") + "\n" + R"({"to":"ok@d1.test"})" "\n" +
                    R"({"to":"complained@d1.test"})" "\n");
  auto r = Intake("f.job");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_TRUE(fs::exists(root_ / "spool/incoming/f.job"));
  EXPECT_FALSE(fs::exists(root_ / "spool/failed/f.job"));
  // Taken in again once the caller works: the same recipient is handed over again.
  on_suppressed_status_ = absl::OkStatus();
  handed_.clear();
  r = Intake("f.job");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->suppressed, 1u);
  ASSERT_EQ(handed_.size(), 1u);
  EXPECT_EQ(handed_[0].line, 3u);
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

// An undefined placeholder is known at the end of the file, after recipients
// were written: the job is refused before its commit and nothing stays queued.
TEST_F(SpoolTest, AnUndefinedPlaceholderRefusesTheJobAndLeavesNothingQueued) {
  std::string lines;
  // More than one intake batch, so that some were written before the end.
  for (int i = 0; i < 2500; ++i) {
    lines += R"({"to":"r)" + std::to_string(i) + R"(@d.test","vars":{"first":"F"}})" "\n";
  }
  Drop("t.job", R"({"job":"t","from":"a@b.test","message":"Subject: x\r\n\r\nHello {{frist}}\r\n"})"
                "\n" + lines);
  auto r = Intake("t.job");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  const std::string want =
      "incoming/t.job:1: message: line 3: {{frist}}: no recipient defines \"frist\" and the "
      "placeholder has no default; did you mean \"first\"?";
  EXPECT_EQ(std::string(r.status().message()), want);
  EXPECT_EQ(ReadFile(root_ / "spool/failed/t.job.error"), want + "\n");
  EXPECT_TRUE(fs::exists(root_ / "spool/failed/t.job"));
  auto job = queue_->FindJob("t");
  ASSERT_TRUE(job.ok());
  EXPECT_FALSE(job->has_value());
  auto jobs = queue_->ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty());
  // Nothing of it under any job number either.
  for (uint32_t job_no = 0; job_no < 4; ++job_no) EXPECT_EQ(Queued(job_no), 0u);

  // Fixed and dropped again under the same id: taken in.
  Drop("t2.job", R"({"job":"t","from":"a@b.test","message":"Subject: x\r\n\r\nHello {{first|there}}\r\n"})"
                 "\n" R"({"to":"a@d.test"})" "\n" R"({"to":"b@d.test","vars":{"first":"B"}})" "\n");
  auto again = Intake("t2.job");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->accepted, 2u);
  ASSERT_EQ(again->lacking.size(), 1u);
  EXPECT_EQ(again->lacking[0].name, "first");
  EXPECT_EQ(again->lacking[0].recipients, 1u);
}

TEST_F(SpoolTest, AnExpiresInThePastIsRefused) {
  Drop("e.job", R"({"job":"e","from":"a@b.test","message":"Subject: x\r\n\r\nHi\r\n","expires":"2020-01-01T00:00:00Z"})"
                "\n" R"({"to":"a@d.test"})" "\n");
  auto r = Intake("e.job");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message())
                .find("incoming/e.job:1: expires: 2020-01-01T00:00:00Z is in the past"),
            std::string::npos)
      << r.status();
  auto job = queue_->FindJob("e");
  ASSERT_TRUE(job.ok());
  EXPECT_FALSE(job->has_value());
}

}  // namespace
}  // namespace volley::queue
