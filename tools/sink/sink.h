// NAME
//   sink.h - volley-sink's server: an io_uring SMTP server that discards mail
//
// SYNOPSIS
//   #include "tools/sink/sink.h"
//
//   volley::sink::ServerOptions opts;
//   opts.listen = {"127.0.0.1:2525", "127.0.1.1-250:2525"};
//   opts.threads = 2;
//   ASSIGN_OR_RETURN(auto server, volley::sink::Server::Create(opts));
//   for (const auto& a : server->listening()) ...;   // bound addresses
//   RETURN_IF_ERROR(server->Run());                   // until SIGTERM or SIGINT
//   std::string json = volley::sink::StatsJson(server->stats());
//
// DESCRIPTION
//   Server accepts SMTP connections on one or more listening addresses and runs
//   one Session (session.h) per connection. It is meant for tests, demos and
//   benchmarks: every well-formed transaction is accepted and its content dropped
//   as it arrives, unless a fault profile (profile.h) says otherwise. Each
//   listener takes its profile from options.profiles; the Session decides every
//   reply, delay, close and STARTTLS, and the server only executes those
//   decisions. A --listen argument may name a range of IPv4 addresses
//   (listen.h).
//
//   Shards. options.threads threads each run their own io_uring with their own
//   copy of every listening socket, bound with SO_REUSEPORT, so that the kernel
//   spreads the connections over them; a connection stays on the shard that
//   accepted it. Shards share no state per command or message: each counts in
//   its own counters (written by it alone, read by anyone with relaxed
//   atomics). Per connection, accept and close touch three shared atomics: the
//   session number (for the PRNG seeds), and the open-connection gauges of the
//   server and of the address, which max_connections needs exact across shards.
//   The greylist is shared, under a mutex (greylist.h). The calling thread of
//   Run() handles SIGTERM and SIGINT (through a signalfd), writes the stats
//   file, and stops the shards through an eventfd each.
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
//   STARTTLS: when some profile offers it (or tls_cert_out is set), Create()
//   generates a self-signed certificate for the session host name in memory
//   (engine/tls), and writes its PEM to tls_cert_out so that a client can trust
//   it. After the 220, the connection's bytes go through a tls::Session: the
//   handshake is driven from the received ciphertext, plaintext is fed to the
//   SMTP Session, and replies are encrypted when their step is sent. A failed
//   handshake closes the connection (after the alert, if any). Each shard has
//   its own tls::Context on that certificate.
//
//   Counters (sessions, messages, recipients, content bytes, current and peak
//   connections, rejects, TLS sessions; per listener sessions, current and peak
//   connections, messages and recipients) are written as JSON to stats_path
//   about every second and when Run() returns, through a temporary file renamed
//   into place so that a reader never sees a partial file, and answered on
//   options.http (http.h) while Run() runs. With record_path set, each accepted
//   message is appended to it as one JSON line {"ts":...,"from":...,"rcpts":
//   [...],"bytes":N}; each shard buffers its lines and appends them (O_APPEND,
//   whole lines per write) at least every second and when Run() returns, so
//   lines of different shards are not in time order.
//
// CONTRACT
//   Create() blocks SIGTERM and SIGINT in the calling thread (so it must run
//   before other threads are started: the shard and HTTP threads inherit the
//   mask), binds the listeners and the HTTP endpoint and sets up the rings;
//   Run() starts the threads and blocks until one of those signals arrives or a
//   fatal error occurs, then stops and joins every thread. stats() may be called
//   from any thread at any time; the other methods from the thread that called
//   Create().
//
// DIAGNOSTICS
//   Create() returns InvalidArgument for a bad --listen address or range, more
//   than kMaxListenAddresses addresses, a bad thread count, a bad --http
//   address, a [listener] entry that names no --listen address, or a host name a
//   certificate can't carry when STARTTLS is offered; ResourceExhausted when
//   RLIMIT_NOFILE is too low for every listening socket (addresses times
//   threads); Unavailable when a socket can't be bound (the message names the
//   argument and the address); and Internal when io_uring, a thread or TLS
//   can't be set up (the message names the missing feature). Run() returns
//   Internal when a ring fails or the stats or record file can't be written.
//   Per-connection errors (TLS handshake failures included) close the
//   connection and are not reported.
//
// BOUNDS
//   Per connection: a partial command line of at most
//   SessionOptions::max_line_length, the decisions for one recv, a send buffer
//   that keeps at most 64 KiB of capacity between replies, and with TLS one
//   OpenSSL session (and a plaintext buffer of up to recv_buffer_size). Per
//   shard: kRecvBuffers receive buffers of recv_buffer_size octets (or, without
//   buffer rings, one per connection), an io_uring of 4096 submission and 16384
//   completion entries, and one socket per listening address. The greylist
//   table holds at most greylist_max_entries pairs. At most kMaxThreads shards
//   and kMaxListenAddresses addresses. Connections beyond a profile's
//   max_connections are answered 421 and closed; otherwise they are limited
//   only by RLIMIT_NOFILE: when accept fails for lack of descriptors or memory,
//   the listener pauses until a connection closes or a second has passed.
//
// SEE ALSO
//   session.h, the SMTP state machine; profile.h, the fault profiles; listen.h,
//   addresses and ranges; http.h, the stats endpoint; main.cc, the volley-sink
//   program; docs/sink.md.
#ifndef VOLLEY_TOOLS_SINK_SINK_H_
#define VOLLEY_TOOLS_SINK_SINK_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/sink/greylist.h"
#include "tools/sink/profile.h"
#include "tools/sink/session.h"

namespace volley::sink {

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

  // Address of the HTTP stats endpoint ("HOST:PORT", as one --listen address;
  // port 0 picks one, see http_address()); empty for none. Default: "".
  std::string http;

  // Session settings; session.hostname empty means the machine's host name.
  SessionOptions session;

  // File for the counters as JSON; empty for none. Default: "".
  std::string stats_path;

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

  // How often the stats file is rewritten and recorded lines are written.
  // Default: 1 second.
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
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Run - serve until SIGTERM or SIGINT; then write the stats and record files.
  absl::Status Run();

  // The bound listening addresses, in --listen order (a range's in order).
  std::vector<std::string> listening() const;

  // The bound HTTP stats endpoint, "127.0.0.1:8025"; empty without one.
  std::string http_address() const;

  // Shards running (options.threads, with 0 resolved).
  size_t threads() const;

  // The counters now, summed over the shards; safe from any thread.
  Stats stats() const;

 private:
  class Impl;  // in sink.cc, on the reactor library (engine/reactor/ring.h)

  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace volley::sink

#endif  // VOLLEY_TOOLS_SINK_SINK_H_
