// fd_budget.h - how many SMTP connections volleyd may open: RLIMIT_NOFILE less a reserve
//
// SYNOPSIS
//   base::RaiseFileLimit();                       // soft limit up to the hard one
//   FdReserve reserve = DefaultFdReserve(queue_max_open_files, dns_servers);
//   absl::StatusOr<ConnectionBudget> b =
//       PlanConnectionBudget(CurrentFileLimit(), shards, reserve, max_connections);
//   // shard i opens at most b->per_shard[i] connections at once
//
// DESCRIPTION
//   Every SMTP connection is a file descriptor, and so is everything else volleyd
//   keeps open. A daemon that opens sockets until socket() says EMFILE starves
//   the rest: RocksDB cannot open its next write-ahead log, c-ares cannot open a
//   socket for the next lookup, the admin API cannot accept volleyctl (issue 16:
//   10,000 destinations x 20 connections each). So connections get a budget,
//   worked out once at start: the descriptor limit, less a reserve for the rest,
//   capped by [delivery] max_connections, split evenly between the shards.
//
//   The reserve (each part documented in docs/config.md, "[delivery]"):
//   - the queue: RocksDB's table files ([queue] max_open_files) and its own
//     (write-ahead logs, MANIFEST, LOCK, LOG, CURRENT);
//   - per shard: the io_uring, its eventfds, and the resolver's sockets (one UDP
//     and one TCP socket per DNS server, c-ares's way);
//   - the admin API's and the metrics endpoint's connections;
//   - fixed: stdin/out/err, the delivery log (and its rotation), the spool's
//     inotify and the job file being read, key and CA files read at start.
//   A budget is a promise kept by the shards, not by the kernel: when socket()
//   fails with EMFILE or ENFILE all the same (another process, a limit lowered
//   while volleyd runs), the shard treats it as a spent budget for a while (see
//   engine/dispatch.cc), never as a failed delivery.
//
// DIAGNOSTICS
//   FailedPrecondition when the limit leaves fewer than kMinConnectionsPerShard
//   per shard: the message names the limit, the reserve and how to fix it.
#ifndef VOLLEY_ENGINE_FD_BUDGET_H_
#define VOLLEY_ENGINE_FD_BUDGET_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace volley::engine {

// Fewer connections than this per shard and volleyd is not worth starting.
inline constexpr size_t kMinConnectionsPerShard = 4;

// FdReserve - descriptors kept back from connections, by what holds them.
struct FdReserve {
  size_t queue = 0;      // RocksDB
  size_t per_shard = 0;  // each shard's ring, eventfds and resolver sockets
  size_t endpoints = 0;  // admin API, metrics and unsubscribe connections, listeners included
  size_t fixed = 0;      // stdio, delivery log, spool, files read at start
  size_t Total(size_t shards) const { return queue + per_shard * shards + endpoints + fixed; }
};

// DefaultFdReserve - the reserve for a queue that keeps at most
// `queue_max_open_files` table files open, and `dns_servers` DNS servers per
// shard (0: the system's, counted as three, resolv.conf's most).
FdReserve DefaultFdReserve(size_t queue_max_open_files, size_t dns_servers);

// EndpointFiles - descriptors the admin API and the metrics endpoint hold at
// most with these [admin] and [metrics] max_connections (each a cap, plus the
// server's slack, listener and event loops: engine/http/server.h).
size_t EndpointFiles(int admin_max_connections, int metrics_max_connections);

// EndpointCap - an endpoint's max_connections under descriptor limit
// `file_limit`: `configured`, lowered to a 32nd of the limit (at least 8) so
// that a small limit (ulimit -n 512) still leaves room for delivery. 20000
// leaves the default 256 as it is.
int EndpointCap(uint64_t file_limit, int configured);

struct ConnectionBudget {
  uint64_t file_limit = 0;  // RLIMIT_NOFILE's soft limit it was made from
  size_t reserved = 0;      // FdReserve::Total
  size_t total = 0;         // connections all shards together
  bool capped = false;      // by [delivery] max_connections, not by the limit
  std::vector<size_t> per_shard;
};

// PlanConnectionBudget - the budget for `shards` shards under `file_limit`;
// `max_connections` > 0 caps the total further.
absl::StatusOr<ConnectionBudget> PlanConnectionBudget(uint64_t file_limit, size_t shards,
                                                      const FdReserve& reserve,
                                                      size_t max_connections);

// CurrentFileLimit - RLIMIT_NOFILE's soft limit now (RLIM_INFINITY as UINT64_MAX).
uint64_t CurrentFileLimit();

// DescribeBudget - one line for volleyd's start-up log.
std::string DescribeBudget(const ConnectionBudget& budget, const FdReserve& reserve,
                           size_t shards);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_FD_BUDGET_H_
