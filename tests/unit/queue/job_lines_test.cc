// Tests of reading accepted job files by line (queue/job_lines.h): the sparse
// index across its stride, the line ends intake counts, finding a file by the
// job id in its header, and the errors that name the file and the line.
#include "queue/job_lines.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::queue {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class JobLinesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("job_lines_", ::getpid(), "_",
                                                         ::testing::UnitTest::GetInstance()
                                                             ->current_test_info()
                                                             ->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "accepted");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A job file of `recipients` recipient lines, r<n>@d.test on line n + 1.
  std::string WriteJob(const std::string& name, const std::string& id, int recipients,
                       const std::string& line_end = "\n", bool last_lf = true) {
    const std::string path = (dir_ / "accepted" / name).string();
    std::ofstream out(path, std::ios::binary);
    out << R"({"job":")" << id << R"(","from":"n@sender.test","message":"Subject: s\n\nb\n"})"
        << line_end;
    for (int i = 1; i <= recipients; ++i) {
      out << R"({"to":"r)" << (i + 1) << R"(@d.test"})";
      if (i < recipients || last_lf) out << line_end;
    }
    return path;
  }

  fs::path dir_;
};

TEST_F(JobLinesTest, EveryLineAcrossSeveralStridesReadsBack) {
  const int n = static_cast<int>(JobFileLines::kStride) * 3 + 17;
  const std::string path = WriteJob("big.job", "big", n);
  absl::StatusOr<std::unique_ptr<JobFileLines>> f = JobFileLines::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->lines(), static_cast<uint32_t>(n + 1));
  for (uint32_t line : {2u, 3u, JobFileLines::kStride, JobFileLines::kStride + 1,
                        JobFileLines::kStride + 2, 2 * JobFileLines::kStride + 1,
                        static_cast<uint32_t>(n + 1)}) {
    absl::StatusOr<std::string> text = (*f)->Line(line, 1000);
    ASSERT_TRUE(text.ok()) << line << ": " << text.status();
    EXPECT_EQ(*text, absl::StrCat(R"({"to":"r)", line, R"(@d.test"})")) << line;
  }
  EXPECT_THAT((*f)->Line(n + 2, 1000).status().message(), HasSubstr("has no line"));
  EXPECT_THAT((*f)->Line(0, 1000).status().message(), HasSubstr("has no line 0"));
}

TEST_F(JobLinesTest, CrLfAndALastLineWithoutLfCountAsIntakeCountsThem) {
  const std::string path = WriteJob("crlf.job", "crlf", 3, "\r\n", /*last_lf=*/false);
  absl::StatusOr<std::unique_ptr<JobFileLines>> f = JobFileLines::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->lines(), 4u);
  EXPECT_EQ(*(*f)->Line(2, 1000), R"({"to":"r2@d.test"})");
  EXPECT_EQ(*(*f)->Line(4, 1000), R"({"to":"r4@d.test"})");
}

TEST_F(JobLinesTest, ALineOverTheBoundIsRefusedNotCut) {
  const std::string path = WriteJob("long.job", "long", 2);
  absl::StatusOr<std::unique_ptr<JobFileLines>> f = JobFileLines::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::string> text = (*f)->Line(2, 5);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr("line 2 is longer than 5 octets"));
}

TEST_F(JobLinesTest, FilesAreFoundByTheJobIdInTheirHeaderNotByName) {
  WriteJob("a.job", "spring-sale", 5);
  WriteJob("b.job", "autumn", 5);
  AcceptedJobFiles files(dir_.string());
  absl::StatusOr<std::string> rcpt = files.RecipientAt("spring-sale", 4, JobLimits{});
  ASSERT_TRUE(rcpt.ok()) << rcpt.status();
  EXPECT_EQ(*rcpt, "r4@d.test");
  EXPECT_THAT(files.PathOf("spring-sale").value_or(""), HasSubstr("/accepted/a.job"));
  // A job accepted after the first scan is found by scanning again.
  WriteJob("c.job", "winter", 5);
  EXPECT_EQ(files.RecipientAt("winter", 6, JobLimits{}).value_or(""), "r6@d.test");
  absl::StatusOr<std::string> none = files.RecipientAt("summer", 2, JobLimits{});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("is job \"summer\""));
  absl::StatusOr<std::string> header = files.RecipientAt("autumn", 1, JobLimits{});
  EXPECT_THAT(header.status().message(), HasSubstr("line 1 is the job header"));
  absl::StatusOr<std::string> past = files.RecipientAt("autumn", 99, JobLimits{});
  EXPECT_THAT(past.status().message(), HasSubstr("b.job: has no line 99"));
}

TEST_F(JobLinesTest, ALineThatIsNotARecipientSaysWhere) {
  const std::string path = (dir_ / "accepted" / "bad.job").string();
  std::ofstream(path) << R"({"job":"bad","from":"n@sender.test","message":"S: s\n\nb\n"})"
                      << "\nnot json\n";
  AcceptedJobFiles files(dir_.string());
  absl::StatusOr<std::string> rcpt = files.RecipientAt("bad", 2, JobLimits{});
  ASSERT_FALSE(rcpt.ok());
  EXPECT_THAT(rcpt.status().message(), HasSubstr("bad.job: line 2: "));
}

}  // namespace
}  // namespace volley::queue
