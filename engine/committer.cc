// committer.cc - see committer.h
#include "engine/committer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "base/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace volley::engine {

Committer::Committer(queue::Queue* queue, metrics::DeliveryLog* log, size_t lanes)
    : queue_(queue), log_(log), lanes_(std::max<size_t>(lanes, 1)) {}

Committer::~Committer() { Stop(); }

absl::Status Committer::Start() {
  for (Lane& lane : lanes_) {
    // Blocking (mailbox.h): the shard reads it through io_uring.
    absl::StatusOr<reactor::EventFd> event = reactor::EventFd::Create();
    if (!event.ok()) {
      return absl::InternalError(absl::StrCat("committer: ", event.status().message()));
    }
    lane.event = *std::move(event);
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
    lanes_[lane].event->Notify();
    done_cv_.notify_all();
  }
}

void Committer::CommitNow(Unit* unit) {
  // Log first: see the invariants in engine/shard.h. The bytes move to
  // the log's buffer once; a retried flush writes what is left of them.
  log_->AppendFormatted(unit->log_bytes);
  unit->log_bytes.clear();
  unit->status = WriteUntilDone("delivery log", /*recover_queue=*/false,
                                [&] { return log_->Flush(); });
  if (!unit->status.ok()) return;
  if (unit->batch != nullptr && unit->batch->size() > 0) {
    unit->batch->SetLogPosition(log_->position());
    // A refused write applied nothing: the same batch is applied again.
    unit->status = WriteUntilDone("queue", /*recover_queue=*/true,
                                  [&] { return queue_->Apply(*unit->batch); });
    if (!unit->status.ok()) return;
  }
  StallEnds();
}

template <typename Write>
absl::Status Committer::WriteUntilDone(const char* what, bool recover_queue, Write write) {
  absl::Status st = write();
  absl::Duration wait = kRetryFirst;
  while (!st.ok() && !absl::IsDataLoss(st)) {
    ++failed_tries_;
    StallBegins(what, st);
    if (recover_queue) {
      // RocksDB refuses every write after a failed one until it resumes.
      const absl::Status recovered = queue_->Recover();
      if (absl::IsDataLoss(recovered)) return recovered;
      if (absl::IsUnavailable(recovered) && !restart_noted_) {
        restart_noted_ = true;
        base::LogWarning("%s (outcomes stay unwritten; still retrying)",
                      std::string(recovered.message()));
      }
    }
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      stopping = cv_.wait_for(lock, absl::ToChronoMilliseconds(wait),
                              [&] { return stop_ || give_up_; });
    }
    st = write();
    if (stopping) {
      // One last try, then the caller reports what stayed unwritten.
      if (!st.ok() && !absl::IsDataLoss(st)) {
        ++failed_tries_;
        return absl::ResourceExhaustedError(absl::StrCat(
            "not written to the ", what, " (stopping): ", st.message()));
      }
      break;
    }
    wait = std::min(wait * 2, kRetryMax);
  }
  return st;
}

void Committer::StallBegins(const char* what, const absl::Status& st) {
  if (stalled_.exchange(true)) return;
  stalled_since_ = absl::Now();
  base::LogError("outcome writes stalled: the %s refused a write: %s (retrying, %s to %s apart; "
                "the shards take no new work meanwhile)", what, std::string(st.message()),
                absl::FormatDuration(kRetryFirst), absl::FormatDuration(kRetryMax));
}

void Committer::StallEnds() {
  const uint64_t tries = std::exchange(failed_tries_, 0);
  restart_noted_ = false;
  if (!stalled_.exchange(false)) return;
  base::LogInfo("outcome writes resumed after %.1fs (%llu failed tries)",
                absl::ToDoubleSeconds(absl::Now() - stalled_since_),
                static_cast<unsigned long long>(tries));
}

}  // namespace volley::engine
