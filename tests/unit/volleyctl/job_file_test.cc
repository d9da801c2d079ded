// job_file_test.cc - volleyctl check and render on real job files
// (tools/volleyctl/job_file.h): the summary, rejected lines, refusals, and one
// recipient's composed message with the fields Volley adds.
#include "tools/volleyctl/job_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "engine/config.h"
#include "gtest/gtest.h"

namespace volley::ctl {
namespace {

class JobFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("volley-job-file-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  std::filesystem::path dir_;
};

constexpr char kJob[] =
    R"({"job":"j1","from":"news@sender.test","message":"From: News <news@sender.test>\r\nTo: {{to}}\r\nSubject: Hi {{first|there}}\r\n\r\nCity: {{city}}.\r\n"})"
    "\n"
    R"({"to":"ann@d.test","vars":{"first":"Ann","city":"Oslo"}})"
    "\n"
    R"({"to":"bad"})"
    "\n"
    R"({"to":"bob@d.test"})"
    "\n";

TEST_F(JobFileTest, CheckSummarisesAndListsRejectedLines) {
  const std::string path = Write("a.job", kJob);
  std::vector<std::string> rejected;
  auto report = CheckFile(path, nullptr, absl::Now(),
                          [&](const std::string& line) { rejected.push_back(line); });
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0], path + ":3: rejected: to: invalid address");
  EXPECT_EQ(FormatCheckReport(path, *report),
            path + ": job \"j1\" would be accepted: 2 recipients, 1 rejected; lacking variables: "
                   "first 1 (default used), city 1 (rendered empty)\n");
}

TEST_F(JobFileTest, CheckRefusesWhatIntakeRefuses) {
  const std::string path = Write(
      "t.job", R"({"job":"t","from":"a@b.test","message":"S: x\n\n{{frist}}\n"})" "\n"
               R"({"to":"a@d.test","vars":{"first":"A"}})" "\n");
  auto report = CheckFile(path, nullptr, absl::Now(), nullptr);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(std::string(report.status().message()),
            path + ":1: message: line 3: {{frist}}: no recipient defines \"frist\" and the "
                   "placeholder has no default; did you mean \"first\"?");
  // With volleyd's config, its key checks too: a token needs a [[token_key]].
  const std::string token = Write(
      "k.job", R"({"job":"k","from":"a@b.test","message":"S: {{unsubscribe_token}}\n\nx\n"})" "\n");
  auto config = engine::ParseConfig("", "t.toml");
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(CheckFile(token, nullptr, absl::Now(), nullptr).ok());
  auto keys = CheckFile(token, &*config, absl::Now(), nullptr);
  ASSERT_FALSE(keys.ok());
  EXPECT_EQ(std::string(keys.status().message()).rfind(token + ":1: ", 0), 0u) << keys.status();
}

TEST_F(JobFileTest, RenderComposesOneRecipientsMessage) {
  const std::string path = Write("a.job", kJob);
  auto config = engine::ParseConfig("", "t.toml");
  ASSERT_TRUE(config.ok());
  auto bob = RenderLine(path, 4, *config, absl::FromUnixSeconds(1796500000));
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(bob->mail_from, "news@sender.test");
  EXPECT_EQ(bob->rcpt, "bob@d.test");
  EXPECT_EQ(bob->message.rfind("Message-ID: <j1.4.", 0), 0u) << bob->message;
  EXPECT_NE(bob->message.find("\r\nDate: "), std::string::npos);
  EXPECT_NE(bob->message.find("\r\nTo: bob@d.test\r\nSubject: Hi there\r\n\r\nCity: .\r\n"),
            std::string::npos)
      << bob->message;

  auto rejected = RenderLine(path, 3, *config, absl::Now());
  EXPECT_EQ(std::string(rejected.status().message()), path + ":3: to: invalid address");
  auto header = RenderLine(path, 1, *config, absl::Now());
  EXPECT_EQ(std::string(header.status().message()),
            path + ":1: line 1 is the job header, not a recipient");
  auto past_end = RenderLine(path, 9, *config, absl::Now());
  EXPECT_TRUE(absl::IsNotFound(past_end.status())) << past_end.status();
}

}  // namespace
}  // namespace volley::ctl
