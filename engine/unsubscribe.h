// NAME
//   unsubscribe.h - the RFC 8058 one-click unsubscribe endpoint
//
// SYNOPSIS
//   #include "engine/unsubscribe.h"
//
//   UnsubscribeOptions options;                   // [unsubscribe] in volley.toml
//   options.listen = "127.0.0.1:8080";
//   ASSIGN_OR_RETURN(auto endpoint, UnsubscribeServer::Create(options, keys,
//       [](const token::Claim& c, std::string_view client) -> absl::Status {
//         return Suppress(c.job_no, c.line);   // an error: 503, the provider retries
//       }));
//   endpoint->Start();          // answers from now on, on its own threads
//   endpoint->address();        // "127.0.0.1:8080" (the real port when 0 was asked)
//   endpoint->Stop();           // also done by the destructor
//
// DESCRIPTION
//   A message carries
//       List-Unsubscribe: <https://u.sender.test/u/TOKEN>
//       List-Unsubscribe-Post: List-Unsubscribe=One-Click
//   and a mailbox provider (or the recipient's own click) comes back here. The
//   token (engine/token/token.h, Purpose::kUnsubscribe) names the job and the
//   recipient's line; it is the `token` query parameter when the URL has one,
//   else the last non-empty segment of the path, so both
//   ".../u/{{unsubscribe_token}}" and "...?token={{unsubscribe_token}}" work,
//   under any path (the proxy in front decides which paths reach here).
//
//     POST, body List-Unsubscribe=One-Click (x-www-form-urlencoded or
//       multipart/form-data, parsed by libmicrohttpd), token verifies: the handler
//       is called once; OK -> 200 "You have been unsubscribed."; NotFound
//       (the link is genuine but its recipient is no longer known: the job
//       file was removed) -> 410, a page that says so; any other error ->
//       503 with Retry-After, so that the provider tries again. Never a
//       redirect (RFC 8058 section 3.2).
//     POST without that field -> 400; any method with a token that does not
//       verify (malformed, forged, another purpose, unknown key) -> 400, the
//       handler not called, the reason logged.
//     GET (HEAD) with a token that verifies -> a page with a button that POSTs
//       the field to the same URL; nothing changes, because link scanners and
//       prefetchers GET every link of a message. A bad token -> 400.
//     Any other method -> 405 with Allow. A body over max_request_bytes -> 413
//       (a form body without Content-Length -> 411). A client over
//       rate_per_minute -> 429 with Retry-After.
//
//   Every answer is a small fixed text/html page: nothing from the request is
//   written into one, so nothing needs escaping. Every answer has
//   Cache-Control: no-store (engine/http/server.h), and frames, referrers and
//   content sniffing are refused (Content-Security-Policy, Referrer-Policy,
//   X-Content-Type-Options), because the URL carries the token.
//
//   The client, for the rate and the log, is the connection's peer. Behind a
//   proxy (TLS ends there) every peer is the proxy: list it in
//   trusted_proxies, and for a request from it the client is the rightmost
//   address of the last X-Forwarded-For field that is not itself a trusted
//   proxy (the entries left of it are whatever the client wrote). A peer not
//   listed is never believed.
//
// CONTRACT
//   Create binds (a taken port fails there) and checks the options; Start
//   opens the door. The handler runs on the endpoint's worker threads, up to
//   `threads` at once: it must be thread-safe, and should be short (the
//   provider waits for the answer). It is called only for a POST with the
//   field and a token that verified, once per such request: a provider that
//   retries after a 503 or a lost answer calls it again, so it must be
//   idempotent (suppressing an address twice is suppressing it).
//
// DIAGNOSTICS
//   Create: InvalidArgument "unsubscribe: listen: ..." for an address that is
//   not an IPv4 literal and port, "unsubscribe: no [[token_key]] to check
//   tokens with" for an empty keyring, "unsubscribe: trusted_proxies: ..." for
//   an entry that is not an IP literal; Unavailable when the address cannot be
//   bound (engine/http/server.h). Logged (base/log.h), one line per refused
//   request: "unsubscribe: 400 from CLIENT: REASON" where REASON is
//   token::Check's (which repeats at most 16 octets of the token) or what was
//   missing; "unsubscribe: CLIENT over the rate (N a minute)" once each time a
//   client starts being refused; "unsubscribe: handler failed for job J line
//   L: ERROR" (warning) with the 503.
//
// BOUNDS
//   max_request_bytes (8 KiB) for the request head and again for the body;
//   threads (4) event loops and kUnsubscribeMaxConnections (256) connections
//   held, past which the oldest that has not sent its head is closed;
//   request_timeout (10 s) to send the head, and again to take the answer;
//   rate_per_minute (60) requests per client, a token bucket of a minute's
//   worth; max_clients (10,000) clients remembered, the least recently seen
//   forgotten first (a forgotten client starts with a full bucket); at most
//   kMaxTrustedProxies trusted proxies; kMaxFormFields fields in a form body.
//
// SEE ALSO
//   RFC 8058 (one-click unsubscribe), RFC 2369 (List-Unsubscribe), RFC 7239
//   (forwarding); docs/feedback.md "One-click unsubscribe"; docs/config.md
//   [unsubscribe]; docs/jobs.md unsubscribe_url; engine/http/server.h.
#ifndef VOLLEY_ENGINE_UNSUBSCRIBE_H_
#define VOLLEY_ENGINE_UNSUBSCRIBE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/token/token.h"

namespace volley::http {
class Server;
struct Request;
struct Response;
}  // namespace volley::http

namespace volley::engine {

inline constexpr size_t kMaxTrustedProxies = 16;
// Connections held at once; one more closes the oldest that has not sent its
// request head (engine/http/server.h).
inline constexpr int kUnsubscribeMaxConnections = 256;

// UnsubscribeOptions - [unsubscribe] of volleyd's config, key for key.
struct UnsubscribeOptions {
  // IPv4 literal and port to listen on; empty: no endpoint. Default: empty.
  std::string listen;
  // Longest request head (request line and headers), and longest body; a
  // longer body gets 413. Default: 8 KiB.
  size_t max_request_bytes = 8192;
  // Requests per client per minute (a token bucket holding a minute's worth);
  // 0: no limit. Default: 60.
  int rate_per_minute = 60;
  // Clients whose rate is remembered; the least recently seen is forgotten
  // first. Default: 10000.
  size_t max_clients = 10000;
  // Event loops (threads) serving requests; the handler runs on them. Default: 4.
  int threads = 4;
  // Time to send the request head, and again to take the answer. Default: 10s.
  absl::Duration request_timeout = absl::Seconds(10);
  // Peers (IP literals) whose X-Forwarded-For is believed: the TLS proxy in
  // front. Default: none.
  std::vector<std::string> trusted_proxies;
};

// UnsubscribeHandler - what a verified one-click POST does; `client` is the
// client's address as text. An error answers 503 (the provider retries).
using UnsubscribeHandler =
    std::function<absl::Status(const token::Claim& claim, std::string_view client)>;

// ClientRate - requests per client per minute, for a bounded number of
// clients. Thread-safe. Time is passed in, for tests.
class ClientRate {
 public:
  // per_minute 0: every request is admitted and nothing is remembered.
  ClientRate(int per_minute, size_t max_clients);

  struct Verdict {
    bool admitted = true;
    // Refused, and the client's previous request was admitted: worth a log line.
    bool first_refusal = false;
    // When refused: until the client's next request would be admitted.
    absl::Duration retry_after;
  };
  Verdict Admit(std::string_view client, absl::Time now);
  size_t clients() const;

 private:
  struct Bucket {
    std::string client;
    double tokens = 0;
    absl::Time last;
    bool refused = false;
  };
  const double per_minute_;
  const size_t max_clients_;
  mutable std::mutex mu_;
  std::list<Bucket> recent_;  // most recently seen first
  absl::flat_hash_map<std::string, std::list<Bucket>::iterator> index_;
};

// ClientAddress - who sent `request` (see DESCRIPTION): the peer, or, when the
// peer is in `trusted_proxies` (canonical IP text), the rightmost entry of the
// last X-Forwarded-For that is not. An entry that is not an IP literal ends
// the walk: the peer is used.
std::string ClientAddress(const http::Request& request,
                          const std::vector<std::string>& trusted_proxies);

class UnsubscribeServer {
 public:
  // Create - bind options.listen (its port may be 0 for any free one); requests
  // wait for Start.
  static absl::StatusOr<std::unique_ptr<UnsubscribeServer>> Create(
      const UnsubscribeOptions& options, token::Keyring keys, UnsubscribeHandler handler);
  ~UnsubscribeServer();
  UnsubscribeServer(const UnsubscribeServer&) = delete;
  UnsubscribeServer& operator=(const UnsubscribeServer&) = delete;

  void Start();
  void Stop();
  const std::string& address() const;

 private:
  UnsubscribeServer(token::Keyring keys, UnsubscribeHandler handler,
                    std::vector<std::string> trusted_proxies, int rate_per_minute,
                    size_t max_clients);
  http::Response Handle(const http::Request& request);

  const token::Keyring keys_;
  const UnsubscribeHandler handler_;
  const std::vector<std::string> trusted_proxies_;  // canonical text
  const int rate_per_minute_;
  ClientRate rate_;
  std::unique_ptr<http::Server> http_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_UNSUBSCRIBE_H_
