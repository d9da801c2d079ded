// redis_server.h - a real redis-server for the cluster tests: in the
// foreground on a free loopback port, nothing saved, stopped with the test
//
// SYNOPSIS
//   RedisServer redis;
//   ASSERT_TRUE(redis.Start());            // waits until it answers PING
//   options.redis = {redis.address()};
//   redis.Stop();  redis.Start(redis.port());   // an outage, the same port again
//   RedisReply r = redis.Command({"ZCARD", "volley:{pool}:leases"});
#ifndef VOLLEY_TESTS_UNIT_CLUSTER_REDIS_SERVER_H_
#define VOLLEY_TESTS_UNIT_CLUSTER_REDIS_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cluster/redis_link.h"

namespace volley::cluster {

// WaitFor - polls `done` until it holds or `limit` passes (a bound against a
// hang, not a measure: the tests assert what happened, not how fast).
inline bool WaitFor(const std::function<bool()>& done, absl::Duration limit = absl::Seconds(15)) {
  const absl::Time end = absl::Now() + limit;
  while (absl::Now() < end) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

class RedisServer {
 public:
  RedisServer() = default;
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer() {
    Stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Start - on `port` (0: a free one); true once it answers PING.
  bool Start(uint16_t port = 0) {
    if (dir_.empty()) {
      char tmpl[] = "/tmp/volley-cluster-test-XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) return false;
      dir_ = tmpl;
    }
    port_ = port != 0 ? port : FreePort();
    if (port_ == 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string p = absl::StrCat(port_);
      const std::string log = dir_ + "/redis.log";
      ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", dir_.c_str(), "--logfile",
               log.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (pid_ < 0) return false;
    return WaitFor([&] {
      RedisLink link({address()}, absl::Milliseconds(200));
      if (!link.Connect().ok()) return false;
      auto r = link.RoundTrip({RedisCommand{{"PING"}, -1}});
      return r.ok() && (*r)[0].text == "PONG";
    }, absl::Seconds(10));
  }

  void Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }

  uint16_t port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Command - one command on a connection of its own; a nil reply on failure.
  RedisReply Command(std::vector<std::string> words) const {
    RedisLink link({address()}, absl::Seconds(2));
    if (!link.Connect().ok()) return {};
    auto r = link.RoundTrip({RedisCommand{std::move(words), -1}});
    return r.ok() ? (*r)[0] : RedisReply{};
  }

 private:
  static uint16_t FreePort() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port = ntohs(a.sin_port);
    }
    ::close(fd);
    return port;
  }

  std::string dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace volley::cluster

#endif  // VOLLEY_TESTS_UNIT_CLUSTER_REDIS_SERVER_H_
