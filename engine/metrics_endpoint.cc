// metrics_endpoint.cc - see metrics_endpoint.h
#include "engine/metrics_endpoint.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/host_port.h"
#include "base/status.h"

namespace volley::engine {

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Create(
    const MetricsEndpointOptions& options, metrics::ExporterSources sources) {
  auto where = base::ParseHostPort(options.listen, base::PortZero::kAllow);
  if (!where.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: listen address ", where.status().message()));
  }
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (!base::IpLiteralAddress(*where, &addr, &addr_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics: listen address \"", options.listen, "\": host must be an IP address literal"));
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  MetricsEndpoint* self = endpoint.get();
  sources.endpoint = [self] {
    return metrics::EndpointStats{self->scrapes_.load(std::memory_order_relaxed),
                                  self->bytes_.load(std::memory_order_relaxed),
                                  static_cast<double>(self->micros_.load(std::memory_order_relaxed))};
  };
  endpoint->exporter_ = metrics::Exporter::Create(std::move(sources));
  http::ServerOptions http_options;
  http_options.name = "metrics endpoint";
  http_options.max_connections = options.max_connections;
  http_options.request_timeout = options.request_timeout;
  http_options.keep_alive = options.keepalive_timeout;
  http_options.max_request_head = kMetricsMaxHead;
  ASSIGN_OR_RETURN(endpoint->http_, http::Server::Create(addr, std::move(http_options)));
  endpoint->http_->Route("/metrics", [self](const http::Request& r) { return self->Scrape(r); });
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() { Stop(); }

void MetricsEndpoint::Start() { http_->Start(); }

void MetricsEndpoint::Stop() {
  if (http_ != nullptr) http_->Stop();
}

http::Response MetricsEndpoint::Scrape(const http::Request& request) {
  if (request.method != "GET" && request.method != "HEAD") {
    return http::Response{405, "text/plain", "Error 405: GET /metrics\n", {{"Allow", "GET, HEAD"}}};
  }
  const absl::Time started = absl::Now();
  http::Response response{200, metrics::kExpositionContentType, exporter_->Render(), {}};
  scrapes_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(response.body.size(), std::memory_order_relaxed);
  micros_.fetch_add(static_cast<uint64_t>(absl::ToInt64Microseconds(absl::Now() - started)),
                    std::memory_order_relaxed);
  return response;
}

}  // namespace volley::engine
