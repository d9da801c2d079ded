// submit_test.cc - volleyctl submit (tools/volleyctl/submit.h) into a real spool
// folder: the job file it drops, the bad rows it names, and what it refuses.
#include "tools/volleyctl/submit.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tools/volleyctl/job_file.h"

namespace volley::ctl {
namespace {

class SubmitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("volley-submit-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (const char* sub : {"incoming", "accepted", "failed", "tmp"}) {
      std::filesystem::create_directories(dir_ / "spool" / sub);
    }
    req_.from = "news@sender.test";
    req_.template_path = Write("t.eml", kTemplate);
    req_.spool = (dir_ / "spool").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  absl::StatusOr<SubmitResult> Run() {
    bad_.clear();
    return Submit(req_, nullptr, absl::Now(), [&](const std::string& b) { bad_.push_back(b); });
  }
  size_t FilesIn(const char* sub) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_ / "spool" / sub))
      ++n;
    return n;
  }

  static constexpr char kTemplate[] =
      "From: News <news@sender.test>\nTo: {{to}}\nSubject: Hi {{name|there}}\n\nCode {{code}}.\n";
  std::filesystem::path dir_;
  SubmitRequest req_;
  std::vector<std::string> bad_;
};

TEST_F(SubmitTest, GoodRowsBecomeTheJobBadRowsAreNamed) {
  req_.recipients_path = Write("list.csv",
                               "\xEF\xBB\xBF" "email,name,code\r\n"
                               "ann@d.test,\"Smith, Ann\",1\r\n"
                               "bad,Bob,2\r\n"
                               "zoe@d.test,Zoë\r\n"
                               ",Nobody,3\r\n"
                               "eve@d.test,\"Eve\r\nBcc: x@d.test\",4\r\n"
                               "yu@d.test,山田,5\r\n");
  req_.job_id = "spring";
  auto r = Run();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job_id, "spring");
  EXPECT_EQ(r->recipients, 2u);
  EXPECT_EQ(r->bad_rows, 4u);
  const std::string& csv = req_.recipients_path;
  EXPECT_EQ(bad_, (std::vector<std::string>{
                      csv + ":3: email (to): invalid address",
                      csv + ":4: has 2 fields; the header row has 3",
                      csv + ":5: email: empty address",
                      csv + ":6: vars.name: contains CR or LF",
                  }));
  EXPECT_EQ(r->path, req_.spool + "/incoming/spring.job");
  EXPECT_EQ(FilesIn("tmp"), 0u);
  const std::string job = Read(r->path);
  EXPECT_EQ(job.substr(job.find('\n') + 1),
            "{\"to\":\"ann@d.test\",\"vars\":{\"email\":\"ann@d.test\",\"name\":\"Smith, "
            "Ann\",\"code\":\"1\"}}\n"
            "{\"to\":\"yu@d.test\",\"vars\":{\"email\":\"yu@d.test\",\"name\":\"山田\",\"code\":"
            "\"5\"}}\n");
  // What intake will make of it: volleyctl check, the same code.
  auto report = CheckFile(r->path, nullptr, absl::Now(), nullptr);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->file.accepted, 2u);
  EXPECT_EQ(report->file.rejected, 0u);
}

TEST_F(SubmitTest, StrictRefusesTheFileAndLeavesNothing) {
  req_.recipients_path = Write("list.csv", "email,name,code\na@d.test,A,1\nbad,B,2\n");
  req_.strict = true;
  auto r = Run();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            req_.recipients_path + ": 1 bad row and --strict: nothing submitted");
  EXPECT_EQ(bad_.size(), 1u);
  EXPECT_EQ(FilesIn("tmp"), 0u);
  EXPECT_EQ(FilesIn("incoming"), 0u);
}

TEST_F(SubmitTest, RefusesWhatIntakeRefusesWithItsMessage) {
  // No "code" column: the template's {{code}} would render empty for everyone.
  req_.recipients_path = Write("list.csv", "email,name\na@d.test,A\n");
  auto r = Run();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "message: line 5: {{code}}: no recipient defines \"code\" and the placeholder has no "
            "default");
  req_.template_path = Write("broken.eml", "Subject: {{oops\n\nx\n");
  r = Run();
  EXPECT_EQ(r.status().message(), "message: line 1: unclosed {{");
  req_.template_path = Write("t2.eml", "Subject: x\n\nx\n");
  req_.job_id = "-x";
  r = Run();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().substr(0, 5), "job: ");
  EXPECT_EQ(FilesIn("tmp") + FilesIn("incoming"), 0u);
}

TEST_F(SubmitTest, HeaderRowProblemsRefuseTheFile) {
  req_.recipients_path = Write("list.csv", "mail,name\na@d.test,A\n");
  auto r = Run();
  EXPECT_EQ(r.status().message(),
            req_.recipients_path +
                ":1: header row: no \"email\" or \"address\" column (--address-column names "
                "another)");
  req_.address_column = "mail";
  req_.template_path = Write("t2.eml", "Subject: {{name}}\n\nx\n");
  r = Run();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->recipients, 1u);

  req_.recipients_path = Write("list2.csv", "email,First Name\na@d.test,A\n");
  r = Run();
  EXPECT_EQ(r.status().message(),
            req_.recipients_path +
                ":1: header row: column 2 \"First Name\" is not a variable name ([A-Za-z0-9_.-], "
                "1..64 characters, as in {{name}})");
  req_.recipients_path = Write("empty.csv", "");
  r = Run();
  EXPECT_EQ(r.status().message(), req_.recipients_path + ": no header row");
}

TEST_F(SubmitTest, NeverOverwritesAJob) {
  req_.recipients_path = Write("list.csv", "email,name,code\na@d.test,A,1\n");
  req_.job_id = "j1";
  Write("spool/incoming/j1.job", "keep me\n");
  auto r = Run();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.status().message(),
            req_.spool + "/incoming/j1.job: exists; not overwritten (choose another --job)");
  EXPECT_EQ(Read(req_.spool + "/incoming/j1.job"), "keep me\n");

  // Accepted before, under another file name: intake would refuse it.
  std::filesystem::rename(dir_ / "spool/incoming/j1.job", dir_ / "spool/accepted/old.jsonl");
  Write("spool/accepted/old.jsonl", "{\"job\":\"j1\"}\n");
  r = Run();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(r.status().message().find("was already accepted"), std::string::npos);
  EXPECT_EQ(FilesIn("tmp") + FilesIn("incoming"), 0u);
}

TEST_F(SubmitTest, GeneratedIdsSortByTimeAndNameTheList) {
  const absl::Time t = absl::FromUnixSeconds(1796598000);  // 2026-12-06T23:00:00Z
  EXPECT_EQ(NewJobId("/x/My List.csv", t, 0x5f0c2a91), "20261206T230000Z-My_List-5f0c2a91");
  EXPECT_EQ(NewJobId("/x/.csv", t, 1), "20261206T230000Z-.csv-00000001");
  EXPECT_LT(NewJobId("b.csv", t, 9), NewJobId("a.csv", t + absl::Seconds(1), 0));
  req_.recipients_path = Write("list.csv", "email,name,code\na@d.test,A,1\n");
  auto r = Run();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->job_id.find("-list-"), 16u);
  EXPECT_TRUE(std::filesystem::exists(r->path));
}

}  // namespace
}  // namespace volley::ctl
