// shard_control.cc - a shard's side of engine/destination_control.h: holding
// suspended domains, making recipients due on a retry or a release, keeping
// backoff levels.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "base/log.h"
#include "base/strings.h"
#include "engine/shard.h"
#include "queue/job.h"

namespace volley::engine {
namespace {

// Queue entries read per TakeDue call while scanning for a command.
constexpr size_t kMakeDuePage = 1024;
// A due time later than any a key holds: "every entry", for TakeDue.
const absl::Time kEveryDue = absl::FromUnixSeconds(int64_t{1} << 40);

std::string LowerDomainOf(std::string_view address) {
  return absl::AsciiStrToLower(base::Sv(queue::DomainOf(address)));
}

}  // namespace

void Shard::ApplyControl() {
  DestinationControl* control = place_.control;
  control->ExpireDue(now_);
  if (const uint64_t generation = control->generation(); generation != control_generation_) {
    control_generation_ = generation;
    suspended_ = control->Snapshot();
    if (!suspended_->empty()) {
      // What waits in ready lists for a domain suspended now goes back; a
      // transaction under way finishes, and the connection then QUITs when
      // its pool has nothing else to send.
      for (auto& [key, d] : destinations_) {
        if (d->ready.empty()) continue;
        for (Work* w : d->ready.TakeAll()) {
          if (LetGoIfSuspended(w, LowerDomainOf(w->rcpt.to))) continue;
          PushReady(d.get(), w, /*front=*/false);
        }
        if (d->ready.empty()) QuitIdle(d.get());
      }
    }
  }
  if (control->HasCommands(place_.index)) {
    for (ShardCommand& c : control->TakeCommands(place_.index)) commands_.push_back(std::move(c));
  }
  while (!commands_.empty() && outcomes_.Settled()) {
    bool more = false;
    const uint64_t made_due = MakeDue(commands_.front(), &more);
    control->Answer(commands_.front().id, made_due, more);
    commands_.pop_front();
  }
}

bool Shard::LetGoIfSuspended(Work* w, std::string_view domain) {
  if (suspended_ == nullptr || suspended_->empty()) return false;
  auto it = suspended_->find(std::string(domain));
  if (it == suspended_->end() || it->second.until <= now_) return false;
  outcomes_.Hold(w, it->second.until);
  return true;
}

uint64_t Shard::MakeDue(const ShardCommand& command, bool* more) {
  using Kind = ShardCommand::Kind;
  // The partitions a domain's recipients can be in: its own, or its static
  // route's (engine.cc's partitioner).
  std::vector<uint16_t> partitions;
  if (command.kind != Kind::kRetryJob) {
    partitions.push_back(queue::PartitionOf(command.target));
    if (const dns::StaticRoutes* routes = routing_.routes()) {
      if (const dns::Route* route = routes->Find(command.target)) {
        partitions.push_back(queue::PartitionOf(route->name));
      }
    }
  }
  const auto wanted = [&](const queue::QueuedRecipient& r) {
    if (r.due <= now_) return false;  // due already
    if (command.kind == Kind::kRelease) {
      if (r.due > command.held_until) return false;  // a later send_after or retry
    } else if (r.attempts == 0) {
      return false;  // never tried: not deferred (a send_after, or held)
    }
    if (command.kind == Kind::kRetryJob) return true;
    absl::StatusOr<queue::Recipient> rcpt = queue::DecodeRecipient(r.recipient);
    return rcpt.ok() && LowerDomainOf(rcpt->to) == command.target;
  };
  uint64_t made_due = 0;
  size_t looked_at = 0;
  std::unique_ptr<queue::Queue::OutcomeBatch> batch = queue_->NewOutcomeBatch();
  for (const auto& [job_no, job] : window_.jobs()) {
    if (command.kind == Kind::kRetryJob && job->record.id != command.target) continue;
    for (PartitionScan& scan : job->scans) {
      if (command.kind != Kind::kRetryJob &&
          std::find(partitions.begin(), partitions.end(), scan.partition) == partitions.end()) {
        continue;
      }
      if (scan.empty) continue;
      bool moved = false;
      std::string after;
      for (;;) {
        if (looked_at >= kMaxRetryScan) {
          *more = true;
          break;
        }
        std::vector<queue::QueuedRecipient> page;
        const absl::Status st =
            queue_->TakeDue(job_no, scan.partition, after, kEveryDue,
                            std::min(kMakeDuePage, kMaxRetryScan - looked_at), &page);
        if (!st.ok()) {
          base::LogWarning("retry: job \"%s\": %s", job->record.id, base::StdSv(st.message()));
          break;
        }
        if (page.empty()) break;
        looked_at += page.size();
        after = page.back().key;
        for (const queue::QueuedRecipient& r : page) {
          if (job->taken.contains(r.key) || !wanted(r)) continue;
          batch->Postpone(r, now_);
          moved = true;
          ++made_due;
        }
      }
      if (moved) {
        // Scanned again from its start: the keys moved are behind the cursor
        // perhaps, and the partition may have been idle until later.
        scan.cursor.clear();
        scan.idle_until = absl::InfinitePast();
      }
    }
  }
  if (made_due > 0) {
    // Written here, not by the committer: these keys are in no unit under
    // way (not taken), and the refill that follows must find them moved.
    if (absl::Status st = queue_->Apply(*batch); !st.ok()) {
      base::LogWarning("retry: cannot make %d recipients due: %s", made_due,
                       base::StdSv(st.message()));
      return 0;
    }
  }
  return made_due;
}

void Shard::KeepBackoff(Destination* d) {
  if (place_.control == nullptr) return;
  const DestinationLimits& l = d->limits;
  if (l.backoff_level() == d->kept_backoff_level) return;
  d->kept_backoff_level = l.backoff_level();
  place_.control->SaveBackoff(
      d->key, KeptBackoff{l.backoff_level(), l.backoff_step_at(), l.backoff_period(),
                          l.backoff_reason()});
}

}  // namespace volley::engine
