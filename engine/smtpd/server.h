// NAME
//   server.h - the io_uring SMTP server: volley-sink's, and volleyd's inbound
//   listener's
//
// SYNOPSIS
//   #include "engine/smtpd/server.h"
//
//   volley::smtpd::ServerOptions opts;
//   opts.listen = {"127.0.0.1:2525", "127.0.1.1-250:2525"};
//   opts.threads = 2;
//   opts.session.handler = &handler;                  // keep messages (optional)
//   ASSIGN_OR_RETURN(auto server, volley::smtpd::Server::Create(opts));
//   for (const auto& a : server->listening()) ...;   // bound addresses
//   RETURN_IF_ERROR(server->Start());                 // shard threads run
//   ... poll(server->stopped_fd()) ...                // readable: a shard gave up
//   RETURN_IF_ERROR(server->Stop());                  // from any thread
//   std::string json = volley::smtpd::StatsJson(server->stats());
//
// DESCRIPTION
//   Server accepts SMTP connections on one or more listening addresses and runs
//   one Session (session.h) per connection. Without a message handler it is
//   volley-sink's (tools/sink/sink.h): every well-formed transaction is accepted
//   and its content dropped as it arrives, unless a fault profile (profile.h)
//   says otherwise. With options.session.handler, accepted_domains and the
//   bounds below it is a receiving server (volleyd's inbound listener,
//   engine/inbound.h): the handler gets each message and decides its reply.
//   Each listener takes its profile from options.profiles; the Session decides
//   every reply, delay, close and STARTTLS, and the server only executes those
//   decisions. A --listen argument may name a range of IPv4 addresses
//   (listen.h).
//
//   Embedding. The server owns no signal: Start() starts the shard threads
//   with every signal blocked in them, Stop() (from any thread) wakes and joins
//   them. stopped_fd() becomes readable when a shard's thread ends by itself (a
//   ring failure or a record file that can't be written); Stop() then returns
//   that shard's error.
//
//   Bounds of a receiving server. max_connections and max_connections_per_ip
//   are checked as a connection is accepted (counted over every shard, as
//   Postfix's anvil does): past either, the connection gets 421 4.7.0 and is
//   closed. idle_timeout (RFC 5321 4.5.3.2): a connection that sends nothing
//   for that long while the server waits for its input gets 421 4.4.2 and is
//   closed; each shard checks about every flush_interval, so the close comes
//   up to that much late.
//
//   Shards. options.threads threads each run their own io_uring with their own
//   copy of every listening socket, bound with SO_REUSEPORT, so that the kernel
//   spreads the connections over them; a connection stays on the shard that
//   accepted it. Shards share no state per command or message: each counts in
//   its own counters (written by it alone, read by anyone with relaxed
//   atomics). Per connection, accept and close touch three shared atomics: the
//   session number (for the PRNG seeds), and the open-connection gauges of the
//   server and of the address, which max_connections needs exact across shards.
//   The greylist and the per-IP connection counts are shared, each under a
//   mutex. Stop() wakes each shard through its eventfd.
//
//   In a shard, each connection has at most one operation in flight: a recv, a
//   send of the replies one step of the session's decisions produced (a
//   pipelined group is answered with one write), or an IORING_OP_TIMEOUT for a
//   step's delay. While a connection has decisions left to execute it is not
//   read, so its input waits in the kernel and replies keep their order. A
//   connection's state may be freed as soon as its one completion is handled.
//   Accepts are multishot where the kernel allows it. Receives pick a buffer
//   from the shard's io_uring buffer ring (kernel 5.19+) when the data arrives,
//   so an idle connection holds no receive buffer; on older kernels (or with
//   buffer_ring false) each connection has its own. The rings are the reactor
//   library's (engine/reactor/ring.h), shared with volleyd.
//
//   STARTTLS: with tls_cert_file and tls_key_file, the certificate chain and
//   key are read from those PEM files; otherwise, when some profile offers
//   STARTTLS (or tls_cert_out is set), Create() generates a self-signed
//   certificate for the session host name in memory (engine/tls), and writes
//   its PEM to tls_cert_out so that a client can trust it. Either way only a
//   profile with starttls offers it. After the 220, the connection's bytes go through a tls::Session: the
//   handshake is driven from the received ciphertext, plaintext is fed to the
//   SMTP Session, and replies are encrypted when their step is sent. A failed
//   handshake closes the connection (after the alert, if any). Each shard has
//   its own tls::Context on that certificate; all of them issue one session
//   ticket per full handshake, sealed with one random key made at Create(), so
//   a client's next connection resumes whichever shard takes it.
//
//   Counters (sessions, messages, recipients, content bytes, current and peak
//   connections, rejects, TLS sessions; per listener sessions, current and peak
//   connections, messages and recipients) are read by stats(), and StatsJson()
//   writes them as volley-sink does. With record_path set, each accepted
//   message is appended to it as one JSON line {"ts":...,"from":...,"rcpts":
//   [...],"bytes":N}; each shard buffers its lines and appends them (O_APPEND,
//   whole lines per write) at least every flush_interval and when it stops, so
//   lines of different shards are not in time order.
//
// CONTRACT
//   Create() binds the listeners, loads or generates the certificate and sets
//   up the rings; Start() starts the threads; Stop() stops and joins them (the
//   destructor too). Start(), Stop() and stats() may be called from any thread;
//   Start() at most once. The handler (SessionOptions::handler) runs on the
//   shard threads, several at once with more than one shard.
//
// DIAGNOSTICS
//   Create() returns InvalidArgument for a bad --listen address or range, more
//   than kMaxListenAddresses addresses, a bad thread count, a [listener] entry
//   that names no --listen address, a host name a certificate can't carry when
//   STARTTLS is offered, a tls_cert_file or tls_key_file that can't be read or
//   that OpenSSL refuses (the message names both files), or a handler with
//   max_message_size 0; ResourceExhausted when
//   RLIMIT_NOFILE is too low for every listening socket (addresses times
//   threads); Unavailable when a socket can't be bound (the message names the
//   argument and the address); and Internal when io_uring, a thread or TLS
//   can't be set up (the message names the missing feature). Stop() returns
//   Internal when a ring failed or the record file couldn't be written.
//   Per-connection errors (TLS handshake failures included) close the
//   connection and are not reported.
//
// BOUNDS
//   Per connection: with a handler, a message's content up to the size limit
//   (max_connections of them at most); a partial command line of at most
//   SessionOptions::max_line_length, the decisions for one recv, a send buffer
//   that keeps at most 64 KiB of capacity between replies, and with TLS one
//   OpenSSL session (and a plaintext buffer of up to recv_buffer_size). Per
//   shard: kRecvBuffers receive buffers of recv_buffer_size octets (or, without
//   buffer rings, one per connection), an io_uring of 4096 submission and 16384
//   completion entries, and one socket per listening address. The greylist
//   table holds at most greylist_max_entries pairs. At most kMaxThreads shards
//   and kMaxListenAddresses addresses. Connections beyond max_connections,
//   max_connections_per_ip or a profile's max_connections are answered 421 and
//   closed; otherwise they are limited only by RLIMIT_NOFILE: when accept fails for lack of descriptors or memory,
//   the listener pauses until a connection closes or a second has passed.
//
// SEE ALSO
//   session.h, the SMTP state machine; profile.h, the fault profiles; listen.h,
//   addresses and ranges; tools/sink/sink.h, volley-sink's signals, stats file
//   and HTTP endpoint around this server; engine/inbound.h, volleyd's inbound
//   listener; docs/sink.md, docs/feedback.md.
#ifndef VOLLEY_ENGINE_SMTPD_SERVER_H_
#define VOLLEY_ENGINE_SMTPD_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/smtpd/greylist.h"
#include "engine/smtpd/profile.h"
#include "engine/smtpd/session.h"

namespace volley::smtpd {

// Shards (threads) at most.
inline constexpr size_t kMaxThreads = 256;
// Listening addresses at most, over every --listen argument.
inline constexpr size_t kMaxListenAddresses = 65536;
// Receive buffers per shard (buffer ring): completions that may hold data at
// once before a receive has to wait for one (it is then re-armed).
inline constexpr size_t kRecvBuffers = 512;

struct ServerOptions {
  // Addresses to listen on, each "HOST:PORT" where HOST is an IPv4 literal,
  // "localhost" or a bracketed IPv6 literal, or an IPv4 range "A-B:PORT"
  // (listen.h). Port 0 picks a free port (one for all the addresses of a
  // range); listening() reports it. Default: {} (which means 127.0.0.1:2525).
  std::vector<std::string> listen;

  // Shards: threads, each with its own io_uring and its own copy of every
  // listening socket (SO_REUSEPORT). 0: one per CPU this process may run on.
  // Default: 1.
  size_t threads = 1;

  // Session settings; session.hostname empty means the machine's host name.
  SessionOptions session;

  // File to append one JSON line per accepted message to; empty for none.
  // Default: "".
  std::string record_path;

  // Octets one receive reads at a time: the size of each of a shard's
  // kRecvBuffers buffers (or, on kernels without buffer rings, of each
  // connection's own buffer). Default: 16384.
  size_t recv_buffer_size = 16384;

  // Receive into the buffers of each shard's io_uring buffer ring; false
  // gives each connection a buffer of its own, as on kernels without buffer
  // rings (which tests of that fallback use). Default: true.
  bool buffer_ring = true;

  // How often each shard writes its recorded lines and looks for idle
  // connections. Default: 1 second.
  absl::Duration flush_interval = absl::Seconds(1);

  // Fault profiles and which listener and domain use which. Default: the
  // built-in default profile alone (no faults).
  ProfileSet profiles;

  // Seed of the sessions' PRNGs (each session's is derived from it and the
  // session's number in accept order). Default: 1.
  uint64_t seed = 1;

  // (sender, recipient) pairs the greylist remembers. Default: 100000.
  size_t greylist_max_entries = Greylist::kDefaultMaxEntries;

  // File to write the generated STARTTLS certificate (PEM) to; empty for none.
  // Setting it generates a certificate even when no profile offers STARTTLS.
  // Default: "".
  std::string tls_cert_out;

  // STARTTLS certificate chain and private key, PEM files (both or neither);
  // they replace the generated certificate. Default: "" (none).
  std::string tls_cert_file;
  std::string tls_key_file;

  // Open connections at most, over every listener and shard; past it a new
  // connection gets 421 4.7.0 and is closed. 0: no limit. Default: 0.
  uint64_t max_connections = 0;

  // Open connections at most from one client IP address. 0: no limit.
  // Default: 0.
  uint64_t max_connections_per_ip = 0;

  // A connection the server has waited this long for input from gets 421
  // 4.4.2 and is closed (checked every flush_interval). 0: no timeout.
  // Default: 0.
  absl::Duration idle_timeout = absl::ZeroDuration();
};

struct ListenerStats {
  std::string listen;           // bound address, "127.0.0.1:2525"
  uint64_t sessions = 0;        // connections accepted
  uint64_t connections = 0;     // open now
  uint64_t peak_connections = 0;
  uint64_t messages = 0;        // accepted on connections to this address
  uint64_t recipients = 0;
};

struct Stats {
  uint64_t sessions = 0;
  uint64_t messages = 0;
  uint64_t recipients = 0;
  uint64_t bytes = 0;           // message content octets, see session.h
  uint64_t connections = 0;     // open now
  uint64_t peak_connections = 0;
  uint64_t rejects = 0;         // 4xx/5xx replies to MAIL, RCPT, DATA, BDAT, end of data
  uint64_t tls_sessions = 0;    // TLS handshakes completed
  uint64_t tls_resumed = 0;     // of them, resuming a session (a ticket)
  // Connections closed before the client sent QUIT: it hung up (or was cut
  // off), or the server closed it (421, a disconnect rule, a timeout, a stop).
  uint64_t sessions_without_quit = 0;
  std::vector<ListenerStats> listeners;
};

// StatsJson - the stats as one JSON object (no newline), as volley-sink writes it.
std::string StatsJson(const Stats& stats);

// RecordJson - one accepted message as a JSON line, newline included; `ts` is
// when it was accepted (seconds since the epoch, to the millisecond: rate tests
// measure the sender by it).
std::string RecordJson(const AcceptedMessage& message, absl::Time accepted);

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Create(ServerOptions options);
  // Stops the threads if they still run.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Start - run the shard threads (signals blocked in them); at most once.
  absl::Status Start();

  // Stop - wake and join the shard threads, write the record lines they hold;
  // the first shard's error, if one failed. From any thread; idempotent.
  absl::Status Stop();

  // An eventfd that becomes readable when a shard's thread has ended by
  // itself (an error: see Stop()).
  int stopped_fd() const;

  // The bound listening addresses, in --listen order (a range's in order).
  std::vector<std::string> listening() const;

  // Shards running (options.threads, with 0 resolved).
  size_t threads() const;

  // The counters now, summed over the shards; safe from any thread.
  Stats stats() const;

 private:
  class Impl;  // in sink.cc, on the reactor library (engine/reactor/ring.h)

  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace volley::smtpd

#endif  // VOLLEY_ENGINE_SMTPD_SERVER_H_
