// fd_budget.cc - see fd_budget.h
#include "engine/fd_budget.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/admin.h"
#include "engine/http/server.h"
#include "engine/metrics_endpoint.h"

namespace volley::engine {
namespace {

// RocksDB's own files besides its tables: two write-ahead logs (the live one
// and the next), MANIFEST, LOCK, LOG, CURRENT, OPTIONS, and room for a flush and
// a compaction writing at once.
constexpr size_t kRocksDbOwnFiles = 16;
// The ring, the committer lane's eventfd, the intake mailbox's eventfd, and one
// spare for what liburing or OpenSSL may open.
constexpr size_t kShardOwnFiles = 4;
// When no servers are configured, c-ares reads /etc/resolv.conf, which names at
// most three.
constexpr size_t kSystemDnsServers = 3;
// stdin/out/err, the delivery log and the file rotation opens next, the spool's
// inotify and directory, the job file being read, the files read at start (keys,
// CA bundle) and slack for the libraries' own (getaddrinfo at start, /proc reads).
constexpr size_t kFixedFiles = 32;

}  // namespace

size_t EndpointFiles(int admin_max_connections, int metrics_max_connections) {
  return http::DescriptorsAtMost(admin_max_connections, kAdminThreads) +
         http::DescriptorsAtMost(metrics_max_connections, 1);
}

int EndpointCap(uint64_t file_limit, int configured) {
  const uint64_t share = std::max<uint64_t>(8, file_limit / 32);
  return static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(std::max(1, configured)), share));
}

FdReserve DefaultFdReserve(size_t queue_max_open_files, size_t dns_servers) {
  FdReserve r;
  r.queue = queue_max_open_files + kRocksDbOwnFiles;
  const size_t servers = dns_servers == 0 ? kSystemDnsServers : dns_servers;
  r.per_shard = kShardOwnFiles + 2 * servers;  // a UDP and a TCP socket each
  r.endpoints = EndpointFiles(kAdminMaxConnections, MetricsEndpointOptions{}.max_connections);
  r.fixed = kFixedFiles;
  return r;
}

absl::StatusOr<ConnectionBudget> PlanConnectionBudget(uint64_t file_limit, size_t shards,
                                                      const FdReserve& reserve,
                                                      size_t max_connections) {
  shards = std::max<size_t>(shards, 1);
  ConnectionBudget b;
  b.file_limit = file_limit;
  b.reserved = reserve.Total(shards);
  const uint64_t left = file_limit > b.reserved ? file_limit - b.reserved : 0;
  if (left < kMinConnectionsPerShard * shards) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the file descriptor limit (RLIMIT_NOFILE, `ulimit -n`) is ", file_limit, ", which leaves ",
        left, " for SMTP connections after the ", b.reserved,
        " volleyd keeps for its queue, resolvers and endpoints; at least ",
        kMinConnectionsPerShard * shards, " are needed for ", shards,
        " shard(s): raise the limit (LimitNOFILE= in the systemd unit), or lower [queue] "
        "max_open_files or [delivery] shards"));
  }
  b.total = static_cast<size_t>(std::min<uint64_t>(left, SIZE_MAX));
  if (max_connections > 0 && max_connections < b.total) {
    b.total = std::max(max_connections, shards);  // one connection per shard at least
    b.capped = true;
  }
  // Evenly, the remainder to the first shards.
  for (size_t i = 0; i < shards; ++i) {
    b.per_shard.push_back(b.total / shards + (i < b.total % shards ? 1 : 0));
  }
  return b;
}

uint64_t CurrentFileLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;  // the usual default
  return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_cur);
}

std::string DescribeBudget(const ConnectionBudget& budget, const FdReserve& reserve,
                           size_t shards) {
  return absl::StrCat("connection budget ", budget.total,
                      budget.capped ? " (capped by [delivery] max_connections)" : "",
                      ": file descriptor limit ", budget.file_limit, " less ", budget.reserved,
                      " reserved (queue ", reserve.queue, ", ", shards, " shard(s) x ",
                      reserve.per_shard, ", endpoints ", reserve.endpoints, ", other ",
                      reserve.fixed, ")");
}

}  // namespace volley::engine
