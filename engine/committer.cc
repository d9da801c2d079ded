// committer.cc - see committer.h
#include "engine/committer.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace volley::engine {

Committer::Committer(queue::Queue* queue, metrics::DeliveryLog* log) : queue_(queue), log_(log) {}

Committer::~Committer() {
  Stop();
  if (event_fd_ >= 0) ::close(event_fd_);
}

absl::Status Committer::Start() {
  // Blocking: the shard reads it through io_uring, which waits for it without a
  // thread of ours (a non-blocking one could come back at once with EAGAIN).
  event_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (event_fd_ < 0) {
    return absl::InternalError(absl::StrCat("committer: eventfd: ", std::strerror(errno)));
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void Committer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Committer::Submit(Unit unit) {
  busy_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    todo_ = std::move(unit);
  }
  cv_.notify_all();
}

std::optional<Committer::Unit> Committer::TakeDone() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!done_.has_value()) return std::nullopt;
  std::optional<Unit> out = std::move(done_);
  done_.reset();
  busy_ = false;
  return out;
}

void Committer::Loop() {
  for (;;) {
    Unit unit;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || todo_.has_value(); });
      if (!todo_.has_value()) return;  // stopping, nothing left
      unit = std::move(*todo_);
      todo_.reset();
    }
    CommitNow(&unit);
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = std::move(unit);
    }
    const uint64_t one = 1;
    // Only an overflow of the counter could make this fail, after 2^64 units.
    (void)!::write(event_fd_, &one, sizeof one);
  }
}

void Committer::CommitNow(Unit* unit) {
  // Log first: see the invariants at the top of engine.cc.
  log_->AppendFormatted(unit->log_bytes);
  unit->log_bytes.clear();
  if (absl::Status st = log_->Flush(); !st.ok()) {
    unit->status = st;
    return;
  }
  if (unit->batch == nullptr || unit->batch->size() == 0) return;
  unit->batch->SetLogPosition(log_->position());
  absl::Status st = queue_->Apply(*unit->batch);
  while (absl::IsResourceExhausted(st)) {
    // The disk is full or RocksDB stopped writes. A refused write applied
    // nothing, so the same batch is tried again; the shard takes no new work
    // meanwhile (stalled()), which bounds what piles up behind it.
    if (!stalled_.exchange(true)) {
      std::fprintf(stderr,
                   "volleyd: outcomes not recorded in the queue yet: %s (retrying; no new "
                   "work is taken meanwhile)\n",
                   std::string(st.message()).c_str());
    }
    (void)queue_->Recover();
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, absl::ToChronoMilliseconds(kStallRetry), [&] { return stop_; })) {
        break;  // stopping: the caller reports what stayed unrecorded
      }
    }
    st = queue_->Apply(*unit->batch);
  }
  if (st.ok() && stalled_.exchange(false)) {
    std::fprintf(stderr, "volleyd: outcomes recorded in the queue again\n");
  }
  unit->status = st;
}

}  // namespace volley::engine
