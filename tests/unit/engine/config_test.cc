#include "engine/config.h"

#include <string>
#include <utility>
#include <vector>

#include "engine/host_name.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using ::testing::HasSubstr;

TEST(ParseConfig, EmptyTextGivesTheDocumentedDefaults) {
  auto c = ParseConfig("", "(defaults)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->spool_dir, "var/spool");
  EXPECT_EQ(c->queue_dir, "var/queue");
  EXPECT_EQ(c->log_dir, "var/log");
  EXPECT_EQ(c->smtp.port, 25);
  const DestinationPolicy& p = c->smtp.defaults;
  EXPECT_EQ(p.max_recipients_per_transaction, 100);
  // RFC 5321 section 4.5.3.2's timeouts.
  EXPECT_EQ(p.connect_timeout, absl::Seconds(30));
  EXPECT_EQ(p.greeting_timeout, absl::Minutes(5));
  EXPECT_EQ(p.ehlo_timeout, absl::Minutes(5));
  EXPECT_EQ(p.mail_timeout, absl::Minutes(5));
  EXPECT_EQ(p.rcpt_timeout, absl::Minutes(5));
  EXPECT_EQ(p.data_timeout, absl::Minutes(2));
  EXPECT_EQ(p.data_block_timeout, absl::Minutes(3));
  EXPECT_EQ(p.data_done_timeout, absl::Minutes(10));
  EXPECT_TRUE(p.pipelining);
  EXPECT_TRUE(p.chunking);
  EXPECT_EQ(p.tls, TlsMode::kOpportunistic);
  EXPECT_TRUE(c->destinations.empty());
  EXPECT_EQ(c->smtp.ehlo_name, DefaultEhloName().name);  // engine/host_name.h
  ASSERT_EQ(c->routes.size(), 1u);
  EXPECT_EQ(c->routes[0].first, "*");
  EXPECT_EQ(c->routes[0].second, "127.0.0.1:2525");
  EXPECT_EQ(c->retry.initial, absl::Minutes(5));
  EXPECT_EQ(c->retry.max, absl::Hours(4));
  EXPECT_EQ(c->retry.max_age, absl::Hours(72));
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");
}

// Every Wait maps to its own key: with each timeout set to a different value, a Wait
// mapped to the wrong key shows up as the wrong number of seconds.
TEST(DestinationPolicy, TimeoutForEachWait) {
  DestinationPolicy p;
  p.idle_timeout = absl::Seconds(1);
  p.greeting_timeout = absl::Seconds(2);
  p.ehlo_timeout = absl::Seconds(3);
  p.mail_timeout = absl::Seconds(4);
  p.rcpt_timeout = absl::Seconds(5);
  p.data_timeout = absl::Seconds(6);
  p.data_done_timeout = absl::Seconds(7);
  p.quit_timeout = absl::Seconds(8);
  p.data_block_timeout = absl::Seconds(9);  // bounds writes: no Wait maps to it
  p.connect_timeout = absl::Seconds(10);    // the reactor's, before the client exists
  const struct {
    smtp::Wait wait;
    absl::Duration want;
  } cases[] = {
      {smtp::Wait::kNone, absl::Seconds(1)},     {smtp::Wait::kGreeting, absl::Seconds(2)},
      {smtp::Wait::kEhlo, absl::Seconds(3)},     {smtp::Wait::kTlsHandshake, absl::Seconds(3)},
      {smtp::Wait::kMail, absl::Seconds(4)},     {smtp::Wait::kRset, absl::Seconds(4)},
      {smtp::Wait::kRcpt, absl::Seconds(5)},     {smtp::Wait::kDataInit, absl::Seconds(6)},
      {smtp::Wait::kDataDone, absl::Seconds(7)}, {smtp::Wait::kQuit, absl::Seconds(8)},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(p.TimeoutFor(c.wait), c.want) << "wait " << static_cast<int>(c.wait);
  }
}

TEST(ParseConfig, ReadsEveryDocumentedKey) {
  auto c = ParseConfig(R"(
[paths]
spool = "/s"
queue = "/q"
log = "/l"
[smtp]
port = 2525
ehlo_name = "mx.example.test"
connect_timeout = "3s"
greeting_timeout = "1m"
ehlo_timeout = "2m"
mail_timeout = "3m"
rcpt_timeout = "4m"
data_timeout = "90s"
data_block_timeout = "1m"
data_done_timeout = "4m"
quit_timeout = "500ms"
idle_timeout = "2s"
max_connections_per_destination = 7
max_messages_per_connection = 9
max_recipients_per_transaction = 50
max_reply_line = 1024
pipelining = false
chunking = false
tls = "required"
tls_match = ["mx.a.test", "*.a.test"]
tls_ca_file = "/etc/ca.pem"
tls_fallback_time = "30m"
[destination."Slow.TEST"]
pipelining = true
rcpt_timeout = "9m"
tls = "verify"
[destination."127.0.0.2:25"]
max_connections_per_destination = 2
[routes]
"a.test" = "127.0.0.2:25"
"b.test" = ["127.0.0.3:25", "127.0.0.4:25"]
"*" = "[::1]:2525"
[dns]
servers = ["127.0.0.1:5353"]
allow_loopback = true
[retry]
initial = "2s"
max = "1h"
max_age = "2d"
[delivery]
window = 500
[queue]
sync_outcomes = true
[metrics]
listen = "127.0.0.1:9999"
)", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->spool_dir, "/s");
  EXPECT_EQ(c->smtp.port, 2525);
  EXPECT_EQ(c->smtp.ehlo_name, "mx.example.test");
  const DestinationPolicy& p = c->smtp.defaults;
  EXPECT_EQ(p.connect_timeout, absl::Seconds(3));
  EXPECT_EQ(p.greeting_timeout, absl::Minutes(1));
  EXPECT_EQ(p.ehlo_timeout, absl::Minutes(2));
  EXPECT_EQ(p.mail_timeout, absl::Minutes(3));
  EXPECT_EQ(p.rcpt_timeout, absl::Minutes(4));
  EXPECT_EQ(p.data_timeout, absl::Seconds(90));
  EXPECT_EQ(p.data_block_timeout, absl::Minutes(1));
  EXPECT_EQ(p.data_done_timeout, absl::Minutes(4));
  EXPECT_EQ(p.quit_timeout, absl::Milliseconds(500));
  EXPECT_EQ(p.idle_timeout, absl::Seconds(2));
  EXPECT_EQ(p.max_connections, 7);
  EXPECT_EQ(p.max_messages_per_connection, 9);
  EXPECT_EQ(p.max_recipients_per_transaction, 50);
  EXPECT_FALSE(p.pipelining);
  EXPECT_FALSE(p.chunking);
  EXPECT_EQ(p.tls, TlsMode::kRequired);
  EXPECT_EQ(p.tls_match, (std::vector<std::string>{"mx.a.test", "*.a.test"}));
  EXPECT_EQ(c->smtp.max_reply_line, 1024);
  EXPECT_EQ(c->smtp.tls_ca_file, "/etc/ca.pem");
  EXPECT_EQ(c->smtp.tls_fallback_time, absl::Minutes(30));
  // A [destination] table starts from [smtp]'s values, written before or after it,
  // and its name is matched case-insensitively.
  ASSERT_EQ(c->destinations.size(), 2u);
  auto find = [&](std::string_view name) -> const DestinationPolicy* {
    for (const auto& [k, v] : c->destinations) {
      if (k == name) return &v;
    }
    return nullptr;
  };
  const DestinationPolicy* slow = find("slow.test");
  ASSERT_NE(slow, nullptr);
  EXPECT_TRUE(slow->pipelining);
  EXPECT_EQ(slow->rcpt_timeout, absl::Minutes(9));
  EXPECT_EQ(slow->tls, TlsMode::kVerify);
  EXPECT_FALSE(slow->chunking);
  EXPECT_EQ(slow->max_connections, 7);
  const DestinationPolicy* by_route = find("127.0.0.2:25");
  ASSERT_NE(by_route, nullptr);
  EXPECT_EQ(by_route->max_connections, 2);
  EXPECT_EQ(by_route->tls, TlsMode::kRequired);
  // The table replaces the default route (order carries no meaning).
  EXPECT_THAT(c->routes, ::testing::UnorderedElementsAre(
                             std::pair<std::string, std::string>{"a.test", "127.0.0.2:25"},
                             std::pair<std::string, std::string>{"b.test", "127.0.0.3:25,127.0.0.4:25"},
                             std::pair<std::string, std::string>{"*", "[::1]:2525"}));
  EXPECT_EQ(c->dns.resolver.servers, std::vector<std::string>{"127.0.0.1:5353"});
  EXPECT_TRUE(c->dns.router.mx.allow_loopback);
  EXPECT_EQ(c->retry.initial, absl::Seconds(2));
  EXPECT_EQ(c->retry.max_age, absl::Hours(48));
  EXPECT_EQ(c->delivery.window, 500);
  EXPECT_TRUE(c->sync_outcomes);
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9999");
}

TEST(ParseConfig, ErrorsNameFileLineAndKey) {
  struct Case {
    std::string text;
    std::string want;
  };
  const Case cases[] = {
      {"[smtp]\nprot = 25\n", "v.toml:2: smtp.prot: unknown key"},
      {"[smtp]\nport = 0\n", "v.toml:2: smtp.port: must be 1..65535"},
      {"[smtp]\nmax_recipients_per_transaction = 1001\n",
       "v.toml:2: smtp.max_recipients_per_transaction: must be 1..1000"},
      {"[smtp]\nport = \"25\"\n", "v.toml:2: smtp.port: must be an integer"},
      {"\n\n[retry]\ninitial = \"5 minutes\"\n", "v.toml:4: retry.initial: \"5 minutes\" is not a duration"},
      {"[retry]\ninitial = 300\n", "v.toml:2: retry.initial: must be a duration string"},
      {"[routing]\n", "v.toml:1: routing: unknown section"},
      {"[routes]\n\"a.test\" = 25\n", "v.toml:2: routes.\"a.test\": must be a string"},
      {"[routes]\n\"a.test\" = []\n", "v.toml:2: routes.\"a.test\": must name at least one HOST:PORT"},
      {"[routes]\n\"a.test\" = [\"127.0.0.1:25\", \"mx.test:25\"]\n",
       "v.toml:2: routes.\"a.test\": \"mx.test:25\": host must be an IP address literal"},
      {"[dns]\nallow_loopback = \"yes\"\n", "v.toml:2: dns.allow_loopback: must be true or false"},
      {"[paths]\nspool = \"\"\n", "v.toml:2: paths.spool: must not be empty"},
      {"[dns]\nfamilies = \"ipv6_only\"\n",
       "v.toml:2: dns.families: must be \"ipv4_first\", \"ipv6_first\" or \"ipv4_only\""},
      {"[dns]\ntimeout = \"5m\"\n", "v.toml:2: dns.timeout: must be 10ms..1m"},
      {"[dns]\ntries = 0\n", "v.toml:2: dns.tries: must be 1..10"},
      {"[dns]\nmax_mx_hosts = 101\n", "v.toml:2: dns.max_mx_hosts: must be 1..100"},
      {"[dns]\nmin_ttl = \"2d\"\n", "dns: min_ttl must not exceed max_ttl"},
      {"[dns]\nservers = [\"127.0.0.1\"]\n", "v.toml:2: dns.servers: \"127.0.0.1\": expected HOST:PORT"},
      {"[smtp\n", "v.toml:1: "},  // TOML syntax error
      {"[smtp]\ntls = \"yes\"\n",
       "v.toml:2: smtp.tls: must be \"off\", \"opportunistic\", \"required\" or \"verify\""},
      {"[smtp]\ncommand_timeout = \"5m\"\n", "v.toml:2: smtp.command_timeout: unknown key"},
      {"[destination.\"a.test\"]\nport = 25\n",
       "v.toml:2: destination.\"a.test\".port: unknown key"},
      {"[destination.\"a.test\"]\ntls_match = \"mx.a.test\"\n",
       "v.toml:2: destination.\"a.test\".tls_match: must be an array of strings"},
      {"destination = 1\n", "v.toml:1: destination: must be a table"},
      {"[destination.\"a.test\"]\n[destination.\"A.test\"]\n",
       "named twice (names are compared case-insensitively)"},
      {"[retry]\ninitial = \"5h\"\nmax = \"1h\"\n", "retry: need 0 < initial <= max"},
      {"[smtp]\nehlo_name = \"a b\\r\\nRSET\"\n", "v.toml:2: smtp.ehlo_name: "},
  };
  for (const auto& c : cases) {
    auto got = ParseConfig(c.text, "v.toml");
    ASSERT_FALSE(got.ok()) << c.text;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.text;
  }
}

TEST(ParseConfig, DnsKeys) {
  auto c = ParseConfig(
      "[dns]\nservers = [\"127.0.0.1:5353\", \"[::1]:53\"]\ntimeout = \"800ms\"\ntries = 3\n"
      "allow_private = true\nfamilies = \"ipv4_only\"\nmax_mx_hosts = 4\n"
      "max_addresses_per_host = 2\ncache_size = 50\nmin_ttl = \"1s\"\nmax_ttl = \"1h\"\n"
      "negative_min_ttl = \"2s\"\nnegative_max_ttl = \"10m\"\nservfail_ttl = \"3s\"\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dns.resolver.servers, (std::vector<std::string>{"127.0.0.1:5353", "[::1]:53"}));
  EXPECT_EQ(c->dns.resolver.timeout, absl::Milliseconds(800));
  EXPECT_EQ(c->dns.resolver.tries, 3);
  EXPECT_FALSE(c->dns.router.mx.allow_loopback);
  EXPECT_TRUE(c->dns.router.mx.allow_private);
  EXPECT_EQ(c->dns.router.mx.families, dns::AddressFamilies::kIpv4Only);
  EXPECT_EQ(c->dns.router.mx.max_mx_hosts, 4u);
  EXPECT_EQ(c->dns.router.mx.max_addresses_per_host, 2u);
  EXPECT_EQ(c->dns.router.cache.max_entries, 50u);
  EXPECT_EQ(c->dns.router.cache.min_ttl, absl::Seconds(1));
  EXPECT_EQ(c->dns.router.cache.max_ttl, absl::Hours(1));
  EXPECT_EQ(c->dns.router.cache.negative_min_ttl, absl::Seconds(2));
  EXPECT_EQ(c->dns.router.cache.negative_max_ttl, absl::Minutes(10));
  EXPECT_EQ(c->dns.router.cache.servfail_ttl, absl::Seconds(3));
}

TEST(ParseConfig, RatesPerDestination) {
  auto c = ParseConfig(
      "[smtp]\nmax_message_rate = \"3000/min\"\n"
      "[destination.\"slow.test\"]\nmax_message_rate = \"10/s\"\nmax_connection_rate = \"2/s\"\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->smtp.defaults.max_message_rate.per_second, 50);
  EXPECT_FALSE(c->smtp.defaults.max_connection_rate.limited());
  ASSERT_EQ(c->destinations.size(), 1u);
  EXPECT_DOUBLE_EQ(c->destinations[0].second.max_message_rate.per_second, 10);
  EXPECT_DOUBLE_EQ(c->destinations[0].second.max_connection_rate.per_second, 2);
  auto bad = ParseConfig("[smtp]\nmax_message_rate = \"fast\"\n", "v.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("v.toml:2: smtp.max_message_rate: \"fast\" is not a rate"));
}

TEST(ParseConfig, BackoffRules) {
  auto defaults = ParseConfig("", "v.toml");
  ASSERT_TRUE(defaults.ok());
  ASSERT_EQ(defaults->backoff.size(), 1u);
  EXPECT_EQ(defaults->backoff[0].klass, "rate_limited");
  EXPECT_EQ(defaults->backoff[0].action, BackoffAction::kBackoff);
  auto c = ParseConfig(
      "[[backoff]]\nclass = \"policy\"\naction = \"suspend\"\nperiod = \"30m\"\n"
      "[[backoff]]\nclass = \"mailbox_full\"\naction = \"bounce\"\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->backoff.size(), 2u);
  EXPECT_EQ(c->backoff[0].action, BackoffAction::kSuspend);
  EXPECT_EQ(c->backoff[0].period, absl::Minutes(30));
  EXPECT_EQ(c->backoff[1].action, BackoffAction::kBounce);
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"[[backoff]]\nclass = \"x\"\naction = \"slow\"\n",
            "v.toml:3: backoff[1].action: must be \"backoff\", \"suspend\" or \"bounce\""},
           {"[[backoff]]\naction = \"backoff\"\n", "backoff[1]: needs a class"},
           {"[[backoff]]\nclass = \"x\"\nperiod = \"0s\"\n", "v.toml:3: backoff[1].period: must be"},
           {"[[backoff]]\nclass = \"x\"\nlevel = 2\n", "v.toml:3: backoff[1].level: unknown key"},
           {"backoff = 1\n", "v.toml:1: backoff: must be an array of tables"}}) {
    auto bad = ParseConfig(text, "v.toml");
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(want)) << text;
  }
}

TEST(ParseConfig, Shards) {
  auto defaults = ParseConfig("", "v.toml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->delivery.shards, 0);  // one per CPU
  auto c = ParseConfig("[delivery]\nshards = 3\n", "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->delivery.shards, 3);
  auto bad = ParseConfig("[delivery]\nshards = 65\n", "v.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("v.toml:2: delivery.shards: must be"));
}

TEST(ParseConfig, ConnectionBudgetKeys) {
  auto defaults = ParseConfig("", "v.toml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->delivery.max_connections, 0);  // the budget decides
  EXPECT_EQ(defaults->queue_max_open_files, 256);
  auto c = ParseConfig("[delivery]\nmax_connections = 500\n[queue]\nmax_open_files = 64\n",
                       "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->delivery.max_connections, 500);
  EXPECT_EQ(c->queue_max_open_files, 64);
  auto negative = ParseConfig("[delivery]\nmax_connections = -1\n", "v.toml");
  ASSERT_FALSE(negative.ok());
  EXPECT_THAT(std::string(negative.status().message()),
              HasSubstr("v.toml:2: delivery.max_connections: must be"));
  EXPECT_EQ(defaults->smtp.defaults.max_connections_opening, 2);
  auto opening = ParseConfig("[smtp]\nmax_connections_opening = 5\n", "v.toml");
  ASSERT_TRUE(opening.ok()) << opening.status();
  EXPECT_EQ(opening->smtp.defaults.max_connections_opening, 5);
  EXPECT_FALSE(ParseConfig("[smtp]\nmax_connections_opening = 0\n", "v.toml").ok());
  // RocksDB needs a few table files open to work at all.
  auto few = ParseConfig("[queue]\nmax_open_files = 2\n", "v.toml");
  ASSERT_FALSE(few.ok());
  EXPECT_THAT(std::string(few.status().message()), HasSubstr("queue.max_open_files"));
}

TEST(ParseConfig, EgressSourcesAndWhoUsesThem) {
  // [smtp] is read before [[source]] in file order, and names it anyway.
  auto c = ParseConfig(
      "[smtp]\nsources = [\"b\", \"a\"]\n"
      "[destination.\"x.test\"]\nsources = [\"b\"]\n"
      "[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\nehlo_name = \"a.test\"\nweight = 3\n"
      "[[source]]\nname = \"b\"\naddress = \"::1\"\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->sources.size(), 2u);
  EXPECT_EQ(c->sources[0].name, "a");
  EXPECT_EQ(c->sources[0].ehlo_name, "a.test");
  EXPECT_EQ(c->sources[0].weight, 3);
  EXPECT_EQ(c->sources[1].address, "::1");
  EXPECT_EQ(c->sources[1].weight, 1);
  EXPECT_TRUE(c->sources[1].ehlo_name.empty());
  EXPECT_EQ(c->smtp.defaults.sources, (std::vector<size_t>{1, 0}));
  ASSERT_EQ(c->destinations.size(), 1u);
  EXPECT_EQ(c->destinations[0].second.sources, (std::vector<size_t>{1}));
  const std::string a = "[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\n";
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"[smtp]\nsources = [\"nope\"]\n" + a, "v.toml:2: smtp.sources: no [[source]] is named \"nope\""},
           {"[smtp]\nsources = [\"a\", \"a\"]\n" + a, "smtp.sources: \"a\" is listed twice"},
           {a + a, "source[2]: name \"a\" used twice"},
           {"[[source]]\nname = \"a\"\naddress = \"host.test\"\n",
            "v.toml:3: source[1].address: must be an IPv4 or IPv6 address literal"},
           {"[[source]]\nname = \"a\"\n", "source[1]: needs an address"},
           {a + "weight = 0\n", "v.toml:4: source[1].weight: must be"},
           {a + "ehlo_name = \"x\\r\\nRSET\"\n", "v.toml:4: source[1].ehlo_name:"},
           {a + "port = 25\n", "source[1].port: unknown key"}}) {
    auto bad = ParseConfig(text, "v.toml");
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(want)) << text;
  }
}

TEST(ParseConfig, MetricsKeys) {
  auto c = ParseConfig("[metrics]\nlisten = \"[::1]:9999\"\ntop_destinations = 5\nmax_jobs = 7\n",
                       "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_listen, "[::1]:9999");
  EXPECT_EQ(c->metrics_top_destinations, 5);
  EXPECT_EQ(c->metrics_max_jobs, 7);
  auto bad = ParseConfig("[metrics]\nlisten = \"localhost:9464\"\n", "v.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("v.toml:2: metrics.listen: "));
}

TEST(ParseConfig, UnsubscribeKeys) {
  auto off = ParseConfig("", "v.toml");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->unsubscribe.listen, "");
  EXPECT_EQ(off->unsubscribe.max_request_bytes, 8192u);
  EXPECT_EQ(off->unsubscribe.rate_per_minute, 60);
  EXPECT_EQ(off->unsubscribe.max_clients, 10000u);
  EXPECT_EQ(off->unsubscribe.threads, 4);
  const std::string key = "[[token_key]]\nid = \"k1\"\nsecret_file = \"/k1.key\"\n";
  auto c = ParseConfig(key + "[unsubscribe]\nlisten = \"127.0.0.1:8080\"\n"
                             "max_request_bytes = \"16KiB\"\nrate_per_minute = 0\n"
                             "max_clients = 5\nthreads = 2\nrequest_timeout = \"3s\"\n"
                             "trusted_proxies = [\"127.0.0.1\", \"::1\"]\n",
                       "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->unsubscribe.listen, "127.0.0.1:8080");
  EXPECT_EQ(c->unsubscribe.max_request_bytes, 16384u);
  EXPECT_EQ(c->unsubscribe.rate_per_minute, 0);
  EXPECT_EQ(c->unsubscribe.max_clients, 5u);
  EXPECT_EQ(c->unsubscribe.threads, 2);
  EXPECT_EQ(c->unsubscribe.request_timeout, absl::Seconds(3));
  EXPECT_EQ(c->unsubscribe.trusted_proxies, (std::vector<std::string>{"127.0.0.1", "::1"}));
  // Tokens cannot be checked without a key: refused, not started and 400 for all.
  auto keyless = ParseConfig("[unsubscribe]\nlisten = \"127.0.0.1:8080\"\n", "v.toml");
  ASSERT_FALSE(keyless.ok());
  EXPECT_THAT(std::string(keyless.status().message()),
              HasSubstr("v.toml: unsubscribe.listen: the unsubscribe endpoint needs a [[token_key]]"));
  auto proxy = ParseConfig(key + "[unsubscribe]\ntrusted_proxies = [\"proxy.test\"]\n", "v.toml");
  ASSERT_FALSE(proxy.ok());
  EXPECT_THAT(std::string(proxy.status().message()),
              HasSubstr("v.toml:5: unsubscribe.trusted_proxies: \"proxy.test\" is not an IP"));
  auto small = ParseConfig(key + "[unsubscribe]\nmax_request_bytes = 100\n", "v.toml");
  ASSERT_FALSE(small.ok());
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("must be 1KiB..1MiB"));
}

TEST(ParseConfig, RetryOverridesPerDestination) {
  auto c = ParseConfig(
      "[destination.\"slow.test\"]\nretry_initial = \"15m\"\nretry_max_age = \"1d\"\n"
      "[retry]\ninitial = \"2m\"\nmax = \"1h\"\nmax_age = \"2d\"\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  // [smtp]'s defaults carry [retry]; a destination overrides key by key.
  EXPECT_EQ(c->smtp.defaults.retry.initial, absl::Minutes(2));
  EXPECT_EQ(c->smtp.defaults.retry.max_age, absl::Hours(48));
  ASSERT_EQ(c->destinations.size(), 1u);
  const RetryConfig& r = c->destinations[0].second.retry;
  EXPECT_EQ(r.initial, absl::Minutes(15));
  EXPECT_EQ(r.max, absl::Hours(1));
  EXPECT_EQ(r.max_age, absl::Hours(24));

  auto bad = ParseConfig("[destination.\"a.test\"]\nretry_initial = \"5h\"\n", "v.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("destination.\"a.test\": retry: need 0 < retry_initial <= retry_max"));
  // Only destinations take these keys; [retry] is where the defaults live.
  auto misplaced = ParseConfig("[smtp]\nretry_initial = \"1m\"\n", "v.toml");
  ASSERT_FALSE(misplaced.ok());
  EXPECT_THAT(std::string(misplaced.status().message()), HasSubstr("smtp.retry_initial: unknown key"));
}

TEST(ParseConfig, IntakeSettleTime) {
  EXPECT_EQ(Config{}.intake.settle_time, absl::Seconds(1));
  for (const auto& [value, want] : {std::pair<std::string, absl::Duration>{"\"0s\"", absl::ZeroDuration()},
                                    {"\"2500ms\"", absl::Milliseconds(2500)},
                                    {"\"1h\"", absl::Hours(1)}}) {
    auto c = ParseConfig("[intake]\nsettle_time = " + value + "\n", "v.toml");
    ASSERT_TRUE(c.ok()) << value << ": " << c.status();
    EXPECT_EQ(c->intake.settle_time, want) << value;
  }
  for (const char* value : {"\"2h\"", "1", "\"soon\""}) {
    auto c = ParseConfig(std::string("[intake]\nsettle_time = ") + value + "\n", "v.toml");
    ASSERT_FALSE(c.ok()) << value;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("v.toml:2: intake.settle_time: "))
        << value;
  }
}

TEST(ParseConfig, MinFreeSpaceTakesBytesOrUnits) {
  EXPECT_EQ(Config{}.min_free_space, uint64_t{256} << 20);
  const std::pair<std::string, uint64_t> good[] = {
      {"\"1GiB\"", uint64_t{1} << 30}, {"4096", 4096}, {"0", 0}, {"\"512KiB\"", 512u << 10}};
  for (const auto& [value, want] : good) {
    auto c = ParseConfig("[queue]\nmin_free_space = " + value + "\n", "v.toml");
    ASSERT_TRUE(c.ok()) << value << ": " << c.status();
    EXPECT_EQ(c->min_free_space, want) << value;
  }
  const std::pair<std::string, std::string> bad[] = {
      {"\"1GB\"", "v.toml:2: queue.min_free_space: \"1GB\" is not a size"},
      {"-1", "v.toml:2: queue.min_free_space: must not be negative"},
      {"true", "v.toml:2: queue.min_free_space: must be a size"},
      {"\"99999999TiB\"", "is not a size"},
  };
  for (const auto& [value, want] : bad) {
    auto c = ParseConfig("[queue]\nmin_free_space = " + value + "\n", "v.toml");
    ASSERT_FALSE(c.ok()) << value;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(want)) << value;
  }
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("MiB").ok());
  EXPECT_FALSE(ParseSize("1 MiB").ok());
  EXPECT_EQ(*ParseSize("16383TiB"), uint64_t{16383} << 40);
}

TEST(ParseConfig, LogRotationKeys) {
  auto d = ParseConfig("", "v.toml");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->delivery_log.max_size, uint64_t{1} << 30);
  EXPECT_EQ(d->delivery_log.max_age, absl::Hours(24));
  EXPECT_EQ(d->delivery_log.keep, 14);
  auto c = ParseConfig("[log]\nmax_size = \"256MiB\"\nmax_age = \"6h\"\nkeep = 3\n", "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->delivery_log.max_size, uint64_t{256} << 20);
  EXPECT_EQ(c->delivery_log.max_age, absl::Hours(6));
  EXPECT_EQ(c->delivery_log.keep, 3);
  auto never = ParseConfig("[log]\nmax_size = 0\nmax_age = \"0s\"\n", "v.toml");
  ASSERT_TRUE(never.ok()) << never.status();
  EXPECT_EQ(never->delivery_log.max_size, 0u);
  EXPECT_EQ(never->delivery_log.max_age, absl::ZeroDuration());
  const auto error = [](std::string_view text) {
    auto r = ParseConfig(text, "v.toml");
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  EXPECT_THAT(error("[log]\nkeep = 0\n"), HasSubstr("v.toml:2: log.keep: must be 1..100000"));
  EXPECT_THAT(error("[log]\n\nmax_size = \"1GB\"\n"),
              HasSubstr("v.toml:3: log.max_size: \"1GB\""));
  EXPECT_THAT(error("[log]\nmax_age = 3600\n"),
              HasSubstr("v.toml:2: log.max_age: must be a duration"));
  EXPECT_THAT(error("[log]\nmaxsize = 1\n"), HasSubstr("v.toml:2: log.maxsize: unknown key"));
}

TEST(ParseConfig, ClassifyRulesReplaceTheDefaults) {
  auto d = ParseConfig("", "v.toml");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->classify.size(), metrics::DefaultClassifyRules().size());
  auto c = ParseConfig(R"toml(
[[classify]]
class = "invalid_recipient"
enhanced = "5.1.1"

[[classify]]
class = "mailbox_full"
code = 452
text = "(mailbox|quota).*(full|exceeded)"

[[classify]]
class = "no_reply"
code = "0"
)toml", "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->classify.size(), 3u);
  EXPECT_EQ(c->classify[0].klass, "invalid_recipient");
  EXPECT_EQ(c->classify[0].enhanced, "5.1.1");
  EXPECT_EQ(c->classify[0].code, "");
  EXPECT_EQ(c->classify[1].code, "452");
  EXPECT_EQ(c->classify[1].text, "(mailbox|quota).*(full|exceeded)");
  EXPECT_EQ(c->classify[2].code, "0");
  auto classifier = metrics::Classifier::Create(c->classify);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  constexpr auto kDeferred = metrics::DeliveryStatus::kDeferred;
  EXPECT_EQ(classifier->Classify(kDeferred, 452, "4.2.2", "Mailbox quota exceeded"),
            "mailbox_full");
  // Rules of its own: the defaults are gone.
  EXPECT_EQ(classifier->Classify(kDeferred, 421, "4.7.0", "Try again later"), "other");
  auto none = ParseConfig("classify = []\n", "v.toml");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->classify.empty());
}

TEST(ParseConfig, ClassifyErrorsNameFileLineRuleAndKey) {
  const auto error = [](std::string_view text) {
    auto r = ParseConfig(text, "v.toml");
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  EXPECT_THAT(error("[[classify]]\nclass = \"a\"\n\n[[classify]]\nclass = \"b\"\n"
                    "text = \"(unclosed\"\n"),
              HasSubstr("v.toml:6: classify[2].text: not a valid RE2 regular expression: "
                        "missing ): (unclosed"));
  EXPECT_THAT(error("[[classify]]\ncode = \"550\"\n"),
              HasSubstr("v.toml:1: classify[1]: needs a class"));
  EXPECT_THAT(error("[[classify]]\nclass = \"a\"\ncode = 600\n"),
              HasSubstr("v.toml:3: classify[1].code: \"600\" is not a reply code"));
  EXPECT_THAT(error("[[classify]]\nclass = \"a\"\nenhanced = \"5.1.x\"\n"),
              HasSubstr("v.toml:3: classify[1].enhanced: \"5.1.x\" is not"));
  EXPECT_THAT(error("[[classify]]\nclass = \"a b\"\n"), HasSubstr("v.toml:2: classify[1].class:"));
  EXPECT_THAT(error("[[classify]]\nclass = \"a\"\nregex = \"x\"\n"),
              HasSubstr("v.toml:3: classify[1].regex: unknown key"));
  EXPECT_THAT(error("[classify]\nclass = \"a\"\n"),
              HasSubstr("classify: must be an array of tables: write each rule as [[classify]]"));
}

TEST(LoadConfigFile, TheShippedExampleMirrorsTheDefaultClassifyRules) {
  auto c = LoadConfigFile(std::string(VOLLEY_SOURCE_DIR) + "/deploy/volley.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<metrics::ClassifyRule> want = metrics::DefaultClassifyRules();
  ASSERT_EQ(c->classify.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(c->classify[i].klass, want[i].klass) << "rule " << i + 1;
    EXPECT_EQ(c->classify[i].code, want[i].code) << "rule " << i + 1;
    EXPECT_EQ(c->classify[i].enhanced, want[i].enhanced) << "rule " << i + 1;
    EXPECT_EQ(c->classify[i].text, want[i].text) << "rule " << i + 1;
  }
  EXPECT_EQ(c->delivery_log.max_size, uint64_t{1} << 30);
  EXPECT_EQ(c->delivery_log.max_age, absl::Hours(24));
  EXPECT_EQ(c->delivery_log.keep, 14);
}

TEST(LoadConfigFile, TheShippedExampleIsValid) {
  auto c = LoadConfigFile(std::string(VOLLEY_SOURCE_DIR) + "/deploy/volley.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->smtp.defaults.max_connections, 20);
  EXPECT_EQ(c->smtp.defaults.tls, TlsMode::kOpportunistic);
  // Issue 16's keys, at their defaults.
  const auto defaults = ParseConfig("", "(defaults)");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(c->smtp.defaults.max_connections_opening,
            defaults->smtp.defaults.max_connections_opening);
  EXPECT_EQ(c->dns.resolver.max_queued, defaults->dns.resolver.max_queued);
  EXPECT_EQ(c->dns.resolver.receive_buffer, defaults->dns.resolver.receive_buffer);
  EXPECT_EQ(c->delivery.max_connections, defaults->delivery.max_connections);
  EXPECT_EQ(c->queue_max_open_files, defaults->queue_max_open_files);
}

TEST(LoadConfigFile, MissingFileIsAnError) {
  auto c = LoadConfigFile("/nonexistent/volley.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/volley.toml"));
}

TEST(ParseDuration, UnitsAndRejects) {
  EXPECT_EQ(*ParseDuration("250ms"), absl::Milliseconds(250));
  EXPECT_EQ(*ParseDuration("3d"), absl::Hours(72));
  EXPECT_EQ(*ParseDuration("0s"), absl::ZeroDuration());
  for (const char* bad : {"", "s", "5", "5w", "-5s", "1.5h", "5 s", "9999999999s"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace volley::engine

namespace volley::engine {
namespace {

TEST(ParseConfig, SuppressionKeys) {
  auto c = ParseConfig("", "(defaults)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->suppression.path, "var/suppression");
  EXPECT_EQ(c->suppression.options.block_cache_bytes, size_t{32} << 20);
  EXPECT_EQ(c->suppression.options.soft_bounce_limit, 3);
  EXPECT_EQ(c->suppression.options.soft_bounce_window, absl::Hours(24 * 7));
  EXPECT_EQ(c->suppression.options.soft_bounce_expiry, absl::Hours(24 * 30));
  EXPECT_EQ(c->suppression.options.scope, queue::SuppressionScope::kGlobal);
  EXPECT_EQ(c->suppression.options.filter_bits_per_key, 10);

  c = ParseConfig(
      "[suppression]\npath = \"/srv/volley/suppression\"\nblock_cache = \"64MiB\"\n"
      "soft_bounce_limit = 5\nsoft_bounce_window = \"3d\"\nsoft_bounce_expiry = \"14d\"\n"
      "scope = \"from_domain\"\nfilter_bits_per_key = 0\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->suppression.path, "/srv/volley/suppression");
  EXPECT_EQ(c->suppression.options.block_cache_bytes, size_t{64} << 20);
  EXPECT_EQ(c->suppression.options.soft_bounce_limit, 5);
  EXPECT_EQ(c->suppression.options.soft_bounce_window, absl::Hours(24 * 3));
  EXPECT_EQ(c->suppression.options.soft_bounce_expiry, absl::Hours(24 * 14));
  EXPECT_EQ(c->suppression.options.scope, queue::SuppressionScope::kFromDomain);
  EXPECT_EQ(c->suppression.options.filter_bits_per_key, 0);

  for (const char* bad : {"[suppression]\nscope = \"brand\"\n",
                          "[suppression]\nsoft_bounce_limit = 0\n",
                          "[suppression]\nfilter_bits_per_key = 33\n",
                          "[suppression]\nblock_cache = \"1KiB\"\n",
                          "[suppression]\nsoft_bounce_window = \"0s\"\n",
                          "[suppression]\npaht = \"x\"\n"}) {
    auto r = ParseConfig(bad, "v.toml");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("v.toml:2: suppression."), std::string::npos)
        << r.status();
  }
}

}  // namespace
}  // namespace volley::engine

namespace volley::engine {
namespace {

TEST(ParseConfig, MaxMessageBytesInFlight) {
  auto c = ParseConfig("", "(defaults)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->delivery.max_message_bytes_in_flight, uint64_t{64} << 20);
  for (const auto& [text, want] : std::vector<std::pair<std::string, uint64_t>>{
           {"\"256MiB\"", uint64_t{256} << 20},
           {"\"1GiB\"", uint64_t{1} << 30},
           {"1048576", 1048576},
           {"0", 0}}) {  // no bound
    c = ParseConfig("[delivery]\nmax_message_bytes_in_flight = " + text + "\n", "v.toml");
    ASSERT_TRUE(c.ok()) << text << ": " << c.status();
    EXPECT_EQ(c->delivery.max_message_bytes_in_flight, want) << text;
  }
  for (const char* bad : {"\"64 elephants\"", "-1", "true"}) {
    auto r = ParseConfig(std::string("[delivery]\nmax_message_bytes_in_flight = ") + bad + "\n",
                         "v.toml");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("v.toml:2: delivery.max_message_bytes_in_flight"),
              std::string::npos)
        << r.status();
  }
}

}  // namespace
}  // namespace volley::engine

namespace volley::engine {
namespace {

TEST(ParseConfig, ClusterIsOffWithoutRedisAndReadsEveryKey) {
  auto c = ParseConfig("", "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->cluster.enabled());
  EXPECT_EQ(c->smtp.defaults.scope, DestinationPolicy::Scope::kCluster);

  c = ParseConfig(
      "[cluster]\nredis = [\"127.0.0.1:6379\", \"redis.test:6380\"]\nnode = \"node-a.1_x\"\n"
      "expected_nodes = 3\ntimeout = \"50ms\"\nbatch = \"200ms\"\nlease_ttl = \"30s\"\n"
      "key_prefix = \"volley-eu:\"\n"
      "[destination.\"bulk.test\"]\nscope = \"node\"\n"
      "[destination.\"shared.test\"]\nscope = \"cluster\"\n",
      "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->cluster.enabled());
  EXPECT_EQ(c->cluster.redis, (std::vector<std::string>{"127.0.0.1:6379", "redis.test:6380"}));
  EXPECT_EQ(c->cluster.node, "node-a.1_x");
  EXPECT_EQ(c->cluster.expected_nodes, 3);
  EXPECT_EQ(c->cluster.timeout, absl::Milliseconds(50));
  EXPECT_EQ(c->cluster.batch, absl::Milliseconds(200));
  EXPECT_EQ(c->cluster.lease_ttl, absl::Seconds(30));
  EXPECT_EQ(c->cluster.key_prefix, "volley-eu:");
  ASSERT_EQ(c->destinations.size(), 2u);
  EXPECT_EQ(c->destinations[0].second.scope, DestinationPolicy::Scope::kNode);
  EXPECT_EQ(c->destinations[1].second.scope, DestinationPolicy::Scope::kCluster);

  // One server as a string; node left empty (the host name is taken then,
  // engine/host_name.h) and the documented defaults.
  c = ParseConfig("[cluster]\nredis = \"127.0.0.1:6379\"\n", "v.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster.redis, (std::vector<std::string>{"127.0.0.1:6379"}));
  EXPECT_EQ(c->cluster.node, "");
  EXPECT_EQ(c->cluster.expected_nodes, 0);
  EXPECT_EQ(c->cluster.timeout, absl::Milliseconds(200));
  EXPECT_EQ(c->cluster.batch, absl::Milliseconds(100));
  EXPECT_EQ(c->cluster.lease_ttl, absl::Seconds(10));
  EXPECT_EQ(c->cluster.key_prefix, "volley:");
}

TEST(ParseConfig, ClusterErrorsNameFileLineAndKey) {
  struct Case {
    std::string text;
    std::string want;
  };
  const Case cases[] = {
      {"[cluster]\nredis = \"127.0.0.1\"\n",
       "v.toml:2: cluster.redis: \"127.0.0.1\": expected HOST:PORT"},
      {"[cluster]\nredis = [\"127.0.0.1:6379\", \"127.0.0.1:0\"]\n",
       "v.toml:2: cluster.redis: \"127.0.0.1:0\": port must be 1..65535"},
      {"[cluster]\nredis = []\n", "v.toml:2: cluster.redis: must name at least one HOST:PORT"},
      {"[cluster]\nredis = 6379\n", "v.toml:2: cluster.redis: must be \"HOST:PORT\" or an array of them"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nnode = \"node a\"\n",
       "v.toml:3: cluster.node: \"node a\": a node name is 1..64 letters, digits"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nnode = \"" + std::string(65, 'n') + "\"\n",
       "v.toml:3: cluster.node: "},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nexpected_nodes = -1\n",
       "v.toml:3: cluster.expected_nodes: must be 0..1000"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nbatch = \"5ms\"\n",
       "v.toml:3: cluster.batch: must be 10ms..1s"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nbatch = \"2s\"\n",
       "v.toml:3: cluster.batch: must be 10ms..1s"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\ntimeout = \"1m\"\n",
       "v.toml:3: cluster.timeout: must be 10ms..10s"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nbatch = \"800ms\"\nlease_ttl = \"1s\"\n",
       "v.toml:4: cluster.lease_ttl: must be at least twice cluster.batch (800ms)"},
      {"[cluster]\nredis = \"127.0.0.1:6379\"\nkey_prefix = \"a b\"\n",
       "v.toml:3: cluster.key_prefix: must be 1..64 printable characters without spaces"},
      {"[cluster]\nredsi = \"127.0.0.1:6379\"\n", "v.toml:2: cluster.redsi: unknown key"},
      {"[cluster]\nnode = \"node-a\"\n",
       "v.toml:2: cluster.node: has no effect without cluster.redis"},
      {"[destination.\"a.test\"]\nscope = \"global\"\n",
       "v.toml:2: destination.\"a.test\".scope: must be \"cluster\" or \"node\", not \"global\""},
      {"[destination.\"a.test\"]\nscope = 1\n",
       "v.toml:2: destination.\"a.test\".scope: must be \"cluster\" or \"node\""},
      // A destination's own key: [smtp] has none.
      {"[smtp]\nscope = \"node\"\n", "v.toml:2: smtp.scope: unknown key"},
  };
  for (const auto& c : cases) {
    auto got = ParseConfig(c.text, "v.toml");
    ASSERT_FALSE(got.ok()) << c.text;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.text;
  }
}

}  // namespace
}  // namespace volley::engine
