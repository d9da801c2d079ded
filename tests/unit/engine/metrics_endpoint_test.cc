// metrics_endpoint_test.cc - /metrics over real loopback HTTP: the exporter's
// text with Prometheus's content type, the exposer_ counts, errors that name
// the address, and a scrape answered while more silent connections are held
// than the cap.
#include "engine/metrics_endpoint.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics.h"
#include "tests/unit/http/loopback_client.h"

namespace volley::engine {
namespace {

using ::testing::HasSubstr;
using ::volley::testing::ConnectLoopback;
using ::volley::testing::Exchange;

uint16_t PortOf(const std::string& address) {
  return static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics::ExporterSources sources;
    sources.shards = {&shard_};
    MetricsEndpointOptions options;
    options.listen = "127.0.0.1:0";
    options.max_connections = 16;
    auto e = MetricsEndpoint::Create(options, std::move(sources));
    ASSERT_TRUE(e.ok()) << e.status();
    endpoint_ = *std::move(e);
    endpoint_->Start();
    port_ = PortOf(endpoint_->address());
  }
  metrics::ShardMetrics shard_{metrics::MetricsOptions{}, {}};
  std::unique_ptr<MetricsEndpoint> endpoint_;
  uint16_t port_ = 0;
};

// Exchange reads until the server closes, so the requests say Connection:
// close: /metrics keeps a connection for the next scrape otherwise.
TEST_F(MetricsEndpointTest, ServesTheExportersText) {
  shard_.deliveries[static_cast<size_t>(metrics::DeliveryStatus::kDelivered)].Add(7);
  const std::string got =
      Exchange(port_, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_THAT(got, HasSubstr("Content-Type: text/plain; version=0.0.4\r\n"));
  EXPECT_THAT(got, HasSubstr("volley_deliveries_total{result=\"delivered\"} 7"));
  EXPECT_THAT(Exchange(port_, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"),
              HasSubstr("exposer_scrapes_total 1"));
  EXPECT_EQ(Exchange(port_, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(Exchange(port_, "POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").rfind("HTTP/1.1 405 ", 0), 0u);
}

TEST_F(MetricsEndpointTest, AScrapeIsAnsweredWhileSilentConnectionsAreHeld) {
  // The report: two idle connections made every scrape time out.
  // Here four times the cap are held, and a scrape is still answered.
  std::vector<int> silent;
  for (int i = 0; i < 64; ++i) silent.push_back(ConnectLoopback(port_));
  EXPECT_THAT(Exchange(port_, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"),
              HasSubstr("volley_deliveries_total"));
  EXPECT_GE(endpoint_->connection_stats().evicted, 64u - 16u);
  for (int fd : silent) ::close(fd);
}

TEST_F(MetricsEndpointTest, ATakenPortIsAClearError) {
  MetricsEndpointOptions options;
  options.listen = endpoint_->address();
  auto second = MetricsEndpoint::Create(options, {});
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(endpoint_->address()));
  options.listen = "localhost:9464";
  EXPECT_FALSE(MetricsEndpoint::Create(options, {}).ok());
}

}  // namespace
}  // namespace volley::engine
