// Tests of the admin API (engine/admin.h): the request parser table-driven, the
// job object, and the server on a real socket and a real RocksDB queue.
#include "engine/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/config.h"
#include "gtest/gtest.h"
#include "tests/unit/http/loopback_client.h"

namespace volley::engine {
namespace {

using Action = AdminRequest::Action;

struct ParseCase {
  std::string method;
  std::string target;
  int want_status;  // 200: parses
  Action want_action = Action::kHealth;
  std::string want_id = "";
  std::vector<std::pair<std::string, std::string>> headers = {};
  int64_t content_length = -1;
  std::optional<std::string> query = std::nullopt;
};

std::string Get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
}
std::string Post(const std::string& path) {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
}

// The request line and headers are http::Server's to read (malformed heads are
// refused there, see ErrorsOnTheWire); this is what the admin API makes of
// what it parsed.
TEST(ParseAdminRequestTest, Table) {
  const std::string id128(128, 'a');
  const std::string id129(129, 'a');
  const std::vector<ParseCase> cases = {
      // Good requests.
      {"GET", "/health", 200, Action::kHealth},
      {"GET", "/jobs", 200, Action::kListJobs},
      {"GET", "/jobs/spring-sale_2.v1", 200, Action::kShowJob, "spring-sale_2.v1"},
      {"POST", "/jobs/a/pause", 200, Action::kPause, "a", {{"Content-Length", "0"}}, 0},
      {"POST", "/jobs/a/resume", 200, Action::kResume, "a"},
      {"POST", "/jobs/a/cancel", 200, Action::kCancel, "a"},
      {"GET", "/jobs/" + id128, 200, Action::kShowJob, id128},
      {"GET", "/jobs", 200, Action::kListJobs, "", {{"Accept", "*/*"}, {"X-Odd", "a\tb"}}},
      // Bad job ids: refused before the queue is touched.
      {"GET", "/jobs/" + id129, 400},
      {"GET", "/jobs/", 400},
      {"GET", "/jobs/a$b", 400},
      {"GET", "/jobs/a%2Fb", 400},
      {"POST", "/jobs/a:b/pause", 400},
      {"POST", "/jobs/a!/frob", 400},
      {"GET", "/jobs/a\"b", 400},
      // Targets that are not a plain path.
      {"GET", "health", 400},
      {"GET", "", 400},
      {"GET", "http://127.0.0.1/health", 400},
      {"GET", "/health", 400, Action::kHealth, "", {}, -1, "x=1"},
      {"GET", "/health", 400, Action::kHealth, "", {}, -1, ""},  // a bare '?'
      {"GET", "/health#x", 400},
      {"GET", "/he\x01lth", 400},
      {"GET", "/h\xc3\xa9", 400},
      {"GET", "/he lth", 400},
      // A body is never needed, so never accepted.
      {"POST", "/jobs/a/pause", 400, Action::kPause, "", {{"Content-Length", "5"}}, 5},
      {"POST", "/jobs/a/pause", 400, Action::kPause, "", {{"content-length", "1"}}, 1},
      {"POST", "/jobs/a/pause", 400, Action::kPause, "", {{"Content-Length", "-0"}}, 0},
      {"POST", "/jobs/a/pause", 400, Action::kPause, "", {{"Content-Length", ""}}, 0},
      {"POST", "/jobs/a/pause", 400, Action::kPause, "", {{"Transfer-Encoding", "chunked"}}},
      // Unknown endpoints.
      {"GET", "/", 404},
      {"GET", "/metrics", 404},
      {"GET", "/health/", 404},
      {"GET", "/jobs/a/b/c", 404},
      {"POST", "/jobs/a/frob", 404},
      {"POST", "/jobs/a/", 404},
      // Known endpoints, wrong method.
      {"POST", "/health", 405},
      {"POST", "/jobs", 405},
      {"POST", "/jobs/a", 405},
      {"GET", "/jobs/a/pause", 405},
      {"DELETE", "/jobs/a", 405},
      {"HEAD", "/jobs", 405},
  };
  for (const ParseCase& c : cases) {
    http::Request req;
    req.method = c.method;
    req.target = c.target;
    req.version = "1.1";
    if (c.query) req.query = *c.query;
    for (const auto& [name, value] : c.headers) req.headers.push_back({name, value});
    req.content_length = c.content_length;
    const std::string what = absl::CEscape(absl::StrCat(c.method, " ", c.target));
    absl::StatusOr<AdminRequest> got = ParseAdminRequest(req);
    const int status = got.ok() ? 200 : AdminHttpStatus(got.status());
    EXPECT_EQ(status, c.want_status) << what << "\n got: "
                                     << (got.ok() ? "ok" : got.status().ToString());
    if (got.ok() && c.want_status == 200) {
      EXPECT_EQ(got->action, c.want_action) << what;
      EXPECT_EQ(got->job_id, c.want_id) << what;
    }
  }
}

TEST(ParseAdminRequestTest, WrongMethodSaysWhichIsAllowed) {
  http::Request req;
  req.method = "GET";
  req.target = "/jobs/a/pause";
  absl::StatusOr<AdminRequest> got = ParseAdminRequest(req);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(AdminAllow(got.status()), "POST");
  req.target = "/nope";
  EXPECT_EQ(AdminAllow(ParseAdminRequest(req).status()), "");
}

TEST(AdminHttpStatusTest, QueueErrors) {
  EXPECT_EQ(AdminHttpStatus(absl::FailedPreconditionError("done")), 409);
  EXPECT_EQ(AdminHttpStatus(absl::NotFoundError("no job")), 404);
  EXPECT_EQ(AdminHttpStatus(absl::InternalError("disk")), 500);
  EXPECT_EQ(AdminHttpStatus(absl::UnavailableError("stall")), 500);
}

TEST(IsAdminJobIdTest, Charset) {
  EXPECT_TRUE(IsAdminJobId("A-z_0.9"));
  EXPECT_FALSE(IsAdminJobId(""));
  EXPECT_FALSE(IsAdminJobId("a/b"));
  EXPECT_FALSE(IsAdminJobId("a b"));
  EXPECT_FALSE(IsAdminJobId(std::string_view("a\0b", 3)));
  EXPECT_FALSE(IsAdminJobId("\xc3\xa9"));
}

TEST(AdminJobJsonTest, FieldsAndEscaping) {
  queue::JobRecord job;
  job.id = "a\"b\\c";  // not a valid id, but whatever the queue holds is escaped
  job.job_no = 12;
  job.state = queue::JobState::kReady;
  job.paused = true;
  job.queued_at = absl::FromUnixSeconds(1'800'000'000);
  job.header_json = R"({"job":"x","message":"M","priority":7})";
  queue::JobProgress p;
  p.total = 10;
  p.delivered = 4;
  p.bounced = 1;
  p.expired = 1;
  p.cancelled = 1;
  p.deferred = 2;
  p.deferrals = 5;
  p.suppressed = 1;
  p.bounced_async = 2;
  p.complained = 3;
  p.unsubscribed = 4;
  EXPECT_EQ(AdminJobJson(job, p),
            R"({"id":"a\"b\\c","state":"ready","paused":true,"priority":7,)"
            R"("queued_at":"2027-01-15T08:00:00Z","total":10,"delivered":4,"deferred":2,)"
            R"("bounced":1,"expired":1,"cancelled":1,"pending":2,"deferrals":5,"job_no":12,)"
            R"("suppressed":1,"bounced_async":2,"complained":3,"unsubscribed":4})");
  job.header_json = R"({"job":"x","message":"M"})";  // no priority: the default, 5
  EXPECT_NE(AdminJobJson(job, p).find(R"("priority":5,)"), std::string::npos);
  job.header_json = "not json";  // unreadable: left out
  EXPECT_EQ(AdminJobJson(job, p).find("priority"), std::string::npos);
}

TEST(AdminConfigTest, ListenKey) {
  auto c = ParseConfig("", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admin_listen, "127.0.0.1:9465");
  c = ParseConfig("[admin]\nlisten = \"[::1]:9999\"\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admin_listen, "[::1]:9999");
  for (const char* bad : {"[admin]\nlisten = \"localhost:9465\"\n", "[admin]\nlisten = \"127.0.0.1\"\n",
                          "[admin]\nlisten = 9465\n", "[admin]\nport = 1\n"}) {
    c = ParseConfig(bad, "t.toml");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("t.toml:2: admin."), absl::string_view::npos) << c.status();
  }
}

// ---------------------------------------------------------------- on a socket

uint16_t FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

using ::volley::testing::ConnectLoopback;
using ::volley::testing::Exchange;

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("volley-admin-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto q = queue::Queue::Open(dir_.string(), queue::QueueOptions{});
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
    auto list = queue::SuppressionList::Open((dir_ / "suppression").string(),
                                             queue::SuppressionOptions{});
    ASSERT_TRUE(list.ok()) << list.status();
    list_ = *std::move(list);
    port_ = FreePort();
    auto s = AdminServer::Create(absl::StrCat("127.0.0.1:", port_), queue_.get(), &ready_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    server_->SetSuppressionList(list_.get());
    server_->Start();
  }
  void TearDown() override {
    server_.reset();
    list_.reset();
    queue_.reset();
    std::filesystem::remove_all(dir_);
  }
  void AddJob(const std::string& id, int recipients) {
    const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
    auto job = queue_->BeginJob(id, R"({"job":"x","priority":2})", "1:2", t, t);
    ASSERT_TRUE(job.ok()) << job.status();
    auto w = queue_->NewIntakeWriter(*job);
    for (int i = 0; i < recipients; ++i) {
      ASSERT_TRUE(w->Add(static_cast<uint32_t>(i + 2), 0, "r" + std::to_string(i)).ok());
    }
    ASSERT_TRUE(w->Commit(static_cast<uint64_t>(recipients)).ok());
  }
  std::filesystem::path dir_;
  std::unique_ptr<queue::Queue> queue_;
  std::unique_ptr<queue::SuppressionList> list_;
  ReadyJobs ready_;
  uint16_t port_ = 0;
  std::unique_ptr<AdminServer> server_;
};

TEST_F(AdminServerTest, HealthAndHeaders) {
  const std::string got = Exchange(port_, Get("/health"));
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_NE(got.find("Content-Type: application/json\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("Connection: close\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("\r\n\r\n{\"ok\":true}\n"), std::string::npos) << got;
  EXPECT_EQ(server_->address(), absl::StrCat("127.0.0.1:", port_));
}

TEST_F(AdminServerTest, ErrorsOnTheWire) {
  std::string got = Exchange(port_, Get("/jobs/a$b"));
  EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
  EXPECT_NE(got.find("{\"error\":\"job id must match"), std::string::npos) << got;
  got = Exchange(port_, Get("/jobs/nope"));
  EXPECT_EQ(got.rfind("HTTP/1.1 404 ", 0), 0u) << got;
  EXPECT_NE(got.find("{\"error\":\"no such job: nope\"}"), std::string::npos) << got;
  got = Exchange(port_, Get("/jobs/a/pause"));
  EXPECT_EQ(got.rfind("HTTP/1.1 405 ", 0), 0u) << got;
  EXPECT_NE(got.find("Allow: POST\r\n"), std::string::npos) << got;
  got = Exchange(port_, Post("/jobs/nope/pause"));
  EXPECT_EQ(got.rfind("HTTP/1.1 404 ", 0), 0u) << got;
  // The bound: a head past 8 KiB (and libmicrohttpd's 1 KiB of slack) is
  // refused without waiting for its end: 431 again, as before civetweb.
  got = Exchange(port_, "GET /health HTTP/1.1\r\nX: " + std::string(kAdminMaxHead + 2048, 'a'));
  EXPECT_EQ(got.rfind("HTTP/1.1 431 ", 0), 0u) << got;
  // Two malformed heads that libmicrohttpd refuses itself, in its own words.
  for (const char* bad : {"GET /health\r\n\r\n", "GET /health HTTP/1.1\r\nNo colon here\r\n\r\n"}) {
    EXPECT_EQ(Exchange(port_, bad).rfind("HTTP/1.1 400 ", 0), 0u) << absl::CEscape(bad);
  }
  // Malformed heads, refused by the HTTP layer, answered in the API's format.
  for (const char* bad : {"get /health HTTP/1.1\r\n\r\n",
                          "GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n",
                          "GET /he\x01lth HTTP/1.1\r\n\r\n"}) {
    got = Exchange(port_, bad);
    EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << absl::CEscape(bad) << ": " << got;
    EXPECT_NE(got.find("Content-Type: application/json\r\n"), std::string::npos) << got;
    EXPECT_NE(got.find("\r\n\r\n{\"error\":"), std::string::npos) << got;
  }
  // A body announced is refused, and the answer is not lost to a reset.
  got = Exchange(port_, "POST /jobs/a/pause HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
  EXPECT_NE(got.find("request body not accepted"), std::string::npos) << got;
}

TEST_F(AdminServerTest, HeadAtTheBoundIsAccepted) {
  std::string head = "GET /health HTTP/1.1\r\nX: ";
  head += std::string(kAdminMaxHead - head.size() - 4, 'a');
  head += "\r\n\r\n";
  ASSERT_EQ(head.size(), kAdminMaxHead);
  EXPECT_NE(Exchange(port_, head).find("{\"ok\":true}"), std::string::npos);
  head.insert(head.begin() + 30, 'a');
  const std::string got = Exchange(port_, head);
  EXPECT_EQ(got.rfind("HTTP/1.1 431 ", 0), 0u) << got;
  EXPECT_NE(got.find("\r\n\r\n{\"error\":"), std::string::npos) << got;  // the API's format
}

TEST_F(AdminServerTest, SilentClientsDoNotBlockOthers) {
  // Every slot but one held by clients that say nothing: the last one is served.
  std::vector<int> silent;
  for (int i = 0; i < kAdminMaxConnections - 1; ++i) silent.push_back(ConnectLoopback(port_));
  EXPECT_NE(Exchange(port_, Get("/health")).find("{\"ok\":true}"), std::string::npos);
  // A client that sends half a request and stops does not block a full one.
  const int half = ConnectLoopback(port_);
  ASSERT_GT(::send(half, "GET /hea", 8, MSG_NOSIGNAL), 0);
  for (int fd : silent) ::close(fd);
  EXPECT_NE(Exchange(port_, Get("/health")).find("{\"ok\":true}"), std::string::npos);
  ::close(half);
}

TEST_F(AdminServerTest, BindingATakenPortFailsNamingTheAddress) {
  ReadyJobs ready;
  auto s = AdminServer::Create(absl::StrCat("127.0.0.1:", port_), queue_.get(), &ready);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(absl::StrCat("127.0.0.1:", port_)), absl::string_view::npos)
      << s.status();
  EXPECT_FALSE(AdminServer::Create("localhost:1", queue_.get(), &ready).ok());
}

TEST_F(AdminServerTest, JobControl) {
  AddJob("j1", 3);
  std::string got = Exchange(port_, Get("/jobs"));
  EXPECT_NE(got.find(R"({"jobs":[{"id":"j1","state":"ready","paused":false,"priority":2,)"),
            std::string::npos)
      << got;
  EXPECT_NE(got.find(R"("total":3,"delivered":0,)"), std::string::npos) << got;
  EXPECT_NE(got.find(R"("pending":3,)"), std::string::npos) << got;

  ready_.TakeAll();
  got = Exchange(port_, Post("/jobs/j1/pause"));
  EXPECT_EQ(got.rfind("HTTP/1.1 200 ", 0), 0u) << got;
  EXPECT_NE(got.find(R"("paused":true)"), std::string::npos) << got;
  // The shard is told, through the mailbox it reads.
  EXPECT_EQ(ready_.TakeAll(), std::vector<std::string>{"j1"});
  got = Exchange(port_, Get("/jobs/j1"));
  EXPECT_NE(got.find(R"("paused":true)"), std::string::npos) << got;

  got = Exchange(port_, Post("/jobs/j1/resume"));
  EXPECT_NE(got.find(R"("paused":false)"), std::string::npos) << got;
  EXPECT_EQ(ready_.TakeAll(), std::vector<std::string>{"j1"});

  got = Exchange(port_, Post("/jobs/j1/cancel"));
  EXPECT_EQ(got.rfind("HTTP/1.1 200 ", 0), 0u) << got;
  EXPECT_NE(got.find(R"("state":"cancelled")"), std::string::npos) << got;
  EXPECT_EQ(ready_.TakeAll(), std::vector<std::string>{"j1"});
  // A cancelled job can no longer be paused: 409, and the shard is not bothered.
  got = Exchange(port_, Post("/jobs/j1/pause"));
  EXPECT_EQ(got.rfind("HTTP/1.1 409 ", 0), 0u) << got;
  EXPECT_TRUE(ready_.TakeAll().empty());
}

// ---- The suppression list's endpoints.

TEST(ParseAdminRequestTest, SuppressionsTakeAQueryAndABody) {
  const std::vector<ParseCase> cases = {
      {"GET", "/suppressions", 200, Action::kListSuppressions},
      {"GET", "/suppressions", 200, Action::kListSuppressions, "", {}, -1, "limit=5&after=a%40b.test"},
      {"GET", "/suppressions/check", 200, Action::kCheckSuppression, "", {}, -1,
       "address=a%2Bx%40b.test&from_domain=brand.test"},
      {"POST", "/suppressions", 200, Action::kAddSuppressions, "", {{"Content-Length", "20"}}, 20},
      {"POST", "/suppressions", 200, Action::kAddSuppressions, "", {{"Transfer-Encoding", "chunked"}}},
      {"DELETE", "/suppressions", 200, Action::kRemoveSuppression, "", {}, -1, "address=a%40b.test&scope="},
      // A misspelt parameter is refused, never ignored.
      {"DELETE", "/suppressions", 400, Action::kRemoveSuppression, "", {}, -1, "address=a%40b.test&scpoe=x"},
      {"GET", "/suppressions/check", 400, Action::kCheckSuppression, "", {}, -1, "address=a&address=b"},
      {"GET", "/suppressions", 400, Action::kListSuppressions, "", {}, -1, "after=%zz"},
      {"GET", "/suppressions", 400, Action::kListSuppressions, "", {}, -1, "=x"},
      // A body only for POST /suppressions.
      {"GET", "/suppressions", 400, Action::kListSuppressions, "", {{"Content-Length", "2"}}, 2},
      {"DELETE", "/suppressions", 400, Action::kRemoveSuppression, "", {{"Content-Length", "2"}}, 2},
      {"POST", "/suppressions", 400, Action::kAddSuppressions, "", {{"Content-Length", "+1"}}, 1},
      // Other endpoints still take neither.
      {"GET", "/jobs", 400, Action::kListJobs, "", {}, -1, "limit=5"},
      {"PUT", "/suppressions", 405},
      {"POST", "/suppressions/check", 405},
      {"GET", "/suppressions/other", 404},
      {"GET", "/suppressions/check/x", 404},
  };
  for (const ParseCase& c : cases) {
    http::Request req;
    req.method = c.method;
    req.target = c.target;
    req.version = "1.1";
    if (c.query) req.query = *c.query;
    for (const auto& [name, value] : c.headers) req.headers.push_back({name, value});
    req.content_length = c.content_length;
    const std::string what = absl::CEscape(absl::StrCat(c.method, " ", c.target, "?",
                                                        c.query.value_or("")));
    absl::StatusOr<AdminRequest> got = ParseAdminRequest(req);
    const int status = got.ok() ? 200 : AdminHttpStatus(got.status());
    EXPECT_EQ(status, c.want_status) << what << "\n got: "
                                     << (got.ok() ? "ok" : got.status().ToString());
    if (got.ok() && c.want_status == 200) {
      EXPECT_EQ(got->action, c.want_action) << what;
    }
  }
  http::Request req;
  req.method = "PUT";
  req.target = "/suppressions";
  EXPECT_EQ(AdminAllow(ParseAdminRequest(req).status()), "GET, POST, DELETE");
}

TEST(ParseAdminQueryTest, DecodesAndBounds) {
  auto q = ParseAdminQuery("address=Ann%2Bnews%40Example.test&scope=&&x");
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->size(), 3u);
  EXPECT_EQ((*q)[0], (std::pair<std::string, std::string>{"address", "Ann+news@Example.test"}));
  EXPECT_EQ((*q)[1], (std::pair<std::string, std::string>{"scope", ""}));
  EXPECT_EQ((*q)[2], (std::pair<std::string, std::string>{"x", ""}));
  // '+' is a plus (an address holds them), not a space.
  q = ParseAdminQuery("address=a+b@c.test");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)[0].second, "a+b@c.test");
  EXPECT_FALSE(ParseAdminQuery("a=%4").ok());
  EXPECT_FALSE(ParseAdminQuery("a=%g0").ok());
  EXPECT_FALSE(ParseAdminQuery("a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9").ok());
}

TEST(ParseAdminSuppressionsTest, OneEntryOrABatch) {
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  auto one = ParseAdminSuppressions(
      R"({"address":"Ann@Example.test","reason":"complaint","source":"fbl","expires":"30d"})", now);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_FALSE(one->batch);
  ASSERT_EQ(one->entries.size(), 1u);
  EXPECT_EQ(one->entries[0].address, "ann@example.test");
  EXPECT_EQ(one->entries[0].reason, queue::SuppressionReason::kComplaint);
  EXPECT_EQ(one->entries[0].expires, now + absl::Hours(24 * 30));
  EXPECT_EQ(one->entries[0].added, now);

  auto batch = ParseAdminSuppressions(
      R"({"entries":[{"address":"a@x.test","added":"2026-01-02T03:04:05Z","expires":null},)"
      R"({"address":"bad"},{"address":"b@x.test","reason":"nope"},)"
      R"({"address":"c@x.test","colour":"red"},{"address":"d@x.test","expires":"tomorrow"},)"
      R"({"address":"@x.test","scope":"Brand.test","expires":"2030-01-01T00:00:00Z"}]})",
      now);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_TRUE(batch->batch);
  ASSERT_EQ(batch->entries.size(), 2u);
  EXPECT_EQ(batch->entry_index, (std::vector<size_t>{0, 5}));
  EXPECT_EQ(batch->entries[0].added, absl::FromUnixSeconds(1767323045));
  EXPECT_EQ(batch->entries[0].expires, absl::InfiniteFuture());
  EXPECT_EQ(batch->entries[1].scope, "brand.test");
  ASSERT_EQ(batch->errors.size(), 4u);
  EXPECT_EQ(batch->errors[0].first, 1u);
  EXPECT_NE(batch->errors[0].second.find("not an address"), std::string::npos);
  EXPECT_NE(batch->errors[1].second.find("reason: unknown \"nope\""), std::string::npos);
  EXPECT_NE(batch->errors[2].second.find("unknown field \"colour\""), std::string::npos);
  EXPECT_NE(batch->errors[3].second.find("expires: not an RFC 3339 time"), std::string::npos);

  EXPECT_FALSE(ParseAdminSuppressions("not json", now).ok());
  EXPECT_FALSE(ParseAdminSuppressions("[1]", now).ok());
  EXPECT_FALSE(ParseAdminSuppressions(R"({"address":"x"})", now).ok());
  EXPECT_FALSE(ParseAdminSuppressions(R"({"scope":"a.test"})", now).ok());
  EXPECT_FALSE(ParseAdminSuppressions(R"({"entries":{}})", now).ok());
  std::string big = R"({"entries":[)";
  for (size_t i = 0; i <= kAdminMaxSuppressionBatch; ++i) {
    big += (i > 0 ? "," : "");
    big += R"({"address":"a@x.test"})";
  }
  big += "]}";
  auto too_many = ParseAdminSuppressions(big, now);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("more than 5000"), std::string::npos);
}

std::string Send(const std::string& method, const std::string& target, const std::string& body) {
  return method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST_F(AdminServerTest, Suppressions) {
  std::string got = Exchange(port_, Send("POST", "/suppressions",
                                         R"({"address":"Ann@Example.test","reason":"unsubscribe"})"));
  EXPECT_EQ(got.rfind("HTTP/1.1 200 ", 0), 0u) << got;
  EXPECT_NE(got.find(R"({"added":1,"skipped":0,"errors":[]})"), std::string::npos) << got;

  got = Exchange(port_, Get("/suppressions/check?address=ANN%40example.test&from_domain=b.test"));
  EXPECT_NE(got.find(R"("suppressed":true)"), std::string::npos) << got;
  EXPECT_NE(got.find(R"("address":"ann@example.test","scope":"","reason":"unsubscribe",)"
                     R"("source":"admin API")"),
            std::string::npos)
      << got;
  EXPECT_NE(got.find(R"("expires":null)"), std::string::npos) << got;
  got = Exchange(port_, Get("/suppressions/check?address=bob%40example.test"));
  EXPECT_NE(got.find(R"({"suppressed":false})"), std::string::npos) << got;

  got = Exchange(port_, Send("POST", "/suppressions",
                             R"({"entries":[{"address":"b@x.test"},{"address":""},)"
                             R"({"address":"@x.test","scope":"brand.test"}]})"));
  EXPECT_NE(got.find(R"({"added":2,"skipped":1,"errors":[{"index":1,"error":"address: empty"}]})"),
            std::string::npos)
      << got;

  // Paging: two pages of two, then the rest.
  got = Exchange(port_, Get("/suppressions?limit=2"));
  EXPECT_NE(got.find(R"("next":{"after":"ann@example.test","after_scope":""})"), std::string::npos)
      << got;
  got = Exchange(port_, Get("/suppressions?limit=2&after=ann%40example.test&after_scope="));
  EXPECT_NE(got.find(R"("address":"b@x.test")"), std::string::npos) << got;
  EXPECT_NE(got.find(R"("next":null)"), std::string::npos) << got;
  got = Exchange(port_, Get("/suppressions?limit=0"));
  EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
  EXPECT_NE(got.find("limit: must be 1..10000"), std::string::npos) << got;

  got = Exchange(port_, Send("DELETE", "/suppressions?address=%40x.test&scope=brand.test", ""));
  EXPECT_NE(got.find(R"({"removed":true})"), std::string::npos) << got;
  got = Exchange(port_, Send("DELETE", "/suppressions?address=%40x.test&scope=brand.test", ""));
  EXPECT_EQ(got.rfind("HTTP/1.1 404 ", 0), 0u) << got;
  EXPECT_TRUE(*list_->Check("b@x.test", "", absl::Now()));

  // Bad input: a clear 400, nothing written.
  got = Exchange(port_, Send("POST", "/suppressions", R"({"address":"a\r\nb@x.test"})"));
  EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
  EXPECT_NE(got.find("address: CR, LF"), std::string::npos) << got;
  got = Exchange(port_, Send("POST", "/suppressions", "{"));
  EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
  // A body over the bound: 413, before the handler.
  got = Exchange(port_, "POST /suppressions HTTP/1.1\r\nContent-Length: " +
                            std::to_string(kAdminMaxBody + 1) + "\r\n\r\n");
  EXPECT_EQ(got.rfind("HTTP/1.1 413 ", 0), 0u) << got;
}

}  // namespace
}  // namespace volley::engine
