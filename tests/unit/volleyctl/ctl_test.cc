// ctl_test.cc - volleyctl's logic without a daemon: answers, config, VERP decoding,
// job files
#include "tools/volleyctl/ctl.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "engine/dkim/dkim.h"
#include "engine/token/token.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/http/server.h"

namespace volley::ctl {
namespace {

using ::testing::HasSubstr;

constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "ctl_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  std::string Write(const std::string& name, const std::string& content, mode_t mode = 0600) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string dir_;
};

// CallTest - Call against a real HTTP server on loopback (http::Server, the
// one volleyd's admin API runs on).
class CallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sockaddr_storage ss{};
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto s = http::Server::Create(ss, http::ServerOptions{});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    server_->Route("/jobs", [](const http::Request& r) {
      return http::Response{200, "application/json",
                            absl::StrCat("{\"method\":\"", base::Sv(r.method), "\",\"length\":",
                                         r.content_length, "}\n"),
                            {}};
    });
    server_->Route("/jobs/", [](const http::Request&) {
      return http::Response{404, "application/json", "{\"error\":\"no such job: x\"}\n", {}};
    });
    server_->Route("/big", [](const http::Request&) {
      return http::Response{200, "application/json", std::string(kMaxResponse + 1, ' '), {}};
    });
    server_->Route("/slow", [this](const http::Request&) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return released_; });
      return http::Response{200, "application/json", "{}\n", {}};
    });
    server_->Start();
  }
  void TearDown() override {
    Release();
    server_.reset();
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::unique_ptr<http::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
};

TEST_F(CallTest, AnswersAndErrors) {
  const std::string admin = server_->address();
  auto r = Call(admin, "GET", "/jobs", kCallTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "{\"method\":\"GET\",\"length\":-1}\n");
  r = Call(admin, "POST", "/jobs", kCallTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body, "{\"method\":\"POST\",\"length\":0}\n");
  // A non-2xx is an answer: its error text is the caller's to show.
  r = Call(admin, "GET", "/jobs/x", kCallTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(ErrorText(r->body), "no such job: x");
  r = Call(admin, "GET", "/big", kCallTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  r = Call(admin, "GET", "/slow", absl::Milliseconds(50));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("admin API at " + admin + " did not answer"));
  Release();
  EXPECT_EQ(Call("nowhere:1", "GET", "/jobs", kCallTimeout).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CallRefusedTest, NamesTheAddress) {
  // Nothing listens on port 1.
  auto r = Call("127.0.0.1:1", "GET", "/jobs", kCallTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(),
            "cannot connect to volleyd's admin API at 127.0.0.1:1: Connection refused "
            "(is volleyd running?)");
}

TEST(HttpTest, JobPathEscapes) {
  EXPECT_EQ(JobPath("spring-sale", "/pause"), "/jobs/spring-sale/pause");
  EXPECT_EQ(JobPath("a b/%", ""), "/jobs/a%20b%2F%25");
}

TEST(FormatTest, JobShowsItsNumberWhenVolleydSendsIt) {
  const std::string with = R"({"id":"j","state":"ready","paused":false,"total":1,"delivered":0,)"
                           R"("deferred":0,"bounced":0,"expired":0,"cancelled":0,"pending":1,)"
                           R"("deferrals":0,"job_no":42})";
  auto text = FormatJob(with);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("paused: no\njob_no: 42\ntotal: 1\n"));
  std::string without = with;
  without.erase(without.find(",\"job_no\""), std::string(",\"job_no\":42").size());
  auto old = FormatJob(without);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->find("job_no"), std::string::npos);
}

TEST(FormatTest, JobShowsWhatCameBackAndTheComplaintRate) {
  const std::string body =
      R"({"id":"j","state":"done","paused":false,"total":2000,"delivered":1990,)"
      R"("deferred":0,"bounced":4,"expired":0,"cancelled":0,"pending":0,"deferrals":0,)"
      R"("job_no":7,"suppressed":6,"bounced_async":3,"complained":4,"unsubscribed":9})";
  auto text = FormatJob(body);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("\nsuppressed: 6\nbounced_async: 3\ncomplained: 4\n"
                               "unsubscribed: 9\ncomplaint_rate: 0.201%\n"));
  // A volleyd before the feedback loop sends none of them: none is shown.
  auto old = FormatJob(R"({"id":"j","state":"ready","paused":false,"total":1,"delivered":1,)"
                       R"("deferred":0,"bounced":0,"expired":0,"cancelled":0,"pending":0,)"
                       R"("deferrals":0})");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->find("complain"), std::string::npos) << *old;
}

TEST(FormatTest, JobsTableAsDocumented) {
  // docs/volleyctl.md's example.
  const std::string body =
      R"({"jobs":[{"id":"newsletter-48","state":"cancelled","paused":false,"total":300,)"
      R"("delivered":72,"deferred":0,"bounced":0,"expired":0,"cancelled":228,"pending":0,)"
      R"("deferrals":3},)"
      R"({"id":"spring-sale","state":"ready","paused":true,"total":400,"delivered":30,)"
      R"("deferred":0,"bounced":0,"expired":0,"cancelled":0,"pending":370,"deferrals":0}]})";
  auto table = FormatJobsTable(body);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(*table,
            "ID             STATE      PAUSED  TOTAL  DELIVERED  DEFERRED  BOUNCED  EXPIRED  "
            "CANCELLED  PENDING  DONE%\n"
            "newsletter-48  cancelled  no        300         72         0        0        0  "
            "      228        0  100.0\n"
            "spring-sale    ready      yes       400         30         0        0        0  "
            "        0      370    7.5\n");
  EXPECT_FALSE(FormatJobsTable(R"({"jobs":[{"id":"j","state":"ready","paused":false}]})").ok());
}

TEST(JobIdOfNumberTest, FindsTheJob) {
  const std::string jobs = R"({"jobs":[{"id":"a","job_no":1},{"id":"b","job_no":7}]})";
  auto id = JobIdOfNumber(jobs, 7);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "b");
  auto none = JobIdOfNumber(jobs, 8);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(none.status().message(), "volleyd's queue has no job number 8");
  EXPECT_EQ(JobIdOfNumber(R"({"jobs":[]})", 8).status().code(), absl::StatusCode::kNotFound);
  // A volleyd from before job numbers were in the API.
  EXPECT_EQ(JobIdOfNumber(R"({"jobs":[{"id":"a"}]})", 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(JobIdOfNumber("nope", 1).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(TempDir, ReadCtlConfig) {
  const std::string path = Write("v.toml", R"(
[admin]
listen = "127.0.0.1:9999"
[paths]
spool = "/srv/spool"
[verp]
domain = "bounces.sender.test"
[[token_key]]
id = "k2"
secret_file = "/etc/volley/k2.key"
[[token_key]]
id = "k1"
secret_file = "/etc/volley/k1.key"
[smtp]
port = 25
)");
  auto c = ReadCtlConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admin, "127.0.0.1:9999");
  EXPECT_EQ(c->spool, "/srv/spool");
  EXPECT_EQ(c->verp_domain, "bounces.sender.test");
  ASSERT_EQ(c->token_keys.size(), 2u);
  EXPECT_EQ(c->token_keys[0].id, "k2");
  EXPECT_EQ(c->token_keys[1].secret_file, "/etc/volley/k1.key");

  auto defaults = ReadCtlConfig(Write("empty.toml", ""));
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->admin, kDefaultAdmin);
  EXPECT_EQ(defaults->spool, kDefaultSpool);
  EXPECT_TRUE(defaults->token_keys.empty());
  EXPECT_EQ(defaults->verp_domain, "");

  struct Case {
    std::string text;
    std::string want;
  };
  const Case cases[] = {
      {"[paths]\nspool = 3\n", "bad.toml:2: paths.spool: must be a string"},
      {"token_key = 1\n", "bad.toml:1: token_key: must be an array of tables"},
      {"[[token_key]]\nid = \"k1\"\n", "token_key[1]: needs an id and a secret_file"},
      {"[[token_key]]\nid = 1\nsecret_file = \"x\"\n", "token_key[1].id: must be a string"},
      {"[verp]\ndomain = [1]\n", "verp.domain: must be a string"},
      {"[verp\n", "bad.toml:1: "},
  };
  for (const Case& k : cases) {
    auto bad = ReadCtlConfig(Write("bad.toml", k.text));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << k.text;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(k.want)) << k.text;
  }
}

TEST(DecodeVerpTest, VerifiedAndNot) {
  auto keys = token::Keyring::FromSecrets({{"k1", kSecret}});
  ASSERT_TRUE(keys.ok());
  const std::string a = token::VerpAddress(*keys, "bounces.sender.test", 7, 3);
  VerpReport r = DecodeVerp(*keys, "bounces.sender.test", "<" + a + ">");
  EXPECT_TRUE(r.verified) << r.failure;
  EXPECT_EQ(r.claim.job_no, 7u);
  EXPECT_EQ(r.claim.line, 3u);
  EXPECT_EQ(r.claim.key_id, "k1");
  EXPECT_EQ(r.domain, "bounces.sender.test");
  EXPECT_TRUE(r.domain_matches);

  VerpReport other = DecodeVerp(*keys, "BOUNCES.sender.test", a.substr(0, a.find('@')) + "@x.test");
  EXPECT_TRUE(other.verified);
  EXPECT_FALSE(other.domain_matches);

  std::string tampered = a;
  tampered[5] = tampered[5] == 'a' ? 'b' : 'a';
  VerpReport bad = DecodeVerp(*keys, "", tampered);
  EXPECT_FALSE(bad.verified);
  EXPECT_TRUE(bad.domain_matches);  // no [verp] domain: nothing to compare
  EXPECT_FALSE(bad.failure.empty());
}

TEST(FormatVerpReportTest, TextAndJson) {
  VerpReport r;
  r.address = "b-xyz@bounces.test";
  r.domain = "bounces.test";
  r.verp_domain = "bounces.test";
  r.verified = true;
  r.claim = token::Claim{7, 3, "k1"};
  r.job_id = "spring-sale";
  r.recipient = "ann\x1b[31m@x.test";  // from a job file: shown, but never raw
  r.job_file = "var/spool/accepted/spring.job";
  EXPECT_EQ(FormatVerpReport(r, false),
            "address: b-xyz@bounces.test\ndomain: bounces.test\nmac: verifies\nkey_id: k1\n"
            "job_no: 7\nline: 3\njob: spring-sale\nrecipient: ann?[31m@x.test\n"
            "job_file: var/spool/accepted/spring.job\n");
  EXPECT_EQ(FormatVerpReport(r, true),
            R"({"address":"b-xyz@bounces.test","domain":"bounces.test","verp_domain_matches":true,)"
            R"("verified":true,"key_id":"k1","job_no":7,"line":3,"job":"spring-sale",)"
            R"("recipient":"ann\u001b[31m@x.test","job_file":"var/spool/accepted/spring.job"})"
            "\n");

  r.job_id.reset();
  r.job_id_error = "cannot connect";
  r.recipient.reset();
  r.recipient_error = "needs the job id";
  r.job_file.clear();
  r.verp_domain.clear();
  EXPECT_THAT(FormatVerpReport(r, false),
              HasSubstr("job: - (cannot connect)\nrecipient: - (needs the job id)\n"));
  EXPECT_THAT(FormatVerpReport(r, true),
              HasSubstr(R"("job":null,"job_error":"cannot connect","recipient":null,)"
                        R"("recipient_error":"needs the job id"})"));

  VerpReport bad;
  bad.address = "b-x@y.test";
  bad.domain = "y.test";
  bad.verp_domain = "bounces.test";
  bad.domain_matches = false;
  bad.failure = "MAC does not verify";
  EXPECT_EQ(FormatVerpReport(bad, false),
            "address: b-x@y.test\ndomain: y.test (not the [verp] domain, bounces.test)\n"
            "mac: does not verify: MAC does not verify\n");
  EXPECT_EQ(FormatVerpReport(bad, true),
            R"({"address":"b-x@y.test","domain":"y.test","verp_domain_matches":false,)"
            R"("verified":false,"error":"MAC does not verify"})"
            "\n");
}

TEST_F(TempDir, ReadJobLine) {
  const std::string path = Write("j.job", "header\r\n{\"to\":\"a@x.test\"}\n\nlast");
  const std::pair<uint64_t, std::string> lines[] = {
      {1, "header"}, {2, R"({"to":"a@x.test"})"}, {3, ""}, {4, "last"}};
  for (const auto& [n, want] : lines) {
    auto got = ReadJobLine(path, n, 100);
    ASSERT_TRUE(got.ok()) << n << ": " << got.status();
    EXPECT_EQ(*got, want) << n;
  }
  EXPECT_EQ(ReadJobLine(path, 5, 100).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ReadJobLine(path, 5, 100).status().message()),
              HasSubstr("j.job: has no line 5"));
  auto too_long = ReadJobLine(path, 2, 5);
  EXPECT_THAT(std::string(too_long.status().message()),
              HasSubstr("line 2 is longer than 5 octets"));
  // A final LF ends the last line; it does not start another.
  const std::string ended = Write("e.job", "h\nr\n");
  EXPECT_EQ(ReadJobLine(ended, 3, 100).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ReadJobLine(dir_ + "/missing", 1, 100).ok());

  // Lines far into a file, across read boundaries.
  std::string big = "h\n";
  for (int i = 2; i <= 30000; ++i) big += "{\"to\":\"r" + std::to_string(i) + "@x.test\"}\n";
  const std::string big_path = Write("big.job", big);
  auto far = ReadJobLine(big_path, 29999, 100);
  ASSERT_TRUE(far.ok()) << far.status();
  EXPECT_EQ(*far, R"({"to":"r29999@x.test"})");
}

TEST(RecipientOfLineTest, To) {
  auto to = RecipientOfLine(R"({"to":"ann@x.test","vars":{"n":"Ann"}})");
  ASSERT_TRUE(to.ok()) << to.status();
  EXPECT_EQ(*to, "ann@x.test");
  EXPECT_THAT(std::string(RecipientOfLine(R"({"job":"x"})").status().message()),
              HasSubstr("no \"to\""));
  EXPECT_THAT(std::string(RecipientOfLine("{").status().message()), HasSubstr("not JSON"));
}

TEST_F(TempDir, FindAcceptedJobFile) {
  ASSERT_EQ(::mkdir((dir_ + "/accepted").c_str(), 0755), 0);
  Write("accepted/other.job", R"({"job":"other","from":"a@x.test","message":"m"})"
                              "\n");
  // Named after neither job: found by its header.
  Write("accepted/drop-0001", R"({"from":"a@x.test","message":"m","job":"spring"})"
                              "\n"
                              R"({"to":"ann@x.test"})"
                              "\n");
  // Still being written, or not a job file: skipped.
  Write("accepted/.spring.tmp", R"({"job":"spring"})"
                                "\n");
  Write("accepted/spring.notes", "not json\n");
  auto found = FindAcceptedJobFile(dir_, "spring");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, dir_ + "/accepted/drop-0001");
  auto other = FindAcceptedJobFile(dir_, "other");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(*other, dir_ + "/accepted/other.job");
  auto none = FindAcceptedJobFile(dir_, "nope");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("no job file in " + dir_ + "/accepted is job \"nope\""));
  EXPECT_FALSE(FindAcceptedJobFile(dir_ + "/missing", "spring").ok());
}

TEST_F(TempDir, LookUpWithoutVolleyd) {
  // Nothing listens on port 1: what is known offline stays, the rest says why.
  auto keys = token::Keyring::FromSecrets({{"k1", kSecret}});
  ASSERT_TRUE(keys.ok());
  VerpReport r = DecodeVerp(*keys, "", token::VerpAddress(*keys, "b.test", 4, 2));
  ASSERT_TRUE(r.verified);
  LookUpVerp("127.0.0.1:1", dir_, &r);
  EXPECT_FALSE(r.job_id.has_value());
  EXPECT_THAT(r.job_id_error, HasSubstr("cannot connect to volleyd's admin API at 127.0.0.1:1"));
  EXPECT_FALSE(r.recipient.has_value());
  EXPECT_EQ(r.claim.line, 2u);
}

TEST(DkimOptionsTest, Algorithm) {
  EXPECT_EQ(*ParseDkimAlgorithm("rsa"), dkim::Algorithm::kRsaSha256);
  EXPECT_EQ(*ParseDkimAlgorithm("rsa-sha256"), dkim::Algorithm::kRsaSha256);
  EXPECT_EQ(*ParseDkimAlgorithm("ed25519"), dkim::Algorithm::kEd25519Sha256);
  EXPECT_EQ(ParseDkimAlgorithm("RSA").status().message(),
            "--algorithm: \"RSA\" is neither rsa nor ed25519");
  EXPECT_FALSE(ParseDkimAlgorithm("rsa-sha1").ok());
}

TEST(DkimOptionsTest, Names) {
  struct Case {
    std::string name;
    std::string want;  // the name returned, or the error's end
    bool ok;
  };
  const Case cases[] = {
      {"sender.test", "sender.test", true},
      {"sender.test.", "sender.test", true},
      {"s2026r", "s2026r", true},
      {"mail_1.s-2", "mail_1.s-2", true},
      {std::string(63, 'a') + ".test", std::string(63, 'a') + ".test", true},
      {"", "is empty", false},
      {".", "is empty", false},
      {"a..b", "has an empty label", false},
      {".a", "has an empty label", false},
      {"a b", "may hold only letters, digits, '-', '_' and dots", false},
      {"a\nb", "\"a?b\" may hold only", false},
      {std::string(64, 'a') + ".test", "has a label longer than 63 octets", false},
      {std::string(250, 'a') + ".test", "is longer than 253 octets", false},
  };
  for (const Case& c : cases) {
    auto got = CheckDkimName("--domain", c.name);
    if (c.ok) {
      ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
      EXPECT_EQ(*got, c.want);
    } else {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
      EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.name;
      EXPECT_EQ(std::string(got.status().message()).rfind("--domain: \"", 0), 0u);
    }
  }
}

TEST_F(TempDir, WriteNewKeyFile) {
  const mode_t old_umask = ::umask(0);  // a permissive umask must not widen the mode
  const std::string path = dir_ + "/k.pem";
  ASSERT_TRUE(WriteNewKeyFile(path, "PEM\n").ok());
  ::umask(old_umask);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::ifstream in(path);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "PEM\n");

  // Never over a file, nor through a link planted at the path.
  absl::Status again = WriteNewKeyFile(path, "OTHER\n");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(again.message(), path + ": exists; not overwritten (a key in use would be lost)");
  const std::string link = dir_ + "/link.pem";
  ASSERT_EQ(::symlink((dir_ + "/target.pem").c_str(), link.c_str()), 0);
  EXPECT_FALSE(WriteNewKeyFile(link, "X").ok());
  EXPECT_NE(::access((dir_ + "/target.pem").c_str(), F_OK), 0);
  EXPECT_FALSE(WriteNewKeyFile(dir_ + "/missing/k.pem", "X").ok());
}

TEST(DkimRecordTest, ZoneLineAndJson) {
  auto key = dkim::PrivateKey::Generate(dkim::Algorithm::kEd25519Sha256);
  ASSERT_TRUE(key.ok()) << key.status();
  DkimKeyInfo info = DescribeDkimKey(*key, "e1.pem", "e1", "sender.test");
  EXPECT_EQ(info.name, "e1._domainkey.sender.test.");
  EXPECT_EQ(info.record, key->DnsRecord());
  EXPECT_EQ(FormatDkimKey(info, false),
            "e1._domainkey.sender.test. IN TXT \"" + key->DnsRecord() + "\"\n");
  EXPECT_EQ(FormatDkimKey(info, true),
            R"({"file":"e1.pem","algorithm":"ed25519-sha256","bits":256,)"
            R"("name":"e1._domainkey.sender.test.","record":")" +
                key->DnsRecord() + R"(","txt":"\")" + key->DnsRecord() + R"(\""})" + "\n");
  DkimKeyInfo bare = DescribeDkimKey(*key, "e1.pem", "", "");
  EXPECT_EQ(FormatDkimKey(bare, false), "\"" + key->DnsRecord() + "\"\n");
  EXPECT_THAT(FormatDkimKey(bare, true), HasSubstr(R"("name":null,)"));

  // A 2048-bit RSA record is longer than one TXT string holds.
  auto rsa = dkim::PrivateKey::Generate(dkim::Algorithm::kRsaSha256, 2048);
  ASSERT_TRUE(rsa.ok()) << rsa.status();
  const std::string line = FormatDkimKey(DescribeDkimKey(*rsa, "r.pem", "r", "x.test"), false);
  EXPECT_EQ(line.rfind("r._domainkey.x.test. IN TXT \"v=DKIM1; k=rsa; p=", 0), 0u) << line;
  EXPECT_NE(line.find("\" \""), std::string::npos) << line;
}

}  // namespace
}  // namespace volley::ctl
