// NAME
//   metrics_endpoint.h - volleyd's /metrics, served by engine/http's server
//
// SYNOPSIS
//   #include "engine/metrics_endpoint.h"
//
//   MetricsEndpointOptions options;            // [metrics] of the config
//   options.listen = "127.0.0.1:9464";
//   ASSIGN_OR_RETURN(auto endpoint, MetricsEndpoint::Create(options, std::move(sources)));
//   endpoint->Start();                          // scrapes are answered from now on
//   endpoint->address();                        // "127.0.0.1:9464", the real port
//
// DESCRIPTION
//   GET (or HEAD) /metrics answers metrics::Exporter's text, content type
//   "text/plain; version=0.0.4", as prometheus-cpp's Exposer did before; any
//   other path is a 404, another method on /metrics a 405. It runs on
//   http::Server (engine/http/server.h), where held connections cost a
//   descriptor and not a thread, and where at max_connections the oldest one
//   that has not sent its request head is closed: a port scanner or a TCP
//   health check cannot make a scrape wait. A scraper's connection is kept
//   for its next scrape (keepalive_timeout), so a flood that fills the
//   listen backlog does not make Prometheus wait for a SYN retransmission
//   either. The endpoint counts its scrapes,
//   bytes and time for the exposer_* families (metrics/exporter.h).
//
// CONTRACT
//   Create binds (a taken port fails there, naming the address); Start before
//   the first scrape is answered; Stop (or the destructor) joins. Scrapes run
//   on the server's one event loop, one at a time, as Prometheus sends them.
//
// BOUNDS
//   max_connections (256) held at once; request_timeout (5 s) to send the
//   request head; keepalive_timeout (75 s) idle between scrapes on one
//   connection; kMetricsMaxHead (8 KiB) of request head; no body is read.
//
// DIAGNOSTICS
//   Create: InvalidArgument "metrics: listen address ..." for an address that
//   is not an IP literal and port; Unavailable "metrics endpoint: cannot bind
//   on ADDR: REASON".
//
// SEE ALSO
//   docs/metrics.md, docs/config.md [metrics], metrics/exporter.h
#ifndef VOLLEY_ENGINE_METRICS_ENDPOINT_H_
#define VOLLEY_ENGINE_METRICS_ENDPOINT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/http/server.h"
#include "metrics/exporter.h"

namespace volley::engine {

// Request line and headers of a scrape, at most. Prometheus sends a few
// hundred octets.
inline constexpr size_t kMetricsMaxHead = 8192;

// MetricsEndpointOptions - [metrics] of volleyd's config, key for key.
struct MetricsEndpointOptions {
  // IP literal and port. Default: "127.0.0.1:9464".
  std::string listen = "127.0.0.1:9464";
  // Connections held at once; one more closes the oldest that has not sent
  // its request head. Default: 256.
  int max_connections = 256;
  // Time to send the request head. Default: 5 s.
  absl::Duration request_timeout = absl::Seconds(5);
  // How long a scraper's connection is kept for its next scrape. Default: 75 s
  // (longer than Prometheus's usual 15 s to 1 min scrape interval).
  absl::Duration keepalive_timeout = absl::Seconds(75);
};

class MetricsEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Create(
      const MetricsEndpointOptions& options, metrics::ExporterSources sources);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  void Start();
  void Stop();
  const std::string& address() const { return http_->address(); }
  http::ServerStats connection_stats() const { return http_->stats(); }

 private:
  MetricsEndpoint() = default;
  http::Response Scrape(const http::Request& request);

  std::unique_ptr<metrics::Exporter> exporter_;
  std::unique_ptr<http::Server> http_;
  std::atomic<uint64_t> scrapes_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> micros_{0};
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_METRICS_ENDPOINT_H_
