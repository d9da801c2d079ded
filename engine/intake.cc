#include "engine/intake.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status.h"

namespace volley::engine {

ReadyJobs::ReadyJobs(size_t shards) {
  for (size_t i = 0; i < std::max<size_t>(shards, 1); ++i) {
    auto box = reactor::Mailbox<std::string>::Create(kMaxWaitingJobs);
    VOLLEY_CHECK(box.ok(), "eventfd for a shard's ready-jobs mailbox");
    boxes_.push_back(*std::move(box));
  }
}

void ReadyJobs::Push(const std::string& job_id) {
  for (size_t shard = 0; shard < boxes_.size(); ++shard) {
    if (!boxes_[shard]->Push(job_id)) {
      base::LogError("job %s: shard %d is not taking new jobs (%d ids waiting); it loads this one "
                     "when volleyd starts", job_id, shard, kMaxWaitingJobs);
    }
  }
}

IntakeThread::IntakeThread(queue::Spool spool, queue::Queue* queue, queue::JobLimits limits,
                           ReadyJobs* ready, queue::FreeSpaceFloor floor,
                           metrics::IntakeMetrics* metrics)
    : spool_(std::move(spool)), queue_(queue), limits_(limits), ready_(ready), metrics_(metrics) {
  spool_.SetFreeSpaceFloor(std::move(floor));
}

IntakeThread::~IntakeThread() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void IntakeThread::Start() { thread_ = std::thread([this] { Loop(); }); }

void IntakeThread::Pause(const absl::Status& why, const std::string& name) {
  const absl::Time now = absl::Now();
  const std::string reason(why.message());
  if (!paused_) {
    paused_ = true;
    paused_since_ = last_reminder_ = now;
    base::LogWarning("intake paused: %s (incoming/%s stays; retrying every %ds)", reason, name,
                  kPausedRetryMs / 1000);
  } else if (now - last_reminder_ >= kPauseReminder) {
    last_reminder_ = now;
    base::LogWarning("intake still paused after %.0fs: %s (incoming/%s stays)",
                  absl::ToDoubleSeconds(now - paused_since_), reason, name);
  }
}

void IntakeThread::Resumed() {
  if (!paused_) return;
  paused_ = false;
  base::LogInfo("intake resumed after %.0fs paused",
                absl::ToDoubleSeconds(absl::Now() - paused_since_));
}

void IntakeThread::ScanOnce() {
  const std::vector<std::string> names = spool_.ListIncoming();
  if (names.empty()) return;
  if (paused_) {
    // A disk that filled up may have stopped the queue's writes (a RocksDB
    // background error) even after room came back: ask it to carry on first.
    if (absl::Status st = queue_->Recover(); !st.ok()) {
      Pause(st, names.front());
      return;
    }
  }
  for (const std::string& name : names) {
    if (stop_.load()) return;
    const absl::Time start = absl::Now();
    auto result = spool_.Intake(name, *queue_, limits_, start);
    if (result.ok()) {
      Resumed();
      // ", N suppressed" only when some were: the line reads as before otherwise.
      const std::string suppressed =
          result->suppressed > 0
              ? ", " + std::to_string(result->suppressed) + " suppressed"
              : std::string();
      // Recipients without a value for a variable the message uses get its
      // default or nothing: said here, once per job, so a missing column shows.
      const std::string lacking =
          result->lacking.empty()
              ? std::string()
              : "; lacking variables: " + queue::FormatLacking(result->lacking, kMaxLackingLogged);
      base::LogInfo("intake: incoming/%s: job \"%s\" accepted: %llu recipients, %llu rejected%s%s "
                    "(%.3fs)%s", name, result->job,
                    static_cast<unsigned long long>(result->accepted),
                    static_cast<unsigned long long>(result->rejected), suppressed,
                    result->resumed ? ", resuming an interrupted intake" : "",
                    absl::ToDoubleSeconds(absl::Now() - start), lacking);
      if (!result->warning.empty()) {
        base::LogInfo("intake: job \"%s\" is queued, but: %s", result->job, result->warning);
      }
      ready_->Push(result->job);
      if (metrics_ != nullptr) {
        metrics_->jobs_accepted.Add();
        metrics_->recipients_accepted.Add(result->accepted);
        metrics_->recipients_rejected.Add(result->rejected);
      }
    } else if (absl::IsInvalidArgument(result.status())) {
      Resumed();  // the job was refused, but the disk took its .error
      if (metrics_ != nullptr) metrics_->jobs_failed.Add();
      base::LogInfo("intake: refused: %s", std::string(result.status().message()));
    } else {
      // The queue or the disk failed, or free space is below the floor: leave
      // the file where it is and pause. Later files wait too: they would need
      // the same room.
      Pause(result.status(), name);
      return;
    }
  }
}

void IntakeThread::Loop() {
  const int ino = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ino >= 0) {
    const std::string dir = spool_.incoming();
    if (::inotify_add_watch(ino, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
      base::LogInfo("intake: cannot watch %s; scanning every second", dir);
    }
  }
  while (!stop_.load()) {
    ScanOnce();
    // Sleep until a file arrives (or a while, to rescan: missed events, and
    // retrying after a paused intake).
    pollfd pfd{ino, POLLIN, 0};
    const int wait_ms = paused_ ? kPausedRetryMs : 1000;
    for (int waited = 0; waited < wait_ms && !stop_.load(); waited += 100) {
      if (ino >= 0 && ::poll(&pfd, 1, 100) > 0) {
        char buf[4096];
        while (::read(ino, buf, sizeof buf) > 0) {
        }
        if (!paused_) break;
      } else if (ino < 0) {
        ::usleep(100 * 1000);
      }
    }
  }
  if (ino >= 0) ::close(ino);
}

}  // namespace volley::engine
