// The agent's Stats as the exporter renders them (docs/metrics.md).
#include "cluster/cluster_metrics.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/exporter.h"

namespace volley::cluster {
namespace {

using ::testing::HasSubstr;

TEST(ClusterMetricsTest, TheAgentsStatsRenderAsTheClusterFamilies) {
  Stats s;
  s.redis_up = false;
  s.fallback = true;
  s.live_nodes = 3;
  s.leases_held = 7;
  s.round_trips = 1234;
  s.fallbacks = 2;
  s.message_permits = 50000;
  s.connection_permits = 60;
  metrics::ExporterSources sources;
  sources.cluster = [&s](metrics::ClusterMetrics* m) { CopyStats(s, m); };
  const std::string text = metrics::Exporter::Create(sources)->Render();
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_redis_up 0\n"));
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_fallback 1\n"));
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_live_nodes 3\n"));
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_leases_held 7\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE volley_cluster_redis_round_trips_total counter"));
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_redis_round_trips_total 1234\n"));
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_fallbacks_total 2\n"));
  EXPECT_THAT(text, HasSubstr("volley_cluster_permits_granted_total{kind=\"message\"} 50000"));
  EXPECT_THAT(text, HasSubstr("volley_cluster_permits_granted_total{kind=\"connection\"} 60"));
}

TEST(ClusterMetricsTest, WithoutAClusterTheFamiliesStayAtZero) {
  const std::string text = metrics::Exporter::Create({})->Render();
  EXPECT_THAT(text, HasSubstr("\nvolley_cluster_redis_up 0\n"));
  EXPECT_THAT(text, HasSubstr("volley_cluster_permits_granted_total{kind=\"connection\"} 0"));
}

}  // namespace
}  // namespace volley::cluster
