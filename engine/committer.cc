// committer.cc - see committer.h
#include "engine/committer.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace volley::engine {

Committer::Committer(queue::Queue* queue, metrics::DeliveryLog* log, size_t lanes)
    : queue_(queue), log_(log), lanes_(std::max<size_t>(lanes, 1)) {}

Committer::~Committer() {
  Stop();
  for (Lane& lane : lanes_) {
    if (lane.event_fd >= 0) ::close(lane.event_fd);
  }
}

absl::Status Committer::Start() {
  for (Lane& lane : lanes_) {
    // Blocking: the shard reads it through io_uring, which waits for it without
    // a thread of ours (a non-blocking one could come back at once with EAGAIN).
    lane.event_fd = ::eventfd(0, EFD_CLOEXEC);
    if (lane.event_fd < 0) {
      return absl::InternalError(absl::StrCat("committer: eventfd: ", std::strerror(errno)));
    }
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

void Committer::GiveUpWhenStalled() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    give_up_ = true;
  }
  cv_.notify_all();
}

void Committer::Submit(Unit unit, size_t lane) {
  lanes_[lane].busy = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lanes_[lane].todo = std::move(unit);
  }
  cv_.notify_all();
}

std::optional<Committer::Unit> Committer::TakeDone(size_t lane) {
  std::lock_guard<std::mutex> lock(mu_);
  Lane& l = lanes_[lane];
  if (!l.done.has_value()) return std::nullopt;
  std::optional<Unit> out = std::move(l.done);
  l.done.reset();
  l.busy = false;
  return out;
}

std::optional<Committer::Unit> Committer::WaitDone(size_t lane) {
  Lane& l = lanes_[lane];
  if (!l.busy) return std::nullopt;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return l.done.has_value(); });
  std::optional<Unit> out = std::move(l.done);
  l.done.reset();
  l.busy = false;
  return out;
}

void Committer::Loop() {
  size_t next = 0;  // lanes take turns, so a busy shard cannot starve another
  for (;;) {
    Unit unit;
    size_t lane = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto find_todo = [&]() -> std::optional<size_t> {
        for (size_t i = 0; i < lanes_.size(); ++i) {
          const size_t at = (next + i) % lanes_.size();
          if (lanes_[at].todo.has_value()) return at;
        }
        return std::nullopt;
      };
      std::optional<size_t> found;
      cv_.wait(lock, [&] { return stop_ || (found = find_todo()).has_value(); });
      if (!found.has_value()) found = find_todo();
      if (!found.has_value()) return;  // stopping, nothing left
      lane = *found;
      next = lane + 1;
      unit = std::move(*lanes_[lane].todo);
      lanes_[lane].todo.reset();
    }
    CommitNow(&unit);
    {
      std::lock_guard<std::mutex> lock(mu_);
      lanes_[lane].done = std::move(unit);
    }
    const uint64_t one = 1;
    // Only an overflow of the counter could make this fail, after 2^64 units.
    (void)!::write(lanes_[lane].event_fd, &one, sizeof one);
    done_cv_.notify_all();
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
      if (cv_.wait_for(lock, absl::ToChronoMilliseconds(kStallRetry),
                       [&] { return stop_ || give_up_; })) {
        // Stopping: one last try, then the caller reports what stayed unrecorded.
        lock.unlock();
        st = queue_->Apply(*unit->batch);
        break;
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
