// Tests of the admin API (engine/admin.h): the request parser table-driven, the
// job object, and the server on a real socket and a real RocksDB queue.
#include "engine/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/config.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using Action = AdminRequest::Action;

struct ParseCase {
  ParseCase(std::string h, int s, Action a = Action::kHealth, std::string id = "")
      : head(std::move(h)), want_status(s), want_action(a), want_id(std::move(id)) {}
  std::string head;
  int want_status;  // 200: parses
  Action want_action;
  std::string want_id;
};

std::string Get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
}
std::string Post(const std::string& path) {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
}

TEST(ParseAdminRequestTest, Table) {
  const std::string id128(128, 'a');
  const std::string id129(129, 'a');
  const std::vector<ParseCase> cases = {
      // Good requests.
      {Get("/health"), 200, Action::kHealth, ""},
      {Get("/jobs"), 200, Action::kListJobs, ""},
      {Get("/jobs/spring-sale_2.v1"), 200, Action::kShowJob, "spring-sale_2.v1"},
      {Post("/jobs/a/pause"), 200, Action::kPause, "a"},
      {Post("/jobs/a/resume"), 200, Action::kResume, "a"},
      {Post("/jobs/a/cancel"), 200, Action::kCancel, "a"},
      {Get("/jobs/" + id128), 200, Action::kShowJob, id128},
      {"GET /health HTTP/1.0\r\n\r\n", 200, Action::kHealth, ""},
      {"POST /jobs/x/pause HTTP/1.1\r\n\r\n", 200, Action::kPause, "x"},
      {"GET /jobs HTTP/1.1\r\nAccept:\t*/*  \r\nX-Odd: a\tb\r\n\r\n", 200, Action::kListJobs, ""},
      // Bad job ids: refused before the queue is touched.
      {Get("/jobs/" + id129), 400},
      {Get("/jobs/"), 400},
      {Get("/jobs/a$b"), 400},
      {Get("/jobs/a%2Fb"), 400},
      {Post("/jobs/a:b/pause"), 400},
      {Post("/jobs/a!/frob"), 400},
      {Get("/jobs/a\"b"), 400},
      // Malformed requests.
      {"", 400},
      {"GET /health HTTP/1.1", 400},
      {"GET /health HTTP/1.1\r\n", 400},
      {"GET /health HTTP/1.1\r\nHost: x\r\n", 400},
      {"GET /health HTTP/1.1\n\n", 400},
      {"GET  /health HTTP/1.1\r\n\r\n", 400},
      {"GET /health  HTTP/1.1\r\n\r\n", 400},
      {"GET /health\r\n\r\n", 400},
      {"GET /health HTTP/2.0\r\n\r\n", 400},
      {"get /health HTTP/1.1\r\n\r\n", 400},
      {"GET health HTTP/1.1\r\n\r\n", 400},
      {"GET http://127.0.0.1/health HTTP/1.1\r\n\r\n", 400},
      {"GET /health?x=1 HTTP/1.1\r\n\r\n", 400},
      {"GET /health#x HTTP/1.1\r\n\r\n", 400},
      {"GET /he\x01lth HTTP/1.1\r\n\r\n", 400},
      {"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n", 400},
      {"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n", 400},
      {"GET /health HTTP/1.1\r\n: empty name\r\n\r\n", 400},
      {"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
      {"GET /health HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400},
      {"GET /health HTTP/1.1\r\nA: b\x01\r\n\r\n", 400},
      {"GET /health HTTP/1.1\r\n\r\nextra", 400},
      // A body is never needed, so never accepted.
      {"POST /jobs/a/pause HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400},
      {"POST /jobs/a/pause HTTP/1.1\r\ncontent-length: 1\r\n\r\n", 400},
      {"POST /jobs/a/pause HTTP/1.1\r\nContent-Length: -0\r\n\r\n", 400},
      {"POST /jobs/a/pause HTTP/1.1\r\nContent-Length: \r\n\r\n", 400},
      {"POST /jobs/a/pause HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"POST /jobs/a/pause HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      // Unknown endpoints.
      {Get("/"), 404},
      {Get("/metrics"), 404},
      {Get("/health/"), 404},
      {Get("/jobs/a/b/c"), 404},
      {Post("/jobs/a/frob"), 404},
      {Post("/jobs/a/"), 404},
      // Known endpoints, wrong method.
      {Post("/health"), 405},
      {Post("/jobs"), 405},
      {Post("/jobs/a"), 405},
      {Get("/jobs/a/pause"), 405},
      {"DELETE /jobs/a HTTP/1.1\r\n\r\n", 405},
      {"HEAD /jobs HTTP/1.1\r\n\r\n", 405},
      // Too long.
      {"GET /health HTTP/1.1\r\nX: " + std::string(kAdminMaxHead, 'a') + "\r\n\r\n", 431},
  };
  for (const ParseCase& c : cases) {
    absl::StatusOr<AdminRequest> got = ParseAdminRequest(c.head);
    const int status = got.ok() ? 200 : AdminHttpStatus(got.status());
    EXPECT_EQ(status, c.want_status) << "head: " << absl::CEscape(c.head) << "\n got: "
                                     << (got.ok() ? "ok" : got.status().ToString());
    if (got.ok() && c.want_status == 200) {
      EXPECT_EQ(got->action, c.want_action) << absl::CEscape(c.head);
      EXPECT_EQ(got->job_id, c.want_id) << absl::CEscape(c.head);
    }
  }
}

TEST(ParseAdminRequestTest, HeadAtTheBoundIsAccepted) {
  std::string head = "GET /health HTTP/1.1\r\nX: ";
  head += std::string(kAdminMaxHead - head.size() - 4, 'a');
  head += "\r\n\r\n";
  ASSERT_EQ(head.size(), kAdminMaxHead);
  EXPECT_TRUE(ParseAdminRequest(head).ok());
  head.insert(head.begin() + 30, 'a');
  EXPECT_EQ(AdminHttpStatus(ParseAdminRequest(head).status()), 431);
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
  EXPECT_EQ(AdminJobJson(job, p),
            R"({"id":"a\"b\\c","state":"ready","paused":true,"priority":7,)"
            R"("queued_at":"2027-01-15T08:00:00Z","total":10,"delivered":4,"deferred":2,)"
            R"("bounced":1,"expired":1,"cancelled":1,"pending":3,"deferrals":5,"job_no":12})");
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

int Connect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// Exchange - send `request`, read until the server closes.
std::string Exchange(uint16_t port, std::string_view request) {
  const int fd = Connect(port);
  size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

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
    port_ = FreePort();
    auto s = AdminServer::Create(absl::StrCat("127.0.0.1:", port_), queue_.get(), &ready_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    server_->Start();
  }
  void TearDown() override {
    server_.reset();
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
  // The bound: a head past 8 KiB is answered 431 without waiting for its end.
  got = Exchange(port_, "GET /health HTTP/1.1\r\nX: " + std::string(kAdminMaxHead, 'a'));
  EXPECT_EQ(got.rfind("HTTP/1.1 431 ", 0), 0u) << got;
}

TEST_F(AdminServerTest, SilentClientsDoNotBlockOthers) {
  // Every slot but one held by clients that say nothing: the last one is served.
  std::vector<int> silent;
  for (int i = 0; i < kAdminMaxConnections - 1; ++i) silent.push_back(Connect(port_));
  EXPECT_NE(Exchange(port_, Get("/health")).find("{\"ok\":true}"), std::string::npos);
  // A client that sends half a request and stops does not block a full one.
  const int half = Connect(port_);
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

}  // namespace
}  // namespace volley::engine
