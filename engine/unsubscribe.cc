// unsubscribe.cc - the RFC 8058 one-click unsubscribe endpoint (see unsubscribe.h)
//
// http::Server (libmicrohttpd) reads the request, bounds it and parses the form
// body; this file decides the answer. The order of the checks is the contract:
// rate first (a refused client costs a map lookup), then the method, then the
// token (the handler never sees a claim whose MAC failed), then the field.
#include "engine/unsubscribe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "base/host_port.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/http/server.h"

namespace volley::engine {
namespace {

constexpr std::string_view kAllow = "GET, HEAD, POST";
// What a 503 asks the provider to wait: long enough for a passing fault (the
// suppression store busy, a disk full) to clear, short enough that a retry
// comes while the recipient still remembers clicking.
constexpr int kRetryAfterSeconds = 60;

// CanonicalIp - the one spelling of an IPv4 or IPv6 literal, or nullopt.
std::optional<std::string> CanonicalIp(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  char out[INET6_ADDRSTRLEN] = {};
  in6_addr v6;
  in_addr v4;
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    ::inet_ntop(AF_INET, &v4, out, sizeof out);
    return std::string(out);
  }
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    ::inet_ntop(AF_INET6, &v6, out, sizeof out);
    return std::string(out);
  }
  return std::nullopt;
}

// Page - a fixed HTML answer. Nothing from the request goes into one.
http::Response Page(int status, std::string_view title, std::string_view body_html) {
  http::Response r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<meta name=\"robots\" content=\"noindex\"><title>",
      base::Sv(title), "</title></head>\n<body>\n", base::Sv(body_html), "\n</body></html>\n");
  // The URL carries the token: no framing (a click tricked out of a framed
  // page), no Referer to anywhere, no scripts, forms only back here.
  r.headers = {
      {"Content-Security-Policy",
       "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
      {"X-Content-Type-Options", "nosniff"},
  };
  return r;
}

http::Response ErrorPage(int status) {
  const std::string title = absl::StrCat("Error ", status, ": ",
                                         base::Sv(http::ReasonPhrase(status)));
  http::Response r = Page(status, title, absl::StrCat("<p>", title, "</p>"));
  if (status == 503) r.headers.emplace_back("Retry-After", absl::StrCat(kRetryAfterSeconds));
  return r;
}

http::Response BadLink() {
  return Page(400, "Unsubscribe",
              "<p>This unsubscribe link is not valid. Please use the link from the message "
              "exactly as it came.</p>");
}

http::Response Confirm() {
  return Page(200, "Unsubscribe",
              "<h1>Unsubscribe</h1>\n<p>Stop receiving these messages at this address?</p>\n"
              "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" "
              "value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>");
}

http::Response Gone() {
  return Page(410, "Unsubscribe",
              "<p>This unsubscribe link is no longer known to the sender, so it could not "
              "unsubscribe you. Please reply to the message, or contact the sender.</p>");
}

http::Response Done() {
  return Page(200, "Unsubscribed", "<p>You have been unsubscribed.</p>");
}

// TokenOf - the `token` query parameter if there is one, else the last
// non-empty path segment (not decoded: a token is base32, letters and digits).
std::string TokenOf(const http::Request& request) {
  if (std::optional<std::string> q = request.QueryParameter("token")) return *std::move(q);
  std::string_view path = request.target;
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

bool HasOneClickField(const http::Request& request) {
  for (const http::FormField& f : request.form) {
    // RFC 8058 section 3.1: exactly this key and value; the value's case is
    // forgiven, as the key's is not (it names a header field, but is a form key).
    if (f.name == "List-Unsubscribe" && base::EqualsIgnoreCase(f.value, "One-Click")) return true;
  }
  return false;
}

}  // namespace

ClientRate::ClientRate(int per_minute, size_t max_clients)
    : per_minute_(std::max(0, per_minute)), max_clients_(std::max<size_t>(1, max_clients)) {}

ClientRate::Verdict ClientRate::Admit(std::string_view client, absl::Time now) {
  Verdict v;
  if (per_minute_ <= 0) return v;
  std::lock_guard<std::mutex> lock(mu_);
  auto found = index_.find(base::Sv(client));
  std::list<Bucket>::iterator bucket;
  if (found != index_.end()) {
    bucket = found->second;
    recent_.splice(recent_.begin(), recent_, bucket);  // iterators stay valid
    const double minutes = std::max(0.0, absl::ToDoubleMinutes(now - bucket->last));
    bucket->tokens = std::min(per_minute_, bucket->tokens + minutes * per_minute_);
    bucket->last = now;
  } else {
    if (recent_.size() >= max_clients_) {
      index_.erase(recent_.back().client);
      recent_.pop_back();
    }
    recent_.push_front(Bucket{std::string(client), per_minute_, now, false});
    bucket = recent_.begin();
    index_.emplace(bucket->client, bucket);
  }
  if (bucket->tokens >= 1) {
    bucket->tokens -= 1;
    bucket->refused = false;
    return v;
  }
  v.admitted = false;
  v.first_refusal = !bucket->refused;
  bucket->refused = true;
  v.retry_after = absl::Seconds(std::ceil((1 - bucket->tokens) * 60 / per_minute_));
  return v;
}

size_t ClientRate::clients() const {
  std::lock_guard<std::mutex> lock(mu_);
  return recent_.size();
}

std::string ClientAddress(const http::Request& request,
                          const std::vector<std::string>& trusted_proxies) {
  const std::string peer = CanonicalIp(request.remote_address).value_or(
      std::string(request.remote_address));
  const auto trusted = [&trusted_proxies](const std::string& ip) {
    return std::find(trusted_proxies.begin(), trusted_proxies.end(), ip) != trusted_proxies.end();
  };
  if (!trusted(peer)) return peer;
  // The last field: a proxy appends to what came before it.
  std::optional<std::string_view> forwarded;
  for (const http::Header& h : request.headers) {
    if (base::EqualsIgnoreCase(h.name, "X-Forwarded-For")) forwarded = h.value;
  }
  if (!forwarded) return peer;
  std::vector<absl::string_view> hops = absl::StrSplit(base::Sv(*forwarded), ',');
  for (auto hop = hops.rbegin(); hop != hops.rend(); ++hop) {
    std::optional<std::string> ip = CanonicalIp(base::StdSv(absl::StripAsciiWhitespace(*hop)));
    if (!ip) return peer;  // not an address: nothing left of it can be placed
    if (!trusted(*ip)) return *std::move(ip);
  }
  return peer;
}

absl::StatusOr<std::unique_ptr<UnsubscribeServer>> UnsubscribeServer::Create(
    const UnsubscribeOptions& options, token::Keyring keys, UnsubscribeHandler handler) {
  if (keys.empty()) {
    return absl::InvalidArgumentError("unsubscribe: no [[token_key]] to check tokens with");
  }
  if (!handler) return absl::InvalidArgumentError("unsubscribe: no handler");
  absl::StatusOr<base::HostPort> where = base::ParseHostPort(options.listen, base::PortZero::kAllow);
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (!where.ok() || !base::IpLiteralAddress(*where, &addr, &addr_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsubscribe: listen: \"", options.listen, "\": ",
        where.ok() ? "host must be an IP address literal" : where.status().message()));
  }
  if (options.trusted_proxies.size() > kMaxTrustedProxies) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsubscribe: trusted_proxies: at most ", kMaxTrustedProxies));
  }
  std::vector<std::string> proxies;
  for (const std::string& p : options.trusted_proxies) {
    std::optional<std::string> ip = CanonicalIp(p);
    if (!ip) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsubscribe: trusted_proxies: \"", p, "\" is not an IP address literal"));
    }
    proxies.push_back(*std::move(ip));
  }
  http::ServerOptions http_options;
  http_options.name = "unsubscribe endpoint";
  http_options.threads = std::max(1, options.threads);
  http_options.max_connections = kUnsubscribeMaxConnections;
  http_options.max_request_head = options.max_request_bytes;
  http_options.max_body = options.max_request_bytes;
  http_options.parse_forms = true;
  http_options.request_timeout = options.request_timeout;
  http_options.error_response = [](int status, std::string_view) { return ErrorPage(status); };
  ASSIGN_OR_RETURN(std::unique_ptr<http::Server> http,
                   http::Server::Create(addr, std::move(http_options)));
  std::unique_ptr<UnsubscribeServer> server(
      new UnsubscribeServer(std::move(keys), std::move(handler), std::move(proxies),
                            options.rate_per_minute, options.max_clients));
  server->http_ = std::move(http);
  server->http_->Route("/", [s = server.get()](const http::Request& r) { return s->Handle(r); });
  return server;
}

UnsubscribeServer::UnsubscribeServer(token::Keyring keys, UnsubscribeHandler handler,
                                     std::vector<std::string> trusted_proxies,
                                     int rate_per_minute, size_t max_clients)
    : keys_(std::move(keys)),
      handler_(std::move(handler)),
      trusted_proxies_(std::move(trusted_proxies)),
      rate_per_minute_(rate_per_minute),
      rate_(rate_per_minute, max_clients) {}

UnsubscribeServer::~UnsubscribeServer() { Stop(); }

void UnsubscribeServer::Start() {
  base::LogInfo("unsubscribe endpoint on %s", http_->address());
  http_->Start();
}

void UnsubscribeServer::Stop() {
  if (http_ != nullptr) http_->Stop();
}

const std::string& UnsubscribeServer::address() const { return http_->address(); }

http::Response UnsubscribeServer::Handle(const http::Request& request) {
  const std::string client = ClientAddress(request, trusted_proxies_);
  if (const ClientRate::Verdict v = rate_.Admit(client, absl::Now()); !v.admitted) {
    if (v.first_refusal) {
      base::LogInfo("unsubscribe: %s over the rate (%d a minute)", client, rate_per_minute_);
    }
    http::Response r = ErrorPage(429);
    r.headers.emplace_back(
        "Retry-After", absl::StrCat(std::max<int64_t>(1, absl::ToInt64Seconds(v.retry_after))));
    return r;
  }
  const bool post = request.method == "POST";
  if (!post && request.method != "GET" && request.method != "HEAD") {
    http::Response r = ErrorPage(405);
    r.headers.emplace_back("Allow", std::string(kAllow));
    return r;
  }
  const std::string token_text = TokenOf(request);
  if (token_text.empty()) {
    base::LogInfo("unsubscribe: 400 from %s: no token in the URL", client);
    return BadLink();
  }
  absl::StatusOr<token::Claim> claim =
      token::Check(keys_, token::Purpose::kUnsubscribe, token_text);
  if (!claim.ok()) {
    // Check's message repeats at most 16 octets of the token, never a control
    // character (engine/token/token.h).
    base::LogInfo("unsubscribe: 400 from %s: %s", client, base::StdSv(claim.status().message()));
    return BadLink();
  }
  if (!post) return Confirm();
  if (!HasOneClickField(request)) {
    base::LogInfo("unsubscribe: 400 from %s: job %d line %d: no List-Unsubscribe=One-Click in "
                  "the body",
                  client, claim->job_no, claim->line);
    return Page(400, "Unsubscribe",
                "<p>This request is not a one-click unsubscribe: the body lacks "
                "List-Unsubscribe=One-Click.</p>");
  }
  if (absl::Status st = handler_(*claim, client); !st.ok()) {
    if (absl::IsNotFound(st)) {
      // A genuine link whose recipient Volley no longer knows (the job file
      // was removed from accepted/, or the queue was reset): a retry cannot
      // help, and claiming success would be a lie.
      base::LogWarning("unsubscribe: 410 for job %d line %d from %s: %s", claim->job_no,
                       claim->line, client, base::StdSv(st.message()));
      return Gone();
    }
    base::LogWarning("unsubscribe: handler failed for job %d line %d: %s", claim->job_no,
                     claim->line, base::StdSv(st.message()));
    return ErrorPage(503);
  }
  return Done();
}

}  // namespace volley::engine
