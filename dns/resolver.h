// resolver.h - c-ares driven by its owner's event loop: questions in, DnsAnswers out
//
// SYNOPSIS
//   auto resolver = Resolver::Create(options, [&](int fd, bool read, bool write) {
//     Watch(fd, read, write);            // poll it (the engine: io_uring POLL_ADD)
//   });
//   (*resolver)->Ask("a.test", RrType::kMx, [](DnsAnswer answer) { ... });
//   // in the loop:
//   wait = min(wait, (*resolver)->NextTimeout());
//   on a poll completion:  (*resolver)->OnSocketReady(fd, readable, writable);
//   every turn:            (*resolver)->OnTimer();    // expires what timed out
//
// DESCRIPTION
//   The resolver never blocks and owns no thread: c-ares opens its sockets (UDP,
//   and TCP after a truncated answer) and says through `watch` which ones to poll
//   for what; the owner polls them (the shard does it through its io_uring) and
//   hands readiness back. c-ares's retransmissions and timeouts run when the owner
//   calls OnTimer, no later than NextTimeout says.
//
//   Queries are built and answers parsed by dns/wire.h, not by c-ares: its parsers
//   drop the MX records' TTL and the authority section's SOA that negative caching
//   (RFC 2308) needs. c-ares sends, retransmits, rotates servers, matches answers to
//   questions (ID and question) and falls back to TCP on truncation.
//
//   A question ends in exactly one call of its callback, with a DnsAnswer:
//   - a response: its rcode and records as dns/wire.h reads them;
//   - a CNAME chain ending at a name without the records (the server did not
//     follow it, as an authoritative server for another zone would not): the
//     target is asked in turn, at most kMaxCnameChain links in all, and the TTL is
//     the least along the chain;
//   - SERVFAIL, REFUSED, no answer within timeout x tries from any server, a
//     malformed response, a CNAME loop: kServFail (retry later), with the reason in
//     `Resolver::last_error()` for the logs.
//   Callbacks run inside Ask (never), OnSocketReady or OnTimer, never later than the
//   resolver's destruction; the destructor drops the questions still open without
//   calling them.
//
// LIMITS
//   Options::max_pending questions in progress at once (CNAME links count once);
//   Ask past it answers kServFail at once, "resolver overloaded".
//
// CONTRACT
//   Single-threaded: one resolver per shard, used from its loop only.
#ifndef VOLLEY_DNS_RESOLVER_H_
#define VOLLEY_DNS_RESOLVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dns/mx.h"

namespace volley::dns {

struct ResolverOptions {
  // Servers as "HOST:PORT" ("127.0.0.1:5353", "[::1]:53"). Empty: the system's
  // (/etc/resolv.conf). Default: empty.
  std::vector<std::string> servers;
  // How long one try waits for an answer from one server. Default: 5 s.
  absl::Duration timeout = absl::Seconds(5);
  // Tries per server before a question fails. Default: 2.
  int tries = 2;
  // Questions in progress at once. Default: 1000.
  size_t max_pending = 1000;
};

class Resolver {
 public:
  // Watch - poll `fd` for reading and/or writing from now on; both false: stop
  // polling it (c-ares is about to close it).
  using Watch = std::function<void(int fd, bool readable, bool writable)>;
  using Callback = std::function<void(DnsAnswer answer)>;

  // Create - InvalidArgument for a bad server entry, Internal when c-ares cannot
  // start (its error in the message).
  static absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverOptions& options,
                                                          Watch watch);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Ask - the answer for (name, type) to `done`, later (never from inside Ask).
  void Ask(std::string_view name, RrType type, Callback done);

  // OnSocketReady - a watched socket is readable and/or writable (an error or
  // hang-up counts as readable: c-ares finds out reading it).
  void OnSocketReady(int fd, bool readable, bool writable);

  // OnTimer - run c-ares's timeouts and retransmissions that are due, and start
  // questions Ask deferred. Cheap when nothing is due: call it every loop turn.
  void OnTimer();

  // NextTimeout - how long until OnTimer has something to do; nullopt when no
  // question is open.
  std::optional<absl::Duration> NextTimeout() const;

  size_t pending() const { return pending_; }
  // Why the last kServFail answer was one ("timeout", "SERVFAIL from the server",
  // "malformed response: ..."), for the logs.
  const std::string& last_error() const { return last_error_; }

  struct Query;  // one question in flight (resolver.cc)

 private:
  Resolver(const ResolverOptions& options, Watch watch);
  void Send(std::unique_ptr<Query> q);
  void Finish(std::unique_ptr<Query> q, DnsAnswer answer, std::string error);
  void OnResponse(std::unique_ptr<Query> q, int status, const unsigned char* abuf, int alen);
  static void OnAresResponse(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  static void OnSocketState(void* data, int fd, int readable, int writable);

  ResolverOptions options_;
  Watch watch_;
  void* channel_ = nullptr;  // ares_channel, kept out of this header
  bool destroying_ = false;
  bool in_send_ = false;  // inside ares_send: an answer now is queued, not delivered
  size_t pending_ = 0;
  uint16_t next_id_ = 1;
  std::string last_error_;
  // Answers ready for their callbacks (an overload refusal, an answer c-ares gave
  // inside ares_send): delivered by OnTimer, so no callback runs inside Ask.
  std::vector<std::pair<Callback, DnsAnswer>> ready_;
};

}  // namespace volley::dns

#endif  // VOLLEY_DNS_RESOLVER_H_
