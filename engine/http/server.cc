// server.cc - Volley's HTTP server on civetweb (see server.h)
//
// civetweb does the wire: it accepts on its master thread, queues the
// connection (connection_queue), and a worker reads the head within
// max_request_size and request_timeout_ms, then calls Dispatch. Everything the
// answer holds is written here in one piece (WriteResponse), so that the
// header fields are the same on every path, including civetweb's own errors.
#include "engine/http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "civetweb.h"

namespace volley::http {
namespace {

// The civetweb option values, kept alive while mg_start2 reads them.
struct CivetOptions {
  std::vector<std::string> values;
  std::vector<const char*> pointers;
  void Add(const char* name, std::string value) {
    values.push_back(name);
    values.push_back(std::move(value));
  }
  const char** Finish() {
    for (const std::string& v : values) pointers.push_back(v.c_str());
    pointers.push_back(nullptr);
    return pointers.data();
  }
};

Response DefaultError(int status, std::string_view reason) {
  return Response{status, "text/plain",
                  absl::StrCat("Error ", status, ": ", base::Sv(reason), "\n"), {}};
}

// ProbeBind - bind `address` once, as civetweb will, only to name the reason
// when it cannot be (civetweb logs it as text; errno is clearer).
absl::Status ProbeBind(const sockaddr_storage& address, std::string_view name,
                       std::string_view where) {
  const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(base::Sv(name), ": cannot create a socket for ",
                                               base::Sv(where), ": ", std::strerror(errno)));
  }
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(sockaddr_in));
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat(base::Sv(name), ": cannot bind on ",
                                               base::Sv(where), ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// What civetweb logged while starting, for the error when it does not start.
// Set only around mg_start2, which runs on the caller's thread.
thread_local std::string* start_log = nullptr;

// IsFormType - whether a Content-Type names one of the two form encodings
// civetweb's form parser reads (parameters such as charset aside).
bool IsFormType(std::string_view content_type) {
  const std::string_view media = base::StdSv(
      absl::StripAsciiWhitespace(base::Sv(content_type.substr(0, content_type.find(';')))));
  return base::EqualsIgnoreCase(media, "application/x-www-form-urlencoded") ||
         base::EqualsIgnoreCase(media, "multipart/form-data");
}

// FormCollector - mg_handle_form_request's callbacks: every field is taken
// (never stored to a file), up to kMaxFormFields. Values arrive in one or more
// pieces; they come out of a body of at most max_body octets, and decoding
// only shortens them, so they are bounded by it.
struct FormCollector {
  std::vector<FormField>* fields;
  bool too_many = false;

  static int Found(const char* key, const char*, char*, size_t, void* self) {
    auto* c = static_cast<FormCollector*>(self);
    if (c->fields->size() >= kMaxFormFields) {
      c->too_many = true;
      return MG_FORM_FIELD_STORAGE_ABORT;
    }
    c->fields->push_back(FormField{key != nullptr ? key : "", ""});
    return MG_FORM_FIELD_STORAGE_GET;
  }
  static int Get(const char*, const char* value, size_t length, void* self) {
    auto* c = static_cast<FormCollector*>(self);
    if (!c->fields->empty() && value != nullptr) c->fields->back().value.append(value, length);
    return MG_FORM_FIELD_HANDLE_GET;  // the next piece of this field, if any
  }
};

int LogMessage(const mg_connection*, const char* message) {
  // After start, civetweb logs what a client did wrong (timeouts, bad heads):
  // not worth an operator's attention, and the client's to choose.
  if (start_log != nullptr && start_log->empty() && message != nullptr) *start_log = message;
  return 1;  // civetweb writes nothing itself
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
  // Decoding only shortens: a buffer the query's size always holds the value.
  std::string value(query->size() + 1, '\0');
  const std::string var(name);
  const int n = mg_get_var2(query->data(), query->size(), var.c_str(), value.data(),
                            value.size(), 0);
  if (n < 0) return std::nullopt;
  value.resize(static_cast<size_t>(n));
  return value;
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
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const sockaddr_storage& address,
                                                       ServerOptions options) {
  if (address.ss_family != AF_INET) {
    char v6[INET6_ADDRSTRLEN] = "?";
    if (address.ss_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(address).sin6_addr, v6,
                  sizeof v6);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        options.name, ": cannot listen on ", v6,
        ": IPv6 is not supported (Debian 12's civetweb is built without it); use an IPv4 "
        "address such as 127.0.0.1"));
  }
  const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
  char host[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
  const std::string where = absl::StrCat(host, ":", ntohs(v4.sin_port));
  RETURN_IF_ERROR(ProbeBind(address, options.name, where));

  static std::once_flag library_init;
  std::call_once(library_init, [] { mg_init_library(0); });

  std::unique_ptr<Server> server(new Server(std::move(options)));
  const ServerOptions& o = server->options_;
  CivetOptions civet;
  civet.Add("listening_ports", where);
  civet.Add("num_threads", absl::StrCat(o.max_connections));
  civet.Add("connection_queue", absl::StrCat(o.max_queued));
  civet.Add("listen_backlog", "64");
  civet.Add("max_request_size", absl::StrCat(o.max_request_head));
  civet.Add("request_timeout_ms", absl::StrCat(absl::ToInt64Milliseconds(o.request_timeout)));
  civet.Add("enable_keep_alive", "no");
  // Route on what the client sent: "/jobs/a%2Fb" is not "/jobs/a/b".
  civet.Add("decode_url", "no");
  // No files are served, and nothing cross-origin is invited.
  civet.Add("enable_directory_listing", "no");
  civet.Add("access_control_allow_origin", "");
  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  callbacks.http_error = HttpError;
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = civet.Finish();
  char error_text[256] = {};
  mg_error_data error{};
  error.text = error_text;
  error.text_buffer_size = sizeof error_text;
  std::string logged;
  start_log = &logged;
  // civetweb's threads start here and inherit this thread's signal mask: with
  // every process signal blocked they never take one, so SIGTERM reaches the
  // program's own handling (volley-sink waits for it on its main thread).
  sigset_t all, saved;
  sigfillset(&all);
  for (int sync : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) sigdelset(&all, sync);
  pthread_sigmask(SIG_BLOCK, &all, &saved);
  server->ctx_ = mg_start2(&init, &error);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  start_log = nullptr;
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(server->options_.name, ": cannot listen on ",
                                               where, ": ", logged.empty() ? error_text : logged));
  }
  mg_set_request_handler(server->ctx_, "/", Dispatch, server.get());

  mg_server_port ports[1] = {};
  server->address_ = where;
  server->bound_ = address;
  if (mg_get_server_ports(server->ctx_, 1, ports) == 1) {
    server->address_ = absl::StrCat(host, ":", ports[0].port);
    reinterpret_cast<sockaddr_in&>(server->bound_).sin_port =
        htons(static_cast<uint16_t>(ports[0].port));
  }
  return server;
}

Server::~Server() { Stop(); }

void Server::Route(std::string pattern, Handler handler) {
  routes_.emplace_back(std::move(pattern), std::move(handler));
}

void Server::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kCreated) state_ = State::kStarted;
  started_cv_.notify_all();
}

void Server::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = State::kStopped;
    started_cv_.notify_all();
  }
  if (ctx_ == nullptr) return;
  // XXX(civetweb 1.15): its accepting thread looks at the stop flag only
  // between polls of the listener, which wait up to 2 s (SOCKET_TIMEOUT_QUANTUM),
  // and mg_stop joins it: a SIGTERM would take 2 s per server. A connection to
  // our own listener ends the wait; one made before the flag is set is served
  // as a client that sent nothing, hence a few, until mg_stop returns.
  std::atomic<bool> stopped{false};
  std::thread waker([this, &stopped] {
    while (!stopped.load()) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd >= 0) {
        (void)::connect(fd, reinterpret_cast<const sockaddr*>(&bound_), sizeof(sockaddr_in));
        ::close(fd);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  mg_stop(ctx_);  // joins every civetweb thread
  stopped.store(true);
  waker.join();
  ctx_ = nullptr;
}

bool Server::AwaitStart() {
  std::unique_lock<std::mutex> lock(mu_);
  started_cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.request_timeout),
                       [this] { return state_ != State::kCreated; });
  return state_ == State::kStarted;
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

Response Server::Answer(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  Request req;
  req.method = info->request_method;
  req.target = info->request_uri != nullptr ? info->request_uri : "";
  if (info->query_string != nullptr) req.query = info->query_string;
  req.version = info->http_version != nullptr ? info->http_version : "";
  req.content_length = info->content_length;
  req.remote_address = info->remote_addr;
  for (int i = 0; i < info->num_headers; ++i) {
    req.headers.push_back({info->http_headers[i].name, info->http_headers[i].value});
  }
  const Handler* handler = Find(req.target);
  if (handler == nullptr) return options_.error_response(404, "no such endpoint");
  if (options_.parse_forms && IsFormType(req.Find("Content-Type").value_or(""))) {
    if (req.content_length < 0 && req.Find("Transfer-Encoding")) {
      // Without a length civetweb's parser reads until the body ends, past
      // any bound this layer could set.
      return options_.error_response(411, "a form body needs a Content-Length");
    }
    if (req.content_length > static_cast<int64_t>(options_.max_body)) {
      return options_.error_response(413, "request body too large");
    }
    if (req.content_length > 0) {
      FormCollector collector{&req.form};
      mg_form_data_handler fdh{};
      fdh.field_found = &FormCollector::Found;
      fdh.field_get = &FormCollector::Get;
      fdh.user_data = &collector;
      const int parsed = mg_handle_form_request(conn, &fdh);
      if (collector.too_many) return options_.error_response(400, "too many form fields");
      if (parsed < 0) return options_.error_response(400, "malformed form body");
    }
    return (*handler)(req);
  }
  if (options_.max_body > 0 && (req.content_length > 0 || req.Find("Transfer-Encoding"))) {
    if (req.content_length > static_cast<int64_t>(options_.max_body)) {
      return options_.error_response(413, "request body too large");
    }
    char buf[4096];
    for (int n; (n = mg_read(conn, buf, sizeof buf)) > 0;) {
      req.body.append(buf, static_cast<size_t>(n));
      if (req.body.size() > options_.max_body) {
        return options_.error_response(413, "request body too large");
      }
    }
  }
  return (*handler)(req);
}

int Server::Dispatch(mg_connection* conn, void* self) {
  auto* server = static_cast<Server*>(self);
  const char* method = mg_get_request_info(conn)->request_method;
  Response response;
  if (!server->AwaitStart()) {
    response = server->options_.error_response(503, "the server is stopping");
  } else {
    try {
      response = server->Answer(conn);
    } catch (const std::exception& e) {  // bad_alloc and the like, never Volley's own
      response = server->options_.error_response(500, e.what());
    }
  }
  const std::string out = WriteResponse(method != nullptr ? method : "", response);
  mg_write(conn, out.data(), out.size());
  return response.status;
}

int Server::HttpError(mg_connection* conn, int status, const char* message) {
  auto* server = static_cast<Server*>(mg_get_user_data(mg_get_context(conn)));
  if (server == nullptr) return 1;  // let civetweb answer
  Response response = server->options_.error_response(status, message != nullptr ? message : "");
  const std::string out = WriteResponse("", response);
  mg_write(conn, out.data(), out.size());
  return 0;
}

}  // namespace volley::http
