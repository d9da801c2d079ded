// NAME
//   server.h - Volley's HTTP/1.x server: routes on civetweb, bounded, loopback first
//
// SYNOPSIS
//   #include "http/server.h"
//
//   http::ServerOptions options;            // bounds below; name is used in errors
//   options.name = "admin API";
//   ASSIGN_OR_RETURN(auto server, http::Server::Create(addr, options));   // binds
//   server->Route("/health", [](const http::Request&) {
//     return http::Response{200, "application/json", "{\"ok\":true}\n"};
//   });
//   server->Route("/jobs/", HandleJobs);   // a pattern ending in '/' takes the subtree
//   server->Start();                       // requests are answered from now on
//   server->address();                     // "127.0.0.1:9465", the real port
//   server->Stop();                        // also done by the destructor
//
// DESCRIPTION
//   The one HTTP server of Volley's programs (volleyd's admin API, volley-sink's
//   /stats), a thin layer over civetweb (the library prometheus-cpp already
//   brings for /metrics). civetweb reads and checks the request head, enforces
//   the bounds, and writes; this layer picks the route, hands the handler a
//   plain Request and writes its Response, so that no handler sees a
//   civetweb type and no program writes HTTP by hand.
//
//   Routing is on the request target exactly as sent: not percent-decoded and
//   without dot-segment removal, so a handler checks what the client wrote
//   (the query, after '?', is apart). A pattern without a trailing '/' matches
//   that path only; one with it matches every path below (Go's ServeMux rule);
//   the longest pattern wins. No route: 404 from options.error_response.
//
//   Every answer says Connection: close and Cache-Control: no-store, carries
//   Content-Length, and has no body for HEAD. Requests that civetweb refuses
//   before a handler runs (a malformed head, a head over the bound, an unknown
//   method, HTTP/2) are answered with options.error_response(status, reason)
//   (400, 505, ...): an over-long head is a 400 here, not a 431, because
//   civetweb 1.15 reports it as a malformed message.
//
// CONTRACT
//   Create binds (so a taken port fails there, naming the address) and starts
//   civetweb's threads, but a request that arrives before Start waits for it
//   (at most request_timeout, then 503), as it waited in the listen backlog
//   before: routes are added, and what handlers read is set, before Start.
//   Handlers run on civetweb's worker threads, up to max_connections at once:
//   they must be thread-safe and short. A handler does not throw; if the
//   standard library does (bad_alloc), the request gets a 500. Stop() (or the
//   destructor) returns once every thread has ended; calling it twice is fine.
//
//   civetweb's threads are started with every process signal blocked, so that
//   SIGTERM and SIGINT reach the program's own threads. civetweb sets SIGPIPE
//   to be ignored, process-wide, when it starts; that was already so in
//   volleyd, whose /metrics runs on it.
//
// DIAGNOSTICS
//   Create: InvalidArgument for an IPv6 address (Debian 12's civetweb is built
//   without IPv6), Unavailable "NAME: cannot bind on ADDR: REASON" when the
//   address cannot be bound, Internal when civetweb cannot start. Errors on one
//   connection (a client gone, too slow) close it and are not logged: the peer
//   is not to be trusted with the log.
//
// BOUNDS
//   max_request_head (8 KiB) of request line and headers; request_timeout (5 s)
//   for the whole head, and again for writing the answer; max_connections (4)
//   served at once, each on its own worker thread, and max_queued (16) accepted
//   connections waiting for one, past which new connections wait in the
//   kernel's listen backlog. A request body is read only up to max_body
//   (default 0: not read at all; the handler sees content_length and decides);
//   a longer one gets 413. No keep-alive: a connection carries one request.
//   With parse_forms, a form body (application/x-www-form-urlencoded or
//   multipart/form-data) is parsed by civetweb (mg_handle_form_request) into
//   Request::form instead: it must carry a Content-Length (411 if not) of at
//   most max_body (413 if over), civetweb reads no byte past it, and at most
//   kMaxFormFields fields are kept (more: 400), so the fields hold at most
//   max_body octets. A body civetweb cannot parse as the form it says it is
//   gets 400. No file is ever stored (uploads are read as any other field).
//   XXX(civetweb 1.15): a very short multipart boundary ("BB") is refused as
//   malformed; four characters pass, and browsers and curl use 30 or more.
#ifndef VOLLEY_ENGINE_HTTP_SERVER_H_
#define VOLLEY_ENGINE_HTTP_SERVER_H_

#include <sys/socket.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct mg_context;
struct mg_connection;

namespace volley::http {

struct Header {
  std::string_view name;
  std::string_view value;
};

// FormField - one field of a form body, name and value decoded by civetweb.
struct FormField {
  std::string name;
  std::string value;
};

// Fields of one form body kept at most; a body with more gets 400.
inline constexpr size_t kMaxFormFields = 64;

// Request - one request, valid for the handler's call only.
struct Request {
  std::string_view method;             // "GET", as sent (civetweb knows the methods)
  std::string_view target;             // "/jobs/a%2Fb": as sent, no query
  std::optional<std::string_view> query;  // what followed '?', if there was one
  std::string_view version;            // "1.1"
  std::vector<Header> headers;
  int64_t content_length = -1;         // -1: none given (chunked, or no body)
  std::string body;                    // read only when options.max_body > 0
  // The fields of a form body, in order, when options.parse_forms (body is
  // then empty).
  std::vector<FormField> form;
  // The peer's IP address as text ("192.0.2.1"): the connection's, not what
  // any header says.
  std::string_view remote_address;

  // Find - the value of header `name` (any case), or nullopt.
  std::optional<std::string_view> Find(std::string_view name) const;
  // QueryParameter - the first value of `name` in the query, percent-decoded
  // ('+' is a space) by civetweb; nullopt when the query has no such name.
  std::optional<std::string> QueryParameter(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // More header fields, e.g. {"Allow", "POST"} on a 405.
  std::vector<std::pair<std::string, std::string>> headers;
};

using Handler = std::function<Response(const Request&)>;

struct ServerOptions {
  // Names the server in errors: "admin API", "--http". Default: "HTTP server".
  std::string name = "HTTP server";
  // Requests served at once (civetweb's worker threads). A client that sends
  // nothing holds one until request_timeout. Default: 4.
  int max_connections = 4;
  // Accepted connections waiting for a worker; more wait in the listen
  // backlog. Default: 16.
  int max_queued = 16;
  // Longest request line and headers together. Default: 8 KiB.
  size_t max_request_head = 8192;
  // Time to send the whole request head, and to take the answer. Default: 5 s.
  absl::Duration request_timeout = absl::Seconds(5);
  // Longest request body read into Request::body; 0: bodies are not read.
  // Default: 0.
  size_t max_body = 0;
  // Parse form bodies into Request::form (see BOUNDS); a body of any other
  // type is read into Request::body as before. Default: false.
  bool parse_forms = false;
  // The answer to a request refused before (or without) a handler: no route
  // (404), a malformed head (400), a body over max_body (413), a form body
  // without Content-Length (411) or malformed (400), a stop (503).
  // Default: text/plain "Error STATUS: REASON".
  std::function<Response(int status, std::string_view reason)> error_response;
};

class Server {
 public:
  // Create - bind `address` (IPv4; its port may be 0 for any free one) and
  // start civetweb; requests wait for Start.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const sockaddr_storage& address,
                                                        ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Route - handle requests whose target matches `pattern` (see DESCRIPTION).
  // Before Start only.
  void Route(std::string pattern, Handler handler);
  void Start();
  void Stop();

  // The address bound, "127.0.0.1:9465" (the real port when 0 was asked for).
  const std::string& address() const { return address_; }

 private:
  explicit Server(ServerOptions options);
  static int Dispatch(mg_connection* conn, void* self);
  static int HttpError(mg_connection* conn, int status, const char* message);
  Response Answer(mg_connection* conn);
  const Handler* Find(std::string_view target) const;
  bool AwaitStart();

  ServerOptions options_;
  std::vector<std::pair<std::string, Handler>> routes_;
  std::string address_;
  sockaddr_storage bound_{};  // address_, for Stop to wake civetweb with
  mg_context* ctx_ = nullptr;
  std::mutex mu_;
  std::condition_variable started_cv_;
  enum class State { kCreated, kStarted, kStopped } state_ = State::kCreated;
};

// WriteResponse - what the server writes for `response` to a request with
// method `method`: status line, the fixed header fields, the body. Pure, for
// tests and for the error path, where civetweb has no request to answer.
std::string WriteResponse(std::string_view method, const Response& response);

// ReasonPhrase - "Not Found" for 404; "" for a status it does not know.
std::string_view ReasonPhrase(int status);

}  // namespace volley::http

#endif  // VOLLEY_ENGINE_HTTP_SERVER_H_
