// NAME
//   http.h - volley-sink's live counters over HTTP: GET /stats
//
// SYNOPSIS
//   #include "tools/sink/http.h"
//
//   ASSIGN_OR_RETURN(auto http, StatsEndpoint::Create("127.0.0.1:0",
//                                                     [&] { return StatsJson(...); }));
//   http->bound();                  // "127.0.0.1:40123"
//   RETURN_IF_ERROR(http->Start());  // a thread of its own
//   ...
//   http->Stop();                   // also done by the destructor
//
// DESCRIPTION
//   A deliberately small HTTP/1.x server for watching a sink during a run:
//   `GET /stats` (a query string is ignored) answers 200 with the body the
//   callback returns, as application/json; any other method or path gets 404, a
//   request that is not HTTP 400, and a request head over kMaxHttpRequest
//   octets 431. One request per connection (the answer says Connection: close),
//   one connection at a time, on blocking sockets with a timeout: it is not the
//   hot path, and a slow client delays the next one by kHttpTimeout at most.
//
//   HttpAnswer() is the whole protocol, pure, for tests; the thread only reads
//   a head, calls it and writes the answer.
//
// CONTRACT
//   The callback runs on the endpoint's thread and must be safe to call from
//   it while the sink runs. Stop() (or the destructor) returns once the thread
//   has exited.
//
// DIAGNOSTICS
//   Create: InvalidArgument for a bad address (same forms as --listen, one
//   address only), Unavailable when it can't be bound. Start: Internal when the
//   thread can't be started. Errors on a client connection close it.
//
// BOUNDS
//   A request head of at most kMaxHttpRequest octets; kHttpTimeout to read it
//   and to write each part of the answer.
#ifndef VOLLEY_TOOLS_SINK_HTTP_H_
#define VOLLEY_TOOLS_SINK_HTTP_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::sink {

// A request head (request line and header fields) larger than this is refused.
inline constexpr size_t kMaxHttpRequest = 8192;
// How long a client may take to send its request, and to take each write.
inline constexpr absl::Duration kHttpTimeout = absl::Seconds(2);

// HttpAnswer - the complete response to a request whose head (up to and
// excluding the blank line; possibly cut short at kMaxHttpRequest) is `head`;
// `complete` says whether the blank line was seen.
std::string HttpAnswer(std::string_view head, bool complete,
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
  const std::string& bound() const { return bound_; }

 private:
  StatsEndpoint(int listen_fd, int stop_fd, std::string bound,
                std::function<std::string()> stats_json);
  void Loop();
  void Serve(int fd);

  int listen_fd_;
  int stop_fd_;  // an eventfd: written by Stop() to end the loop
  std::string bound_;
  std::function<std::string()> stats_json_;
  std::thread thread_;
};

}  // namespace volley::sink

#endif  // VOLLEY_TOOLS_SINK_HTTP_H_
