#include "dns/mx.h"

#include <arpa/inet.h>

#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::dns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

DnsAnswer Mx(std::vector<MxRecord> records) {
  DnsAnswer a;
  a.kind = AnswerKind::kOk;
  a.mx = std::move(records);
  a.ttl = 300;
  return a;
}

DnsAnswer Kind(AnswerKind kind) {
  DnsAnswer a;
  a.kind = kind;
  return a;
}

DnsAnswer Addrs(const std::vector<std::string>& ips) {
  DnsAnswer a;
  a.kind = AnswerKind::kOk;
  for (const std::string& s : ips) {
    auto ip = IpAddress::Parse(s);
    EXPECT_TRUE(ip.has_value()) << s;
    if (ip) a.addresses.push_back(*ip);
  }
  a.ttl = 300;
  return a;
}

std::function<uint64_t()> Seeded(uint64_t seed) {
  auto gen = std::make_shared<std::mt19937_64>(seed);
  return [gen] { return (*gen)(); };
}

std::vector<std::string> Names(const MxHostList& list) {
  std::vector<std::string> names;
  for (const MxHost& h : list.hosts) names.push_back(h.name);
  return names;
}

std::vector<std::string> Ips(const PlannedHost& host) {
  std::vector<std::string> ips;
  for (const IpAddress& ip : host.addresses) ips.push_back(ip.ToString());
  return ips;
}

MxOptions Loopback() {
  MxOptions o;
  o.allow_loopback = true;
  return o;
}

TEST(NormalizeDomain, LowercasesAndDropsOneFinalDot) {
  EXPECT_EQ(NormalizeDomain("MX.A.Test."), "mx.a.test");
  EXPECT_EQ(NormalizeDomain("mx-1.a.test"), "mx-1.a.test");
  EXPECT_EQ(NormalizeDomain("a"), "a");
  EXPECT_EQ(NormalizeDomain(std::string(63, 'a') + ".test"), std::string(63, 'a') + ".test");
}

TEST(NormalizeDomain, RefusesWhatIsNoHostName) {
  const std::string long_label = std::string(64, 'a') + ".test";
  std::string long_name;
  while (long_name.size() < 250) long_name += "abcdefghi.";
  long_name += "test";  // 254 octets
  for (const std::string& bad :
       {std::string(""), std::string("."), std::string(".."), std::string("a..test"),
        std::string("a.test.."), std::string(".a.test"), std::string("-a.test"),
        std::string("a-.test"), std::string("a_b.test"), std::string("a b.test"),
        std::string("b\xc3\xa9.test"), long_label, long_name}) {
    EXPECT_EQ(NormalizeDomain(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(long_name.size(), 254u);
  EXPECT_TRUE(NormalizeDomain(long_name.substr(1)).has_value());  // 253 is fine
}

TEST(SelectMxHosts, SortsByPreferenceAndNeverReordersUnequalOnes) {
  const DnsAnswer answer =
      Mx({{30, "c.mx.test"}, {10, "a.mx.test"}, {20, "b.mx.test"}, {40, "d.mx.test"}});
  for (uint64_t seed = 0; seed < 50; ++seed) {
    MxHostList list = SelectMxHosts("a.test", answer, MxOptions{}, Seeded(seed));
    ASSERT_FALSE(list.verdict);
    EXPECT_FALSE(list.implicit);
    EXPECT_THAT(Names(list), ElementsAre("a.mx.test", "b.mx.test", "c.mx.test", "d.mx.test"));
  }
}

TEST(SelectMxHosts, ShufflesEqualPreferencesDeterministically) {
  const DnsAnswer answer = Mx({{10, "x.mx.test"}, {10, "y.mx.test"}, {20, "z.mx.test"}});
  std::set<std::vector<std::string>> orders;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    const auto names = Names(SelectMxHosts("a.test", answer, MxOptions{}, Seeded(seed)));
    ASSERT_EQ(names.size(), 3u);
    EXPECT_EQ(names[2], "z.mx.test");
    orders.insert(names);
    // The same seed gives the same order.
    EXPECT_EQ(Names(SelectMxHosts("a.test", answer, MxOptions{}, Seeded(seed))), names);
  }
  EXPECT_EQ(orders.size(), 2u);  // both x,y,z and y,x,z
}

TEST(SelectMxHosts, ShuffleOfThreeReachesEveryOrder) {
  const DnsAnswer answer = Mx({{5, "p.mx.test"}, {5, "q.mx.test"}, {5, "r.mx.test"}});
  std::set<std::vector<std::string>> orders;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    orders.insert(Names(SelectMxHosts("a.test", answer, MxOptions{}, Seeded(seed))));
  }
  EXPECT_EQ(orders.size(), 6u);
}

TEST(SelectMxHosts, NoRandomSourceMeansNameOrder) {
  const DnsAnswer answer = Mx({{10, "y.mx.test"}, {10, "x.mx.test"}});
  EXPECT_THAT(Names(SelectMxHosts("a.test", answer, MxOptions{}, nullptr)),
              ElementsAre("x.mx.test", "y.mx.test"));
}

TEST(SelectMxHosts, NoMxRecordsMeansTheImplicitMx) {
  for (const DnsAnswer& answer : {Kind(AnswerKind::kNoData), Mx({})}) {
    MxHostList list = SelectMxHosts("Plain.Test.", answer, MxOptions{}, Seeded(1));
    ASSERT_FALSE(list.verdict);
    EXPECT_TRUE(list.implicit);
    EXPECT_EQ(list.domain, "plain.test");
    EXPECT_THAT(Names(list), ElementsAre("plain.test"));
    EXPECT_EQ(list.hosts[0].preference, 0);
    EXPECT_EQ(list.site, "plain.test");

    const DnsAnswer a = Addrs({"127.0.0.5"});
    const HostAnswers answers[] = {{&a, nullptr}};
    MxPlan plan = PlanDelivery(list, answers, Loopback());
    ASSERT_FALSE(plan.verdict);
    ASSERT_EQ(plan.hosts.size(), 1u);
    EXPECT_EQ(plan.hosts[0].name, "plain.test");
    EXPECT_THAT(Ips(plan.hosts[0]), ElementsAre("127.0.0.5"));
  }
}

TEST(SelectMxHosts, WithMxRecordsTheDomainsOwnAddressesAreNeverUsed) {
  MxHostList list =
      SelectMxHosts("a.test", Mx({{10, "mx.b.test"}}), MxOptions{}, Seeded(1));
  ASSERT_FALSE(list.verdict);
  EXPECT_FALSE(list.implicit);
  EXPECT_THAT(Names(list), ElementsAre("mx.b.test"));
  // The MX host does not resolve: no fallback to a.test, a deferral.
  const DnsAnswer nx = Kind(AnswerKind::kNxDomain);
  const HostAnswers answers[] = {{&nx, &nx}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_TRUE(plan.verdict);
  EXPECT_FALSE(plan.verdict->permanent);
  EXPECT_EQ(plan.verdict->enhanced, "4.4.4");
  EXPECT_THAT(plan.verdict->reason, HasSubstr("mx.b.test: no such host (NXDOMAIN)"));
  EXPECT_THAT(plan.hosts, IsEmpty());
}

TEST(SelectMxHosts, NullMxBouncesAtOnce) {
  for (const DnsAnswer& answer :
       {Mx({{0, "."}}), Mx({{0, ""}}), Mx({{0, "."}, {0, "."}}), Mx({{10, "."}})}) {
    MxHostList list = SelectMxHosts("nomail.test", answer, MxOptions{}, Seeded(1));
    ASSERT_TRUE(list.verdict);
    EXPECT_TRUE(list.verdict->permanent);
    EXPECT_EQ(list.verdict->enhanced, "5.1.10");
    EXPECT_THAT(list.verdict->reason, HasSubstr("nomail.test does not accept mail"));
    EXPECT_THAT(list.hosts, IsEmpty());
    MxPlan plan = PlanDelivery(list, {}, MxOptions{});
    ASSERT_TRUE(plan.verdict);
    EXPECT_EQ(plan.verdict->enhanced, "5.1.10");
  }
}

TEST(SelectMxHosts, NullMxAmongOtherRecordsIsSkipped) {
  MxHostList list = SelectMxHosts("broken.test", Mx({{0, "."}, {10, "mx.broken.test"}}),
                                  MxOptions{}, Seeded(1));
  ASSERT_FALSE(list.verdict);
  EXPECT_THAT(Names(list), ElementsAre("mx.broken.test"));
  ASSERT_EQ(list.skipped.size(), 1u);
  EXPECT_THAT(list.skipped[0], HasSubstr("null MX among other MX records"));
  EXPECT_EQ(list.site, "mx.broken.test");
}

TEST(SelectMxHosts, NxDomainBouncesServFailDefers) {
  MxHostList nx = SelectMxHosts("gone.test", Kind(AnswerKind::kNxDomain), MxOptions{}, Seeded(1));
  ASSERT_TRUE(nx.verdict);
  EXPECT_TRUE(nx.verdict->permanent);
  EXPECT_EQ(nx.verdict->enhanced, "5.1.2");
  EXPECT_THAT(nx.verdict->reason, HasSubstr("gone.test: no such domain"));

  MxHostList sf = SelectMxHosts("sick.test", Kind(AnswerKind::kServFail), MxOptions{}, Seeded(1));
  ASSERT_TRUE(sf.verdict);
  EXPECT_FALSE(sf.verdict->permanent);
  EXPECT_EQ(sf.verdict->enhanced, "4.4.3");
  EXPECT_THAT(sf.hosts, IsEmpty());  // no implicit MX after a failed MX lookup
}

DnsAnswer QueueFull() {
  DnsAnswer a = Kind(AnswerKind::kServFail);
  a.local = true;
  return a;
}

TEST(SelectMxHosts, LocalFailureIsALocalDeferralNotAServFail) {
  MxHostList list = SelectMxHosts("busy.test", QueueFull(), MxOptions{}, Seeded(1));
  ASSERT_TRUE(list.verdict);
  EXPECT_TRUE(list.verdict->local);
  EXPECT_FALSE(list.verdict->permanent);
  EXPECT_EQ(list.verdict->enhanced, "4.4.3");
  EXPECT_EQ(list.verdict->reason, "busy.test: resolver queue full");
  EXPECT_THAT(list.hosts, IsEmpty());
  // Carried through PlanDelivery as it is.
  MxPlan plan = PlanDelivery(list, {}, MxOptions{});
  ASSERT_TRUE(plan.verdict);
  EXPECT_TRUE(plan.verdict->local);
  EXPECT_EQ(plan.verdict->reason, "busy.test: resolver queue full");
  // A server's failure stays one.
  MxHostList sf = SelectMxHosts("sick.test", Kind(AnswerKind::kServFail), MxOptions{}, Seeded(1));
  ASSERT_TRUE(sf.verdict);
  EXPECT_FALSE(sf.verdict->local);
  EXPECT_THAT(sf.verdict->reason, HasSubstr("MX lookup failed (SERVFAIL or timeout)"));
}

TEST(SelectMxHosts, InvalidDomainBounces) {
  MxHostList list = SelectMxHosts("a..test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  ASSERT_TRUE(list.verdict);
  EXPECT_TRUE(list.verdict->permanent);
  EXPECT_EQ(list.verdict->enhanced, "5.1.3");
}

TEST(SelectMxHosts, NamesAreNormalisedAndDuplicatesCollapse) {
  MxHostList list = SelectMxHosts(
      "a.test", Mx({{20, "MX1.A.Test."}, {10, "mx1.a.test"}, {15, "mx2.a.test."}}), MxOptions{},
      Seeded(1));
  ASSERT_FALSE(list.verdict);
  ASSERT_EQ(list.hosts.size(), 2u);
  EXPECT_EQ(list.hosts[0].name, "mx1.a.test");
  EXPECT_EQ(list.hosts[0].preference, 10);  // the most preferred listing wins
  EXPECT_EQ(list.hosts[1].name, "mx2.a.test");
}

TEST(SelectMxHosts, InvalidExchangesAreSkippedAndNoneLeftDefers) {
  MxHostList some = SelectMxHosts("a.test", Mx({{10, "bad_name.test"}, {20, "mx.a.test"}}),
                                  MxOptions{}, Seeded(1));
  ASSERT_FALSE(some.verdict);
  EXPECT_THAT(Names(some), ElementsAre("mx.a.test"));
  ASSERT_EQ(some.skipped.size(), 1u);
  EXPECT_THAT(some.skipped[0], HasSubstr("bad_name.test"));

  MxHostList none = SelectMxHosts("a.test", Mx({{10, "bad_name.test"}, {20, "-x.test"}}),
                                  MxOptions{}, Seeded(1));
  ASSERT_TRUE(none.verdict);
  EXPECT_FALSE(none.verdict->permanent);
  EXPECT_EQ(none.verdict->enhanced, "4.4.4");
  EXPECT_THAT(none.verdict->reason, HasSubstr("no usable MX host"));
}

TEST(SelectMxHosts, KeepsAtMostMaxMxHostsTheMostPreferred) {
  std::vector<MxRecord> records;
  for (int i = 14; i >= 0; --i) {
    records.push_back({static_cast<uint16_t>(i), "mx" + std::to_string(i) + ".a.test"});
  }
  MxHostList list = SelectMxHosts("a.test", Mx(records), MxOptions{}, Seeded(1));
  ASSERT_FALSE(list.verdict);
  ASSERT_EQ(list.hosts.size(), 10u);
  EXPECT_EQ(list.hosts.front().name, "mx0.a.test");
  EXPECT_EQ(list.hosts.back().name, "mx9.a.test");
  EXPECT_THAT(list.skipped, ElementsAre(HasSubstr("5 MX hosts past the limit of 10")));

  MxOptions two;
  two.max_mx_hosts = 2;
  // Equal preferences at the cut: the choice goes by name, not by the shuffle.
  const DnsAnswer equal = Mx({{10, "c.test"}, {10, "a.test"}, {10, "b.test"}});
  for (uint64_t seed = 0; seed < 20; ++seed) {
    MxHostList cut = SelectMxHosts("d.test", equal, two, Seeded(seed));
    EXPECT_EQ(cut.site, "a.test,b.test");
    const std::vector<std::string> names = Names(cut);
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
              (std::set<std::string>{"a.test", "b.test"}));
  }
}

TEST(SiteKey, SameExchangesGiveOneSite) {
  MxHostList one = SelectMxHosts(
      "one.test", Mx({{20, "mx3.p.test"}, {10, "mx2.p.test"}, {10, "mx1.p.test"}}), MxOptions{},
      Seeded(1));
  MxHostList two = SelectMxHosts(
      "two.test", Mx({{10, "MX1.p.test."}, {10, "mx2.P.test"}, {20, "mx3.p.test"}}), MxOptions{},
      Seeded(99));
  EXPECT_EQ(one.site, "mx1.p.test,mx2.p.test,mx3.p.test");
  EXPECT_EQ(one.site, two.site);
  MxHostList other =
      SelectMxHosts("three.test", Mx({{10, "mx1.p.test"}, {10, "mx2.p.test"}}), MxOptions{},
                    Seeded(1));
  EXPECT_NE(other.site, one.site);
  const MxHost hosts[] = {{"b.test", 10}, {"a.test", 20}, {"c.test", 10}};
  EXPECT_EQ(SiteKey(hosts), "b.test,c.test,a.test");
}

TEST(ClassifyAddress, Ranges) {
  const std::pair<const char*, AddressClass> cases[] = {
      {"192.0.2.1", AddressClass::kReserved},       {"8.8.8.8", AddressClass::kGlobal},
      {"127.0.0.1", AddressClass::kLoopback},       {"127.255.0.9", AddressClass::kLoopback},
      {"10.0.0.1", AddressClass::kPrivate},         {"172.16.0.1", AddressClass::kPrivate},
      {"172.31.255.1", AddressClass::kPrivate},     {"172.32.0.1", AddressClass::kGlobal},
      {"192.168.1.1", AddressClass::kPrivate},      {"100.64.0.1", AddressClass::kPrivate},
      {"100.128.0.1", AddressClass::kGlobal},       {"0.0.0.0", AddressClass::kUnspecified},
      {"169.254.1.1", AddressClass::kLinkLocal},    {"224.0.0.1", AddressClass::kMulticast},
      {"255.255.255.255", AddressClass::kReserved}, {"198.18.0.1", AddressClass::kReserved},
      {"203.0.113.9", AddressClass::kReserved},     {"::", AddressClass::kUnspecified},
      {"::1", AddressClass::kLoopback},             {"fd00::1", AddressClass::kPrivate},
      {"fc00::1", AddressClass::kPrivate},          {"fe80::1", AddressClass::kLinkLocal},
      {"ff02::1", AddressClass::kMulticast},        {"2001:db8::1", AddressClass::kReserved},
      {"2a00:1450::1", AddressClass::kGlobal},      {"::ffff:127.0.0.1", AddressClass::kReserved},
      {"::127.0.0.1", AddressClass::kReserved},     {"64:ff9b::8.8.8.8", AddressClass::kGlobal},
      {"64:ff9b::10.0.0.1", AddressClass::kPrivate}, {"4000::1", AddressClass::kReserved},
  };
  for (const auto& [text, want] : cases) {
    auto ip = IpAddress::Parse(text);
    ASSERT_TRUE(ip.has_value()) << text;
    EXPECT_EQ(ClassifyAddress(*ip), want) << text;
  }
  EXPECT_EQ(IpAddress::Parse("mx.a.test"), std::nullopt);
  EXPECT_EQ(IpAddress::Parse("1.2.3.4:25"), std::nullopt);
}

TEST(PlanDelivery, LoopbackOnlyWithAllowLoopback) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  const DnsAnswer a = Addrs({"127.0.0.1"});
  const HostAnswers answers[] = {{&a, nullptr}};

  MxPlan refused = PlanDelivery(list, answers, MxOptions{});
  ASSERT_TRUE(refused.verdict);
  EXPECT_FALSE(refused.verdict->permanent);
  EXPECT_EQ(refused.verdict->enhanced, "4.4.4");
  EXPECT_THAT(refused.verdict->reason, HasSubstr("mx.a.test: 127.0.0.1 is a loopback address"));

  MxPlan allowed = PlanDelivery(list, answers, Loopback());
  ASSERT_FALSE(allowed.verdict);
  ASSERT_EQ(allowed.hosts.size(), 1u);
  EXPECT_THAT(Ips(allowed.hosts[0]), ElementsAre("127.0.0.1"));
  EXPECT_EQ(allowed.site, "mx.a.test");
}

TEST(PlanDelivery, PrivateNeedsItsOwnFlag) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  const DnsAnswer a = Addrs({"10.0.0.1", "192.168.0.7"});
  const HostAnswers answers[] = {{&a, nullptr}};
  MxPlan refused = PlanDelivery(list, answers, Loopback());
  ASSERT_TRUE(refused.verdict);
  EXPECT_EQ(refused.verdict->reason,
            "a.test: no usable address: mx.a.test: 10.0.0.1 is a private address "
            "(and 1 more refused)");
  MxOptions priv;
  priv.allow_private = true;
  MxPlan allowed = PlanDelivery(list, answers, priv);
  ASSERT_FALSE(allowed.verdict);
  EXPECT_THAT(Ips(allowed.hosts[0]), ElementsAre("10.0.0.1", "192.168.0.7"));
}

TEST(PlanDelivery, NeverAllowedWhateverTheFlags) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  const DnsAnswer a = Addrs({"0.0.0.0", "169.254.0.1", "224.0.0.1"});
  const DnsAnswer aaaa = Addrs({"::", "fe80::1", "ff02::1", "::ffff:127.0.0.1"});
  const HostAnswers answers[] = {{&a, &aaaa}};
  MxOptions all;
  all.allow_loopback = true;
  all.allow_private = true;
  MxPlan plan = PlanDelivery(list, answers, all);
  ASSERT_TRUE(plan.verdict);
  EXPECT_THAT(plan.verdict->reason,
              HasSubstr("0.0.0.0 is an unspecified address (and 6 more refused)"));
}

TEST(PlanDelivery, PartlyRefusedHostKeepsTheRestAndSaysWhy) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  const DnsAnswer a = Addrs({"10.1.2.3", "127.0.0.3"});
  const HostAnswers answers[] = {{&a, nullptr}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_FALSE(plan.verdict);
  EXPECT_THAT(Ips(plan.hosts[0]), ElementsAre("127.0.0.3"));
  EXPECT_THAT(plan.refused, ElementsAre("mx.a.test: 10.1.2.3 is a private address"));
}

TEST(PlanDelivery, FamilyOrder) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  const DnsAnswer a = Addrs({"127.0.0.2", "127.0.0.3"});
  const DnsAnswer aaaa = Addrs({"::1"});
  const HostAnswers answers[] = {{&a, &aaaa}};
  MxOptions o = Loopback();
  o.families = AddressFamilies::kIpv4First;
  EXPECT_THAT(Ips(PlanDelivery(list, answers, o).hosts.at(0)),
              ElementsAre("127.0.0.2", "127.0.0.3", "::1"));
  o.families = AddressFamilies::kIpv6First;
  EXPECT_THAT(Ips(PlanDelivery(list, answers, o).hosts.at(0)),
              ElementsAre("::1", "127.0.0.2", "127.0.0.3"));
  o.families = AddressFamilies::kIpv4Only;
  EXPECT_FALSE(WantsAaaa(o));
  EXPECT_THAT(Ips(PlanDelivery(list, answers, o).hosts.at(0)),
              ElementsAre("127.0.0.2", "127.0.0.3"));

  // IPv4 only and the host has only AAAA: no address.
  const DnsAnswer nodata = Kind(AnswerKind::kNoData);
  const HostAnswers v6only[] = {{&nodata, &aaaa}};
  MxPlan plan = PlanDelivery(list, v6only, o);
  ASSERT_TRUE(plan.verdict);
  EXPECT_EQ(plan.verdict->enhanced, "4.4.4");
  EXPECT_THAT(plan.verdict->reason, HasSubstr("mx.a.test: no A record"));
}

TEST(PlanDelivery, HostsInListOrderEachWithItsAddresses) {
  MxHostList list = SelectMxHosts(
      "a.test", Mx({{20, "mx2.a.test"}, {10, "mx1.a.test"}, {30, "mx3.a.test"}}), MxOptions{},
      Seeded(1));
  const DnsAnswer a1 = Addrs({"127.0.1.1", "127.0.1.2"});
  const DnsAnswer a2 = Addrs({"127.0.2.1"});
  const DnsAnswer sf = Kind(AnswerKind::kServFail);
  const DnsAnswer nodata = Kind(AnswerKind::kNoData);
  // mx2's address lookup failed: it is left out, the others stay.
  const HostAnswers answers[] = {{&a1, &nodata}, {&sf, &sf}, {&a2, nullptr}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_FALSE(plan.verdict);
  ASSERT_EQ(plan.hosts.size(), 2u);
  EXPECT_EQ(plan.hosts[0].name, "mx1.a.test");
  EXPECT_THAT(Ips(plan.hosts[0]), ElementsAre("127.0.1.1", "127.0.1.2"));
  EXPECT_EQ(plan.hosts[1].name, "mx3.a.test");
  EXPECT_EQ(plan.hosts[1].preference, 30);
  EXPECT_THAT(plan.refused, ElementsAre(HasSubstr("mx2.a.test: address lookup failed")));
}

TEST(PlanDelivery, EveryHostLookupFailedDefersAsDnsFailure) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx1.a.test"}, {20, "mx2.a.test"}}),
                                  MxOptions{}, Seeded(1));
  const DnsAnswer sf = Kind(AnswerKind::kServFail);
  const DnsAnswer nx = Kind(AnswerKind::kNxDomain);
  const HostAnswers answers[] = {{&sf, &sf}, {&nx, &nx}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_TRUE(plan.verdict);
  EXPECT_FALSE(plan.verdict->permanent);
  EXPECT_EQ(plan.verdict->enhanced, "4.4.3");
  EXPECT_THAT(plan.verdict->reason, HasSubstr("mx2.a.test: no such host"));
  // A host without answers counts as NODATA.
  MxPlan missing = PlanDelivery(list, {}, Loopback());
  ASSERT_TRUE(missing.verdict);
  EXPECT_EQ(missing.verdict->enhanced, "4.4.4");
  EXPECT_THAT(missing.verdict->reason, HasSubstr("mx1.a.test: no A or AAAA record"));
}

TEST(PlanDelivery, AnAddressLookupNeverMadeMakesTheVerdictLocal) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx1.a.test"}, {20, "mx2.a.test"}}),
                                  MxOptions{}, Seeded(1));
  const DnsAnswer full = QueueFull();
  const DnsAnswer sf = Kind(AnswerKind::kServFail);
  const DnsAnswer nodata = Kind(AnswerKind::kNoData);
  const DnsAnswer a2 = Addrs({"127.0.2.1"});
  // Every host failed, one of them only because we never asked: local, whatever
  // the server said of the other.
  const HostAnswers failed[] = {{&full, &full}, {&sf, &sf}};
  MxPlan plan = PlanDelivery(list, failed, Loopback());
  ASSERT_TRUE(plan.verdict);
  EXPECT_TRUE(plan.verdict->local);
  EXPECT_FALSE(plan.verdict->permanent);
  EXPECT_EQ(plan.verdict->enhanced, "4.4.3");
  EXPECT_EQ(plan.verdict->reason, "a.test: resolver queue full");
  EXPECT_THAT(plan.refused,
              ElementsAre("mx1.a.test: address lookup not made (resolver queue full)",
                          HasSubstr("mx2.a.test: address lookup failed")));
  // One local answer beside a NODATA one: still no proof of anything.
  const HostAnswers half[] = {{&full, &nodata}, {&nodata, &nodata}};
  MxPlan unknown = PlanDelivery(list, half, Loopback());
  ASSERT_TRUE(unknown.verdict);
  EXPECT_TRUE(unknown.verdict->local);
  // The servers' failures alone: not local.
  const HostAnswers servers[] = {{&sf, &sf}, {&sf, &sf}};
  MxPlan dns = PlanDelivery(list, servers, Loopback());
  ASSERT_TRUE(dns.verdict);
  EXPECT_FALSE(dns.verdict->local);
  EXPECT_EQ(dns.verdict->enhanced, "4.4.3");
  // Another host usable: the plan goes ahead with it.
  const HostAnswers partly[] = {{&full, &full}, {&a2, nullptr}};
  MxPlan some = PlanDelivery(list, partly, Loopback());
  ASSERT_FALSE(some.verdict);
  ASSERT_EQ(some.hosts.size(), 1u);
  EXPECT_EQ(some.hosts[0].name, "mx2.a.test");
}

TEST(PlanDelivery, ImplicitMxWithALocalFailureIsNeverBounced) {
  MxHostList list = SelectMxHosts("a.test", Kind(AnswerKind::kNoData), MxOptions{}, Seeded(1));
  const DnsAnswer full = QueueFull();
  const DnsAnswer nodata = Kind(AnswerKind::kNoData);
  const HostAnswers answers[] = {{&nodata, &full}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_TRUE(plan.verdict);
  EXPECT_FALSE(plan.verdict->permanent);
  EXPECT_TRUE(plan.verdict->local);
}

// RFC 5321 5.1: no MX and no A or AAAA either is a domain without mail service,
// bounced at once; anything short of two answers saying so defers.
TEST(PlanDelivery, ImplicitMxWithoutAddressRecordsBouncesOnlyOnTwoAnswers) {
  const DnsAnswer nodata = Kind(AnswerKind::kNoData);
  const DnsAnswer nx = Kind(AnswerKind::kNxDomain);
  const DnsAnswer sf = Kind(AnswerKind::kServFail);
  const DnsAnswer loopback = Addrs({"127.0.0.7"});
  const DnsAnswer* kNotAsked = nullptr;
  struct Case {
    const char* what;
    const DnsAnswer* a;
    const DnsAnswer* aaaa;
    AddressFamilies families;
    std::string enhanced;  // "5.1.2": bounced; else deferred with this code
  };
  const Case cases[] = {
      {"NODATA, NODATA", &nodata, &nodata, AddressFamilies::kIpv4First, "5.1.2"},
      {"NODATA, NODATA, IPv6 first", &nodata, &nodata, AddressFamilies::kIpv6First, "5.1.2"},
      {"NODATA, NXDOMAIN", &nodata, &nx, AddressFamilies::kIpv4First, "5.1.2"},
      {"NXDOMAIN, NODATA", &nx, &nodata, AddressFamilies::kIpv4First, "5.1.2"},
      {"NXDOMAIN, NXDOMAIN", &nx, &nx, AddressFamilies::kIpv4First, "5.1.2"},
      {"NODATA, SERVFAIL", &nodata, &sf, AddressFamilies::kIpv4First, "4.4.3"},
      {"SERVFAIL, NODATA", &sf, &nodata, AddressFamilies::kIpv4First, "4.4.3"},
      {"NXDOMAIN, SERVFAIL", &nx, &sf, AddressFamilies::kIpv4First, "4.4.3"},
      {"SERVFAIL, SERVFAIL", &sf, &sf, AddressFamilies::kIpv4First, "4.4.3"},
      // AAAA not asked: the domain may have IPv6 mail service.
      {"NODATA, not asked", &nodata, kNotAsked, AddressFamilies::kIpv4First, "4.4.4"},
      {"IPv4 only, NODATA", &nodata, kNotAsked, AddressFamilies::kIpv4Only, "4.4.4"},
      {"not asked, not asked", kNotAsked, kNotAsked, AddressFamilies::kIpv4First, "4.4.4"},
      // An address our policy refuses is not the domain's choice: the config may change.
      {"refused A, NODATA", &loopback, &nodata, AddressFamilies::kIpv4First, "4.4.4"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    MxHostList list = SelectMxHosts("Bare.Test", Kind(AnswerKind::kNoData), MxOptions{}, Seeded(1));
    ASSERT_TRUE(list.implicit);
    MxOptions options;  // no loopback: 127.0.0.7 is refused
    options.families = c.families;
    const HostAnswers answers[] = {{c.a, c.aaaa}};
    MxPlan plan = PlanDelivery(list, answers, options);
    ASSERT_TRUE(plan.verdict);
    EXPECT_THAT(plan.hosts, IsEmpty());
    EXPECT_EQ(plan.verdict->enhanced, c.enhanced) << "got " << plan.verdict->reason;
    EXPECT_EQ(plan.verdict->permanent, c.enhanced == "5.1.2");
    if (c.enhanced == "5.1.2") {
      EXPECT_EQ(plan.verdict->reason,
                "no MX, A or AAAA records for bare.test: the domain has no mail service");
    }
  }
  // No answers passed at all: nothing was asked, so nothing is proved.
  MxHostList list = SelectMxHosts("bare.test", Mx({}), MxOptions{}, Seeded(1));
  MxPlan plan = PlanDelivery(list, {}, MxOptions{});
  ASSERT_TRUE(plan.verdict);
  EXPECT_FALSE(plan.verdict->permanent);
  EXPECT_EQ(plan.verdict->enhanced, "4.4.4");
}

TEST(PlanDelivery, MxHostsWithoutAddressRecordsStillDefer) {
  // The rule above is about the implicit MX only: MX records say the domain wants
  // mail, and a host without addresses is a zone error its owner can fix.
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  const DnsAnswer nodata = Kind(AnswerKind::kNoData);
  const HostAnswers answers[] = {{&nodata, &nodata}};
  MxPlan plan = PlanDelivery(list, answers, MxOptions{});
  ASSERT_TRUE(plan.verdict);
  EXPECT_FALSE(plan.verdict->permanent);
  EXPECT_EQ(plan.verdict->enhanced, "4.4.4");
  EXPECT_THAT(plan.verdict->reason, HasSubstr("mx.a.test: no A or AAAA record"));
}

TEST(PlanDelivery, AnAddressIsListedOnce) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx1.a.test"}, {20, "mx2.a.test"}}),
                                  MxOptions{}, Seeded(1));
  const DnsAnswer a1 = Addrs({"127.0.0.9", "127.0.0.9"});
  const DnsAnswer a2 = Addrs({"127.0.0.9", "127.0.0.10"});
  const DnsAnswer a3 = Addrs({"127.0.0.9"});
  const HostAnswers answers[] = {{&a1, nullptr}, {&a2, nullptr}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_EQ(plan.hosts.size(), 2u);
  EXPECT_THAT(Ips(plan.hosts[0]), ElementsAre("127.0.0.9"));
  EXPECT_THAT(Ips(plan.hosts[1]), ElementsAre("127.0.0.10"));
  // A host with nothing new to offer is left out, without a complaint.
  const HostAnswers same[] = {{&a1, nullptr}, {&a3, nullptr}};
  MxPlan one = PlanDelivery(list, same, Loopback());
  ASSERT_FALSE(one.verdict);
  EXPECT_EQ(one.hosts.size(), 1u);
  EXPECT_THAT(one.refused, IsEmpty());
}

TEST(PlanDelivery, KeepsAtMostMaxAddressesPerHost) {
  MxHostList list = SelectMxHosts("a.test", Mx({{10, "mx.a.test"}}), MxOptions{}, Seeded(1));
  std::vector<std::string> ips;
  for (int i = 1; i <= 12; ++i) ips.push_back("127.0.0." + std::to_string(i));
  const DnsAnswer a = Addrs(ips);
  const HostAnswers answers[] = {{&a, nullptr}};
  MxPlan plan = PlanDelivery(list, answers, Loopback());
  ASSERT_EQ(plan.hosts.size(), 1u);
  EXPECT_EQ(plan.hosts[0].addresses.size(), 8u);
  EXPECT_EQ(plan.hosts[0].addresses.back().ToString(), "127.0.0.8");
}

TEST(MakeEndpoint, BothFamilies) {
  Endpoint v4 = MakeEndpoint(*IpAddress::Parse("127.0.0.2"), 2525);
  EXPECT_EQ(v4.name, "127.0.0.2:2525");
  EXPECT_EQ(v4.host, "127.0.0.2");
  EXPECT_EQ(v4.addr.ss_family, AF_INET);
  EXPECT_EQ(v4.addr_len, sizeof(sockaddr_in));
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&v4.addr)->sin_port), 2525);
  Endpoint v6 = MakeEndpoint(*IpAddress::Parse("::1"), 25);
  EXPECT_EQ(v6.name, "[::1]:25");
  EXPECT_EQ(v6.addr.ss_family, AF_INET6);
  EXPECT_EQ(v6.addr_len, sizeof(sockaddr_in6));
  // The same as the static routes' parser makes.
  auto parsed = ParseHostPort("[::1]:25");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->name, v6.name);
  EXPECT_EQ(std::memcmp(&parsed->addr, &v6.addr, v6.addr_len), 0);
}

}  // namespace
}  // namespace volley::dns
