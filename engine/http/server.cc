// server.cc - Volley's HTTP server on libmicrohttpd (see server.h)
//
// MHD does the wire: its event loops accept, read the head into a memory
// pool of about max_request_head per connection, and call OnRequest once the
// head is complete, then again for each piece of the body, then once more at
// its end. Every connection is also reported to OnConnection as it opens and
// closes, which is where ConnectionGuard learns of it; a sweeper thread asks
// the guard for connections past their deadline. The request head is checked
// here for what MHD lets through and civetweb refused before (methods, target
// characters, header names, versions), so that the answers stay as they were.
#include "engine/http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/http/connection_guard.h"
#include "microhttpd.h"

namespace volley::http {

// Exchange - one connection's request as it arrives, from MHD's
// connection-start notice to its close; on a connection kept alive, reset by
// NextRequest as each request completes.
struct Server::Exchange {
  MHD_Connection* conn = nullptr;
  std::string raw_uri;        // the request target as sent, query included
  std::string remote;         // the peer's address as text
  bool head_seen = false;     // OnRequest ran for the head
  bool answered = false;
  bool held = false;          // suspended, waiting for Start
  Request request;            // its views point into this Exchange and MHD's pool
  const Handler* handler = nullptr;
  bool read_body = false;     // into request.body
  bool body_too_large = false;
  MHD_PostProcessor* form = nullptr;
  bool form_failed = false;
  bool too_many_fields = false;
  ~Exchange() {
    if (form != nullptr) MHD_destroy_post_processor(form);
  }
  void NextRequest() {
    if (form != nullptr) MHD_destroy_post_processor(form);
    MHD_Connection* const kept = conn;
    *this = Exchange();
    conn = kept;
  }
};

namespace {

Response DefaultError(int status, std::string_view reason) {
  return Response{status, "text/plain",
                  absl::StrCat("Error ", status, ": ", base::Sv(reason), "\n"), {}};
}

// Per-connection memory beyond the head that MHD's pool needs: its parsed
// header entries and the answer's header block. A head at max_request_head
// fits (tests/unit/http, admin_test); one that passes this much more before it
// ends is refused by MHD without waiting for the rest.
constexpr size_t kPoolSlack = 1024;
// How often the sweeper looks for connections past their deadline, at most.
constexpr absl::Duration kSweepInterval = absl::Milliseconds(250);

// The methods civetweb knew and Volley's handlers may see; anything else,
// lower case included, is a 400 as before.
bool KnownMethod(std::string_view m) {
  for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                                 "TRACE", "CONNECT"}) {
    if (m == known) return true;
  }
  return false;
}

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// What a target may hold: printable ASCII but space (RFC 9112 3.2). Octets
// over 0x7f are passed on, as civetweb did.
bool ValidTarget(std::string_view t) {
  if (t.empty()) return false;
  for (const char c : t) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// FormDecode - %XX and '+' as a space, as a form's query is encoded; a '%'
// not followed by two hex digits stays as it is.
std::string FormDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() && HexValue(in[i + 1]) >= 0 && HexValue(in[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2]));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

bool IsFormType(std::string_view content_type) {
  const std::string_view media = base::StdSv(
      absl::StripAsciiWhitespace(base::Sv(content_type.substr(0, content_type.find(';')))));
  return base::EqualsIgnoreCase(media, "application/x-www-form-urlencoded") ||
         base::EqualsIgnoreCase(media, "multipart/form-data");
}

std::string AddressText(const sockaddr* a) {
  char text[INET6_ADDRSTRLEN] = "";
  if (a == nullptr) return "";
  if (a->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, text, sizeof text);
  } else if (a->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(a);
    // A v4-mapped peer on a dual-stack socket is named as IPv4.
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      ::inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof text);
    } else {
      ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    }
  }
  return text;
}

// The C trampolines MHD calls; `cls` is the Server.
MHD_Result AccessTrampoline(void* cls, MHD_Connection* conn, const char*, const char* method,
                            const char* version, const char* upload_data,
                            size_t* upload_data_size, void** con_cls) {
  auto* exchange = static_cast<Server::Exchange*>(*con_cls);
  if (exchange == nullptr) return MHD_NO;  // no connection notice: cannot happen
  return static_cast<Server*>(cls)->OnRequest(conn, method, version, upload_data,
                                              upload_data_size, exchange) != 0
             ? MHD_YES
             : MHD_NO;
}

void ConnectionTrampoline(void* cls, MHD_Connection* conn, void** socket_context,
                          MHD_ConnectionNotificationCode code) {
  auto* server = static_cast<Server*>(cls);
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    auto* exchange = new Server::Exchange();
    exchange->conn = conn;
    *socket_context = exchange;
    server->OnConnection(conn, true);
  } else {
    server->OnConnection(conn, false);
    delete static_cast<Server::Exchange*>(*socket_context);
    *socket_context = nullptr;
  }
}

void CompletedTrampoline(void* cls, MHD_Connection* conn, void** con_cls,
                         MHD_RequestTerminationCode code) {
  auto* exchange = static_cast<Server::Exchange*>(*con_cls);
  if (exchange == nullptr) return;
  static_cast<Server*>(cls)->OnCompleted(conn, exchange, code == MHD_REQUEST_TERMINATED_COMPLETED_OK);
}

// The target as sent (MHD hands the access handler a decoded copy, without
// the query); becomes the request's con_cls.
void* UriTrampoline(void*, const char* uri, MHD_Connection* conn) {
  const MHD_ConnectionInfo* info =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  auto* exchange = info != nullptr ? static_cast<Server::Exchange*>(info->socket_context) : nullptr;
  if (exchange != nullptr && uri != nullptr) exchange->raw_uri = uri;
  return exchange;
}

// Query arguments are left as sent; QueryParameter decodes from the raw query.
size_t NoUnescape(void*, MHD_Connection*, char* s) { return std::strlen(s); }

MHD_Result CollectHeader(void* cls, MHD_ValueKind, const char* key, const char* value) {
  auto* headers = static_cast<std::vector<Header>*>(cls);
  headers->push_back({key != nullptr ? key : "", value != nullptr ? value : ""});
  return MHD_YES;
}

// FormFields - MHD's post processor's iterator: every field is taken (never
// stored to a file), up to kMaxFormFields; a value arrives in pieces at
// increasing offsets. Values come out of a body of at most max_body octets
// and decoding only shortens them, so they are bounded by it.
MHD_Result FormFieldPiece(void* cls, MHD_ValueKind, const char* key, const char*, const char*,
                          const char*, const char* data, uint64_t off, size_t size) {
  auto* exchange = static_cast<Server::Exchange*>(cls);
  std::vector<FormField>& fields = exchange->request.form;
  if (off == 0) {
    if (fields.size() >= kMaxFormFields) {
      exchange->too_many_fields = true;
      return MHD_NO;
    }
    fields.push_back(FormField{key != nullptr ? key : "", ""});
  }
  if (!fields.empty() && data != nullptr) fields.back().value.append(data, size);
  return MHD_YES;
}

}  // namespace

std::optional<std::string_view> Request::Find(std::string_view name) const {
  for (const Header& h : headers) {
    if (base::EqualsIgnoreCase(h.name, name)) return h.value;
  }
  return std::nullopt;
}

std::optional<std::string> Request::QueryParameter(std::string_view name) const {
  if (!query.has_value()) return std::nullopt;
  for (std::string_view rest = *query; !rest.empty();) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (FormDecode(pair.substr(0, eq)) != name) continue;
    return eq == std::string_view::npos ? std::string() : FormDecode(pair.substr(eq + 1));
  }
  return std::nullopt;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 429: return "Too Many Requests";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "";
  }
}

std::string WriteResponse(std::string_view method, const Response& r) {
  std::string out = absl::StrCat("HTTP/1.1 ", r.status, " ", base::Sv(ReasonPhrase(r.status)),
                                 "\r\nContent-Type: ", r.content_type,
                                 "\r\nContent-Length: ", r.body.size(),
                                 "\r\nCache-Control: no-store\r\nConnection: close\r\n");
  for (const auto& [name, value] : r.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  out += "\r\n";
  if (method != "HEAD") out += r.body;
  return out;
}

Server::Server(ServerOptions options) : options_(std::move(options)) {
  if (!options_.error_response) options_.error_response = DefaultError;
  guard_ = std::make_unique<ConnectionGuard>(static_cast<size_t>(std::max(1, options_.max_connections)),
                                             options_.request_timeout, options_.keep_alive);
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const sockaddr_storage& address,
                                                       ServerOptions options) {
  if (address.ss_family != AF_INET && address.ss_family != AF_INET6) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.name, ": cannot listen: not an IPv4 or IPv6 address"));
  }
  const bool v6 = address.ss_family == AF_INET6;
  const socklen_t length = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  const auto named = [v6](const sockaddr_storage& a) {
    const uint16_t port = ntohs(v6 ? reinterpret_cast<const sockaddr_in6&>(a).sin6_port
                                   : reinterpret_cast<const sockaddr_in&>(a).sin_port);
    const std::string host = AddressText(reinterpret_cast<const sockaddr*>(&a));
    return v6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
  };
  const std::string where = named(address);
  const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(options.name, ": cannot create a socket for ",
                                               where, ": ", std::strerror(errno)));
  }
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // "::" means IPv6 only, as an explicit address should; 0.0.0.0 is apart.
  if (v6) (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // The longest backlog the kernel allows: a flood of connections fills a
  // short one, and a scrape whose SYN is dropped there waits a second for its
  // retransmission. Connections leave it fast (MHD accepts, the guard evicts).
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat(options.name, ": cannot bind on ", where, ": ", std::strerror(err)));
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_length);

  std::unique_ptr<Server> server(new Server(std::move(options)));
  server->address_ = named(bound);
  const ServerOptions& o = server->options_;
  const int cap = std::max(1, o.max_connections);
  const auto hard_limit = static_cast<unsigned int>(cap + HardLimitSlack(cap));
  // MHD's inactivity timeout, in whole seconds, at least one; long enough
  // for a kept connection's idle time, which the guard bounds itself.
  const unsigned int idle_seconds = static_cast<unsigned int>(std::max<int64_t>(
      1, absl::ToInt64Seconds(
             absl::Ceil(std::max(o.request_timeout, o.keep_alive), absl::Seconds(1)))));
  unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                       MHD_USE_SUPPRESS_DATE_NO_CLOCK;
  if (v6) flags |= MHD_USE_IPv6;
  std::vector<MHD_OptionItem> items = {
      {MHD_OPTION_LISTEN_SOCKET, fd, nullptr},
      {MHD_OPTION_CONNECTION_LIMIT, hard_limit, nullptr},
      {MHD_OPTION_CONNECTION_TIMEOUT, idle_seconds, nullptr},
      {MHD_OPTION_CONNECTION_MEMORY_LIMIT, static_cast<intptr_t>(o.max_request_head + kPoolSlack),
       nullptr},
      {MHD_OPTION_NOTIFY_CONNECTION, reinterpret_cast<intptr_t>(&ConnectionTrampoline),
       server.get()},
      {MHD_OPTION_NOTIFY_COMPLETED, reinterpret_cast<intptr_t>(&CompletedTrampoline),
       server.get()},
      {MHD_OPTION_URI_LOG_CALLBACK, reinterpret_cast<intptr_t>(&UriTrampoline), server.get()},
      {MHD_OPTION_UNESCAPE_CALLBACK, reinterpret_cast<intptr_t>(&NoUnescape), nullptr},
  };
  if (o.threads > 1) {
    items.push_back({MHD_OPTION_THREAD_POOL_SIZE, o.threads, nullptr});
  }
  items.push_back({MHD_OPTION_END, 0, nullptr});
  // MHD's threads start here and inherit this thread's signal mask: with
  // every process signal blocked they never take one, so SIGTERM reaches the
  // program's own handling (volley-sink waits for it on its main thread).
  sigset_t all, saved;
  sigfillset(&all);
  for (int sync : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) sigdelset(&all, sync);
  pthread_sigmask(SIG_BLOCK, &all, &saved);
  server->daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &AccessTrampoline, server.get(),
                                     MHD_OPTION_ARRAY, items.data(), MHD_OPTION_END);
  if (server->daemon_ != nullptr) {
    server->sweeper_ = std::thread([s = server.get()] { s->SweepUntilStopped(); });
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (server->daemon_ == nullptr) {
    ::close(fd);
    return absl::InternalError(
        absl::StrCat(server->options_.name, ": cannot start the HTTP server on ", where,
                     " (libmicrohttpd refused its options, or no thread or descriptor was left)"));
  }
  return server;
}

Server::~Server() { Stop(); }

void Server::Route(std::string pattern, Handler handler) {
  routes_.emplace_back(std::move(pattern), std::move(handler));
}

void Server::Start() {
  std::vector<MHD_Connection*> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kCreated) return;
    state_ = State::kStarted;
    held.swap(held_);
  }
  for (MHD_Connection* conn : held) MHD_resume_connection(conn);
}

void Server::Stop() {
  std::vector<MHD_Connection*> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = State::kStopped;
    held.swap(held_);
    stop_cv_.notify_all();
  }
  // Held requests get their 503 as MHD stops (a suspended connection must be
  // resumed before MHD_stop_daemon).
  for (MHD_Connection* conn : held) MHD_resume_connection(conn);
  if (sweeper_.joinable()) sweeper_.join();
  if (daemon_ == nullptr) return;
  MHD_stop_daemon(daemon_);  // joins MHD's threads, closes every connection and the listener
  daemon_ = nullptr;
}

ServerStats Server::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ServerStats{guard_->size(), guard_->waiting_for_head(), guard_->evicted(),
                     guard_->expired()};
}

void Server::SweepUntilStopped() {
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Duration tick = std::min(kSweepInterval, options_.request_timeout / 4);
  while (state_ != State::kStopped) {
    stop_cv_.wait_for(lock, absl::ToChronoMilliseconds(std::max(tick, absl::Milliseconds(10))));
    // Under mu_: see ConnectionGuard's CONTRACT. shutdown, never close: MHD
    // sees the end of the stream and cleans up (and closes) itself.
    for (const int fd : guard_->Expired(absl::Now())) (void)::shutdown(fd, SHUT_RDWR);
  }
}

void Server::OnConnection(MHD_Connection* conn, bool opened) {
  const auto id = reinterpret_cast<ConnectionGuard::Id>(conn);
  std::lock_guard<std::mutex> lock(mu_);
  if (!opened) {
    guard_->Closed(id);
    return;
  }
  const MHD_ConnectionInfo* info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info == nullptr) return;
  if (const std::optional<int> evict = guard_->Opened(id, info->connect_fd, absl::Now())) {
    (void)::shutdown(*evict, SHUT_RDWR);
  }
}

void Server::OnCompleted(MHD_Connection* conn, Exchange* exchange, bool ok) {
  const bool answered = exchange->answered;
  exchange->NextRequest();
  // If MHD closes the connection instead (Connection: close, an error), its
  // close notice follows and the guard forgets it.
  if (!ok || !answered || options_.keep_alive <= absl::ZeroDuration()) return;
  std::lock_guard<std::mutex> lock(mu_);
  guard_->Idle(reinterpret_cast<ConnectionGuard::Id>(conn), absl::Now());
}

const Handler* Server::Find(std::string_view target) const {
  const Handler* best = nullptr;
  size_t best_length = 0;
  for (const auto& [pattern, handler] : routes_) {
    const bool subtree = !pattern.empty() && pattern.back() == '/';
    const bool match = subtree ? target.substr(0, pattern.size()) == pattern : target == pattern;
    if (match && (best == nullptr || pattern.size() > best_length)) {
      best = &handler;
      best_length = pattern.size();
    }
  }
  return best;
}

void Server::Queue(MHD_Connection* conn, Exchange& exchange, const Response& response,
                   bool whole_request_read) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    guard_->Answered(reinterpret_cast<ConnectionGuard::Id>(conn));
  }
  exchange.answered = true;
  MHD_Response* r = MHD_create_response_from_buffer(
      response.body.size(), const_cast<char*>(response.body.data()), MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return;  // out of memory: MHD closes the connection
  MHD_add_response_header(r, "Content-Type", response.content_type.c_str());
  MHD_add_response_header(r, "Cache-Control", "no-store");
  if (!whole_request_read || options_.keep_alive <= absl::ZeroDuration()) {
    MHD_add_response_header(r, "Connection", "close");
  }
  for (const auto& [name, value] : response.headers) {
    MHD_add_response_header(r, name.c_str(), value.c_str());
  }
  (void)MHD_queue_response(conn, static_cast<unsigned int>(response.status), r);
  MHD_destroy_response(r);
}

int Server::OnRequest(MHD_Connection* conn, const char* method, const char* version,
                      const char* upload_data, size_t* upload_data_size, Exchange* exchange) {
  Exchange& x = *exchange;
  if (x.answered) {  // the rest of a body after an early answer: skipped
    *upload_data_size = 0;
    return 1;
  }
  if (!x.head_seen) {
    x.head_seen = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      guard_->HeadReceived(reinterpret_cast<ConnectionGuard::Id>(conn), absl::Now());
    }
    Request& req = x.request;
    req.method = method != nullptr ? method : "";
    const std::string_view raw = x.raw_uri;
    const size_t q = raw.find('?');
    req.target = raw.substr(0, q);
    if (q != std::string_view::npos) req.query = raw.substr(q + 1);
    std::string_view v = version != nullptr ? version : "";
    req.version = v.substr(0, 5) == "HTTP/" ? v.substr(5) : v;
    const MHD_ConnectionInfo* peer =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    x.remote = AddressText(peer != nullptr ? peer->client_addr : nullptr);
    req.remote_address = x.remote;
    MHD_get_connection_values(conn, MHD_HEADER_KIND, &CollectHeader, &req.headers);
    if (const auto cl = req.Find("Content-Length")) {
      int64_t n = 0;
      bool digits = !cl->empty() && cl->size() <= 18;
      for (const char c : *cl) {
        digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
        if (digits) n = n * 10 + (c - '0');
      }
      req.content_length = digits ? n : -1;
    }
    const MHD_ConnectionInfo* head_size =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    std::optional<Response> refusal;
    bool bad_header = false;
    for (const Header& h : req.headers) {
      bad_header = bad_header || h.name.empty() ||
                   !std::all_of(h.name.begin(), h.name.end(), IsTokenChar);
    }
    if (head_size != nullptr && head_size->header_size > options_.max_request_head) {
      refusal = options_.error_response(431, "request head too large");
    } else if (!KnownMethod(req.method)) {
      refusal = options_.error_response(400, "unknown method");
    } else if (!ValidTarget(req.target) || req.target.front() != '/') {
      refusal = options_.error_response(400, "malformed request target");
    } else if (bad_header) {
      refusal = options_.error_response(400, "malformed header field");
    } else if (v.substr(0, 5) != "HTTP/" || v.size() != 8 || !absl::ascii_isdigit(v[5]) ||
               v[6] != '.' || !absl::ascii_isdigit(v[7])) {
      refusal = options_.error_response(400, "malformed HTTP version");
    } else if (v != "HTTP/1.1" && v != "HTTP/1.0") {
      refusal = options_.error_response(505, "HTTP version not supported");
    } else if (req.content_length < 0 && req.Find("Content-Length")) {
      refusal = options_.error_response(400, "malformed Content-Length");
    }
    if (refusal) {
      Queue(conn, x, *refusal);
      return 1;
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (state_ == State::kCreated) {
        // Before Start: held, not answered; Start or Stop resumes it and MHD
        // calls this again with the same Exchange.
        x.head_seen = false;
        x.held = true;
        held_.push_back(conn);
        req.headers.clear();
        MHD_suspend_connection(conn);
        return 1;
      }
      if (state_ == State::kStopped) {
        lock.unlock();
        Queue(conn, x, options_.error_response(503, "the server is stopping"));
        return 1;
      }
    }
    x.handler = Find(req.target);
    if (x.handler == nullptr) {
      Queue(conn, x, options_.error_response(404, "no such endpoint"));
      return 1;
    }
    const bool chunked = req.Find("Transfer-Encoding").has_value();
    const bool has_body = req.content_length > 0 || chunked;
    if (options_.parse_forms && IsFormType(req.Find("Content-Type").value_or(""))) {
      if (req.content_length < 0 && chunked) {
        // Without a length the body would be read until it ends, past any
        // bound this layer could set.
        Queue(conn, x, options_.error_response(411, "a form body needs a Content-Length"));
        return 1;
      }
      if (req.content_length > static_cast<int64_t>(options_.max_body)) {
        Queue(conn, x, options_.error_response(413, "request body too large"));
        return 1;
      }
      if (req.content_length > 0) {
        x.form = MHD_create_post_processor(conn, 1024, &FormFieldPiece, &x);
        if (x.form == nullptr) {
          Queue(conn, x, options_.error_response(400, "malformed form body"));
          return 1;
        }
        return 1;  // the body comes in the next calls
      }
    } else if (options_.max_body > 0 && has_body) {
      if (req.content_length > static_cast<int64_t>(options_.max_body)) {
        Queue(conn, x, options_.error_response(413, "request body too large"));
        return 1;
      }
      x.read_body = true;
      return 1;
    }
    // No body to read: answered in MHD's next call, at the request's end,
    // because MHD closes a connection whose answer comes with the head (the
    // body, if any, would be left unread). A body this server does not read:
    // answered now, and the connection closes.
    if (!has_body && options_.keep_alive > absl::ZeroDuration()) return 1;
    Queue(conn, x, Answer(x));
    return 1;
  }
  if (*upload_data_size > 0) {  // a piece of the body
    const std::string_view piece(upload_data, *upload_data_size);
    *upload_data_size = 0;
    if (x.form != nullptr) {
      if (!x.form_failed && MHD_post_process(x.form, piece.data(), piece.size()) != MHD_YES) {
        x.form_failed = true;
      }
    } else if (x.read_body && !x.body_too_large) {
      if (x.request.body.size() + piece.size() > options_.max_body) {
        x.body_too_large = true;  // the rest is skipped, the answer is a 413
        x.request.body.clear();
      } else {
        x.request.body.append(piece);
      }
    }
    return 1;
  }
  // The end of the body.
  if (x.form != nullptr) {
    const bool complete = MHD_destroy_post_processor(x.form) == MHD_YES;
    x.form = nullptr;
    // MHD's multipart parser skips what precedes the first boundary, so a
    // body with no boundary at all ends "complete" and empty.
    const bool multipart = base::EqualsIgnoreCase(
        base::StdSv(absl::StripAsciiWhitespace(base::Sv(
            x.request.Find("Content-Type").value_or("").substr(
                0, x.request.Find("Content-Type").value_or("").find(';'))))),
        "multipart/form-data");
    if (x.too_many_fields) {
      Queue(conn, x, options_.error_response(400, "too many form fields"));
    } else if (x.form_failed || !complete || (multipart && x.request.form.empty())) {
      Queue(conn, x, options_.error_response(400, "malformed form body"));
    } else {
      Queue(conn, x, Answer(x), true);
    }
    return 1;
  }
  if (x.body_too_large) {
    Queue(conn, x, options_.error_response(413, "request body too large"));
    return 1;
  }
  Queue(conn, x, Answer(x), true);
  return 1;
}

Response Server::Answer(Exchange& x) {
  try {
    return (*x.handler)(x.request);
  } catch (const std::exception& e) {  // bad_alloc and the like, never Volley's own
    return options_.error_response(500, e.what());
  }
}

}  // namespace volley::http
