// sink.cc - volley-sink's signals, stats file and HTTP endpoint; see sink.h.
#include "tools/sink/sink.h"

#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/status.h"

namespace volley::sink {
namespace {

int64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  std::unique_ptr<Server> server(new Server());
  server->stats_path_ = options.stats_path;
  server->flush_interval_ = options.flush_interval;
  const std::string http = options.http;
  ASSIGN_OR_RETURN(server->server_,
                   smtpd::Server::Create(static_cast<smtpd::ServerOptions>(std::move(options))));
  if (!http.empty()) {
    smtpd::Server* const inner = server->server_.get();
    ASSIGN_OR_RETURN(server->http_,
                     StatsEndpoint::Create(http, [inner] { return StatsJson(inner->stats()); }));
  }
  // Signals arrive through a signalfd read by Run(), never as handlers; the
  // threads started later inherit the mask and so never take them.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &mask, &server->old_mask_) != 0) {
    return absl::InternalError("pthread_sigmask failed");
  }
  server->mask_set_ = true;
  server->signal_fd_ = signalfd(-1, &mask, SFD_CLOEXEC);
  if (server->signal_fd_ < 0) {
    return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
  }
  return server;
}

Server::~Server() {
  http_.reset();
  server_.reset();
  if (signal_fd_ >= 0) close(signal_fd_);
  if (mask_set_) pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

absl::Status Server::WriteStats() const {
  if (stats_path_.empty()) return absl::OkStatus();
  return base::WriteFileAtomically(stats_path_, StatsJson(stats()), 0644);
}

absl::Status Server::Run() {
  RETURN_IF_ERROR(WriteStats());
  if (http_) RETURN_IF_ERROR(http_->Start());
  if (absl::Status st = server_->Start(); !st.ok()) {
    if (http_) http_->Stop();
    return st;
  }

  // This thread: signals, a shard that gave up, and the stats file.
  absl::Status status;
  const int64_t interval =
      std::max<int64_t>(absl::ToInt64Nanoseconds(flush_interval_), 1000000);
  int64_t next_tick = MonotonicNanos() + interval;
  for (;;) {
    const int64_t wait_ms = std::max<int64_t>((next_tick - MonotonicNanos()) / 1000000, 1);
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {server_->stopped_fd(), POLLIN, 0}};
    const int n = poll(fds, 2, static_cast<int>(std::min<int64_t>(wait_ms, 60000)));
    if (n < 0 && errno != EINTR) {
      status = absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
      break;
    }
    if (n > 0 && fds[0].revents != 0) {
      signalfd_siginfo info;
      if (read(signal_fd_, &info, sizeof(info)) < 0 && errno == EINTR) continue;
      break;  // SIGTERM or SIGINT (or the signalfd broke)
    }
    if (n > 0 && fds[1].revents != 0) break;  // a shard stopped: its status says why
    if (MonotonicNanos() >= next_tick) {
      status = WriteStats();
      if (!status.ok()) break;
      next_tick = MonotonicNanos() + interval;
    }
  }
  const absl::Status stopped = server_->Stop();
  if (http_) http_->Stop();
  if (status.ok()) status = stopped;
  const absl::Status written = WriteStats();
  return status.ok() ? written : status;
}

}  // namespace volley::sink
