// host_name_test.cc - the default EHLO name: which of the host's names is chosen
#include "engine/host_name.h"

#include <unistd.h>

#include <string>

#include "engine/config.h"

#include "engine/smtp/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using ::testing::HasSubstr;

TEST(ChooseEhloName, PrefersAQualifiedNameAndFallsBackToGethostname) {
  struct Case {
    const char* host;       // gethostname()
    const char* canonical;  // getaddrinfo(AI_CANONNAME), "" when it failed
    const char* want;
    bool qualified;
  };
  const Case cases[] = {
      // Debian's usual set-up: a short host name, the FQDN first in /etc/hosts.
      {"vm", "vm.example.test", "vm.example.test", true},
      {"vm", "Mail.Example.Test.", "mail.example.test", true},
      // The host name already qualified (no lookup is made then: canonical "").
      {"mx1.example.test", "", "mx1.example.test", true},
      {"mx1.example.test", "mx1", "mx1.example.test", true},
      // Nothing qualified: gethostname()'s answer, with the warning.
      {"vm", "", "vm", false},
      {"vm", "vm", "vm", false},
      {"VM", "", "vm", false},
      // What /etc/hosts gives a host without a real name is no FQDN either.
      {"vm", "localhost", "vm", false},
      {"vm", "localhost.localdomain", "vm", false},
      {"vm", "vm.localdomain", "vm", false},
      // gethostname() failed or gave no host name: the canonical name, or "localhost".
      {"", "vm.example.test", "vm.example.test", true},
      {"", "", "localhost", false},
      {"bad name", "", "localhost", false},
      {"vm\r\nRSET", "", "localhost", false},
      {"vm", "-bad-.example.test", "vm", false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "host \"" << c.host << "\", canonical \"" << c.canonical
                                    << "\"");
    const EhloNameChoice got = ChooseEhloName(c.host, c.canonical);
    EXPECT_EQ(got.name, c.want);
    EXPECT_EQ(got.qualified, c.qualified);
    EXPECT_EQ(got.qualified, IsQualifiedEhloName(got.name));
    EXPECT_TRUE(smtp::ValidateEhloName(got.name).ok()) << got.name;
  }
}

TEST(IsQualifiedEhloName, NamesAndAddressLiterals) {
  for (const char* yes : {"mx.example.test", "mx.example.test.", "a.b", "[192.0.2.1]",
                          "[IPv6:2001:db8::1]"}) {
    EXPECT_TRUE(IsQualifiedEhloName(yes)) << yes;
  }
  for (const char* no : {"vm", "vm.", "", ".", ".test", "localhost", "localhost.localdomain",
                         "host.LocalDomain", "a.localhost"}) {
    EXPECT_FALSE(IsQualifiedEhloName(no)) << no;
  }
}

TEST(EhloNameWarning, NamesTheNameTheRuleAndTheKey) {
  const std::string w = EhloNameWarning("vm");
  EXPECT_THAT(w, HasSubstr("\"vm\""));
  EXPECT_THAT(w, HasSubstr("RFC 5321 section 4.1.1.1"));
  EXPECT_THAT(w, HasSubstr("[smtp] ehlo_name"));
}

TEST(DefaultEhloName, IsUsableAndLookedUpOnce) {
  const EhloNameChoice& first = DefaultEhloName();
  EXPECT_TRUE(smtp::ValidateEhloName(first.name).ok()) << first.name;
  EXPECT_EQ(first.qualified, IsQualifiedEhloName(first.name));
  EXPECT_EQ(&DefaultEhloName(), &first);  // kept, not asked again
}

TEST(ChooseNodeName, TheConfiguredNameThenTheHostNameThenLocalhost) {
  EXPECT_EQ(ChooseNodeName("node-a", "vm"), "node-a");
  // Whole, not cut at the first dot: two hosts mx1 in two data centres stay two nodes.
  EXPECT_EQ(ChooseNodeName("", "mx1.dc1.example.test"), "mx1.dc1.example.test");
  EXPECT_EQ(ChooseNodeName("", ""), "localhost");
}

TEST(NodeName, ConfiguredOrThisMachinesHostName) {
  Config config;
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(NodeName(config), ChooseNodeName("", host));
  config.cluster.node = "node-b";
  EXPECT_EQ(NodeName(config), "node-b");
  config.cluster.node.clear();
  EXPECT_EQ(NodeName(config), ChooseNodeName("", host));  // the kept answer, still the same
}

}  // namespace
}  // namespace volley::engine
