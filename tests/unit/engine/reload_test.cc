#include "engine/reload.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/compose.h"
#include "engine/destination_limits.h"
#include "engine/dkim/dkim.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Keys -> "key" or "key (restart)", for one readable comparison per case.
std::vector<std::string> Described(const std::vector<ConfigChange>& changes) {
  std::vector<std::string> out;
  for (const ConfigChange& c : changes) {
    out.push_back(c.needs_restart ? c.key + " (restart)" : c.key);
  }
  return out;
}

struct DiffCase {
  const char* name;
  const char* running;
  const char* next;
  std::vector<std::string> want;
};

TEST(DiffConfigText, NamesEachChangedKeyAndWhetherItNeedsARestart) {
  const DiffCase cases[] = {
      {"same text", "[smtp]\nport = 25\n", "[smtp]\nport = 25\n", {}},
      {"comments and order do not count", "[smtp]\nport = 25\nmax_message_rate = \"10/s\"\n",
       "# hi\n[smtp]\nmax_message_rate = \"10/s\" # rate\nport = 25\n", {}},
      {"a rate", "[smtp]\nmax_message_rate = \"10/s\"\n", "[smtp]\nmax_message_rate = \"5/s\"\n",
       {"smtp.max_message_rate"}},
      {"a port is the program's, not a destination's", "[smtp]\nport = 25\n",
       "[smtp]\nport = 2525\n", {"smtp.port (restart)"}},
      {"ehlo_name", "", "[smtp]\nehlo_name = \"mx.sender.test\"\n", {"smtp.ehlo_name (restart)"}},
      {"tls_fallback_time", "", "[smtp]\ntls_fallback_time = \"5m\"\n",
       {"smtp.tls_fallback_time"}},
      {"a destination's key",
       "[destination.\"b.test\"]\nmax_connections_per_destination = 4\ntls = \"off\"\n",
       "[destination.\"b.test\"]\nmax_connections_per_destination = 2\ntls = \"off\"\n",
       {"destination.\"b.test\".max_connections_per_destination"}},
      {"a destination added", "", "[destination.\"b.test\"]\nmax_message_rate = \"1/s\"\n",
       {"destination.\"b.test\""}},
      {"a destination removed", "[destination.\"b.test\"]\ntls = \"off\"\n", "",
       {"destination.\"b.test\""}},
      {"a route", "[routes]\n\"*\" = \"127.0.0.1:2525\"\n",
       "[routes]\n\"*\" = \"127.0.0.1:2526\"\n\"a.test\" = \"127.0.0.1:2527\"\n",
       {"routes.\"*\"", "routes.\"a.test\""}},
      {"retry", "[retry]\ninitial = \"5m\"\n", "[retry]\ninitial = \"1m\"\n", {"retry.initial"}},
      {"backoff and classify are one key each", "",
       "[[backoff]]\nclass = \"policy\"\naction = \"suspend\"\nperiod = \"1m\"\n"
       "[[classify]]\nclass = \"x\"\ntext = \"x\"\n",
       {"backoff", "classify"}},
      {"paths, delivery, metrics and admin need a restart (sorted, as toml++ keeps keys)",
       "[paths]\nspool = \"a\"\n[delivery]\nshards = 2\n",
       "[paths]\nspool = \"b\"\n[delivery]\nshards = 1\n[metrics]\nlisten = \"127.0.0.1:1\"\n"
       "[admin]\nlisten = \"127.0.0.1:2\"\n",
       {"delivery.shards (restart)", "paths.spool (restart)", "admin.listen (restart)",
        "metrics.listen (restart)"}},
      {"sources need a restart, dkim does not", "",
       "[[source]]\nname = \"a\"\naddress = \"127.0.0.1\"\n"
       "[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nkey_file = \"k.pem\"\n",
       {"dkim", "source (restart)"}},
      {"a value's type changes", "[delivery]\nwindow = 100\n", "[delivery]\nwindow = \"100\"\n",
       {"delivery.window (restart)"}},
  };
  for (const DiffCase& c : cases) {
    absl::StatusOr<std::vector<ConfigChange>> got = DiffConfigText(c.running, c.next, "v.toml");
    ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
    EXPECT_EQ(Described(*got), c.want) << c.name;
  }
}

TEST(DiffConfigText, ASyntaxErrorNamesFileAndLine) {
  absl::StatusOr<std::vector<ConfigChange>> got =
      DiffConfigText("", "[smtp]\nport = = 2\n", "v.toml");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr("v.toml:2"));
}

TEST(IsReloadable, PolicyKeysOfSmtpAndWholeSections) {
  for (const char* key : {"smtp.max_message_rate", "smtp.max_connections_per_destination",
                          "smtp.tls", "smtp.idle_timeout", "routes", "routes.\"*\"",
                          "destination.\"a.test\".tls", "retry.max", "backoff", "classify", "dkim",
                          "suppression.soft_bounce_limit", "suppression.soft_bounce_window",
                          "suppression.soft_bounce_expiry", "suppression.scope",
                          "inbound.pause_on_complaint_rate", "inbound.min_delivered_for_rate"}) {
    EXPECT_TRUE(IsReloadable(key)) << key;
  }
  for (const char* key : {"smtp.port", "smtp.ehlo_name", "smtp.tls_ca_file", "paths.queue",
                          "delivery.window", "dns.servers", "source", "token_key",
                          "retryx", "routesx.y", "inbound.listen", "suppression.path",
                          "suppression.block_cache", "suppression.filter_bits_per_key",
                          "inbound.domains", "inbound.max_connections", "inbound.process",
                          "suppression.soft_bounce_limitx", "inbound.min_delivered"}) {
    EXPECT_FALSE(IsReloadable(key)) << key;
  }
}

TEST(MergeReloadable, TakesReloadableKeysAndKeepsTheRest) {
  absl::StatusOr<Config> running = ParseConfig(
      "[paths]\nspool = \"old\"\n[smtp]\nport = 25\nmax_message_rate = \"10/s\"\n", "a.toml");
  absl::StatusOr<Config> next = ParseConfig(
      "[paths]\nspool = \"new\"\n[smtp]\nport = 2525\nmax_message_rate = \"2/s\"\n"
      "[retry]\ninitial = \"1m\"\n[destination.\"b.test\"]\nmax_connections_per_destination = 3\n"
      "[routes]\n\"b.test\" = \"127.0.0.1:2600\"\n",
      "a.toml");
  ASSERT_TRUE(running.ok() && next.ok());
  const Config merged = MergeReloadable(*running, *next);
  EXPECT_EQ(merged.spool_dir, "old");
  EXPECT_EQ(merged.smtp.port, 25);
  EXPECT_EQ(merged.smtp.defaults.max_message_rate.text, "2/s");
  EXPECT_EQ(merged.retry.initial, absl::Minutes(1));
  EXPECT_EQ(merged.smtp.defaults.retry.initial, absl::Minutes(1));
  ASSERT_EQ(merged.destinations.size(), 1u);
  EXPECT_EQ(merged.destinations[0].second.max_connections, 3);
  ASSERT_EQ(merged.routes.size(), 1u);
  EXPECT_EQ(merged.routes[0].first, "b.test");
}

TEST(MergeReloadable, TakesTheFeedbackPolicyAndKeepsTheListsStorage) {
  absl::StatusOr<Config> running = ParseConfig(
      "[suppression]\npath = \"old\"\nsoft_bounce_limit = 3\n", "a.toml");
  absl::StatusOr<Config> next = ParseConfig(
      "[suppression]\npath = \"new\"\nblock_cache = \"64MiB\"\nfilter_bits_per_key = 4\n"
      "soft_bounce_limit = 1\nsoft_bounce_window = \"2h\"\nsoft_bounce_expiry = \"3h\"\n"
      "scope = \"from_domain\"\n"
      "[inbound]\nmax_connections = 7\npause_on_complaint_rate = 0.01\n"
      "min_delivered_for_rate = 50\n",
      "a.toml");
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(next.ok()) << next.status();
  const Config merged = MergeReloadable(*running, *next);
  const queue::SuppressionOptions& o = merged.suppression.options;
  EXPECT_EQ(o.soft_bounce_limit, 1);
  EXPECT_EQ(o.soft_bounce_window, absl::Hours(2));
  EXPECT_EQ(o.soft_bounce_expiry, absl::Hours(3));
  EXPECT_EQ(o.scope, queue::SuppressionScope::kFromDomain);
  EXPECT_EQ(merged.inbound.pause_on_complaint_rate, 0.01);
  EXPECT_EQ(merged.inbound.min_delivered_for_rate, 50);
  // Restart-only: the running values.
  EXPECT_EQ(merged.suppression.path, "old");
  EXPECT_EQ(o.block_cache_bytes, running->suppression.options.block_cache_bytes);
  EXPECT_EQ(o.filter_bits_per_key, running->suppression.options.filter_bits_per_key);
  EXPECT_EQ(merged.inbound.max_connections, running->inbound.max_connections);
}

// A real file, a real reloader: what it publishes, what it refuses.
class ConfigReloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "reload_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/volley.toml";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& text) { std::ofstream(path_, std::ios::trunc) << text; }

  std::unique_ptr<ConfigReloader> Start(const std::string& text) {
    Write(text);
    absl::StatusOr<Config> c = ParseConfig(text, path_);
    EXPECT_TRUE(c.ok()) << c.status();
    std::vector<std::string> warnings;
    absl::StatusOr<Credentials> keys = Credentials::Load(*c, &warnings);
    EXPECT_TRUE(keys.ok()) << keys.status();
    return std::make_unique<ConfigReloader>(
        path_, text, *c, *keys,
        [this](const std::shared_ptr<const LiveConfig>& live) { published_.push_back(live); },
        &metrics_);
  }

  std::string dir_;
  std::string path_;
  std::vector<std::shared_ptr<const LiveConfig>> published_;
  metrics::ReloadMetrics metrics_;
};

const char kStart[] =
    "[paths]\nspool = \"var/spool\"\n"
    "[smtp]\nehlo_name = \"mx.sender.test\"\n"
    "[destination.\"b.test\"]\nmax_message_rate = \"20/s\"\nmax_connections_per_destination = 4\n";

TEST_F(ConfigReloaderTest, AGoodFileIsPublishedWithTheRestartKeysKept) {
  auto reloader = Start(kStart);
  Write(
      "[paths]\nspool = \"elsewhere\"\n"
      "[smtp]\nehlo_name = \"mx.sender.test\"\n"
      "[destination.\"b.test\"]\nmax_message_rate = \"5/s\"\nmax_connections_per_destination = 2\n");
  ASSERT_TRUE(reloader->Reload().ok());
  ASSERT_EQ(published_.size(), 1u);
  const LiveConfig& live = *published_[0];
  EXPECT_EQ(live.generation, 1u);
  EXPECT_EQ(live.config.spool_dir, "var/spool");  // restart-only: the running value
  ASSERT_EQ(live.config.destinations.size(), 1u);
  EXPECT_EQ(live.config.destinations[0].second.max_message_rate.text, "5/s");
  EXPECT_EQ(live.config.destinations[0].second.max_connections, 2);
  ASSERT_NE(live.routes, nullptr);
  EXPECT_NE(live.routes->Find("b.test"), nullptr);
  EXPECT_FALSE(live.routes_changed);
  EXPECT_EQ(metrics_.ok.value(), 1u);
  EXPECT_EQ(metrics_.failed.value(), 0u);
  EXPECT_GT(metrics_.last_success_seconds.value(), 0);
}

TEST_F(ConfigReloaderTest, ABrokenFileIsRefusedWithFileAndLine) {
  auto reloader = Start(kStart);
  Write("[smtp]\nehlo_name = \"mx.sender.test\"\n[destination.\"b.test\"]\n"
        "max_message_rate = \"fast\"\n");
  absl::Status st = reloader->Reload();
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr(path_ + ":4"));
  EXPECT_THAT(st.message(), HasSubstr("max_message_rate"));
  EXPECT_TRUE(published_.empty());
  EXPECT_EQ(metrics_.failed.value(), 1u);
  EXPECT_EQ(metrics_.last_success_seconds.value(), 0);
}

TEST_F(ConfigReloaderTest, AnUnreadableDkimKeyIsRefused) {
  auto reloader = Start(kStart);
  Write(std::string(kStart) + "[[dkim]]\ndomain = \"sender.test\"\nselector = \"s1\"\nkey_file = \"" +
        dir_ + "/missing.pem\"\n");
  absl::Status st = reloader->Reload();
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("missing.pem"));
  EXPECT_TRUE(published_.empty());
}

// Key rotation by selector: the reload publishes the new key set, and a key
// that cannot be read refuses the whole reload (the running keys stay).
TEST_F(ConfigReloaderTest, ANewDkimSelectorIsPublished) {
  const auto key_file = [this](const std::string& name) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << dkim::PrivateKey::Generate(dkim::Algorithm::kEd25519Sha256)->ToPem();
    ::chmod(path.c_str(), 0600);
    return path;
  };
  const auto dkim = [](const std::string& selector, const std::string& path) {
    return "[[dkim]]\ndomain = \"sender.test\"\nselector = \"" + selector +
           "\"\nkey_file = \"" + path + "\"\n";
  };
  auto reloader = Start(std::string(kStart) + dkim("a", key_file("a.pem")));
  Write(std::string(kStart) + dkim("b", key_file("b.pem")));
  ASSERT_TRUE(reloader->Reload().ok());
  ASSERT_EQ(published_.size(), 1u);
  ASSERT_NE(published_[0]->credentials, nullptr);
  EXPECT_THAT(published_[0]->credentials->DkimSelectors(), ElementsAre("sender.test/b"));
  ASSERT_EQ(published_[0]->config.dkim.size(), 1u);
  EXPECT_EQ(published_[0]->config.dkim[0].selector, "b");

  Write(std::string(kStart) + dkim("b", dir_ + "/b.pem") + dkim("c", dir_ + "/missing.pem"));
  EXPECT_FALSE(reloader->Reload().ok());
  EXPECT_EQ(published_.size(), 1u);
}

TEST_F(ConfigReloaderTest, ChangedSourcesAreRefused) {
  auto reloader = Start(kStart);
  Write(std::string(kStart) + "[[source]]\nname = \"a\"\naddress = \"127.0.0.1\"\n");
  absl::Status st = reloader->Reload();
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("source"));
  EXPECT_TRUE(published_.empty());
}

TEST_F(ConfigReloaderTest, AMissingFileIsRefusedAndAnotherReloadWorksAfter) {
  auto reloader = Start(kStart);
  std::filesystem::remove(path_);
  EXPECT_FALSE(reloader->Reload().ok());
  Write(kStart);
  EXPECT_TRUE(reloader->Reload().ok());
  EXPECT_EQ(metrics_.failed.value(), 1u);
  EXPECT_EQ(metrics_.ok.value(), 1u);
}

TEST_F(ConfigReloaderTest, ChangedRoutesAreMarked) {
  auto reloader = Start(kStart);
  Write(std::string(kStart) + "[routes]\n\"b.test\" = \"127.0.0.1:2600\"\n");
  ASSERT_TRUE(reloader->Reload().ok());
  ASSERT_EQ(published_.size(), 1u);
  EXPECT_TRUE(published_[0]->routes_changed);
  const dns::Route* route = published_[0]->routes->Find("b.test");
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->name, "127.0.0.1:2600");
}

TEST(ConfigReloaderNoFile, NothingToReload) {
  metrics::ReloadMetrics metrics;
  int published = 0;
  std::vector<std::string> warnings;
  const Credentials no_keys = *Credentials::Load(Config{}, &warnings);
  ConfigReloader reloader("", "", Config{}, no_keys,
                          [&published](const std::shared_ptr<const LiveConfig>&) { ++published; },
                          &metrics);
  EXPECT_FALSE(reloader.Reload().ok());
  EXPECT_EQ(published, 0);
  EXPECT_EQ(metrics.failed.value(), 0u);  // not a refused file
}

TEST(DestinationLimitsSetPolicy, LowerLimitsApplyAtOnce) {
  DestinationPolicy before;
  before.max_connections = 4;
  DestinationPolicy after = before;
  after.max_connections = 2;
  after.max_message_rate = *ParseRate("1/s");
  DestinationLimits limits(&before, "b.test", 1);
  const absl::Time now = absl::UnixEpoch() + absl::Hours(1);
  EXPECT_TRUE(limits.KeepsConnection(0, 3, now));
  EXPECT_TRUE(limits.TakeMessageToken(now));
  EXPECT_TRUE(limits.TakeMessageToken(now));  // no rate: always
  limits.SetPolicy(&after);
  EXPECT_EQ(limits.MaxConnections(), 2);
  EXPECT_FALSE(limits.KeepsConnection(0, 3, now));  // the surplus goes after its transaction
  EXPECT_FALSE(limits.MayOpen(100, 2, 0, now));
  EXPECT_TRUE(limits.TakeMessageToken(now));   // the new bucket's one token
  EXPECT_FALSE(limits.TakeMessageToken(now));  // then one a second
  EXPECT_TRUE(limits.TakeMessageToken(now + absl::Seconds(1)));
}

}  // namespace
}  // namespace volley::engine
