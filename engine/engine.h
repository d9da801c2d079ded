// engine.h - volleyd's engine: intake, scheduling and SMTP delivery
//
// SYNOPSIS
//   Engine engine(config);
//   engine.SetConfigSource(path, text);  // what SIGHUP reloads (engine/reload.h)
//   absl::Status st = engine.Run();   // blocks until RequestStop()
//   engine.RequestStop();             // async-signal-safe; any thread
//   engine.RequestStop();             // again: stop now, no grace period
//
// DESCRIPTION
//   Run opens the queue and the delivery log, starts the intake thread (which
//   watches <spool>/incoming with inotify and a scan at start, and streams each
//   job into the queue), the committer thread (engine/committer.h) and
//   [delivery] shards io_uring shards, one thread each (shard 0 on the calling
//   thread). A shard owns a share of the queue's partitions (queue/queue.h): it
//   takes their due recipients job by job, routes them, keeps a pool of SMTP
//   connections per destination and records every outcome. Shards share no
//   state on the hot path: new jobs and control commands reach each through its
//   own mailbox, outcomes leave through its own lane of the committer.
//
//   Stopping: no new transactions start; transactions under way finish (up to
//   a grace period, kStopGrace in engine/shard.h), connections QUIT, and everything
//   not finished stays queued. A second RequestStop ends the grace period at
//   once: transactions under way are cut off, their recipients stay queued (a
//   message the server had accepted may be sent again, never lost), and what
//   was already decided is recorded before Run returns.
//
//   Reloading: Run starts a thread that reads SIGHUP (blocked by main before
//   any thread exists) and reloads the file given to SetConfigSource
//   (engine/reload.h); each shard takes the new config from its mailbox at a
//   loop turn. Nothing under way is cut.
//
//   The connection budget (engine/fd_budget.h) is worked out at the start of
//   Run from RLIMIT_NOFILE (the caller raises it first) and logged.
//
// BOUNDS
//   delivery.window recipients in flight at most, split between the shards;
//   smtp.* per-connection limits.
#ifndef VOLLEY_ENGINE_ENGINE_H_
#define VOLLEY_ENGINE_ENGINE_H_

#include <atomic>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "engine/config.h"

namespace volley::engine {

class Engine {
 public:
  explicit Engine(Config config) : config_(std::move(config)) {}
  // SetConfigSource - the file `config` came from and its text as read then:
  // SIGHUP reads the file again (engine/reload.h). Without it, SIGHUP logs that
  // there is nothing to reload.
  void SetConfigSource(std::string path, std::string text) {
    config_path_ = std::move(path);
    config_text_ = std::move(text);
  }
  absl::Status Run();
  void RequestStop() {
    if (stop_.exchange(true, std::memory_order_relaxed)) {
      stop_now_.store(true, std::memory_order_relaxed);
    }
  }

 private:
  Config config_;
  std::string config_path_;
  std::string config_text_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> stop_now_{false};
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_ENGINE_H_
