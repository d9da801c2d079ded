#include "engine/intake.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <cstdio>
#include <utility>

#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status.h"

namespace volley::engine {
namespace {

// EraseAbsent - drops from `names` (keyed by file name; key_of gives an
// element's name) every name not in `present`: what intake remembers of
// incoming/ lasts only while the name is there.
template <typename Names, typename KeyOf>
void EraseAbsent(Names& names, const std::vector<std::string>& present, KeyOf key_of) {
  std::vector<std::string> sorted = present;
  std::sort(sorted.begin(), sorted.end());
  for (auto it = names.begin(); it != names.end();) {
    it = std::binary_search(sorted.begin(), sorted.end(), key_of(*it)) ? std::next(it)
                                                                         : names.erase(it);
  }
}

}  // namespace

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

bool IncomingNotices::First(Said& said, int bit) {
  const uint32_t mask = uint32_t{1} << bit;
  if (said.reasons & mask) return false;
  said.reasons |= mask;
  return true;
}

bool IncomingNotices::Ignored(const std::string& name, queue::Ignored kind) {
  return First(said_[name], static_cast<int>(kind));
}

bool IncomingNotices::Waiting(const std::string& name, const queue::IntakeWait& wait) {
  static_assert(queue::kIgnoredKinds + queue::kWaitReasons <= 32);
  Said& said = said_[name];
  if (wait.reason == queue::WaitReason::kRecentlyModified) {
    if (said.first_settles_at == absl::InfinitePast()) said.first_settles_at = wait.settles_at;
    if (said.first_settles_at == wait.settles_at) return false;
  }
  return First(said, queue::kIgnoredKinds + static_cast<int>(wait.reason));
}

void IncomingNotices::Retain(const std::vector<std::string>& present) {
  EraseAbsent(said_, present, [](const auto& entry) -> const std::string& { return entry.first; });
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

void IntakeThread::Start() {
  // The watch is set before the thread runs, so that once volleyd says it is
  // running every rename into incoming/ is seen (a file already there waits
  // out the settle time: nobody saw how it came).
  inotify_fd_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_fd_ >= 0) {
    const std::string dir = spool_.incoming();
    if (::inotify_add_watch(inotify_fd_, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
      base::LogInfo("intake: cannot watch %s; scanning every second", dir);
    }
  }
  thread_ = std::thread([this] { Loop(); });
}

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

void RenamedIn::Events(const char* buffer, size_t length) {
  size_t at = 0;
  while (at + sizeof(inotify_event) <= length) {
    inotify_event event;
    std::memcpy(&event, buffer + at, sizeof event);  // the buffer need not be aligned
    const size_t size = sizeof(inotify_event) + event.len;
    if (at + size > length) break;
    if ((event.mask & IN_Q_OVERFLOW) != 0) {
      names_.clear();
    } else if (event.len > 0) {
      // The name is NUL-padded to its event's length.
      const char* name = buffer + at + sizeof(inotify_event);
      const std::string text(name, strnlen(name, event.len));
      if ((event.mask & IN_CLOSE_WRITE) != 0) {
        names_.erase(text);
      } else if ((event.mask & IN_MOVED_TO) != 0 && names_.size() < kMaxNames) {
        names_.insert(text);
      }
    }
    at += size;
  }
}

void RenamedIn::Retain(const std::vector<std::string>& present) {
  EraseAbsent(names_, present, [](const std::string& name) -> const std::string& { return name; });
}

absl::Time IntakeThread::ScanOnce() {
  const queue::IncomingScan scan = spool_.ScanIncoming();
  std::vector<std::string> present = scan.files;
  for (const auto& [name, kind] : scan.ignored) present.push_back(name);
  notices_.Retain(present);
  renamed_in_.Retain(scan.files);
  for (const auto& [name, kind] : scan.ignored) {
    if (notices_.Ignored(name, kind)) {
      base::LogInfo("intake: incoming/%s: ignored: %s", name, queue::IgnoredText(kind));
    }
  }
  absl::Time next_settled = absl::InfiniteFuture();
  const std::vector<std::string>& names = scan.files;
  if (names.empty()) return next_settled;
  if (paused_) {
    // A disk that filled up may have stopped the queue's writes (a RocksDB
    // background error) even after room came back: ask it to carry on first.
    if (absl::Status st = queue_->Recover(); !st.ok()) {
      Pause(st, names.front());
      return next_settled;
    }
  }
  for (const std::string& name : names) {
    if (stop_.load()) return next_settled;
    const absl::Time start = absl::Now();
    // A write closed on a renamed-in file since the last events were read
    // must end its trust before the file is judged complete.
    if (renamed_in_.ArrivalOf(name) == queue::Arrival::kRenamedIn) ReadEvents();
    auto result = spool_.Intake(name, *queue_, limits_, start, renamed_in_.ArrivalOf(name));
    if (result.ok() && !result->lease_unavailable.empty() && !lease_warned_) {
      lease_warned_ = true;
      base::LogWarning("intake: cannot tell whether incoming/%s is open for writing (%s): a "
                       "writer that keeps a file open and pauses longer than [intake] "
                       "settle_time is not noticed here; write job files elsewhere and rename "
                       "them in (docs/jobs.md)", name, result->lease_unavailable);
    }
    if (result.ok() && result->waiting.has_value()) {
      // Not complete yet: the next file is not held up by it.
      const queue::IntakeWait& wait = *result->waiting;
      if (wait.reason == queue::WaitReason::kRecentlyModified) {
        next_settled = std::min(next_settled, wait.settles_at);
      }
      if (wait.reason != queue::WaitReason::kGone && notices_.Waiting(name, wait)) {
        base::LogInfo("intake: incoming/%s: waiting: %s (%s)", name,
                      queue::WaitReasonText(wait.reason), wait.detail);
      }
      continue;
    }
    notices_.Forget(name);
    renamed_in_.Forget(name);  // taken in or refused: the name is free again
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
      return next_settled;
    }
  }
  return next_settled;
}

void IntakeThread::ReadEvents() {
  if (inotify_fd_ < 0) return;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::read(inotify_fd_, buffer, sizeof buffer)) > 0) {
    renamed_in_.Events(buffer, static_cast<size_t>(n));
  }
}

void IntakeThread::Loop() {
  const int ino = inotify_fd_;
  while (!stop_.load()) {
    const absl::Time settled = ScanOnce();
    // Sleep until a file arrives (or a while, to rescan: missed events, a
    // file waiting out the settle time, and retrying after a paused intake).
    pollfd pfd{ino, POLLIN, 0};
    int wait_ms = paused_ ? kPausedRetryMs : 1000;
    if (!paused_ && settled != absl::InfiniteFuture()) {
      const int64_t until_settled = absl::ToInt64Milliseconds(settled - absl::Now()) + 10;
      wait_ms = static_cast<int>(std::clamp<int64_t>(until_settled, 10, wait_ms));
    }
    for (int waited = 0; waited < wait_ms && !stop_.load(); waited += 100) {
      const int step = std::min(100, wait_ms - waited);
      if (ino >= 0 && ::poll(&pfd, 1, step) > 0) {
        ReadEvents();
        if (!paused_) break;
      } else if (ino < 0) {
        ::usleep(static_cast<useconds_t>(step) * 1000);
      }
    }
  }
  if (ino >= 0) ::close(ino);
  inotify_fd_ = -1;
}

}  // namespace volley::engine
