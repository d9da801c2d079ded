#include "engine/intake.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdio>

#include "absl/time/clock.h"
#include "base/status.h"

namespace volley::engine {

ReadyJobs::ReadyJobs() : event_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  VOLLEY_CHECK(event_fd_ >= 0, "eventfd");
}

ReadyJobs::~ReadyJobs() { ::close(event_fd_); }

void ReadyJobs::Push(std::string job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job_id));
  }
  const uint64_t one = 1;
  (void)!::write(event_fd_, &one, sizeof one);
}

std::vector<std::string> ReadyJobs::TakeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(jobs_, {});
}

IntakeThread::IntakeThread(queue::Spool spool, queue::Queue* queue, queue::JobLimits limits,
                           ReadyJobs* ready)
    : spool_(std::move(spool)), queue_(queue), limits_(limits), ready_(ready) {}

IntakeThread::~IntakeThread() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void IntakeThread::Start() { thread_ = std::thread([this] { Loop(); }); }

void IntakeThread::ScanOnce() {
  for (const std::string& name : spool_.ListIncoming()) {
    if (stop_.load()) return;
    const absl::Time start = absl::Now();
    auto result = spool_.Intake(name, *queue_, limits_, start);
    if (result.ok()) {
      if (paused_) std::fprintf(stderr, "volleyd: intake resumed\n");
      paused_ = false;
      std::fprintf(stderr,
                   "volleyd: intake: incoming/%s: job \"%s\" accepted: %llu recipients, "
                   "%llu rejected%s (%.3fs)\n",
                   name.c_str(), result->job.c_str(),
                   static_cast<unsigned long long>(result->accepted),
                   static_cast<unsigned long long>(result->rejected),
                   result->resumed ? ", resumed after a crash" : "",
                   absl::ToDoubleSeconds(absl::Now() - start));
      if (!result->warning.empty()) {
        std::fprintf(stderr, "volleyd: intake: job \"%s\" is queued, but: %s\n",
                     result->job.c_str(), result->warning.c_str());
      }
      ready_->Push(result->job);
    } else if (absl::IsInvalidArgument(result.status())) {
      std::fprintf(stderr, "volleyd: intake: refused: %s\n",
                   std::string(result.status().message()).c_str());
    } else {
      // The queue or the disk failed: leave the file where it is and pause.
      if (!paused_) {
        std::fprintf(stderr, "volleyd: intake paused: %s (incoming/%s stays; retrying)\n",
                     std::string(result.status().message()).c_str(), name.c_str());
      }
      paused_ = true;
      return;
    }
  }
}

void IntakeThread::Loop() {
  const int ino = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ino >= 0) {
    const std::string dir = spool_.incoming();
    if (::inotify_add_watch(ino, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
      std::fprintf(stderr, "volleyd: intake: cannot watch %s; scanning every second\n",
                   dir.c_str());
    }
  }
  while (!stop_.load()) {
    ScanOnce();
    // Sleep until a file arrives (or a while, to rescan: missed events, and
    // retrying after a paused intake).
    pollfd pfd{ino, POLLIN, 0};
    const int wait_ms = paused_ ? 5000 : 1000;
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
