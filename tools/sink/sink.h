// NAME
//   sink.h - volley-sink's server: an io_uring SMTP server that discards mail
//
// SYNOPSIS
//   #include "tools/sink/sink.h"
//
//   volley::sink::ServerOptions opts;
//   opts.listen = {"127.0.0.1:2525"};
//   ASSIGN_OR_RETURN(auto server, volley::sink::Server::Create(opts));
//   for (const auto& a : server->listening()) ...;   // bound addresses
//   RETURN_IF_ERROR(server->Run());                   // until SIGTERM or SIGINT
//   std::string json = volley::sink::StatsJson(server->stats());
//
// DESCRIPTION
//   Server accepts SMTP connections on one or more listening sockets and runs one
//   Session (session.h) per connection. It is meant for tests, demos and benchmarks:
//   every well-formed transaction is accepted and its content dropped as it arrives,
//   unless a fault profile (profile.h) says otherwise. Each listener takes its
//   profile from options.profiles; the Session decides every reply, delay, close
//   and STARTTLS, and the server only executes those decisions.
//
//   One thread, one io_uring. Each connection has at most one operation in flight:
//   a recv into the connection's own buffer, a send of the replies one step of the
//   session's decisions produced (a pipelined group is answered with one write),
//   or an IORING_OP_TIMEOUT for a step's delay. While a connection has decisions
//   left to execute it is not read, so its input waits in the kernel and replies
//   keep their order. A connection's state may be freed as soon as its one
//   completion is handled. Accepts are multishot where the kernel allows it.
//   SIGTERM and SIGINT are read through a signalfd that the ring polls.
//
//   STARTTLS: when some profile offers it (or tls_cert_out is set), Create()
//   generates a self-signed certificate for the session host name in memory
//   (engine/tls), and writes its PEM to tls_cert_out so that a client can trust
//   it. After the 220, the connection's bytes go through a tls::Session: the
//   handshake is driven from the received ciphertext, plaintext is fed to the
//   SMTP Session, and replies are encrypted when their step is sent. A failed
//   handshake closes the connection (after the alert, if any).
//
//   Counters (sessions, messages, recipients, content bytes, current and peak
//   connections, rejects, TLS sessions, per listener too for sessions and
//   connections) are written as JSON to stats_path about every second and when
//   Run() returns, through a temporary file renamed into place so that a reader
//   never sees a partial file. With record_path set, each accepted message is
//   appended to it as one JSON line {"from":...,"rcpts":[...],"bytes":N}; lines
//   are buffered and written at least every second and when Run() returns.
//
// CONTRACT
//   Create() blocks SIGTERM and SIGINT in the calling thread (so it must run before
//   other threads are started) and binds the listeners; Run() blocks until one of
//   those signals arrives or a fatal error occurs. A Server is used by one thread.
//
// DIAGNOSTICS
//   Create() returns InvalidArgument for a bad --listen address, a [listener]
//   entry that names no --listen address, or a host name a certificate can't carry
//   when STARTTLS is offered; Unavailable when a socket can't be bound; and
//   Internal when io_uring or TLS can't be set up (the message names the missing
//   feature). Run() returns Internal when the ring fails or the stats or record
//   file can't be written. Per-connection errors (TLS handshake failures
//   included) close the connection and are not reported.
//
// BOUNDS
//   Per connection: one recv buffer of recv_buffer_size octets, a partial command
//   line of at most SessionOptions::max_line_length, the decisions for one recv,
//   and with TLS one OpenSSL session. The greylist table holds at most
//   greylist_max_entries pairs. Connections beyond a profile's max_connections
//   are answered 421 and closed; otherwise they are limited only by
//   RLIMIT_NOFILE: when accept fails for lack of descriptors or memory, the
//   listener pauses for a second.
//
// SEE ALSO
//   session.h, the SMTP state machine; profile.h, the fault profiles; main.cc,
//   the volley-sink program; docs/sink.md.
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

struct ServerOptions {
  // Addresses to listen on, each "HOST:PORT" where HOST is an IPv4 literal,
  // "localhost" or a bracketed IPv6 literal. Port 0 picks a free port; listening()
  // reports it. Default: {} (which means 127.0.0.1:2525).
  std::vector<std::string> listen;

  // Session settings; session.hostname empty means the machine's host name.
  SessionOptions session;

  // File for the counters as JSON; empty for none. Default: "".
  std::string stats_path;

  // File to append one JSON line per accepted message to; empty for none.
  // Default: "".
  std::string record_path;

  // Octets each connection reads at a time (memory: this times connections).
  // Default: 16384.
  size_t recv_buffer_size = 16384;

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

  // The bound listening addresses, in --listen order.
  std::vector<std::string> listening() const;

  Stats stats() const;

 private:
  class Impl;  // in sink.cc, the only file that includes <liburing.h>

  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace volley::sink

#endif  // VOLLEY_TOOLS_SINK_SINK_H_
