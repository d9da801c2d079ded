// connection.h - a shard's SMTP connections: sockets, TLS and the byte pump
//
// SYNOPSIS
//   Connections conns(config, &ring, metrics);
//   RETURN_IF_ERROR(conns.Init());                      // the TLS client context
//   absl::StatusOr<Conn*> c = conns.Open(request, now);  // socket, bind, connect
//   conns.OnIo(c, op, result, now);                      // a completion of c's
//   conns.Kick(c, now);                                  // send, restart the clock
//
// DESCRIPTION
//   A Conn is one SMTP session: its socket, its smtp::Client (the pure protocol
//   machine, engine/smtp/client.h), its TLS session after STARTTLS, and the
//   transactions under way (one, or more pipelined). This file moves bytes
//   between the socket (through the ring) and the client, through TLS when
//   there is a session, and keeps each connection's deadline: the wait the
//   client is in decides it (DestinationPolicy::TimeoutFor), a send in flight
//   is bounded by data_block_timeout. What the client's events mean (a session
//   ready, a transaction done) is the shard's (engine/shard.h).
//
//   Receives go through the shard's provided buffer ring when the kernel has
//   one (engine/reactor/ring.h): an idle connection holds no receive buffer of
//   its own, only while the ring is out of buffers (-ENOBUFS) does it get one.
//
//   A connection is freed only when no io_uring operation on it is pending
//   (Closed and pending_ops == 0); completions for a reused slot are dropped by
//   generation (engine/reactor/slot_table.h).
//
// BOUNDS
//   kRecvBufferSize per receive (a ring buffer, or the connection's own in the
//   fallback); the send buffer holds what the client has ready (the pipelined
//   commands and messages of max_transactions_in_flight transactions at most),
//   taken from the client without a copy, and is freed once sent when it is
//   larger than kKeptSendBufferSize. How many messages are held at once is
//   the shard's bound ([delivery] max_message_bytes_in_flight,
//   engine/message_bytes.h).
#ifndef VOLLEY_ENGINE_CONNECTION_H_
#define VOLLEY_ENGINE_CONNECTION_H_

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/allowance.h"
#include "dns/routes.h"
#include "engine/config.h"
#include "engine/deadlines.h"
#include "engine/reactor/ring.h"
#include "engine/reactor/slot_table.h"
#include "engine/smtp/client.h"
#include "engine/tls/tls.h"
#include "engine/work.h"
#include "metrics/metrics.h"

namespace volley::engine {

// The operation in a completion's tag (engine/reactor/tag.h): a connection's, or
// one of the shard's own.
enum Op : uint8_t {
  kOpConnect = 1,
  kOpSend,
  kOpRecv,
  kOpIntakeEvent,
  kOpDnsPoll,        // a resolver socket is ready: slot = its fd
  kOpDnsPollRemove,  // a cancelled DNS poll's own completion (nothing to do)
  kOpCommitDone,     // the committer finished a unit (its eventfd)
  kOpConfigReload,   // a reloaded config waits in the shard's mailbox (its eventfd)
};

// What one read of a connection takes in. Servers' replies are short (a long
// EHLO reply is under 1 KiB) and a longer input just takes more reads.
inline constexpr size_t kRecvBufferSize = 4 << 10;
// A send buffer larger than this is freed once its bytes are sent: it held
// messages. A transaction's commands and a small message fit; the several
// messages of pipelined transactions do not, or each of 10,000 connections
// would keep two buffers of them (its own and the client's, swapped) for as
// long as it stays open, outside the bound on message bytes.
inline constexpr size_t kKeptSendBufferSize = 4 << 10;
// The receive buffers in each shard's buffer ring are [delivery]
// receive_buffers (engine/config.h): past them a receive falls back to a
// buffer of the connection's own (ENOBUFS).

struct Destination;  // engine/shard.h: the pool a connection belongs to

// One transaction under way on a connection.
struct ConnTransaction {
  std::vector<Work*> works;  // one per recipient, in envelope order
  // The bytes its message holds against the shard's bound (engine/message_bytes.h).
  uint64_t message_bytes = 0;
  absl::Time started;  // for the transaction duration histogram
  std::string txn;     // its name, the delivery log's txn (shard.cc, TransactionPrefix)
};

struct Conn {
  uint32_t slot = 0;
  int fd = -1;
  Destination* dest = nullptr;
  const DestinationPolicy* policy = nullptr;  // dest's
  std::unique_ptr<smtp::Client> client;
  // Only when the buffer ring was out of buffers (or the kernel has none).
  std::unique_ptr<char[]> recv_buffer;
  std::string send_buffer;  // bytes handed to the kernel, owned until the send completes
  size_t send_offset = 0;
  int pending_ops = 0;
  bool send_in_flight = false;
  bool session_ready = false;
  bool closing = false;        // shut down; freed when pending_ops reaches 0
  // The transactions under way, oldest first: more than one only pipelined
  // ([smtp] max_transactions_in_flight), and they finish in this order.
  std::deque<ConnTransaction> transactions;
  int messages = 0;  // transactions finished on the connection
  absl::Time deadline = absl::InfiniteFuture();
  // The name of the transaction whose records are being made (the delivery log's
  // txn); empty otherwise.
  std::string txn;
  // A message token was taken for the transaction the shard starts next.
  bool token_taken = false;
  // After STARTTLS: every byte goes through the TLS session; `plaintext` is the
  // scratch buffer for what it decrypts.
  std::unique_ptr<tls::Session> tls;
  std::string plaintext;
  std::string tls_version;  // for the delivery log, once the handshake is done
  std::string tls_cipher;
  // The handshake failed under tls = "opportunistic": the destination is retried in
  // plaintext at once, so its waiting work is not deferred for this session's end.
  bool tls_fell_back = false;
  // The connect itself failed with this errno (ECONNREFUSED, ETIMEDOUT...): what
  // the destination's reachability names (engine/reasons.h). 0: it did not.
  int connect_errno = 0;
  // The route the connection was opened on (a DNS route may be replaced by a
  // fresher one meanwhile) and the host of it.
  std::shared_ptr<const dns::Route> route;
  size_t host = 0;
  int source = -1;  // the egress source bound to (Config::sources), or none
  // The cluster entry whose connection count it holds a place in (TryOpen),
  // given back (Closed) when it is freed; null for a node-scoped pool. Kept
  // here, not looked up then: a reload may change the pool's scope meanwhile.
  cluster::Allowance* lease = nullptr;

  const dns::Endpoint& Host() const { return route->hosts[host]; }
};

// A socket address to bind a connection to (an egress source, port 0).
struct SourceAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
};

// OpenRequest - everything a new connection needs.
struct OpenRequest {
  Destination* dest = nullptr;
  const DestinationPolicy* policy = nullptr;
  std::shared_ptr<const dns::Route> route;
  size_t host = 0;  // in route->hosts
  int source = -1;  // Config::sources index, or -1
  bool plaintext_only = false;  // STARTTLS not tried (an opportunistic fallback)
};

class Connections {
 public:
  using Table = reactor::SlotTable<Conn>;

  Connections(const Config& config, reactor::Ring* ring, metrics::ShardMetrics* metrics);

  // Init - the TLS client context ([smtp] tls_ca_file).
  absl::Status Init();

  // Open - a socket to the request's host, bound to its source, connecting.
  // ResourceExhausted: out of descriptors (or socket memory), nothing about the
  // destination failed; Unavailable: socket() or bind() failed otherwise, the
  // message says which and why.
  absl::StatusOr<Conn*> Open(const OpenRequest& request, absl::Time now);

  // OnIo - a completion of c's connect, receive or send: fed to its client.
  // A receive's ring buffer is given back here.
  void OnIo(Conn* c, const reactor::Completion& done, absl::Time now);
  // StartTls - the client asked for a TLS session (after 220 to STARTTLS).
  void StartTls(Conn* c);
  // Kick - after acting on a connection: send what the client wrote and start
  // the clock on the reply it now waits for.
  void Kick(Conn* c, absl::Time now) {
    FlushOutput(c);
    SetDeadline(c, now);
  }
  // Close - shut the socket down; c is freed once its operations complete.
  void Close(Conn* c);
  // Freeable - closed, and nothing pending on it.
  static bool Freeable(const Conn& c) { return c.closing && c.pending_ops == 0; }
  // Free - close its descriptor and give its slot back; c is gone.
  void Free(Conn* c);

  Conn* Find(uint64_t tag) { return conns_.Find(tag); }
  Conn& at(uint32_t slot) { return conns_.at(slot); }
  template <typename F>
  void ForEach(F&& f) {
    conns_.ForEach(std::forward<F>(f));
  }
  const std::vector<SourceAddress>& source_addresses() const { return source_addresses_; }
  std::optional<absl::Time> EarliestDeadline() const { return deadlines_.Earliest(); }
  // DueNow - the connections at or past their deadline.
  std::vector<Conn*> DueNow(absl::Time now);

 private:
  void OnReceived(Conn* c, std::string_view bytes);
  void ContinueHandshake(Conn* c);
  void FlushOutput(Conn* c);
  void SetDeadline(Conn* c, absl::Time now);
  void SetConnDeadline(Conn* c, absl::Time at) {
    c->deadline = at;
    deadlines_.Set(c->slot, at);
  }
  // PostRecv - the next receive: from the buffer ring, unless it ran out
  // (own_buffer) or there is none.
  void PostRecv(Conn* c, bool own_buffer = false);

  const Config& config_;
  reactor::Ring* ring_;
  metrics::ShardMetrics* metrics_;
  std::optional<tls::Context> tls_context_;
  // config_.sources' addresses, parsed once.
  std::vector<SourceAddress> source_addresses_;
  Table conns_;
  // The open connections' deadlines, by slot (engine/deadlines.h).
  DeadlineHeap deadlines_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_CONNECTION_H_
