// NAME
//   sink.h - volley-sink's server: the SMTP server library (engine/smtpd) with
//   volley-sink's signals, stats file and HTTP stats endpoint around it
//
// SYNOPSIS
//   #include "tools/sink/sink.h"
//
//   volley::sink::ServerOptions opts;                 // smtpd::ServerOptions and
//   opts.listen = {"127.0.0.1:2525"};                 // http, stats_path
//   opts.stats_path = "stats.json";
//   ASSIGN_OR_RETURN(auto server, volley::sink::Server::Create(opts));
//   for (const auto& a : server->listening()) ...;   // bound addresses
//   RETURN_IF_ERROR(server->Run());                   // until SIGTERM or SIGINT
//   std::string json = volley::sink::StatsJson(server->stats());
//
// DESCRIPTION
//   The io_uring server, its sessions, fault profiles, greylist and listening
//   addresses are engine/smtpd's (server.h, session.h, profile.h, greylist.h,
//   listen.h), shared with volleyd's inbound listener. What is volley-sink's
//   alone is here: Run() serves until SIGTERM or SIGINT (read from a signalfd;
//   Create() blocks both in the calling thread, so it must run before other
//   threads start: the shard and HTTP threads inherit the mask), rewrites the
//   stats file about every flush_interval through a temporary file renamed into
//   place (a reader never sees a partial file) and when it returns, and answers
//   GET /stats on options.http (http.h) while it runs.
//
// CONTRACT
//   stats() may be called from any thread at any time; the other methods from
//   the thread that called Create().
//
// DIAGNOSTICS
//   Create() returns smtpd::Server::Create()'s errors, InvalidArgument for a
//   bad --http address, and Internal when the signal mask or signalfd can't be
//   set up. Run() returns Internal when a shard fails or the stats or record
//   file can't be written.
//
// SEE ALSO
//   engine/smtpd/server.h; http.h; main.cc, the volley-sink program;
//   docs/sink.md.
#ifndef VOLLEY_TOOLS_SINK_SINK_H_
#define VOLLEY_TOOLS_SINK_SINK_H_

#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/smtpd/profile.h"
#include "engine/smtpd/server.h"
#include "tools/sink/http.h"

namespace volley::sink {

using smtpd::kMaxThreads;
using smtpd::LoadProfiles;
using smtpd::Stats;
using smtpd::StatsJson;

struct ServerOptions : smtpd::ServerOptions {
  // Address of the HTTP stats endpoint ("HOST:PORT", as one --listen address;
  // port 0 picks one, see http_address()); empty for none. Default: "".
  std::string http;

  // File for the counters as JSON; empty for none. Default: "".
  std::string stats_path;
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Create(ServerOptions options);
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Run - serve until SIGTERM or SIGINT; then write the stats and record files.
  absl::Status Run();

  // The bound listening addresses, in --listen order (a range's in order).
  std::vector<std::string> listening() const { return server_->listening(); }

  // The bound HTTP stats endpoint, "127.0.0.1:8025"; empty without one.
  std::string http_address() const { return http_ ? http_->bound() : std::string(); }

  // Shards running (options.threads, with 0 resolved).
  size_t threads() const { return server_->threads(); }

  // The counters now, summed over the shards; safe from any thread.
  Stats stats() const { return server_->stats(); }

 private:
  Server() = default;
  absl::Status WriteStats() const;

  std::string stats_path_;
  absl::Duration flush_interval_;
  std::unique_ptr<smtpd::Server> server_;
  std::unique_ptr<StatsEndpoint> http_;
  int signal_fd_ = -1;
  sigset_t old_mask_{};
  bool mask_set_ = false;
};

}  // namespace volley::sink

#endif  // VOLLEY_TOOLS_SINK_SINK_H_
