#include "base/host_port.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "gtest/gtest.h"

namespace volley::base {
namespace {

TEST(ParseHostPort, Accepts) {
  struct Case {
    std::string text;
    std::string host;
    uint16_t port;
    bool bracketed;
  };
  const Case cases[] = {
      {"127.0.0.1:25", "127.0.0.1", 25, false},
      {"[::1]:2525", "::1", 2525, true},
      {"host.test:25", "host.test", 25, false},
      {"localhost:65535", "localhost", 65535, false},
      {"[2001:db8::1]:1", "2001:db8::1", 1, true},
      {"127.0.1.1-250:2525", "127.0.1.1-250", 2525, false},  // the sink's ranges split too
  };
  for (const Case& c : cases) {
    auto got = ParseHostPort(c.text);
    ASSERT_TRUE(got.ok()) << c.text << ": " << got.status();
    EXPECT_EQ(got->host, c.host) << c.text;
    EXPECT_EQ(got->port, c.port) << c.text;
    EXPECT_EQ(got->bracketed, c.bracketed) << c.text;
    EXPECT_EQ(FormatHostPort(*got), c.text) << c.text;
  }
}

TEST(ParseHostPort, RefusesWithTheReason) {
  struct Case {
    std::string text;
    std::string want;
  };
  const Case cases[] = {
      {"127.0.0.1", "expected HOST:PORT"},          // missing port
      {":25", "expected HOST:PORT"},                // missing host
      {"", "expected HOST:PORT"},
      {"127.0.0.1:", "port must be 1..65535"},      // empty port
      {"127.0.0.1:0", "port must be 1..65535"},
      {"127.0.0.1:65536", "port must be 1..65535"},
      {"127.0.0.1:123456", "port must be 1..65535"},
      {"127.0.0.1:25x", "port must be 1..65535"},
      {"127.0.0.1:-1", "port must be 1..65535"},
      {"127.0.0.1: 25", "port must be 1..65535"},
      {"[::1:25", "expected [IPv6]:PORT"},          // unbalanced brackets
      {"[::1]25", "expected [IPv6]:PORT"},
      {"[::1]", "expected [IPv6]:PORT"},
      {"[]:25", "expected [IPv6]:PORT"},
      {"::1:25", "expected [IPv6]:PORT"},           // ambiguous without brackets
  };
  for (const Case& c : cases) {
    auto got = ParseHostPort(c.text);
    ASSERT_FALSE(got.ok()) << c.text;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_EQ(got.status().message(), c.want) << c.text;
  }
}

TEST(ParseHostPort, PortZeroOnlyWhenAllowed) {
  auto got = ParseHostPort("127.0.0.1:0", PortZero::kAllow);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->port, 0);
  EXPECT_EQ(ParseHostPort("127.0.0.1:65536", PortZero::kAllow).status().message(),
            "port must be 0..65535");
}

TEST(IpLiteralAddress, LiteralsOnly) {
  sockaddr_storage ss;
  socklen_t len = 0;
  ASSERT_TRUE(IpLiteralAddress(*ParseHostPort("127.0.0.1:2525"), &ss, &len));
  ASSERT_EQ(ss.ss_family, AF_INET);
  EXPECT_EQ(len, sizeof(sockaddr_in));
  EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port), 2525);

  ASSERT_TRUE(IpLiteralAddress(*ParseHostPort("[::1]:25"), &ss, &len));
  ASSERT_EQ(ss.ss_family, AF_INET6);
  EXPECT_EQ(len, sizeof(sockaddr_in6));
  EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port), 25);

  EXPECT_FALSE(IpLiteralAddress(*ParseHostPort("host.test:25"), &ss, &len));
  EXPECT_FALSE(IpLiteralAddress(*ParseHostPort("[127.0.0.1]:25"), &ss, &len));  // v4 unbracketed
  EXPECT_FALSE(IpLiteralAddress(*ParseHostPort("[host.test]:25"), &ss, &len));
}

}  // namespace
}  // namespace volley::base
