// listen_test.cc - volley-sink's --listen arguments: single addresses, IPv4
// ranges (last octet or whole address), and the errors that name the argument.
#include "engine/smtpd/listen.h"

#include <netinet/in.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace volley::smtpd {
namespace {

TEST(ExpandListen, SingleAddresses) {
  struct Case {
    const char* arg;
    uint16_t port;
  };
  for (const Case& c : {Case{"127.0.0.1:2525", 2525}, Case{"localhost:0", 0},
                        Case{"[::1]:25", 25}, Case{"10.1.2.3:65535", 65535}}) {
    auto g = ExpandListen(c.arg);
    ASSERT_TRUE(g.ok()) << c.arg << ": " << g.status();
    EXPECT_FALSE(g->range) << c.arg;
    EXPECT_EQ(g->port, c.port) << c.arg;
    EXPECT_EQ(g->addresses, std::vector<std::string>{c.arg});
    EXPECT_EQ(g->arg, c.arg);
  }
}

TEST(ExpandListen, LastOctetRange) {
  auto g = ExpandListen("127.0.1.1-250:2525");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->range);
  EXPECT_EQ(g->port, 2525);
  ASSERT_EQ(g->addresses.size(), 250u);
  EXPECT_EQ(g->addresses.front(), "127.0.1.1:2525");
  EXPECT_EQ(g->addresses[9], "127.0.1.10:2525");
  EXPECT_EQ(g->addresses.back(), "127.0.1.250:2525");
}

TEST(ExpandListen, FullRangeCrossesOctets) {
  auto g = ExpandListen("127.0.1.250-127.0.2.3:0");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->addresses,
            (std::vector<std::string>{"127.0.1.250:0", "127.0.1.251:0", "127.0.1.252:0",
                                      "127.0.1.253:0", "127.0.1.254:0", "127.0.1.255:0",
                                      "127.0.2.0:0", "127.0.2.1:0", "127.0.2.2:0",
                                      "127.0.2.3:0"}));
  EXPECT_EQ(g->port, 0);
}

TEST(ExpandListen, OneAddressRangeAndTheTop) {
  auto one = ExpandListen("127.0.0.9-9:25");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->addresses, std::vector<std::string>{"127.0.0.9:25"});
  // The last address of the space must not wrap the loop around.
  auto top = ExpandListen("255.255.255.254-255.255.255.255:25");
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->addresses,
            (std::vector<std::string>{"255.255.255.254:25", "255.255.255.255:25"}));
}

TEST(ExpandListen, BoundIsInclusive) {
  // 127.0.0.0 .. 127.0.255.255 is exactly kMaxRangeAddresses.
  auto most = ExpandListen("127.0.0.0-127.0.255.255:2525");
  ASSERT_TRUE(most.ok()) << most.status();
  EXPECT_EQ(most->addresses.size(), kMaxRangeAddresses);
  EXPECT_EQ(most->addresses.back(), "127.0.255.255:2525");

  auto over = ExpandListen("127.0.0.0-127.1.0.0:2525");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(),
            "--listen '127.0.0.0-127.1.0.0:2525': 65537 addresses; a range may name at "
            "most 65536");
}

TEST(ExpandListen, Errors) {
  struct Case {
    const char* arg;
    const char* message;
  };
  const Case cases[] = {
      {"127.0.0.1", "--listen '127.0.0.1': expected HOST:PORT"},
      {"127.0.0.1:", "--listen '127.0.0.1:': port must be 0..65535"},
      {"127.0.0.1:65536", "--listen '127.0.0.1:65536': port must be 0..65535"},
      {"127.0.0.1:25x", "--listen '127.0.0.1:25x': port must be 0..65535"},
      {"mx.test:25", "--listen 'mx.test:25': want an IPv4 literal, localhost or [IPv6]"},
      {"[::zz]:25", "--listen '[::zz]:25': bad IPv6 address"},
      {"127.0.1.9-3:25", "--listen '127.0.1.9-3:25': the range ends before it starts"},
      {"127.0.2.1-127.0.1.1:25",
       "--listen '127.0.2.1-127.0.1.1:25': the range ends before it starts"},
      {"127.0.1.1-256:25",
       "--listen '127.0.1.1-256:25': the range's end is neither an IPv4 literal nor a last "
       "octet 0..255"},
      {"127.0.1.1-:25",
       "--listen '127.0.1.1-:25': the range's end is neither an IPv4 literal nor a last "
       "octet 0..255"},
      {"127.0.1.1-x:25",
       "--listen '127.0.1.1-x:25': the range's end is neither an IPv4 literal nor a last "
       "octet 0..255"},
      {"127.0.1.1-127.0.1:25",
       "--listen '127.0.1.1-127.0.1:25': the range's end is not an IPv4 literal"},
      {"localhost-5:25",
       "--listen 'localhost-5:25': a range is IPv4 only: want A-B:PORT or A-LASTOCTET:PORT, "
       "A an IPv4 literal"},
      {"-5:25",
       "--listen '-5:25': a range is IPv4 only: want A-B:PORT or A-LASTOCTET:PORT, A an "
       "IPv4 literal"},
      {"127.0.1.1-250:99999", "--listen '127.0.1.1-250:99999': port must be 0..65535"},
  };
  for (const Case& c : cases) {
    auto g = ExpandListen(c.arg);
    ASSERT_FALSE(g.ok()) << c.arg << " was accepted";
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << c.arg;
    EXPECT_EQ(g.status().message(), c.message) << c.arg;
  }
}

TEST(ParseListenAddress, FamiliesAndPorts) {
  sockaddr_storage ss;
  socklen_t len = 0;
  ASSERT_TRUE(ParseListenAddress("127.0.1.7:2525", &ss, &len).ok());
  EXPECT_EQ(ss.ss_family, AF_INET);
  EXPECT_EQ(len, sizeof(sockaddr_in));
  EXPECT_EQ(FormatAddress(ss), "127.0.1.7:2525");
  ASSERT_TRUE(ParseListenAddress("localhost:0", &ss, &len).ok());
  EXPECT_EQ(FormatAddress(ss), "127.0.0.1:0");
  ASSERT_TRUE(ParseListenAddress("[::1]:25", &ss, &len).ok());
  EXPECT_EQ(ss.ss_family, AF_INET6);
  EXPECT_EQ(len, sizeof(sockaddr_in6));
  EXPECT_EQ(FormatAddress(ss), "[::1]:25");
  // A range is not one address.
  EXPECT_FALSE(ParseListenAddress("127.0.1.1-9:25", &ss, &len).ok());
}

}  // namespace
}  // namespace volley::smtpd
