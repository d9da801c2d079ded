// http_test.cc - volley-sink's stats endpoint: the answer to each request
// (pure), and real requests over a loopback socket.
#include "tools/sink/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace volley::sink {
namespace {

std::string Stats() { return R"({"messages":3})"; }

// StatusLine - the first line of a response.
std::string StatusLine(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

TEST(StatsAnswer, StatsAndNotFound) {
  struct Case {
    const char* method;
    const char* target;
    int status;
  };
  const Case cases[] = {
      {"GET", "/stats", 200},  {"GET", "/", 404},         {"GET", "/stats/", 404},
      {"GET", "/metrics", 404}, {"POST", "/stats", 404},  {"HEAD", "/stats", 404},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(StatsAnswer(c.method, c.target, Stats).status, c.status) << c.method << c.target;
  }
}

TEST(StatsAnswer, TheBodyIsTheCallbacksJson) {
  const http::Response r = StatsAnswer("GET", "/stats", Stats);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, "{\"messages\":3}\n");
  EXPECT_EQ(StatsAnswer("GET", "/", Stats).body, "only GET /stats is here\n");
}

// Get - one request over TCP to port on 127.0.0.1; the whole response.
std::string Get(uint16_t port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

TEST(StatsEndpoint, ServesOverLoopback) {
  int calls = 0;
  auto http = StatsEndpoint::Create("127.0.0.1:0", [&calls] {
    ++calls;
    return std::string(R"({"n":)") + std::to_string(calls) + "}";
  });
  ASSERT_TRUE(http.ok()) << http.status();
  const std::string bound = (*http)->bound();
  ASSERT_EQ(bound.rfind("127.0.0.1:", 0), 0u) << bound;
  const uint16_t port = static_cast<uint16_t>(std::stoi(bound.substr(10)));
  ASSERT_NE(port, 0);
  ASSERT_TRUE((*http)->Start().ok());

  std::string r = Get(port, "GET /stats HTTP/1.1\r\nHost: sink.test\r\n\r\n");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK");
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "{\"n\":1}\n");
  // The head may come in pieces; the callback runs per request.
  r = Get(port, "GET /stats HTTP/1.0\n\n");
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "{\"n\":2}\n");
  r = Get(port, "GET /stats?pretty=1 HTTP/1.1\r\nHost: sink.test\r\n\r\n");  // query ignored
  // These fields and no other (libmicrohttpd writes Connection first).
  std::vector<std::string> fields = absl::StrSplit(r.substr(0, r.find("\r\n\r\n")), "\r\n");
  ASSERT_FALSE(fields.empty());
  EXPECT_EQ(fields.front(), "HTTP/1.1 200 OK");
  std::sort(fields.begin() + 1, fields.end());
  EXPECT_EQ(fields, (std::vector<std::string>{"HTTP/1.1 200 OK", "Cache-Control: no-store",
                                              "Connection: close", "Content-Length: 8",
                                              "Content-Type: application/json"}));
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "{\"n\":3}\n");
  EXPECT_EQ(StatusLine(Get(port, "GET /nothing HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(StatusLine(Get(port, "POST /stats HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  // Refused by libmicrohttpd itself, in its own words (engine/http/server.h).
  for (const char* bad : {"GET /stats\r\n\r\n", "GET /stats HTTP/1.1 extra\r\n\r\n",
                          "EHLO x.test\r\n\r\n"}) {
    EXPECT_EQ(StatusLine(Get(port, bad)), "HTTP/1.1 400 Bad Request") << bad;
  }
  // Refused by engine/http, in this endpoint's words.
  r = Get(port, "get /stats HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "not an HTTP/1.x request\n");
  // A head over the bound: 431 again (civetweb said 400).
  EXPECT_EQ(StatusLine(Get(port, "GET /stats HTTP/1.1\r\nX: " +
                                     std::string(2 * kMaxHttpRequest, 'a') + "\r\n\r\n")),
            "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(calls, 3);
  (*http)->Stop();
  (*http)->Stop();  // twice is fine
}

TEST(StatsEndpoint, BadAddress) {
  auto http = StatsEndpoint::Create("stats.test:80", [] { return std::string(); });
  ASSERT_FALSE(http.ok());
  EXPECT_EQ(http.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(http.status().message(),
            "--http 'stats.test:80': want an IPv4 literal, localhost or [IPv6]");
  http = StatsEndpoint::Create("127.0.0.1", [] { return std::string(); });
  ASSERT_FALSE(http.ok());
  EXPECT_EQ(http.status().message(), "--http '127.0.0.1': expected HOST:PORT");
}

}  // namespace
}  // namespace volley::sink
