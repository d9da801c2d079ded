// NAME
//   http.h - volley-sink's live counters over HTTP: GET /stats
//
// SYNOPSIS
//   #include "tools/sink/http.h"
//
//   ASSIGN_OR_RETURN(auto http, StatsEndpoint::Create("127.0.0.1:0",
//                                                     [&] { return StatsJson(...); }));
//   http->bound();                  // "127.0.0.1:40123"
//   RETURN_IF_ERROR(http->Start());  // answers from now on
//   ...
//   http->Stop();                   // also done by the destructor
//
// DESCRIPTION
//   For watching a sink during a run: `GET /stats` (a query string is ignored)
//   answers 200 with the body the callback returns, as application/json; any
//   other method or path gets 404, a request that is not HTTP/1.x 400 (a
//   request head over kMaxHttpRequest octets 431). One request per connection
//   (the answer says Connection: close). The HTTP is engine/http/server.h's
//   (libmicrohttpd); StatsAnswer is the whole of what this endpoint decides, pure,
//   for tests.
//
// CONTRACT
//   The callback runs on the server's one event-loop thread and must be safe
//   to call from it while the sink runs. Stop() (or the destructor) returns
//   once that thread has exited.
//
// DIAGNOSTICS
//   Create: InvalidArgument for a bad address (same forms as --listen, one
//   address only), Unavailable when it
//   can't be bound. Errors on a client connection close it.
//
// BOUNDS
//   A request head of at most kMaxHttpRequest octets; kHttpTimeout to send it
//   and to take the answer; kHttpMaxConnections held at once, past which the
//   oldest that has sent nothing is closed.
#ifndef VOLLEY_TOOLS_SINK_HTTP_H_
#define VOLLEY_TOOLS_SINK_HTTP_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/http/server.h"

namespace volley::sink {

// A request head (request line and header fields) larger than this is refused.
inline constexpr size_t kMaxHttpRequest = 8192;
// How long a client may take to send its request head, and to take the answer.
inline constexpr absl::Duration kHttpTimeout = absl::Seconds(2);
// Connections held at once; it is for watching a run, not for load.
inline constexpr int kHttpMaxConnections = 16;

// StatsAnswer - the answer to a request for `target` with `method`.
http::Response StatsAnswer(std::string_view method, std::string_view target,
                           const std::function<std::string()>& stats_json);

class StatsEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<StatsEndpoint>> Create(
      std::string_view address, std::function<std::string()> stats_json);
  ~StatsEndpoint();

  StatsEndpoint(const StatsEndpoint&) = delete;
  StatsEndpoint& operator=(const StatsEndpoint&) = delete;

  absl::Status Start();
  void Stop();

  // The bound address, with the real port when 0 was asked for.
  const std::string& bound() const { return server_->address(); }

 private:
  StatsEndpoint(std::unique_ptr<http::Server> server, std::function<std::string()> stats_json);

  std::unique_ptr<http::Server> server_;
  std::function<std::string()> stats_json_;
};

}  // namespace volley::sink

#endif  // VOLLEY_TOOLS_SINK_HTTP_H_
