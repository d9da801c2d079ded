// resolver_test.cc - the c-ares driver and the router against a real nsd on loopback
//
// Each test starts its own nsd (Debian's, from scripts/install-deps) on a free
// port with the zones below, and drives the resolver with poll(2) through the
// same Watch / OnSocketReady / OnTimer interface the shard drives through its
// ring (the io_uring side is covered end to end by tests/integration/dns_test.py).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dns/resolver.h"
#include "dns/router.h"
#include "dns/wire.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::dns {
namespace {

using ::testing::HasSubstr;

constexpr char kNsd[] = "/usr/sbin/nsd";

// The SOA's MINIMUM (120) is below its TTL (300): a negative answer is kept 120 s.
constexpr char kZoneR[] = R"($ORIGIN r.test.
$TTL 300
@        IN SOA ns.r.test. hostmaster.r.test. 1 3600 600 86400 120
@        IN NS  ns
ns       IN A   127.0.0.1
mail     60 IN MX 10 a.mx
mail     60 IN MX 20 b.mx
a.mx     30 IN A 127.0.0.2
a.mx     30 IN AAAA ::1
b.mx     IN A   127.0.0.3
alias    IN CNAME target.other.test.
loop1    IN CNAME loop2.other.test.
nomail   IN TXT "a name with no MX, A or AAAA record"
sub      IN NS  ns.elsewhere.test.
; A CNAME out of nsd's zones: nsd answers with the CNAME alone, the resolver asks
; for the target in turn (and nsd refuses it).
away     IN CNAME mx.elsewhere.test.
; Any number of distinct names with answers, for the queue's tests: n7.q.r.test.
*.q      IN MX  10 a.mx
*.q      IN A   127.0.0.5
)";

// A second zone, so that a CNAME crosses zones. nsd follows a CNAME into another
// zone it serves and answers with the whole chain; only a target outside its
// zones (away.r.test) is left to the resolver to ask.
constexpr char kZoneOther[] = R"($ORIGIN other.test.
$TTL 300
@        IN SOA ns.other.test. hostmaster.other.test. 1 3600 600 86400 60
@        IN NS  ns.r.test.
target   IN MX  5 mx
mx       IN A   127.0.0.4
loop2    IN CNAME loop1.r.test.
)";

// A free port on 127.0.0.1 for both UDP and TCP (nsd takes both).
uint16_t FreePort() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int tcp = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::getsockname(tcp, reinterpret_cast<sockaddr*>(&a), &len);
    int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    const bool udp_free = ::bind(udp, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(udp);
    ::close(tcp);
    if (udp_free) return ntohs(a.sin_port);
  }
  return 0;
}

// Nsd - nsd in the foreground with kZoneR and kZoneOther, stopped with the test.
class Nsd {
 public:
  bool Start() {
    char tmpl[] = "/tmp/volley-resolver-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return false;
    dir_ = tmpl;
    port_ = FreePort();
    std::ofstream(dir_ + "/r.zone") << kZoneR;
    std::ofstream(dir_ + "/other.zone") << kZoneOther;
    std::ofstream(dir_ + "/nsd.conf")
        << "server:\n  ip-address: 127.0.0.1@" << port_ << "\n  username: \"\"\n"
        << "  database: \"\"\n  pidfile: " << dir_ << "/nsd.pid\n  xfrdfile: " << dir_
        << "/xfrd.state\n  zonelistfile: " << dir_ << "/zone.list\n  logfile: " << dir_
        << "/nsd.log\n  zonesdir: " << dir_ << "\nremote-control:\n  control-enable: no\n"
        << "zone:\n  name: r.test\n  zonefile: " << dir_ << "/r.zone\n"
        << "zone:\n  name: other.test\n  zonefile: " << dir_ << "/other.zone\n";
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string conf = dir_ + "/nsd.conf";
      ::execl(kNsd, "nsd", "-d", "-c", conf.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid_ > 0 && WaitUntilAnswering();
  }

  ~Nsd() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string server() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  // Asks for r.test's SOA over UDP until an answer comes (nsd loads zones first).
  bool WaitUntilAnswering() {
    absl::StatusOr<std::string> query = EncodeQuery("r.test", RrType::kMx, 7);
    if (!query.ok()) return false;
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port_);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool up = false;
    for (int i = 0; i < 100 && !up; ++i) {
      ::sendto(fd, query->data(), query->size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) == 1) {
        char buf[1500];
        up = ::recv(fd, buf, sizeof buf, 0) > 0;
      }
    }
    ::close(fd);
    return up;
  }

  std::string dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// Loop - what the shard does with its ring, with poll(2).
class Loop {
 public:
  Resolver::Watch watcher() {
    return [this](int fd, bool readable, bool writable) {
      const short events = static_cast<short>((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
      if (events == 0) {
        fds_.erase(fd);
      } else {
        fds_[fd] = events;
      }
    };
  }

  // Run - until `done` or `limit` passes; false on the limit.
  bool Run(Resolver* r, const std::function<bool()>& done, absl::Duration limit = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + limit;
    while (!done()) {
      if (absl::Now() >= end) return false;
      std::vector<pollfd> polled;
      for (auto [fd, events] : fds_) polled.push_back({fd, events, 0});
      absl::Duration wait = absl::Milliseconds(100);
      if (auto due = r->NextTimeout()) wait = std::min(wait, *due);
      ::poll(polled.data(), polled.size(), static_cast<int>(absl::ToInt64Milliseconds(wait)));
      for (const pollfd& p : polled) {
        if (p.revents != 0) {
          r->OnSocketReady(p.fd, (p.revents & (POLLIN | POLLERR | POLLHUP)) != 0,
                           (p.revents & POLLOUT) != 0);
        }
      }
      r->OnTimer();
    }
    return true;
  }

  size_t watched() const { return fds_.size(); }

 private:
  std::map<int, short> fds_;
};

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::access(kNsd, X_OK), 0) << kNsd << " missing: run scripts/install-deps";
    ASSERT_TRUE(nsd_.Start()) << "nsd did not start";
    ResolverOptions options;
    options.servers = {nsd_.server()};
    options.timeout = absl::Seconds(2);
    auto r = Resolver::Create(options, loop_.watcher());
    ASSERT_TRUE(r.ok()) << r.status();
    resolver_ = *std::move(r);
  }

  // MakeResolver - another resolver on the same server, with these bounds.
  std::unique_ptr<Resolver> MakeResolver(size_t max_pending, size_t max_queued) {
    ResolverOptions options;
    options.servers = {nsd_.server()};
    options.timeout = absl::Seconds(2);
    options.max_pending = max_pending;
    options.max_queued = max_queued;
    auto r = Resolver::Create(options, loop_.watcher());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }

  // Ask - one question, run to its answer.
  DnsAnswer Ask(std::string_view name, RrType type) {
    std::optional<DnsAnswer> got;
    resolver_->Ask(name, type, [&](DnsAnswer a) { got = std::move(a); });
    EXPECT_TRUE(loop_.Run(resolver_.get(), [&] { return got.has_value(); })) << name;
    return got.value_or(DnsAnswer{});
  }

  Nsd nsd_;
  Loop loop_;
  std::unique_ptr<Resolver> resolver_;
};

TEST_F(ResolverTest, MxRecordsWithTheirTtl) {
  DnsAnswer a = Ask("mail.r.test", RrType::kMx);
  ASSERT_EQ(a.kind, AnswerKind::kOk) << resolver_->last_error();
  EXPECT_THAT(a.mx, ::testing::UnorderedElementsAre(MxRecord{10, "a.mx.r.test"},
                                                    MxRecord{20, "b.mx.r.test"}));
  EXPECT_EQ(a.ttl, 60u);
  EXPECT_EQ(resolver_->pending(), 0u);
}

TEST_F(ResolverTest, AddressesOfBothFamilies) {
  DnsAnswer v4 = Ask("a.mx.r.test", RrType::kA);
  ASSERT_EQ(v4.kind, AnswerKind::kOk);
  ASSERT_EQ(v4.addresses.size(), 1u);
  EXPECT_EQ(v4.addresses[0].ToString(), "127.0.0.2");
  EXPECT_EQ(v4.ttl, 30u);
  DnsAnswer v6 = Ask("A.MX.R.TEST.", RrType::kAaaa);  // any case, final dot or not
  ASSERT_EQ(v6.kind, AnswerKind::kOk);
  ASSERT_EQ(v6.addresses.size(), 1u);
  EXPECT_EQ(v6.addresses[0].ToString(), "::1");
}

TEST_F(ResolverTest, NegativeAnswersCarryTheSoaMinimum) {
  DnsAnswer nx = Ask("nothing-here.r.test", RrType::kMx);
  EXPECT_EQ(nx.kind, AnswerKind::kNxDomain);
  EXPECT_EQ(nx.ttl, 120u);  // min(SOA TTL 300, MINIMUM 120), RFC 2308 section 5
  DnsAnswer nodata = Ask("a.mx.r.test", RrType::kMx);
  EXPECT_EQ(nodata.kind, AnswerKind::kNoData);
  EXPECT_EQ(nodata.ttl, 120u);
}

TEST_F(ResolverTest, NameWithoutRecordsOfTheTypeIsNoData) {
  for (RrType type : {RrType::kMx, RrType::kA, RrType::kAaaa}) {
    DnsAnswer a = Ask("nomail.r.test", type);
    EXPECT_EQ(a.kind, AnswerKind::kNoData) << static_cast<int>(type);
  }
}

TEST_F(ResolverTest, ReferralIsAFailureNotNoData) {
  // sub.r.test is delegated: nsd answers NOERROR with the NS records and no SOA.
  DnsAnswer a = Ask("mail.sub.r.test", RrType::kMx);
  EXPECT_EQ(a.kind, AnswerKind::kServFail);
  EXPECT_THAT(resolver_->last_error(), HasSubstr("referral instead of an answer"));
}

TEST_F(ResolverTest, CnameIntoAnotherZoneIsFollowed) {
  DnsAnswer a = Ask("alias.r.test", RrType::kMx);
  ASSERT_EQ(a.kind, AnswerKind::kOk) << resolver_->last_error();
  EXPECT_THAT(a.mx, ::testing::ElementsAre(MxRecord{5, "mx.other.test"}));
}

TEST_F(ResolverTest, CnameLoopIsAFailureNotAHang) {
  DnsAnswer a = Ask("loop1.r.test", RrType::kMx);
  EXPECT_EQ(a.kind, AnswerKind::kServFail);
  EXPECT_THAT(resolver_->last_error(), HasSubstr("CNAME loop"));
}

TEST_F(ResolverTest, ManyQuestionsAtOnce) {
  // Every answer comes back to its own question, whatever order they arrive in.
  std::map<std::string, std::optional<DnsAnswer>> got;
  const std::vector<std::string> names = {"mail.r.test", "a.mx.r.test", "b.mx.r.test",
                                          "alias.r.test", "nothing-here.r.test"};
  for (const std::string& n : names) {
    got[n];
    resolver_->Ask(n, n == "mail.r.test" || n == "alias.r.test" ? RrType::kMx : RrType::kA,
                   [&got, n](DnsAnswer a) { got[n] = std::move(a); });
  }
  EXPECT_EQ(resolver_->pending(), names.size());
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] {
    for (auto& [n, a] : got) {
      if (!a) return false;
    }
    return true;
  }));
  EXPECT_EQ(got["mail.r.test"]->mx.size(), 2u);
  EXPECT_EQ(got["a.mx.r.test"]->addresses.at(0).ToString(), "127.0.0.2");
  EXPECT_EQ(got["b.mx.r.test"]->addresses.at(0).ToString(), "127.0.0.3");
  EXPECT_EQ(got["alias.r.test"]->mx.at(0).exchange, "mx.other.test");
  EXPECT_EQ(got["nothing-here.r.test"]->kind, AnswerKind::kNxDomain);
}

TEST(ResolverTimeout, AServerThatNeverAnswersIsServFailAfterEveryTry) {
  // A bound UDP socket nobody reads: queries go in and nothing comes back.
  int hole = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(hole, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::getsockname(hole, reinterpret_cast<sockaddr*>(&a), &len);
  Loop loop;
  ResolverOptions options;
  options.servers = {absl::StrCat("127.0.0.1:", ntohs(a.sin_port))};
  options.timeout = absl::Milliseconds(200);
  options.tries = 2;
  auto r = Resolver::Create(options, loop.watcher());
  ASSERT_TRUE(r.ok()) << r.status();
  std::optional<DnsAnswer> got;
  const absl::Time start = absl::Now();
  (*r)->Ask("mail.r.test", RrType::kMx, [&](DnsAnswer answer) { got = std::move(answer); });
  ASSERT_TRUE(loop.Run(r->get(), [&] { return got.has_value(); }));
  EXPECT_EQ(got->kind, AnswerKind::kServFail);
  EXPECT_THAT((*r)->last_error(), HasSubstr("timeout"));
  // Two tries of at least 200 ms each: not given up at once.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  // Both tries reached the server.
  char buf[1500];
  int seen = 0;
  while (::recv(hole, buf, sizeof buf, MSG_DONTWAIT) > 0) ++seen;
  EXPECT_EQ(seen, 2);
  ::close(hole);
}

// Hole - a bound UDP socket on loopback that nobody reads: a server that never
// answers, so questions stay in flight.
class Hole {
 public:
  Hole() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Hole() { ::close(fd_); }
  std::string server() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

TEST(ResolverLimits, QueueFullAnswersLaterNotInsideAsk) {
  Hole hole;
  Loop loop;
  ResolverOptions options;
  options.servers = {hole.server()};
  options.max_pending = 1;
  options.max_queued = 0;  // nothing waits: the second question is refused
  auto r = Resolver::Create(options, loop.watcher());
  ASSERT_TRUE(r.ok()) << r.status();
  std::optional<DnsAnswer> first, second;
  (*r)->Ask("mail.r.test", RrType::kMx, [&](DnsAnswer answer) { first = std::move(answer); });
  (*r)->Ask("b.mx.r.test", RrType::kA, [&](DnsAnswer answer) { second = std::move(answer); });
  EXPECT_FALSE(second.has_value());  // not from inside Ask
  EXPECT_THAT((*r)->last_error(), HasSubstr("resolver queue full"));
  EXPECT_EQ((*r)->NextTimeout(), absl::ZeroDuration());
  (*r)->OnTimer();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->kind, AnswerKind::kServFail);
  EXPECT_TRUE(second->local);       // our bound, not the server's word
  EXPECT_FALSE(first.has_value());  // still in flight, the hole never answers
  EXPECT_EQ((*r)->stats().refused, 1u);
  EXPECT_EQ((*r)->stats().sent, 1u);
}

TEST(ResolverLimits, DestructionNeverCallsWatchNorCallbacks) {
  // ~Resolver once told the owner's Watch that c-ares closed its sockets, while
  // the owner was being torn down: volleyd spun at shutdown. A question in
  // flight keeps a socket open (c-ares closes them when idle) so the destructor
  // has one to close; another waits in the queue.
  Hole hole;
  bool destroying = false;
  int watched = 0;
  int watched_while_destroying = 0;
  int called = 0;
  ResolverOptions options;
  options.servers = {hole.server()};
  options.max_pending = 1;
  auto r = Resolver::Create(options, [&](int, bool, bool) {
    ++watched;
    if (destroying) ++watched_while_destroying;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  (*r)->Ask("mail.r.test", RrType::kMx, [&](DnsAnswer) { ++called; });
  (*r)->Ask("b.mx.r.test", RrType::kA, [&](DnsAnswer) { ++called; });
  EXPECT_EQ((*r)->pending(), 1u);
  EXPECT_EQ((*r)->queued(), 1u);
  ASSERT_GT(watched, 0) << "c-ares opened no socket: the test proves nothing";
  destroying = true;
  r->reset();
  EXPECT_EQ(watched_while_destroying, 0);
  EXPECT_EQ(called, 0);
}

TEST(ResolverOptionsCheck, BadServerIsRefusedByName) {
  ResolverOptions options;
  options.servers = {"127.0.0.1"};
  auto r = Resolver::Create(options, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("127.0.0.1"));
}

TEST(ResolverOptionsCheck, BoundsAreChecked) {
  ResolverOptions none_in_flight;
  none_in_flight.max_pending = 0;  // every question would wait for ever
  auto r = Resolver::Create(none_in_flight, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("max_pending"));
  ResolverOptions huge_queue;
  huge_queue.max_queued = size_t{1} << 40;
  r = Resolver::Create(huge_queue, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("max_queued"));
}

// The queue (issue 16): past max_pending, questions wait and are answered by the
// server, not refused with an invented SERVFAIL.
using ResolverQueueTest = ResolverTest;

TEST_F(ResolverQueueTest, FiftyQuestionsThroughTwoPlacesAllAnswered) {
  std::unique_ptr<Resolver> r = MakeResolver(2, 1000);
  ASSERT_NE(r, nullptr);
  constexpr int kQuestions = 50;
  std::vector<std::optional<DnsAnswer>> got(kQuestions);
  size_t most_in_flight = 0;
  for (int i = 0; i < kQuestions; ++i) {
    r->Ask(absl::StrCat("n", i, ".q.r.test"), RrType::kA, [&, i](DnsAnswer a) {
      most_in_flight = std::max(most_in_flight, r->stats().in_flight);
      got[i] = std::move(a);
    });
    most_in_flight = std::max(most_in_flight, r->stats().in_flight);
  }
  EXPECT_EQ(r->pending(), 2u);
  EXPECT_EQ(r->queued(), 48u);
  EXPECT_EQ(r->stats().peak_queued, 48u);
  EXPECT_EQ(r->stats().sent, 2u);
  ASSERT_TRUE(loop_.Run(r.get(), [&] {
    most_in_flight = std::max(most_in_flight, r->stats().in_flight);
    return std::all_of(got.begin(), got.end(), [](const auto& a) { return a.has_value(); });
  }));
  for (int i = 0; i < kQuestions; ++i) {
    ASSERT_EQ(got[i]->kind, AnswerKind::kOk) << i << ": " << r->last_error();
    EXPECT_FALSE(got[i]->local);
    ASSERT_EQ(got[i]->addresses.size(), 1u);
    EXPECT_EQ(got[i]->addresses[0].ToString(), "127.0.0.5");
  }
  EXPECT_LE(most_in_flight, 2u);
  const Resolver::Stats stats = r->stats();
  EXPECT_EQ(stats.sent, 50u);
  EXPECT_EQ(stats.refused, 0u);
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.peak_queued, 48u);
}

TEST_F(ResolverQueueTest, QuestionsAreSentInTheOrderAsked) {
  std::unique_ptr<Resolver> r = MakeResolver(1, 1000);
  ASSERT_NE(r, nullptr);
  std::vector<int> order;
  for (int i = 0; i < 10; ++i) {
    r->Ask(absl::StrCat("n", i, ".q.r.test"), RrType::kA,
           [&, i](DnsAnswer) { order.push_back(i); });
  }
  ASSERT_TRUE(loop_.Run(r.get(), [&] { return order.size() == 10; }));
  // One in flight at a time: answered in the order asked.
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
}

TEST_F(ResolverQueueTest, CnameLinkIsNotQueuedBehindOthers) {
  // away.r.test's CNAME target is asked by the same question, at once, in the
  // place it already has: with one place and a long queue it still ends first.
  std::unique_ptr<Resolver> r = MakeResolver(1, 1000);
  ASSERT_NE(r, nullptr);
  std::vector<std::string> order;
  r->Ask("away.r.test", RrType::kMx, [&](DnsAnswer a) {
    EXPECT_EQ(a.kind, AnswerKind::kServFail);  // nsd refuses mx.elsewhere.test
    EXPECT_FALSE(a.local);
    order.push_back("away");
  });
  for (int i = 0; i < 5; ++i) {
    r->Ask(absl::StrCat("n", i, ".q.r.test"), RrType::kA,
           [&, i](DnsAnswer) { order.push_back(absl::StrCat("n", i)); });
  }
  ASSERT_TRUE(loop_.Run(r.get(), [&] { return order.size() == 6; }));
  EXPECT_THAT(order, ::testing::ElementsAre("away", "n0", "n1", "n2", "n3", "n4"));
  EXPECT_EQ(r->stats().sent, 7u);  // the link too, in the question's own place
  EXPECT_EQ(r->stats().peak_queued, 5u);
}

TEST_F(ResolverQueueTest, PastTheQueueAnswersAreLocalAndLaterQuestionsWork) {
  std::unique_ptr<Resolver> r = MakeResolver(1, 2);
  ASSERT_NE(r, nullptr);
  std::vector<std::optional<DnsAnswer>> got(5);
  for (int i = 0; i < 5; ++i) {
    r->Ask(absl::StrCat("n", i, ".q.r.test"), RrType::kA,
           [&, i](DnsAnswer a) { got[i] = std::move(a); });
  }
  // One in flight, two waiting, two refused.
  EXPECT_EQ(r->pending(), 1u);
  EXPECT_EQ(r->queued(), 2u);
  EXPECT_EQ(r->stats().refused, 2u);
  EXPECT_THAT(r->last_error(), HasSubstr("resolver queue full"));
  for (const auto& a : got) EXPECT_FALSE(a.has_value());  // none inside Ask
  ASSERT_TRUE(loop_.Run(r.get(), [&] {
    return std::all_of(got.begin(), got.end(), [](const auto& a) { return a.has_value(); });
  }));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i]->kind, AnswerKind::kOk) << i;
    EXPECT_FALSE(got[i]->local) << i;
  }
  for (int i = 3; i < 5; ++i) {
    EXPECT_EQ(got[i]->kind, AnswerKind::kServFail) << i;
    EXPECT_TRUE(got[i]->local) << i;
  }
  // The queue drained: the refused names are answered when asked again.
  std::optional<DnsAnswer> again;
  r->Ask("n4.q.r.test", RrType::kA, [&](DnsAnswer a) { again = std::move(a); });
  ASSERT_TRUE(loop_.Run(r.get(), [&] { return again.has_value(); }));
  EXPECT_EQ(again->kind, AnswerKind::kOk);
  EXPECT_FALSE(again->local);
  EXPECT_EQ(r->stats().sent, 4u);
  EXPECT_EQ(r->stats().refused, 2u);
}

// LowestFreeDescriptor - the number the next open() would get.
int LowestFreeDescriptor() {
  const int fd = ::dup(0);
  if (fd >= 0) ::close(fd);
  return fd;
}

TEST_F(ResolverQueueTest, NoDescriptorForASocketIsLocalNotTheServersFailure) {
  // Everything the failing path touches runs once first, with descriptors to
  // spare: the sanitizers' runtime may need one on first use.
  {
    std::unique_ptr<Resolver> warm = MakeResolver(4, 4);
    ASSERT_NE(warm, nullptr);
    std::optional<DnsAnswer> a;
    warm->Ask("n0.q.r.test", RrType::kA, [&](DnsAnswer got) { a = std::move(got); });
    ASSERT_TRUE(loop_.Run(warm.get(), [&] { return a.has_value(); }));
  }
  std::unique_ptr<Resolver> r = MakeResolver(4, 4);  // no socket yet: c-ares opens it on first use
  ASSERT_NE(r, nullptr);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit none = saved;
  none.rlim_cur = static_cast<rlim_t>(LowestFreeDescriptor());
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &none), 0);
  std::optional<DnsAnswer> refused;
  r->Ask("n1.q.r.test", RrType::kA, [&](DnsAnswer got) { refused = std::move(got); });
  const bool answered = loop_.Run(r.get(), [&] { return refused.has_value(); });
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_TRUE(answered);
  EXPECT_EQ(refused->kind, AnswerKind::kServFail);
  EXPECT_TRUE(refused->local);  // not the server's SERVFAIL: never cached, no attempt
  EXPECT_EQ(refused->local_why, "no file descriptor for a DNS socket");
  EXPECT_GE(r->stats().no_descriptor, 1u);
  EXPECT_THAT(r->last_error(), HasSubstr("no file descriptor"));
  // With descriptors back, the same resolver asks and gets the server's answer.
  std::optional<DnsAnswer> again;
  r->Ask("n1.q.r.test", RrType::kA, [&](DnsAnswer got) { again = std::move(got); });
  ASSERT_TRUE(loop_.Run(r.get(), [&] { return again.has_value(); }));
  EXPECT_EQ(again->kind, AnswerKind::kOk);
  EXPECT_FALSE(again->local);
}

TEST_F(ResolverQueueTest, SocketsAreNonBlockingWithTheReceiveBufferAsked) {
  // The resolver makes c-ares's sockets itself (to count EMFILE), and c-ares
  // then sets nothing on them: a blocking one would stall the shard's loop.
  // Looked at when c-ares asks for the socket to be watched: it closes its
  // sockets once no question is left.
  struct Seen {
    int fd, flags, fd_flags, rcvbuf;
  };
  std::vector<Seen> seen;
  ResolverOptions options;
  options.servers = {nsd_.server()};
  options.receive_buffer = 1 << 20;
  Resolver::Watch inner = loop_.watcher();
  auto r = Resolver::Create(options, [&](int fd, bool readable, bool writable) {
    if (readable || writable) {
      Seen s{fd, ::fcntl(fd, F_GETFL), ::fcntl(fd, F_GETFD), 0};
      socklen_t len = sizeof s.rcvbuf;
      if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &s.rcvbuf, &len) != 0) s.rcvbuf = -1;
      seen.push_back(s);
    }
    inner(fd, readable, writable);
  });
  ASSERT_TRUE(r.ok()) << r.status();
  std::optional<DnsAnswer> a;
  (*r)->Ask("n0.q.r.test", RrType::kA, [&](DnsAnswer got) { a = std::move(got); });
  ASSERT_TRUE(loop_.Run(r->get(), [&] { return a.has_value(); }));
  EXPECT_EQ(a->kind, AnswerKind::kOk);
  ASSERT_FALSE(seen.empty());
  int max_rcvbuf = 0;
  std::ifstream("/proc/sys/net/core/rmem_max") >> max_rcvbuf;
  for (const Seen& s : seen) {
    ASSERT_GE(s.flags, 0) << "fd " << s.fd;
    EXPECT_NE(s.flags & O_NONBLOCK, 0) << "fd " << s.fd << " blocks";
    EXPECT_NE(s.fd_flags & FD_CLOEXEC, 0) << "fd " << s.fd;
    // The kernel doubles what it grants, and grants at most rmem_max.
    EXPECT_GE(s.rcvbuf, 2 * std::min(1 << 20, max_rcvbuf)) << "fd " << s.fd;
  }
}

class RouterTest : public ResolverTest {
 protected:
  void SetUp() override {
    ResolverTest::SetUp();
    RouterOptions options;
    options.mx.allow_loopback = true;
    options.mx.families = AddressFamilies::kIpv4Only;
    router_ = std::make_unique<Router>(options, resolver_.get(), [this] { return now_; },
                                       [] { return uint64_t{0}; });
  }

  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  std::unique_ptr<Router> router_;
};

TEST_F(RouterTest, PlansFromTheAnswersThenFromTheCache) {
  std::optional<RoutePlan> first;
  router_->Plan("mail.r.test", [&](RoutePlan p) { first = std::move(p); });
  ASSERT_FALSE(first.has_value());  // nothing cached: answers come from nsd
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] { return first.has_value(); }));
  ASSERT_FALSE(first->plan.verdict) << first->plan.verdict->reason;
  ASSERT_EQ(first->plan.hosts.size(), 2u);
  EXPECT_EQ(first->plan.hosts[0].name, "a.mx.r.test");
  EXPECT_EQ(first->plan.hosts[0].addresses.at(0).ToString(), "127.0.0.2");
  EXPECT_EQ(first->plan.hosts[1].name, "b.mx.r.test");
  EXPECT_EQ(first->plan.site, "a.mx.r.test,b.mx.r.test");
  // The earliest expiry: a.mx's A record, 30 s.
  EXPECT_EQ(first->valid_until, now_ + absl::Seconds(30));
  // Again within the TTL: answered from the cache before Plan returns.
  std::optional<RoutePlan> second;
  router_->Plan("mail.r.test", [&](RoutePlan p) { second = std::move(p); });
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->plan.site, first->plan.site);
  EXPECT_EQ(resolver_->pending(), 0u);
  // Counted for the metrics: three questions asked (MX, two A), three hits.
  EXPECT_EQ(router_->stats().answers[static_cast<size_t>(AnswerKind::kOk)], 3u);
  EXPECT_EQ(router_->stats().cache_misses, 3u);
  EXPECT_EQ(router_->stats().cache_hits, 3u);
  // After the TTL the cache asks again.
  now_ += absl::Seconds(31);
  std::optional<RoutePlan> third;
  router_->Plan("mail.r.test", [&](RoutePlan p) { third = std::move(p); });
  EXPECT_FALSE(third.has_value());
  EXPECT_GT(resolver_->pending(), 0u);
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] { return third.has_value(); }));
  EXPECT_EQ(third->plan.site, first->plan.site);
}

TEST_F(RouterTest, ConcurrentPlansShareOneQuestion) {
  int done = 0;
  for (int i = 0; i < 100; ++i) {
    router_->Plan("alias.r.test", [&](RoutePlan p) {
      EXPECT_FALSE(p.plan.verdict);
      ++done;
    });
  }
  EXPECT_EQ(resolver_->pending(), 1u);  // one MX question for the hundred
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] { return done == 100; }));
  EXPECT_EQ(router_->in_progress(), 0u);
}

TEST_F(RouterTest, VerdictsForMissingDomains) {
  std::optional<RoutePlan> p;
  router_->Plan("nothing-here.r.test", [&](RoutePlan got) { p = std::move(got); });
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] { return p.has_value(); }));
  ASSERT_TRUE(p->plan.verdict);
  EXPECT_TRUE(p->plan.verdict->permanent);
  EXPECT_EQ(p->plan.verdict->enhanced, "5.1.2");
}

// Plan - one plan by `router`, run to its end.
RoutePlan Plan(Router* router, Loop* loop, Resolver* resolver, std::string_view domain) {
  std::optional<RoutePlan> p;
  router->Plan(domain, [&](RoutePlan got) { p = std::move(got); });
  EXPECT_TRUE(loop->Run(resolver, [&] { return p.has_value(); })) << domain;
  return p.value_or(RoutePlan{});
}

TEST_F(RouterTest, NoMxAndNoAddressesBouncesOnlyWhenAaaaWasAsked) {
  // Both families: MX, A and AAAA all NODATA, the domain has no mail service.
  RouterOptions both;
  both.mx.allow_loopback = true;
  Router router(both, resolver_.get(), [this] { return now_; }, [] { return uint64_t{0}; });
  RoutePlan p = Plan(&router, &loop_, resolver_.get(), "nomail.r.test");
  ASSERT_TRUE(p.plan.verdict);
  EXPECT_TRUE(p.plan.verdict->permanent);
  EXPECT_EQ(p.plan.verdict->enhanced, "5.1.2");
  EXPECT_EQ(p.plan.verdict->reason,
            "no MX, A or AAAA records for nomail.r.test: the domain has no mail service");
  // Made from negative answers: reused for their TTL, the SOA MINIMUM (120 s).
  EXPECT_EQ(p.valid_until, now_ + absl::Seconds(120));

  // IPv4 only asks no AAAA question, so it cannot tell: a deferral, as before.
  RoutePlan v4 = Plan(router_.get(), &loop_, resolver_.get(), "nomail.r.test");
  ASSERT_TRUE(v4.plan.verdict);
  EXPECT_FALSE(v4.plan.verdict->permanent);
  EXPECT_EQ(v4.plan.verdict->enhanced, "4.4.4");

  // A server that refers instead of answering proves nothing: a DNS failure.
  RoutePlan referred = Plan(&router, &loop_, resolver_.get(), "sub.r.test");
  ASSERT_TRUE(referred.plan.verdict);
  EXPECT_FALSE(referred.plan.verdict->permanent);
  EXPECT_EQ(referred.plan.verdict->enhanced, "4.4.3");
}

// Issue 16: our own bounds give local verdicts (retry soon, no attempt), never
// a SERVFAIL the cache would keep.
class RouterBoundsTest : public ResolverTest {
 protected:

  RouterOptions Ipv4Only() const {
    RouterOptions options;
    options.mx.allow_loopback = true;
    options.mx.families = AddressFamilies::kIpv4Only;
    return options;
  }

  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(RouterBoundsTest, ManyDomainsThroughFewPlacesAllPlanned) {
  // The issue's shape, scaled down: far more domains than places in flight.
  std::unique_ptr<Resolver> resolver = MakeResolver(10, 100000);
  ASSERT_NE(resolver, nullptr);
  Router router(Ipv4Only(), resolver.get(), [this] { return now_; }, [] { return uint64_t{0}; });
  constexpr int kDomains = 300;
  int planned = 0;
  int verdicts = 0;
  for (int i = 0; i < kDomains; ++i) {
    router.Plan(absl::StrCat("d", i, ".q.r.test"), [&](RoutePlan p) {
      ++planned;
      if (p.plan.verdict) {
        ++verdicts;
        ADD_FAILURE() << p.plan.verdict->reason;
      }
    });
  }
  ASSERT_TRUE(loop_.Run(resolver.get(), [&] { return planned == kDomains; }));
  EXPECT_EQ(verdicts, 0);
  EXPECT_LE(resolver->stats().peak_queued, size_t{kDomains});
  EXPECT_GT(resolver->stats().peak_queued, 0u);
  EXPECT_EQ(resolver->stats().refused, 0u);
  EXPECT_EQ(router.stats().local_answers, 0u);
  EXPECT_EQ(router.stats().answers[static_cast<size_t>(AnswerKind::kServFail)], 0u);
}

TEST_F(RouterBoundsTest, ResolverQueueFullGivesLocalVerdictsNeverCached) {
  std::unique_ptr<Resolver> resolver = MakeResolver(1, 1);
  ASSERT_NE(resolver, nullptr);
  Router router(Ipv4Only(), resolver.get(), [this] { return now_; }, [] { return uint64_t{0}; });
  std::vector<std::optional<RoutePlan>> got(5);
  for (int i = 0; i < 5; ++i) {
    router.Plan(absl::StrCat("d", i, ".q.r.test"), [&, i](RoutePlan p) { got[i] = std::move(p); });
  }
  ASSERT_TRUE(loop_.Run(resolver.get(), [&] {
    return std::all_of(got.begin(), got.end(), [](const auto& p) { return p.has_value(); });
  }));
  // d0's MX question in flight, d1's queued, the rest refused by the resolver.
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(got[i]->plan.verdict) << i << ": " << got[i]->plan.verdict->reason;
  }
  for (int i = 2; i < 5; ++i) {
    const std::string domain = absl::StrCat("d", i, ".q.r.test");
    ASSERT_TRUE(got[i]->plan.verdict) << i;
    const MxVerdict& v = *got[i]->plan.verdict;
    EXPECT_TRUE(v.local) << i;
    EXPECT_FALSE(v.permanent);
    EXPECT_EQ(v.enhanced, "4.4.3");
    EXPECT_EQ(v.reason, absl::StrCat(domain, ": resolver queue full"));
    EXPECT_EQ(got[i]->valid_until, now_);  // not to be reused
  }
  EXPECT_EQ(router.stats().local_answers, 3u);
  EXPECT_EQ(router.stats().answers[static_cast<size_t>(AnswerKind::kServFail)], 0u);
  // The cache kept the servers' answers only: d0's and d1's MX, a.mx's A.
  EXPECT_EQ(router.cache().size(), 3u);
  // With room again, the same domain is asked again (no cached failure) and
  // planned from the server's answers.
  const uint64_t sent = resolver->stats().sent;
  std::optional<RoutePlan> again;
  router.Plan("d4.q.r.test", [&](RoutePlan p) { again = std::move(p); });
  ASSERT_TRUE(loop_.Run(resolver.get(), [&] { return again.has_value(); }));
  EXPECT_FALSE(again->plan.verdict) << again->plan.verdict->reason;
  EXPECT_EQ(resolver->stats().sent, sent + 1);  // d4's MX; a.mx's A from the cache
}

TEST_F(RouterBoundsTest, CacheOverloadGivesALocalVerdictAtOnce) {
  RouterOptions options = Ipv4Only();
  options.cache.max_in_flight = 1;
  Router router(options, resolver_.get(), [this] { return now_; }, [] { return uint64_t{0}; });
  std::optional<RoutePlan> first, second;
  router.Plan("d0.q.r.test", [&](RoutePlan p) { first = std::move(p); });
  router.Plan("d1.q.r.test", [&](RoutePlan p) { second = std::move(p); });
  ASSERT_TRUE(second.has_value());  // refused before anything was asked
  ASSERT_TRUE(second->plan.verdict);
  EXPECT_TRUE(second->plan.verdict->local);
  EXPECT_FALSE(second->plan.verdict->permanent);
  EXPECT_EQ(second->plan.verdict->enhanced, "4.4.3");
  EXPECT_EQ(second->plan.verdict->reason, "d1.q.r.test: DNS lookups queue full");
  EXPECT_EQ(second->valid_until, now_);
  EXPECT_EQ(router.stats().cache_overloaded, 1u);
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] { return first.has_value(); }));
  EXPECT_FALSE(first->plan.verdict) << first->plan.verdict->reason;
  EXPECT_EQ(router.cache().size(), 2u);  // d0's MX, a.mx's A: nothing for d1
}

TEST_F(RouterBoundsTest, TooManyPlansGivesALocalVerdictAtOnce) {
  RouterOptions options = Ipv4Only();
  options.max_plans = 1;
  Router router(options, resolver_.get(), [this] { return now_; }, [] { return uint64_t{0}; });
  std::optional<RoutePlan> first, second;
  router.Plan("d0.q.r.test", [&](RoutePlan p) { first = std::move(p); });
  router.Plan("d1.q.r.test", [&](RoutePlan p) { second = std::move(p); });
  ASSERT_TRUE(second.has_value());
  ASSERT_TRUE(second->plan.verdict);
  EXPECT_TRUE(second->plan.verdict->local);
  EXPECT_EQ(second->plan.verdict->enhanced, "4.4.3");
  EXPECT_EQ(second->plan.verdict->reason, "too many DNS plans under way");
  EXPECT_EQ(second->valid_until, now_);
  EXPECT_EQ(router.stats().plans_refused, 1u);
  ASSERT_TRUE(loop_.Run(resolver_.get(), [&] { return first.has_value(); }));
  EXPECT_FALSE(first->plan.verdict);
}

TEST_F(RouterBoundsTest, ARealFailureIsNotLocal) {
  Router router(Ipv4Only(), resolver_.get(), [this] { return now_; }, [] { return uint64_t{0}; });
  RoutePlan p = Plan(&router, &loop_, resolver_.get(), "mail.sub.r.test");  // a referral
  ASSERT_TRUE(p.plan.verdict);
  EXPECT_FALSE(p.plan.verdict->local);
  EXPECT_EQ(p.plan.verdict->enhanced, "4.4.3");
  EXPECT_THAT(p.plan.verdict->reason, HasSubstr("SERVFAIL or timeout"));
}

}  // namespace
}  // namespace volley::dns
