// server_test.cc - http::Server on real loopback sockets: routing, what is
// written, refusals in our format, the bounds, start and bind.
#include "engine/http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "gtest/gtest.h"
#include "tests/unit/http/loopback_client.h"

namespace volley::http {
namespace {

sockaddr_storage Loopback(uint16_t port) {
  sockaddr_storage ss{};
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ss;
}

uint16_t PortOf(const std::string& address) {
  return static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

using ::volley::testing::ConnectLoopback;
using ::volley::testing::Exchange;

std::string StatusLine(const std::string& r) { return r.substr(0, r.find("\r\n")); }
std::string Body(const std::string& r) {
  const size_t end = r.find("\r\n\r\n");
  return end == std::string::npos ? "" : r.substr(end + 4);
}

Response Json(int status, std::string_view reason) {
  return Response{status, "application/json", absl::StrCat("{\"error\":\"", base::Sv(reason), "\"}\n"), {}};
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.name = "test server";
    options.error_response = Json;
    options.max_connections = 3;
    auto s = Server::Create(Loopback(0), options);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    port_ = PortOf(server_->address());
    server_->Route("/echo", [](const Request& r) {
      return Response{200, "text/plain",
                      absl::StrCat(base::Sv(r.method), " ", base::Sv(r.target), " q=",
                                   base::Sv(r.query ? *r.query : "(none)"), " v=",
                                   base::Sv(r.version), " cl=", r.content_length, " x=",
                                   base::Sv(r.Find("x-thing").value_or("(none)")), "\n"),
                      {{"X-Extra", "1"}}};
    });
    server_->Route("/tree/", [](const Request& r) {
      return Response{200, "text/plain", absl::StrCat("tree ", base::Sv(r.target)), {}};
    });
    server_->Route("/tree/deep/", [](const Request& r) {
      return Response{200, "text/plain", absl::StrCat("deep ", base::Sv(r.target)), {}};
    });
    server_->Start();
  }
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
};

TEST(WriteResponseTest, FixedFieldsAndNoBodyForHead) {
  const Response r{200, "application/json", "{}\n", {{"Allow", "POST"}}};
  EXPECT_EQ(WriteResponse("GET", r),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\nAllow: POST\r\n\r\n{}\n");
  EXPECT_EQ(WriteResponse("HEAD", r).find("{}"), std::string::npos);
  EXPECT_NE(WriteResponse("HEAD", r).find("Content-Length: 3\r\n"), std::string::npos);
}

TEST_F(ServerTest, RoutesOnTheTargetAsSent) {
  std::string got = Exchange(port_, "GET /echo?a=%41 HTTP/1.1\r\nHost: t\r\nX-Thing: yes\r\n\r\n");
  EXPECT_EQ(StatusLine(got), "HTTP/1.1 200 OK") << got;
  EXPECT_NE(got.find("X-Extra: 1\r\n"), std::string::npos) << got;
  EXPECT_EQ(Body(got), "GET /echo q=a=%41 v=1.1 cl=-1 x=yes\n");
  // Not decoded, not normalised: "%2F" and ".." reach no other route.
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /ech%6F HTTP/1.1\r\n\r\n")),
            "HTTP/1.1 404 Not Found");
  EXPECT_EQ(Body(Exchange(port_, "GET /tree/../echo HTTP/1.1\r\n\r\n")), "tree /tree/../echo");
  // Exact, subtree, longest wins.
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /echo/ HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(Body(Exchange(port_, "GET /tree/a HTTP/1.1\r\n\r\n")), "tree /tree/a");
  EXPECT_EQ(Body(Exchange(port_, "GET /tree/deep/a HTTP/1.1\r\n\r\n")), "deep /tree/deep/a");
  got = Exchange(port_, "GET /tree HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusLine(got), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(Body(got), "{\"error\":\"no such endpoint\"}\n");
  // Bare LF line ends are accepted, as before.
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /echo HTTP/1.0\n\n")), "HTTP/1.1 200 OK");
  // HEAD: the fields, no body.
  got = Exchange(port_, "HEAD /echo HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusLine(got), "HTTP/1.1 200 OK");
  EXPECT_EQ(Body(got), "");
}

TEST_F(ServerTest, RefusalsComeInTheServersFormat) {
  for (const char* bad : {"get /echo HTTP/1.1\r\n\r\n",
                          "GET /echo HTTP/1.1\r\nBad Name: x\r\n\r\n",
                          "GET /ec\x01ho HTTP/1.1\r\n\r\n", "FROB /echo HTTP/1.1\r\n\r\n"}) {
    const std::string got = Exchange(port_, bad);
    EXPECT_EQ(StatusLine(got), "HTTP/1.1 400 Bad Request") << bad;
    EXPECT_NE(got.find("Content-Type: application/json\r\n"), std::string::npos) << bad << got;
    EXPECT_NE(got.find("Cache-Control: no-store\r\n"), std::string::npos) << got;
    EXPECT_EQ(Body(got).rfind("{\"error\":", 0), 0u) << got;
  }
  // libmicrohttpd refuses these itself, in its own words (server.h).
  for (const char* bad : {"GET /echo\r\n\r\n", "GET /echo HTTP/1.1\r\nNo colon\r\n\r\n"}) {
    EXPECT_EQ(StatusLine(Exchange(port_, bad)), "HTTP/1.1 400 Bad Request") << bad;
  }
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /echo HTTP/2.0\r\n\r\n")),
            "HTTP/1.1 505 HTTP Version Not Supported");
  // A head over the bound, whole or cut short: refused without waiting for
  // more, with 431 now (civetweb called it a 400).
  std::string big = "GET /echo HTTP/1.1\r\nX: ";
  big += std::string(8192 - big.size() - 4, 'a') + "\r\n\r\n";
  EXPECT_EQ(StatusLine(Exchange(port_, big)), "HTTP/1.1 200 OK");  // at the bound
  big.insert(30, "a");
  EXPECT_EQ(StatusLine(Exchange(port_, big)), "HTTP/1.1 431 Request Header Fields Too Large");
  // Cut short, it is refused once it passes the bound and the pool's slack
  // (kPoolSlack), without waiting for the deadline.
  const std::string cut = "GET /echo HTTP/1.1\r\nX: " + std::string(8192 + 2048, 'a');
  EXPECT_EQ(StatusLine(Exchange(port_, cut)), "HTTP/1.1 431 Request Header Fields Too Large");
}

TEST_F(ServerTest, NoCrossOriginInvitation) {
  const std::string got =
      Exchange(port_, "GET /echo HTTP/1.1\r\nOrigin: http://evil.test\r\n\r\n");
  EXPECT_EQ(StatusLine(got), "HTTP/1.1 200 OK");
  EXPECT_EQ(got.find("Access-Control"), std::string::npos) << got;
}

TEST_F(ServerTest, SilentClientsDoNotBlockOthers) {
  // Every worker but one held by a client that says nothing, one that sends
  // half a head: the last worker still serves.
  std::vector<int> silent;
  silent.push_back(ConnectLoopback(port_));
  const int half = ConnectLoopback(port_);
  ASSERT_GT(::send(half, "GET /ec", 7, MSG_NOSIGNAL), 0);
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /echo HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
  for (int fd : silent) ::close(fd);
  ::close(half);
}

TEST(ServerStartTest, ARequestBeforeStartWaitsForIt) {
  auto s = Server::Create(Loopback(0), ServerOptions{});
  ASSERT_TRUE(s.ok()) << s.status();
  bool ready = false;  // set before Start, read by the handler: Start orders them
  (*s)->Route("/", [&ready](const Request&) {
    return Response{200, "text/plain", ready ? "ready" : "early", {}};
  });
  std::string got;
  std::thread client([&] { got = Exchange(PortOf((*s)->address()), "GET / HTTP/1.1\r\n\r\n"); });
  ready = true;
  (*s)->Start();
  client.join();
  EXPECT_EQ(Body(got), "ready");
  (*s)->Stop();
  (*s)->Stop();  // twice is fine
}

TEST(ServerStartTest, BodiesUpToTheBound) {
  ServerOptions options;
  options.max_body = 8;
  auto s = Server::Create(Loopback(0), options);
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Route("/", [](const Request& r) { return Response{200, "text/plain", r.body, {}}; });
  (*s)->Start();
  const uint16_t port = PortOf((*s)->address());
  EXPECT_EQ(Body(Exchange(port, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")), "hello");
  EXPECT_EQ(StatusLine(Exchange(port, "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789")),
            "HTTP/1.1 413 Content Too Large");
}

// Forms are MHD's post processor's to parse: both encodings, decoded, bounded; other
// bodies are read as before. The handler prints what it was given.
TEST(ServerFormTest, FormBodiesAreParsed) {
  ServerOptions options;
  options.max_body = 512;
  options.parse_forms = true;
  auto s = Server::Create(Loopback(0), options);
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Route("/", [](const Request& r) {
    std::string out = absl::StrCat("peer=", base::Sv(r.remote_address), " q=",
                                   base::Sv(r.QueryParameter("q").value_or("(none)")),
                                   " body=", r.body);
    for (const FormField& f : r.form) absl::StrAppend(&out, " [", f.name, "]=[", f.value, "]");
    return Response{200, "text/plain", out, {}};
  });
  (*s)->Start();
  const uint16_t port = PortOf((*s)->address());
  const auto post = [port](std::string_view type, std::string_view body) {
    return Exchange(port, absl::StrCat("POST /p?a=1&q=x%20y+z HTTP/1.1\r\nContent-Type: ",
                                       base::Sv(type), "\r\nContent-Length: ", body.size(),
                                       "\r\n\r\n", base::Sv(body)));
  };
  EXPECT_EQ(Body(post("application/x-www-form-urlencoded", "a=1&b=%3Cx%3E+y")),
            "peer=127.0.0.1 q=x y z body= [a]=[1] [b]=[<x> y]");
  EXPECT_EQ(Body(post("Application/X-WWW-Form-Urlencoded; charset=utf-8", "k=v")),
            "peer=127.0.0.1 q=x y z body= [k]=[v]");
  EXPECT_EQ(Body(post("multipart/form-data; boundary=BBBB",
                      "--BBBB\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nv 1\r\n"
                      "--BBBB\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n"
                      "\r\nfile\r\n--BBBB--\r\n")),
            "peer=127.0.0.1 q=x y z body= [k]=[v 1] [f]=[file]");
  EXPECT_EQ(Body(post("text/plain", "k=v")), "peer=127.0.0.1 q=x y z body=k=v");
  EXPECT_EQ(StatusLine(post("multipart/form-data; boundary=BBBB", "not multipart")),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(StatusLine(post("application/x-www-form-urlencoded", std::string(513, 'a'))),
            "HTTP/1.1 413 Content Too Large");
  std::string many;
  for (size_t i = 0; i <= kMaxFormFields; ++i) absl::StrAppend(&many, "f=", i % 10, "&");
  EXPECT_EQ(StatusLine(post("application/x-www-form-urlencoded", many)),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(StatusLine(Exchange(port, "POST / HTTP/1.1\r\nContent-Type: "
                                      "application/x-www-form-urlencoded\r\nTransfer-Encoding: "
                                      "chunked\r\n\r\n3\r\nk=v\r\n0\r\n\r\n")),
            "HTTP/1.1 411 Length Required");
  EXPECT_EQ(Body(Exchange(port, "GET /?qq=1 HTTP/1.1\r\n\r\n")), "peer=127.0.0.1 q=(none) body=");
}

TEST(ServerCreateTest, ErrorsNameTheAddress) {
  auto first = Server::Create(Loopback(0), ServerOptions{});
  ASSERT_TRUE(first.ok()) << first.status();
  const uint16_t port = PortOf((*first)->address());
  ServerOptions options;
  options.name = "admin API";
  auto second = Server::Create(Loopback(port), options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(second.status().message(),
            absl::StrCat("admin API: cannot bind on 127.0.0.1:", port, ": Address already in use"));

  // IPv6 now listens too (civetweb in Debian 12 had no IPv6).
  sockaddr_storage v6{};
  reinterpret_cast<sockaddr_in6&>(v6).sin6_family = AF_INET6;
  reinterpret_cast<sockaddr_in6&>(v6).sin6_addr = in6addr_loopback;
  auto ipv6 = Server::Create(v6, options);
  ASSERT_TRUE(ipv6.ok()) << ipv6.status();
  EXPECT_EQ((*ipv6)->address().rfind("[::1]:", 0), 0u) << (*ipv6)->address();
  (*ipv6)->Route("/", [](const Request& r) {
    return Response{200, "text/plain", std::string(r.remote_address), {}};
  });
  (*ipv6)->Start();
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 to = reinterpret_cast<sockaddr_in6&>(v6);
  to.sin6_port = htons(PortOf((*ipv6)->address()));
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to), 0);
  const std::string request = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[1024];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_EQ(Body(got), "::1");
}

// The endpoints cannot be starved: with more silent and slowloris
// connections held than the cap, a real request is still answered, and the
// silent ones are shut down (oldest first at the cap, all at the deadline).
TEST(ServerGuardTest, HeldConnectionsDoNotStarveARealRequest) {
  ServerOptions options;
  options.max_connections = 8;
  options.request_timeout = absl::Seconds(1);
  auto s = Server::Create(Loopback(0), options);
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Route("/", [](const Request&) { return Response{200, "text/plain", "up", {}}; });
  (*s)->Start();
  const uint16_t port = PortOf((*s)->address());
  std::vector<int> held;
  for (int i = 0; i < 40; ++i) held.push_back(ConnectLoopback(port));
  for (int i = 0; i < 4; ++i) {  // slowloris: half a head, more later
    held.push_back(ConnectLoopback(port));
    ASSERT_GT(::send(held.back(), "GET / HT", 8, MSG_NOSIGNAL), 0);
  }
  EXPECT_EQ(Body(Exchange(port, "GET / HTTP/1.1\r\n\r\n")), "up");
  // The first silent connection was shut down at the cap: it reads the end.
  char c;
  EXPECT_EQ(::recv(held.front(), &c, 1, 0), 0);
  // A slowloris that keeps sending a byte is cut at the deadline all the same.
  for (int i = 0; i < 3; ++i) {
    (void)::send(held.back(), "T", 1, MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  EXPECT_EQ(::recv(held.back(), &c, 1, 0), 0);
  const ServerStats stats = (*s)->stats();
  EXPECT_GE(stats.evicted, 36u);
  EXPECT_GE(stats.expired, 1u);
  for (int fd : held) ::close(fd);
  EXPECT_EQ(Body(Exchange(port, "GET / HTTP/1.1\r\n\r\n")), "up");
}

// With keep_alive, a client's connection carries its next request (so a
// scraper never waits behind a flood in the listen backlog); without it, and
// after a refusal that may leave a body unread, the answer closes.
TEST(ServerKeepAliveTest, TheConnectionCarriesTheNextRequest) {
  for (const bool keep : {true, false}) {
    ServerOptions options;
    options.keep_alive = keep ? absl::Seconds(30) : absl::ZeroDuration();
    auto s = Server::Create(Loopback(0), options);
    ASSERT_TRUE(s.ok()) << s.status();
    int served = 0;
    (*s)->Route("/n", [&served](const Request&) {
      return Response{200, "text/plain", absl::StrCat("n", ++served), {}};
    });
    (*s)->Start();
    const int fd = ConnectLoopback(PortOf((*s)->address()));
    const auto ask = [fd](std::string_view request) {
      std::string got;
      if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) < 0) return got;
      char buf[4096];
      // One answer: its head, then Content-Length octets of body.
      while (true) {
        const size_t end = got.find("\r\n\r\n");
        if (end != std::string::npos) {
          const size_t at = got.find("Content-Length: ");
          const size_t length = at == std::string::npos ? 0 : std::stoul(got.substr(at + 16));
          if (got.size() >= end + 4 + length) return got;
        }
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return got;
        got.append(buf, static_cast<size_t>(n));
      }
    };
    const std::string first = ask("GET /n HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(Body(first), "n1");
    EXPECT_EQ(first.find("Connection: close") == std::string::npos, keep) << first;
    const std::string second = ask("GET /n HTTP/1.1\r\nHost: x\r\n\r\n");
    if (keep) {
      EXPECT_EQ(Body(second), "n2");
      EXPECT_EQ((*s)->stats().open, 1u);
      // A request with a body this server does not read: answered, closed.
      const std::string third =
          ask("GET /n HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
      EXPECT_NE(third.find("Connection: close"), std::string::npos) << third;
      char c;
      EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
    } else {
      EXPECT_EQ(second, "");  // closed after the first answer
    }
    ::close(fd);
  }
}

}  // namespace
}  // namespace volley::http
