#include "dns/routes.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::dns {
namespace {

TEST(StaticRoutes, ExactDomainThenFallback) {
  auto routes = StaticRoutes::Create(
      {{"Big.test", "127.0.0.2:2525"}, {"*", "127.0.0.1:25"}, {"v6.test", "[::1]:2526"}});
  ASSERT_TRUE(routes.ok()) << routes.status();
  const Route* big = (*routes)->Find("big.TEST");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->name, "127.0.0.2:2525");
  ASSERT_EQ(big->hosts.size(), 1u);
  EXPECT_EQ(big->hosts[0].port, 2525);
  EXPECT_EQ((*routes)->Find("other.test")->name, "127.0.0.1:25");
  EXPECT_EQ((*routes)->Find("v6.test")->name, "[::1]:2526");
  EXPECT_EQ((*routes)->Find("v6.test")->hosts[0].addr.ss_family, AF_INET6);
}

TEST(StaticRoutes, SeveralHostsInOrderOfPreference) {
  auto routes = StaticRoutes::Create({{"a.test", "127.0.0.2:2526, [::1]:25,127.0.0.3:25"}});
  ASSERT_TRUE(routes.ok()) << routes.status();
  const Route* a = (*routes)->Find("a.test");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name, "127.0.0.2:2526,[::1]:25,127.0.0.3:25");
  ASSERT_EQ(a->hosts.size(), 3u);
  EXPECT_EQ(a->hosts[0].host, "127.0.0.2");
  EXPECT_EQ(a->hosts[1].host, "::1");
  EXPECT_EQ(a->hosts[2].name, "127.0.0.3:25");
}

TEST(StaticRoutes, NoFallbackMeansNoRoute) {
  auto routes = StaticRoutes::Create({{"a.test", "127.0.0.1:25"}});
  ASSERT_TRUE(routes.ok());
  EXPECT_EQ((*routes)->Find("b.test"), nullptr);
}

TEST(StaticRoutes, BadEntriesNameTheDomain) {
  const std::pair<const char*, const char*> bad[] = {
      {"a.test", "127.0.0.1"},          {"a.test", "127.0.0.1:0"},
      {"a.test", "127.0.0.1:65536"},    {"a.test", "mx.a.test:25"},
      {"a.test", "[::1:25"},            {"a.test", "127.0.0.1:2x"},
      {"a.test", "127.0.0.1:25,"},      {"a.test", "127.0.0.1:25,mx.a.test:25"},
  };
  for (const auto& [domain, target] : bad) {
    auto routes = StaticRoutes::Create({{domain, target}});
    ASSERT_FALSE(routes.ok()) << target;
    EXPECT_THAT(std::string(routes.status().message()),
                ::testing::StartsWith("routes.\"a.test\": "))
        << target;
  }
}

}  // namespace
}  // namespace volley::dns
