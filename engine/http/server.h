// NAME
//   server.h - Volley's HTTP/1.x server: routes on libmicrohttpd, event-driven,
//   bounded, hard to starve
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
//   The one HTTP server of Volley's programs (volleyd's admin API, /metrics and
//   unsubscribe endpoint, volley-sink's /stats), a thin layer over GNU
//   libmicrohttpd (MHD). MHD reads the request head and writes; this layer
//   checks what MHD lets through, picks the route, hands the handler a plain
//   Request and writes its Response, so that no handler sees an MHD type and
//   no program writes HTTP by hand.
//
//   Why MHD and not civetweb (docs/design-notes.md): civetweb gives every
//   connection a worker thread from the moment it is accepted, so a few idle
//   TCP connections (a port scanner, a health check that connects and waits)
//   held every worker and starved /metrics and volleyctl for minutes. MHD runs
//   `threads` epoll loops: a held connection costs a descriptor and its memory
//   pool, never a thread. ConnectionGuard (engine/http/connection_guard.h)
//   then decides which connections to give up: past the cap, the oldest that
//   has not yet sent its head; past request_timeout, a head or body still
//   incomplete (MHD's own timeout is an inactivity timeout, which a client
//   sending a byte every few seconds never trips).
//
//   Routing is on the request target exactly as sent: not percent-decoded and
//   without dot-segment removal, so a handler checks what the client wrote
//   (the query, after '?', is apart). A pattern without a trailing '/' matches
//   that path only; one with it matches every path below (Go's ServeMux rule);
//   the longest pattern wins. No route: 404 from options.error_response.
//
//   Every answer says Cache-Control: no-store, carries Content-Length, and has
//   no body for HEAD. It says Connection: close unless options.keep_alive is
//   set and the request was read to its end (a handler's answer; a refusal
//   before the body may leave one unread, so it still closes). A request this layer refuses
//   (an unknown or lower-case method, a control character or space in the
//   target, a header name that is not a token, a version other than HTTP/1.0
//   and 1.1 (505 for HTTP/2 and later), a head over max_request_head (431), a
//   body over max_body (413)) is answered with options.error_response(status,
//   reason). MHD refuses a few heads itself, in its own words and with
//   text/html: a request line without a version and a header line without a
//   colon (400), and a head that passes max_request_head + kPoolSlack (1 KiB)
//   before it ends (431, or 414 when the request line alone is that long); a
//   head cut short between the two bounds waits for request_timeout.
//
// CONTRACT
//   Create binds (so a taken port fails there, naming the address) and starts
//   MHD, but a request that arrives before Start is held (suspended) until
//   Start, or answered 503 by Stop: routes are added, and what handlers read
//   is set, before Start. Handlers run on MHD's event-loop threads (options.threads):
//   they must be thread-safe and short, as a slow one delays the other
//   connections of its loop. A handler does not throw; if the standard
//   library does (bad_alloc), the request gets a 500. Stop() (or the
//   destructor) returns once every thread has ended; calling it twice is fine.
//
//   MHD's threads are started with every process signal blocked, so that
//   SIGTERM and SIGINT reach the program's own threads. MHD sends with
//   MSG_NOSIGNAL and does not touch SIGPIPE.
//
// DIAGNOSTICS
//   Create: Unavailable "NAME: cannot bind on ADDR: REASON" when the address
//   cannot be bound (IPv4 or IPv6, "[::1]:9465"), InvalidArgument for an
//   address of another family, Internal when MHD cannot start. Errors on one
//   connection (a client gone, too slow, evicted) close it and are not logged:
//   the peer is not to be trusted with the log; stats() counts them.
//
// BOUNDS
//   max_request_head (8 KiB) of request line and headers (MHD's per-connection
//   memory pool is that and 1 KiB for its parsed entries, allocated as the
//   connection is accepted: about 9 KiB per held connection, and a head of
//   very many short fields may fill it below the bound); request_timeout (5 s) to send the whole
//   head, again to send the body, and as the inactivity timeout while the
//   answer is written; max_connections (1024) held at once, past which the
//   oldest connection that has not sent its head is shut down (MHD's own hard
//   limit, HardLimitSlack above it, is not reached by silent connections:
//   they are evicted first, so MHD does not leave a real client waiting).
//   threads (1) event loops. A request body is read only up to max_body
//   (default 0: not read at all; the handler sees content_length and
//   decides); a longer one gets 413. keep_alive (default 0: a connection
//   carries one request) for an idle connection to send its next head,
//   counted from the end of the answer; idle connections are evicted at the
//   cap after the silent ones, oldest first. With parse_forms, a form body (application/x-www-form-urlencoded
//   or multipart/form-data) is parsed by MHD's post processor into
//   Request::form instead: it must carry a Content-Length (411 if not) of at
//   most max_body (413 if over), and at most kMaxFormFields fields are kept
//   (more: 400), so the fields hold at most max_body octets. A body MHD cannot
//   parse as the form it says it is gets 400. No file is ever stored (uploads
//   are read as any other field).
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
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct MHD_Daemon;
struct MHD_Connection;

namespace volley::http {

struct Header {
  std::string_view name;
  std::string_view value;
};

// FormField - one field of a form body, name and value decoded.
struct FormField {
  std::string name;
  std::string value;
};

// Fields of one form body kept at most; a body with more gets 400.
inline constexpr size_t kMaxFormFields = 64;

// Request - one request, valid for the handler's call only.
struct Request {
  std::string_view method;             // "GET", as sent (a known method)
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
  // ('+' is a space); nullopt when the query has no such name.
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
  // Connections held at once; one more closes the oldest that has not sent
  // its request head yet (ConnectionGuard). Default: 1024.
  int max_connections = 1024;
  // Event loops (threads) serving the connections; handlers run on them.
  // Default: 1.
  int threads = 1;
  // Longest request line and headers together. Default: 8 KiB.
  size_t max_request_head = 8192;
  // Time to send the whole request head, again for the body, and the
  // inactivity timeout while the answer is written. Default: 5 s.
  absl::Duration request_timeout = absl::Seconds(5);
  // How long a connection is kept after an answer for the client's next
  // request (HTTP/1.1 persistent connections); 0: every answer closes its
  // connection. A client that keeps its connection (Prometheus) does not
  // connect again for each request, so a flood filling the listen backlog
  // does not delay it. Default: 0.
  absl::Duration keep_alive = absl::ZeroDuration();
  // Longest request body read into Request::body; 0: bodies are not read.
  // Default: 0.
  size_t max_body = 0;
  // Parse form bodies into Request::form (see BOUNDS); a body of any other
  // type is read into Request::body as before. Default: false.
  bool parse_forms = false;
  // The answer to a request refused before (or without) a handler: no route
  // (404), a malformed head (400), a body over max_body (413), a form body
  // without Content-Length (411) or malformed (400).
  // Default: text/plain "Error STATUS: REASON".
  std::function<Response(int status, std::string_view reason)> error_response;
};

// HardLimitSlack - MHD's own connection limit is max_connections plus this
// (a quarter of it, at least 8): room for the connections just shut down
// (evicted, not yet cleaned up) and for those over the cap that
// ConnectionGuard could not evict (all had sent their heads). With several
// event loops MHD splits the limit between them; a loop at its share stops
// accepting and the others take the connections.
inline int HardLimitSlack(int max_connections) {
  return max_connections / 4 > 8 ? max_connections / 4 : 8;
}

// DescriptorsAtMost - descriptors a server with these options can hold: MHD's
// connection limit, the listener, and each event loop's epoll descriptor and
// eventfd (engine/fd_budget.h reserves them).
inline size_t DescriptorsAtMost(int max_connections, int threads) {
  const int cap = max_connections > 0 ? max_connections : 1;
  return static_cast<size_t>(cap + HardLimitSlack(cap)) + 1 +
         2 * static_cast<size_t>(threads > 0 ? threads : 1) + 2;
}

// ServerStats - what the guard did, for tests and logs.
struct ServerStats {
  size_t open = 0;              // connections held now
  size_t waiting_for_head = 0;  // of which silent so far
  uint64_t evicted = 0;         // shut down at the cap
  uint64_t expired = 0;         // shut down at request_timeout
};

class ConnectionGuard;

class Server {
 public:
  // Create - bind and listen on `address` (IPv4 or IPv6; its port may be 0
  // for any free one); requests wait for Start.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const sockaddr_storage& address,
                                                        ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Route - handle requests whose target matches `pattern` (see DESCRIPTION).
  // Before Start only.
  void Route(std::string pattern, Handler handler);
  // Start - answer requests from now on, those held since Create included.
  void Start();
  void Stop();

  // The address bound, "127.0.0.1:9465" or "[::1]:9465" (the real port when
  // 0 was asked for).
  const std::string& address() const { return address_; }
  ServerStats stats() const;

  // MHD's callbacks, public for server.cc's C trampolines only.
  struct Exchange;
  int OnRequest(MHD_Connection* conn, const char* method, const char* version,
                const char* upload_data, size_t* upload_data_size, Exchange* exchange);
  void OnConnection(MHD_Connection* conn, bool opened);
  void OnCompleted(MHD_Connection* conn, Exchange* exchange, bool ok);

 private:
  explicit Server(ServerOptions options);
  Response Answer(Exchange& exchange);
  const Handler* Find(std::string_view target) const;
  // Queue - `response` for `exchange`'s request; `whole_request_read` when
  // nothing of it is left unread (the connection may then be kept alive).
  void Queue(MHD_Connection* conn, Exchange& exchange, const Response& response,
             bool whole_request_read = false);
  void SweepUntilStopped();

  ServerOptions options_;
  std::vector<std::pair<std::string, Handler>> routes_;
  std::string address_;
  MHD_Daemon* daemon_ = nullptr;
  // Guards what follows; see ConnectionGuard's CONTRACT for why descriptors
  // are shut down under it.
  mutable std::mutex mu_;
  std::unique_ptr<ConnectionGuard> guard_;
  enum class State { kCreated, kStarted, kStopped } state_ = State::kCreated;
  std::vector<MHD_Connection*> held_;  // suspended until Start (or Stop)
  std::condition_variable stop_cv_;
  std::thread sweeper_;  // shuts down connections past their deadline
};

// WriteResponse - what the server writes for `response` to a request with
// method `method`: status line, the fixed header fields, the body. Pure, for
// tests; MHD writes the same fields (Content-Length where it chooses).
std::string WriteResponse(std::string_view method, const Response& response);

// ReasonPhrase - "Not Found" for 404; "" for a status it does not know.
std::string_view ReasonPhrase(int status);

}  // namespace volley::http

#endif  // VOLLEY_ENGINE_HTTP_SERVER_H_
