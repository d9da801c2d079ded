// exporter_test.cc - the shard counters and the text the Prometheus exporter
// renders (served over HTTP by engine/metrics_endpoint.h, tested there)
#include "metrics/exporter.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics.h"

namespace volley::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Histogram, BucketsAreCumulativeAndCountIsTheInfBucket) {
  const double bounds[] = {0.1, 1, 10};
  Histogram h(bounds);
  for (double v : {0.05, 0.1, 0.5, 5.0, 50.0}) h.Observe(v);
  Histogram::Snapshot s = h.snapshot();
  EXPECT_THAT(s.cumulative, ::testing::ElementsAre(2u, 3u, 4u, 5u));  // le=0.1 holds 0.1
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.sum, 55.65);
}

TEST(ShardMetrics, DestinationsBeyondTheLimitCountAsOther) {
  MetricsOptions options;
  options.max_destinations = 2;
  ShardMetrics m(options, {"configured.test"});
  m.Destination("a.test").deliveries[0].Add();
  m.Destination("b.test").deliveries[0].Add(2);
  m.Destination("c.test").deliveries[0].Add(3);  // over the limit
  m.Destination("d.test").deliveries[0].Add(4);
  m.Destination("a.test").deliveries[0].Add();
  std::vector<std::string> names;
  uint64_t other = 0;
  for (const DestinationCounters* d : m.Destinations()) {
    names.push_back(d->name);
    if (d->name == "other") other = d->deliveries[0].value();
  }
  EXPECT_THAT(names, ::testing::ElementsAre("configured.test", "a.test", "b.test", "other"));
  EXPECT_EQ(other, 7u);
  EXPECT_EQ(m.Destination("a.test").deliveries[0].value(), 2u);
}

TEST(ShardMetrics, ClassesBeyondTheBoundCountAsOther) {
  MetricsOptions options;
  options.outcome_classes = {"invalid_recipient", "expired", "other"};
  ShardMetrics m(options, {});
  m.CountClass(DeliveryStatus::kBounced, "invalid_recipient");
  m.CountClass(DeliveryStatus::kDelivered, "invalid_recipient");  // not a failure: not counted
  m.CountClass(DeliveryStatus::kDeferred, "");                    // no class: not counted
  // A reload's new classes get entries until the bound, then count as "other".
  for (size_t i = 0; i < kMaxOutcomeClasses + 5; ++i) {
    m.CountClass(DeliveryStatus::kDeferred, absl::StrCat("reloaded_", i));
  }
  std::vector<const ClassCounters*> classes = m.Classes();
  ASSERT_EQ(classes.size(), kMaxOutcomeClasses);
  EXPECT_EQ(classes[0]->name, "other");
  EXPECT_EQ(classes[1]->name, "invalid_recipient");
  EXPECT_EQ(classes[1]->outcomes[0].value(), 1u);  // bounced
  EXPECT_EQ(classes[1]->outcomes[1].value(), 0u);  // deferred
  // Three classes were there; kMaxOutcomeClasses - 3 reloaded ones got entries.
  EXPECT_EQ(classes[0]->outcomes[1].value(), 8u);
}

TEST(ShardMetrics, DestinationLevelsZeroWhatIsNoLongerThere) {
  MetricsOptions options;
  options.max_destinations = 1;
  ShardMetrics m(options, {});
  const DestinationCounters* a = &m.Destination("a.test");
  const DestinationCounters* other = &m.Destination("b.test");  // over the limit
  ASSERT_EQ(other->name, "other");
  absl::flat_hash_map<const DestinationCounters*, DestinationLevels> levels;
  levels[a] = DestinationLevels{7, 2, 3};
  levels[other] = DestinationLevels{1, 1, 0};
  m.SetDestinationLevels(levels);
  EXPECT_EQ(a->ready.value(), 7);
  EXPECT_EQ(a->connections.value(), 2);
  EXPECT_EQ(a->backoff_level.value(), 3);
  EXPECT_EQ(other->ready.value(), 1);
  levels.erase(a);
  m.SetDestinationLevels(levels);
  EXPECT_EQ(a->ready.value(), 0);
  EXPECT_EQ(a->connections.value(), 0);
  EXPECT_EQ(a->backoff_level.value(), 0);
  EXPECT_EQ(other->connections.value(), 1);
}

TEST(ShardMetrics, NamesOfFailuresAndTlsVersions) {
  EXPECT_EQ(ConnFailureName(ConnFailure::kGreeting), "greeting");
  EXPECT_EQ(kTlsVersions[TlsVersionIndex("TLSv1.3")], "TLSv1.3");
  EXPECT_EQ(kTlsVersions[TlsVersionIndex("SSLv3")], "other");
}

class ExporterTest : public ::testing::Test {
 protected:
  ExporterTest() : shard_a_(MetricsOptions{}, {}), shard_b_(MetricsOptions{}, {}) {}

  ExporterSources Sources() {
    ExporterSources s;
    s.shards = {&shard_a_, &shard_b_};
    s.intake = &intake_;
    s.max_jobs = 1;
    s.store = [this] {
      ++store_reads_;
      StoreSnapshot st;
      st.ok = true;
      JobSnapshot old_job;
      old_job.id = "old";
      old_job.state = "ready";
      old_job.queued_at = absl::Now() - absl::Minutes(10);
      old_job.total = 10;
      old_job.pending = 4;
      old_job.deferred = 1;
      JobSnapshot new_job = old_job;
      new_job.id = "new";
      new_job.state = "paused";
      new_job.queued_at = absl::Now() - absl::Minutes(1);
      new_job.pending = 3;
      st.jobs = {old_job, new_job};
      st.sst_bytes = 4096;
      st.write_stalls = 2;
      st.free_floor_bytes = 1 << 20;
      return st;
    };
    return s;
  }

  ShardMetrics shard_a_, shard_b_;
  IntakeMetrics intake_;
  int store_reads_ = 0;
};

TEST_F(ExporterTest, ScrapeSumsShards) {
  auto exporter = Exporter::Create(Sources());
  shard_a_.deliveries[static_cast<size_t>(DeliveryStatus::kDelivered)].Add(3);
  shard_b_.deliveries[static_cast<size_t>(DeliveryStatus::kDelivered)].Add(4);
  shard_a_.Destination("mx.p.test").deliveries[static_cast<size_t>(DeliveryStatus::kBounced)].Add();
  shard_b_.Destination("mx.p.test").deliveries[static_cast<size_t>(DeliveryStatus::kBounced)].Add();
  shard_a_.CountReply(250);
  shard_b_.CountReply(550);
  shard_a_.transaction_seconds.Observe(0.003);
  shard_b_.transaction_seconds.Observe(0.3);
  shard_a_.in_flight.Set(5);
  shard_b_.in_flight.Set(6);
  intake_.jobs_failed.Add();
  const std::string body = exporter->Render();
  EXPECT_THAT(body, HasSubstr("volley_deliveries_total{result=\"delivered\"} 7"));
  EXPECT_THAT(body, HasSubstr(
      "volley_destination_deliveries_total{destination=\"mx.p.test\",result=\"bounced\"} 2"));
  EXPECT_THAT(body, HasSubstr("volley_smtp_replies_total{class=\"2xx\"} 1"));
  EXPECT_THAT(body, HasSubstr("volley_smtp_replies_total{class=\"5xx\"} 1"));
  EXPECT_THAT(body, HasSubstr("volley_transaction_duration_seconds_count 2"));
  EXPECT_THAT(body, HasSubstr("volley_transaction_duration_seconds_bucket{le=\"0.005\"} 1"));
  EXPECT_THAT(body, HasSubstr("volley_recipients{state=\"in_flight\"} 11"));
  EXPECT_THAT(body, HasSubstr("volley_recipients{state=\"queued\"} 7"));
  EXPECT_THAT(body, HasSubstr("volley_recipients{state=\"deferred\"} 2"));
  EXPECT_THAT(body, HasSubstr("volley_jobs{state=\"paused\"} 1"));
  EXPECT_THAT(body, HasSubstr("volley_intake_jobs_total{result=\"failed\"} 1"));
  EXPECT_THAT(body, HasSubstr("volley_rocksdb_write_stalls_total 2"));
  // max_jobs = 1: only the newest job has series.
  EXPECT_THAT(body, HasSubstr("volley_job_recipients{job_id=\"new\",state=\"pending\"} 3"));
  EXPECT_THAT(body, Not(HasSubstr("job_id=\"old\"")));
  EXPECT_THAT(body, HasSubstr("process_resident_memory_bytes"));
  EXPECT_GE(store_reads_, 1);
  // The oldest queued job was accepted ten minutes ago.
  const std::string sample = "\nvolley_queue_oldest_age_seconds ";
  const size_t at = body.find(sample);
  ASSERT_NE(at, std::string::npos);
  const double age = std::stod(body.substr(at + sample.size()));
  EXPECT_NEAR(age, 600, 30);
}

TEST_F(ExporterTest, DestinationLevelsAddUpAndBackoffIsTheHighest) {
  auto exporter = Exporter::Create(Sources());
  absl::flat_hash_map<const DestinationCounters*, DestinationLevels> a, b;
  a[&shard_a_.Destination("mx.p.test")] = DestinationLevels{10, 2, 1};
  b[&shard_b_.Destination("mx.p.test")] = DestinationLevels{5, 3, 4};
  shard_a_.SetDestinationLevels(a);
  shard_b_.SetDestinationLevels(b);
  const std::string body = exporter->Render();
  EXPECT_THAT(body, HasSubstr("volley_destination_recipients_ready{destination=\"mx.p.test\"} 15"));
  EXPECT_THAT(body, HasSubstr("volley_destination_connections{destination=\"mx.p.test\"} 5"));
  EXPECT_THAT(body, HasSubstr("volley_destination_backoff_level{destination=\"mx.p.test\"} 4"));
  EXPECT_THAT(body, HasSubstr("volley_destination_backoff_level{destination=\"other\"} 0"));
}

TEST_F(ExporterTest, OutcomeClassesSumShardsAndLeaveImpossiblePairsOut) {
  MetricsOptions options;
  options.outcome_classes = {"invalid_recipient", "expired", "other"};
  ShardMetrics a(options, {}), b(options, {});
  a.CountClass(DeliveryStatus::kBounced, "invalid_recipient");
  b.CountClass(DeliveryStatus::kBounced, "invalid_recipient");
  b.CountClass(DeliveryStatus::kExpired, "expired");
  b.CountClass(DeliveryStatus::kDeferred, "added_by_reload");
  ExporterSources s = Sources();
  s.shards = {&a, &b};
  const std::string body = Exporter::Create(std::move(s))->Render();
  EXPECT_THAT(body, HasSubstr(
      "volley_outcome_classes_total{result=\"bounced\",class=\"invalid_recipient\"} 2"));
  EXPECT_THAT(body, HasSubstr(
      "volley_outcome_classes_total{result=\"deferred\",class=\"invalid_recipient\"} 0"));
  EXPECT_THAT(body, HasSubstr("volley_outcome_classes_total{result=\"expired\",class=\"expired\"} 1"));
  EXPECT_THAT(body, HasSubstr("volley_outcome_classes_total{result=\"deferred\",class=\"other\"} 0"));
  EXPECT_THAT(body, HasSubstr(
      "volley_outcome_classes_total{result=\"deferred\",class=\"added_by_reload\"} 1"));
  EXPECT_THAT(body, Not(HasSubstr("{result=\"expired\",class=\"invalid_recipient\"}")));
  EXPECT_THAT(body, Not(HasSubstr("{result=\"bounced\",class=\"expired\"}")));
}

TEST_F(ExporterTest, BuildInfoNamesTheVersion) {
  const std::string body = Exporter::Create(Sources())->Render();
  EXPECT_THAT(body, ::testing::ContainsRegex(
                        "\nvolley_build_info\\{version=\"[0-9]+\\.[0-9]+\\.[0-9]+\",revision=\"[0-9a-z]+\"\\} 1\n"));
}

TEST_F(ExporterTest, EveryVolleySampleNamesTheNode) {
  ExporterSources s = Sources();
  s.node = "node-a";
  s.endpoint = [] { return EndpointStats{3, 12345, 600}; };
  shard_a_.Destination("mx.p.test").deliveries[0].Add();
  shard_a_.transaction_seconds.Observe(0.003);
  const std::string body = Exporter::Create(std::move(s))->Render();
  size_t volley_samples = 0;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(body, '\n'))) {
    if (line.empty() || line.front() == '#') continue;
    if (line.starts_with("volley_")) {
      ++volley_samples;
      EXPECT_THAT(line, HasSubstr("node=\"node-a\"")) << line;
    } else {
      // process_ and exposer_: the scrape's instance label tells nodes apart.
      EXPECT_THAT(line, Not(HasSubstr("node="))) << line;
    }
  }
  EXPECT_GT(volley_samples, 50u);
  // A family without labels of its own gets the node label alone; one with
  // labels keeps them and adds it.
  EXPECT_THAT(body, HasSubstr("volley_rocksdb_write_stalls_total{node=\"node-a\"} 2"));
  EXPECT_THAT(body, HasSubstr("volley_transaction_duration_seconds_count{node=\"node-a\"} 1"));
  EXPECT_THAT(body, HasSubstr(
      "volley_deliveries_total{result=\"delivered\",node=\"node-a\"} 0"));
}

TEST_F(ExporterTest, TheEndpointsOwnCountsUnderTheExposersNames) {
  ExporterSources s = Sources();
  s.endpoint = [] { return EndpointStats{3, 12345, 600}; };
  const std::string text = Exporter::Create(std::move(s))->Render();
  EXPECT_THAT(text, HasSubstr("exposer_scrapes_total 3"));
  EXPECT_THAT(text, HasSubstr("exposer_transferred_bytes_total 12345"));
  EXPECT_THAT(text, HasSubstr("exposer_request_latencies_count 3"));
  EXPECT_THAT(text, HasSubstr("exposer_request_latencies_sum 600"));
  EXPECT_THAT(Exporter::Create(Sources())->Render(), Not(HasSubstr("exposer_")));
}

TEST_F(ExporterTest, AFailedStoreReadLeavesTheStoreFamiliesOut) {
  ExporterSources s = Sources();
  s.store = [] { return StoreSnapshot{}; };  // ok = false
  const std::string text = Exporter::Create(std::move(s))->Render();
  EXPECT_THAT(text, HasSubstr("volley_recipients{state=\"in_flight\"} 0"));
  EXPECT_THAT(text, Not(HasSubstr("volley_rocksdb_sst_bytes")));
  EXPECT_THAT(text, HasSubstr("volley_deliveries_total"));
}

}  // namespace
}  // namespace volley::metrics
