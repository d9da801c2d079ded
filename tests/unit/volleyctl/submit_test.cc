// submit_test.cc - volleyctl submit (tools/volleyctl/submit.h) into a real spool
// folder: the job file it drops, the bad rows it names, and what it refuses.
#include "tools/volleyctl/submit.h"

#include <unistd.h>

#include <filesystem>
#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
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

// A list of `n` recipients over `domains` domains, with the bad row the split
// must leave out like submit does; returns the addresses in list order.
std::vector<std::string> ListOf(int n, int domains, std::string* csv) {
  std::vector<std::string> addresses;
  *csv = "email,name,code\n";
  for (int i = 0; i < n; ++i) {
    addresses.push_back("r" + std::to_string(i) + "@d" + std::to_string(i % domains) + ".test");
    *csv += addresses.back() + ",N" + std::to_string(i) + "," + std::to_string(i) + "\n";
    if (i == 3) *csv += "not-an-address,X,0\n";
  }
  return addresses;
}

// The job file's header and its recipients' "to", in file order.
struct JobFileText {
  std::string header;
  std::vector<std::string> to;
};
JobFileText ReadJobFile(const std::string& text) {
  JobFileText out;
  std::istringstream in(text);
  std::string line;
  std::getline(in, out.header);
  while (std::getline(in, line)) {
    const size_t at = line.find("\"to\":\"") + 6;
    out.to.push_back(line.substr(at, line.find('"', at) - at));
  }
  return out;
}

TEST_F(SubmitTest, SplitDealsEveryRecipientToExactlyOneNodesSpool) {
  std::vector<std::string> spools;
  for (const char* node : {"a", "b", "c"}) {
    for (const char* sub : {"incoming", "accepted", "tmp"}) {
      std::filesystem::create_directories(dir_ / node / sub);
    }
    spools.push_back((dir_ / node).string());
  }
  std::string csv;
  const std::vector<std::string> all = ListOf(100, 7, &csv);
  req_.recipients_path = Write("list.csv", csv);
  req_.job_id = "spring";
  req_.split = 3;
  req_.spools = spools;
  auto r = Run();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->recipients, 100u);
  EXPECT_EQ(r->bad_rows, 1u);
  EXPECT_EQ(bad_.size(), 1u);
  ASSERT_EQ(r->parts.size(), 3u);
  std::vector<std::string> headers;
  std::multiset<std::string> seen;
  for (size_t k = 0; k < 3; ++k) {
    const SubmitPart& p = r->parts[k];
    EXPECT_EQ(p.job_id, "spring-" + std::to_string(k + 1));
    EXPECT_EQ(p.path, spools[k] + "/incoming/spring-" + std::to_string(k + 1) + ".job");
    const JobFileText job = ReadJobFile(Read(p.path));
    EXPECT_EQ(job.to.size(), p.recipients);
    // Round robin: 34, 33, 33, and in list order within each part.
    EXPECT_EQ(p.recipients, k == 0 ? 34u : 33u);
    for (size_t i = 0; i < job.to.size(); ++i) EXPECT_EQ(job.to[i], all[k + 3 * i]);
    seen.insert(job.to.begin(), job.to.end());
    // The same header but for the id.
    std::string header = job.header;
    const std::string id = "\"job\":\"" + p.job_id + "\"";
    ASSERT_NE(header.find(id), std::string::npos) << header;
    headers.push_back(header.replace(header.find(id), id.size(), "\"job\":\"ID\""));
    // Each is a job intake accepts whole.
    auto report = CheckFile(p.path, nullptr, absl::Now(), nullptr);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->file.accepted, p.recipients);
    EXPECT_EQ(report->file.rejected, 0u);
    EXPECT_TRUE(std::filesystem::is_empty(spools[k] + "/tmp"));
  }
  EXPECT_EQ(headers[0], headers[1]);
  EXPECT_EQ(headers[0], headers[2]);
  EXPECT_EQ(seen, std::multiset<std::string>(all.begin(), all.end()));  // each exactly once
}

TEST_F(SubmitTest, SplitByDomainKeepsEachDomainInOnePart) {
  std::string csv;
  const std::vector<std::string> all = ListOf(60, 6, &csv);
  // The same domain in another case goes with its own.
  csv += "UP@D1.TEST,U,9\n";
  req_.recipients_path = Write("list.csv", csv);
  req_.job_id = "j";
  req_.split = 4;
  req_.split_by = SplitBy::kDomain;
  req_.out_dir = (dir_ / "out").string();
  std::filesystem::create_directories(req_.out_dir);
  auto r = Run();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->parts.size(), 4u);
  std::map<std::string, size_t> part_of_domain;
  size_t total = 0;
  for (size_t k = 0; k < 4; ++k) {
    const SubmitPart& p = r->parts[k];
    if (p.recipients == 0) {
      EXPECT_EQ(p.path, "");  // a node with nothing to send gets no job
      EXPECT_FALSE(std::filesystem::exists(req_.out_dir + "/j-" + std::to_string(k + 1) + ".job"));
      continue;
    }
    EXPECT_EQ(p.path, req_.out_dir + "/j-" + std::to_string(k + 1) + ".job");
    for (const std::string& to : ReadJobFile(Read(p.path)).to) {
      ++total;
      std::string domain = to.substr(to.find('@') + 1);
      for (char& c : domain) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto [it, fresh] = part_of_domain.emplace(domain, k);
      EXPECT_EQ(it->second, k) << to << " is not with the rest of " << domain;
      EXPECT_EQ(PartOfDomain(domain, 4), k);
    }
  }
  EXPECT_EQ(total, all.size() + 1);
  EXPECT_EQ(part_of_domain.size(), 6u);
  // Only the finished files: no temporary name left in the folder.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(req_.out_dir)) {
    EXPECT_EQ(e.path().extension(), ".job") << e.path();
    ++files;
  }
  EXPECT_EQ(files, static_cast<size_t>(std::count_if(
                       r->parts.begin(), r->parts.end(),
                       [](const SubmitPart& p) { return !p.path.empty(); })));
}

TEST_F(SubmitTest, SplitRefusesABadCountAndTooFewSpoolsBeforeWritingAnything) {
  std::string csv;
  ListOf(10, 2, &csv);
  req_.recipients_path = Write("list.csv", csv);
  for (int bad : {0, -1, kMaxSplit + 1}) {
    req_.split = bad;
    req_.out_dir = dir_.string();
    auto r = Run();
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("--split"), std::string::npos) << r.status();
  }
  req_.out_dir.clear();
  req_.split = 3;
  req_.spools = {req_.spool, req_.spool};
  auto r = Run();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("--split 3 needs 3 spools"), std::string::npos)
      << r.status();
  // A part's file already there: nothing of the others is written either.
  req_.split = 2;
  req_.job_id = "j";
  Write("spool/incoming/j-2.job", "keep me\n");
  r = Run();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
  EXPECT_EQ(FilesIn("incoming"), 1u);
  EXPECT_EQ(FilesIn("tmp"), 0u);
  EXPECT_EQ(ParseSplitBy("domain").value(), SplitBy::kDomain);
  EXPECT_EQ(ParseSplitBy("round-robin").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace volley::ctl
