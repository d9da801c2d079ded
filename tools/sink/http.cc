// http.cc - volley-sink's live counters over HTTP; see http.h.
#include "tools/sink/http.h"

#include <sys/socket.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/smtpd/listen.h"

namespace volley::sink {
namespace {

http::Response Text(int status, std::string body) {
  return http::Response{status, "text/plain", std::move(body), {}};
}

http::Response ErrorAnswer(int status, std::string_view reason) {
  if (status == 404) return Text(404, "only GET /stats is here\n");
  if (status == 400) return Text(400, "not an HTTP/1.x request\n");
  return Text(status, absl::StrCat(base::Sv(reason), "\n"));
}

}  // namespace

http::Response StatsAnswer(std::string_view method, std::string_view target,
                           const std::function<std::string()>& stats_json) {
  if (method != "GET" || target != "/stats") return ErrorAnswer(404, "");
  return http::Response{200, "application/json", stats_json() + "\n", {}};
}

StatsEndpoint::StatsEndpoint(std::unique_ptr<http::Server> server,
                             std::function<std::string()> stats_json)
    : server_(std::move(server)), stats_json_(std::move(stats_json)) {}

absl::StatusOr<std::unique_ptr<StatsEndpoint>> StatsEndpoint::Create(
    std::string_view address, std::function<std::string()> stats_json) {
  const std::string where = absl::StrCat("--http '", base::Sv(address), "'");
  sockaddr_storage ss;
  socklen_t len = 0;
  if (absl::Status st = smtpd::ParseListenAddress(address, &ss, &len); !st.ok()) {
    // The parser names --listen; this is --http.
    std::string message(st.message());
    const size_t colon = message.find("': ");
    return absl::InvalidArgumentError(
        absl::StrCat(where, colon == std::string::npos ? message : message.substr(colon + 1)));
  }
  http::ServerOptions options;
  options.name = where;
  options.max_connections = kHttpMaxConnections;
  options.max_request_head = kMaxHttpRequest;
  options.request_timeout = kHttpTimeout;
  options.error_response = ErrorAnswer;
  ASSIGN_OR_RETURN(std::unique_ptr<http::Server> server,
                   http::Server::Create(ss, std::move(options)));
  std::unique_ptr<StatsEndpoint> endpoint(
      new StatsEndpoint(std::move(server), std::move(stats_json)));
  // Every path: the ones that are not /stats get this endpoint's 404.
  endpoint->server_->Route("/", [e = endpoint.get()](const http::Request& r) {
    return StatsAnswer(r.method, r.target, e->stats_json_);
  });
  return endpoint;
}

StatsEndpoint::~StatsEndpoint() { Stop(); }

absl::Status StatsEndpoint::Start() {
  server_->Start();
  return absl::OkStatus();
}

void StatsEndpoint::Stop() { server_->Stop(); }

}  // namespace volley::sink
