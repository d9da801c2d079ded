// job_check_test.cc - the checks a job gets before anything is queued
// (queue/job_check.h): undefined placeholders and the suggestion, lacking
// counts, expires in the past, and CheckJobFile on real files.
#include "queue/job_check.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace volley::queue {
namespace {

std::string HeaderWith(const std::string& message, const std::string& extra = "") {
  return R"({"job":"j","from":"news@sender.test","message":")" + message + "\"" + extra + "}";
}

absl::Status CheckLines(const std::string& header, const std::vector<std::string>& lines) {
  auto check = JobFileCheck::Start(header, JobLimits{});
  if (!check.ok()) return check.status();
  for (const std::string& l : lines) (void)check->CheckRecipient(l);
  return check->Finish();
}

TEST(JobFileCheckTest, AnUndefinedPlaceholderRefusesTheJobWithASuggestion) {
  const absl::Status st = CheckLines(HeaderWith(R"(Subject: hi\n\nHello {{frist}}\n)"),
                              {R"({"to":"a@d.test","vars":{"first":"Ann"}})",
                               R"({"to":"b@d.test","vars":{"first":"Bob"}})"});
  EXPECT_EQ(std::string(st.message()),
            "message: line 3: {{frist}}: no recipient defines \"frist\" and the placeholder has "
            "no default; did you mean \"first\"?");
}

TEST(JobFileCheckTest, VerdictTable) {
  const std::string one_var = R"({"to":"a@d.test","vars":{"first":"Ann"}})";
  const struct {
    std::string header;
    std::vector<std::string> lines;
    std::string want;  // "" = accepted
  } cases[] = {
      // A default covers a variable nobody defines.
      {HeaderWith(R"(Subject: hi\n\nHello {{frist|there}}\n)"), {one_var}, ""},
      // Defined by one recipient is enough (the others lack it).
      {HeaderWith(R"(Subject: hi\n\n{{city}}\n)"),
       {one_var, R"({"to":"b@d.test","vars":{"city":""}})"}, ""},
      // Builtins are always defined.
      {HeaderWith(R"(Subject: {{to}}\n\n{{unsubscribe_token}}\n)"), {one_var}, ""},
      // No accepted recipient: nothing would be sent wrongly.
      {HeaderWith(R"(Subject: hi\n\n{{nobody}}\n)"), {"not json"}, ""},
      // A rejected line defines nothing.
      {HeaderWith(R"(Subject: hi\n\n{{city}}\n)"),
       {one_var, R"({"to":"bad","vars":{"city":"x"}})"},
       "message: line 3: {{city}}: no recipient defines \"city\" and the placeholder has no "
       "default"},
      // The line named is the first without a default.
      {HeaderWith(R"(Subject: {{x|y}}\n\n{{x}}\n)"), {one_var},
       "message: line 3: {{x}}: no recipient defines \"x\" and the placeholder has no default"},
      // Case differs: still suggested.
      {HeaderWith(R"(Subject: hi\n\n{{First}}\n)"), {one_var},
       "message: line 3: {{First}}: no recipient defines \"First\" and the placeholder has no "
       "default; did you mean \"first\"?"},
      // Inline templates are checked too.
      {HeaderWith(R"(Subject: hi\n\nx\n)", R"(,"return_path":"b-{{tag}}@sender.test")"), {one_var},
       "return_path: {{tag}}: no recipient defines \"tag\" and the placeholder has no default"},
  };
  for (const auto& c : cases) {
    const absl::Status st = CheckLines(c.header, c.lines);
    EXPECT_EQ(std::string(st.message()), c.want) << c.header;
  }
}

TEST(JobFileCheckTest, ManyUndefinedAreListedUpToTheBound) {
  const absl::Status st = CheckLines(
      HeaderWith(R"(Subject: hi\n\n{{a1}}{{a2}}{{a3}}{{a4}}{{a5}}{{a6}}{{a7}}\n)"),
      {R"({"to":"a@d.test","vars":{"zzzzzz":"1"}})"});
  const std::string got(st.message());
  EXPECT_NE(got.find("{{a5}}"), std::string::npos) << got;
  EXPECT_EQ(got.find("{{a6}}"), std::string::npos) << got;
  EXPECT_NE(got.find("; and 2 more undefined placeholders"), std::string::npos) << got;
}

TEST(JobFileCheckTest, LackingCountsMissingAndEmptyValues) {
  auto check = JobFileCheck::Start(
      HeaderWith(R"(Subject: {{first|there}}\n\n{{city}} {{zip}}\n)"), JobLimits{});
  ASSERT_TRUE(check.ok()) << check.status();
  for (const char* line : {R"({"to":"a@d.test","vars":{"first":"A","city":"X","zip":"1"}})",
                           R"({"to":"b@d.test","vars":{"first":"","zip":"2"}})",
                           R"({"to":"c@d.test","vars":{"zip":"3"}})"}) {
    ASSERT_TRUE(check->CheckRecipient(line).ok()) << line;
  }
  EXPECT_TRUE(check->Finish().ok());
  EXPECT_EQ(check->accepted(), 3u);
  const std::vector<LackingVariable> lacking = check->Lacking();
  ASSERT_EQ(lacking.size(), 2u);
  EXPECT_EQ(lacking[0].name, "first");
  EXPECT_EQ(lacking[0].recipients, 2u);
  EXPECT_TRUE(lacking[0].has_default);
  EXPECT_EQ(lacking[1].name, "city");
  EXPECT_EQ(lacking[1].recipients, 2u);
  EXPECT_FALSE(lacking[1].has_default);
  EXPECT_EQ(FormatLacking(lacking, 8), "first 2 (default used), city 2 (rendered empty)");
  EXPECT_EQ(FormatLacking(lacking, 1), "first 2 (default used), and 1 more");
  EXPECT_EQ(FormatLacking({}, 8), "");
}

TEST(JobFileCheckTest, ExpiresInThePastIsRefused) {
  const absl::Time now = absl::FromUnixSeconds(1796500000);  // 2026-12-05T...
  auto past = JobFileCheck::Start(
      HeaderWith(R"(Subject: hi\n\nx\n)", R"(,"expires":"2026-01-01T00:00:00Z")"), JobLimits{});
  ASSERT_TRUE(past.ok()) << past.status();
  EXPECT_EQ(std::string(past->CheckTimes(now).message()),
            "expires: 2026-01-01T00:00:00Z is in the past (now " +
                absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", now, absl::UTCTimeZone()) +
                "); every recipient would expire unsent");
  auto order = JobFileCheck::Start(
      HeaderWith(R"(Subject: hi\n\nx\n)", R"(,"expires":"2027-01-01T00:00:00Z","send_after":"2027-02-01T00:00:00Z")"),
      JobLimits{});
  // The parser refuses that order already.
  EXPECT_EQ(std::string(order.status().message()), "expires: must be later than send_after");
  auto future = JobFileCheck::Start(
      HeaderWith(R"(Subject: hi\n\nx\n)", R"(,"expires":"2027-01-01T00:00:00Z")"), JobLimits{});
  ASSERT_TRUE(future.ok());
  EXPECT_TRUE(future->CheckTimes(now).ok());
}

TEST(JobFileCheckTest, EditDistanceAndClosestName) {
  EXPECT_EQ(EditDistance("first", "first"), 0u);
  EXPECT_EQ(EditDistance("frist", "first"), 1u);  // a transposition is one step
  EXPECT_EQ(EditDistance("first", "firsts"), 1u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("abcdef", "uvwxyz", 2), 3u);
  const std::vector<std::string> names = {"city", "first", "last"};
  EXPECT_EQ(ClosestName("frist", names), "first");
  EXPECT_EQ(ClosestName("cty", names), "city");
  EXPECT_EQ(ClosestName("zip", names), "");
  EXPECT_EQ(ClosestName("x", {"y"}), "y");
  EXPECT_EQ(ClosestName("ab", {"xy"}), "");
  EXPECT_EQ(ClosestName("tag", {"to"}), "");
}

TEST(CheckJobFileTest, ReportsRejectedLinesAndRefusals) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("volley-job-check-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string good = (dir / "good.job").string();
  std::ofstream(good) << HeaderWith(R"(Subject: hi\n\nHello {{first|there}} {{city}}\n)") << "\n"
                      << R"({"to":"a@d.test","vars":{"first":"Ann","city":"X"}})" << "\n"
                      << "not json\n\n"
                      << R"({"to":"c@d.test"})" << "\n";
  std::vector<std::string> rejected;
  auto report = CheckJobFile(good, "good.job", JobLimits{}, absl::Now(),
                             [&](const RejectedLine& r) {
                               rejected.push_back(std::to_string(r.line) + ": " +
                                                  std::string(r.reason));
                             });
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->job, "j");
  EXPECT_EQ(report->accepted, 2u);
  EXPECT_EQ(report->rejected, 1u);
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0].substr(0, 8), "3: json:");
  ASSERT_EQ(report->lacking.size(), 2u);

  const std::string bad = (dir / "bad.job").string();
  std::ofstream(bad) << HeaderWith(R"(Subject: hi\n\nHello {{frist}}\n)") << "\n"
                     << R"({"to":"a@d.test","vars":{"first":"Ann"}})" << "\n";
  auto refused = CheckJobFile(bad, "bad.job", JobLimits{}, absl::Now(), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(std::string(refused.status().message()),
            "bad.job:1: message: line 3: {{frist}}: no recipient defines \"frist\" and the "
            "placeholder has no default; did you mean \"first\"?");

  const std::string empty = (dir / "empty.job").string();
  std::ofstream(empty) << "";
  auto nothing = CheckJobFile(empty, "empty.job", JobLimits{}, absl::Now(), nullptr);
  EXPECT_EQ(std::string(nothing.status().message()), "empty.job:1: header: empty file");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

TEST(ReturnPathDefaultTest, ADefaultStandsForAMissingValue) {
  auto h = ParseJobHeader(
      R"({"job":"j","from":"a@b.test","message":"S: x\n\nx","return_path":"b-{{id|none}}@x.test"})",
      JobLimits{});
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(RenderReturnPath(*h, Recipient{"r@d.test", {}}), "b-none@x.test");
  EXPECT_EQ(RenderReturnPath(*h, Recipient{"r@d.test", {{"id", "7"}}}), "b-7@x.test");
}

}  // namespace
}  // namespace volley::queue
