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
//     `Resolver::last_error()` for the logs;
//   - refused by our own bound, the queue being full (LIMITS): kServFail with
//     `local` set, "resolver queue full"; or c-ares could not open a socket to
//     ask (EMFILE, ENFILE: its socket calls go through resolver.cc, which counts
//     those): `local`, "no file descriptor for a DNS socket". No server said it: the cache does not
//     keep it and the router makes it a local verdict (retry soon, no attempt).
//   Callbacks run inside OnSocketReady or OnTimer, never inside Ask and never later
//   than the resolver's destruction.
//
//   Destruction drops every question still open, in flight or queued, without
//   calling its callback, and never calls Watch: the owner may be half torn down
//   by then (a Watch from ~Resolver once kept volleyd spinning at shutdown). The
//   sockets c-ares had asked to be polled are closed; the owner forgets them on
//   its own.
//
// LIMITS
//   Options::max_pending questions in flight at once (a CNAME link is the same
//   question, not a new one, and is sent at once). Past it, questions wait in a
//   FIFO and are sent as in-flight ones end; Options::max_queued of them at most.
//   Past that too, Ask answers a local kServFail ("resolver queue full"), later,
//   from OnTimer. stats() counts what was sent, queued and refused.
//
// CONTRACT
//   Single-threaded: one resolver per shard, used from its loop only.
#ifndef VOLLEY_DNS_RESOLVER_H_
#define VOLLEY_DNS_RESOLVER_H_

#include <cstdint>
#include <deque>
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
  // Questions in flight at once, at least 1; more wait in the queue. Default: 1000.
  size_t max_pending = 1000;
  // Questions waiting for one of the max_pending places; past it Ask answers a
  // local failure. 0: none wait. Each costs a few hundred bytes. Default: 100000,
  // what 10,000 domains with a few MX hosts each ask at once.
  size_t max_queued = 100000;
  // SO_RCVBUF asked for the resolver's sockets, in bytes. Answers to hundreds of
  // questions in flight arrive in a burst; the kernel's default UDP buffer
  // (net.core.rmem_default, 208 KiB) holds about 200 of them and drops the rest,
  // each then waiting out `timeout` for a retransmission. The kernel grants at
  // most net.core.rmem_max. 0: the kernel's default. Default: 4 MiB.
  uint64_t receive_buffer = uint64_t{4} << 20;
};

struct ResolverSocketCalls;

class Resolver {
 public:
  // Watch - poll `fd` for reading and/or writing from now on; both false: stop
  // polling it (c-ares is about to close it). Never called from ~Resolver.
  using Watch = std::function<void(int fd, bool readable, bool writable)>;
  using Callback = std::function<void(DnsAnswer answer)>;

  // Create - InvalidArgument for a bad server entry or a bound out of range,
  // Internal when c-ares cannot start (its error in the message).
  static absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverOptions& options,
                                                          Watch watch);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Ask - the answer for (name, type) to `done`, later (never from inside Ask):
  // sent now, or queued behind the questions already waiting (LIMITS).
  void Ask(std::string_view name, RrType type, Callback done);

  // OnSocketReady - a watched socket is readable and/or writable (an error or
  // hang-up counts as readable: c-ares finds out reading it).
  void OnSocketReady(int fd, bool readable, bool writable);

  // OnTimer - run c-ares's timeouts and retransmissions that are due, send queued
  // questions there is room for, and deliver answers held back (a refusal, an
  // answer c-ares gave inside ares_send). Cheap when nothing is due: call it every
  // loop turn.
  void OnTimer();

  // NextTimeout - how long until OnTimer has something to do; nullopt when no
  // question is open.
  std::optional<absl::Duration> NextTimeout() const;

  // Questions in flight (sent, not yet answered) and waiting to be sent.
  size_t pending() const { return pending_; }
  size_t queued() const { return queued_.size(); }

  // For the metrics (docs/metrics.md): counts since the resolver was made, and
  // the queue now.
  struct Stats {
    uint64_t sent = 0;       // queries sent, a CNAME link's too (not c-ares's retries)
    uint64_t refused = 0;    // answered locally: the queue was full
    size_t in_flight = 0;    // now: pending()
    size_t queued = 0;       // now: queued()
    size_t peak_queued = 0;  // the most ever waiting at once
    // socket() failed for want of a descriptor (EMFILE, ENFILE) or memory: the
    // questions that needed that socket were answered local, not SERVFAIL.
    uint64_t no_descriptor = 0;
  };
  Stats stats() const;

  // Why the last kServFail answer was one ("timeout", "SERVFAIL from the server",
  // "malformed response: ..."), for the logs.
  const std::string& last_error() const { return last_error_; }

  struct Query;  // one question in flight (resolver.cc)
  friend struct ResolverSocketCalls;  // counts no_descriptor_ (resolver.cc)

 private:
  Resolver(const ResolverOptions& options, Watch watch);
  void Send(std::unique_ptr<Query> q);
  // SendQueued - send waiting questions while there is room; not re-entered.
  void SendQueued();
  void Finish(std::unique_ptr<Query> q, DnsAnswer answer, std::string error);
  void OnResponse(std::unique_ptr<Query> q, int status, const unsigned char* abuf, int alen);
  static void OnAresResponse(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  static void OnSocketState(void* data, int fd, int readable, int writable);

  ResolverOptions options_;
  Watch watch_;
  void* channel_ = nullptr;  // ares_channel, kept out of this header
  bool destroying_ = false;
  bool in_send_ = false;  // inside ares_send: an answer now is queued, not delivered
  bool in_send_queued_ = false;
  size_t pending_ = 0;
  // Questions past max_pending, oldest first; at most options_.max_queued.
  std::deque<std::unique_ptr<Query>> queued_;
  uint64_t sent_ = 0;
  uint64_t refused_ = 0;
  uint64_t no_descriptor_ = 0;  // socket() failures for want of descriptors
  size_t peak_queued_ = 0;
  uint16_t next_id_ = 1;
  std::string last_error_;
  // Answers ready for their callbacks (a queue-full refusal, an answer c-ares gave
  // inside ares_send): delivered by OnTimer, so no callback runs inside Ask.
  std::vector<std::pair<Callback, DnsAnswer>> ready_;
};

}  // namespace volley::dns

#endif  // VOLLEY_DNS_RESOLVER_H_
