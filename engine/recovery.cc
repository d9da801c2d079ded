#include "engine/recovery.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/outcomes.h"
#include "engine/retry.h"
#include "metrics/delivery_log.h"
#include "metrics/delivery_status.h"

namespace volley::engine {

absl::Status ReplayUnappliedOutcomes(queue::Queue* queue, metrics::DeliveryLog* log,
                                     const RetryConfig& retry) {
  const absl::Time now = absl::Now();
  std::unique_ptr<queue::Queue::OutcomeBatch> batch = queue->NewOutcomeBatch();
  ASSIGN_OR_RETURN(const std::string position, queue->ReadLogPosition());
  if (position.empty()) return absl::OkStatus();  // nothing was ever committed
  absl::StatusOr<std::vector<std::string>> lines = log->LinesAfter(position);
  if (absl::IsNotFound(lines.status())) {
    base::LogInfo("%s; outcomes logged just before a crash, if any, cannot be matched: those "
                  "recipients are tried again",
                  base::StdSv(lines.status().message()));
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(lines.status());
  if (lines->empty()) return absl::OkStatus();
  struct Logged {
    metrics::DeliveryStatus status;
    uint32_t attempt = 0;
    std::string reply;  // a deferral's, as the queue keeps it (QueuedRecipient::last_reply)
    std::string klass;
  };
  // job id -> line -> the outcomes logged for it, in log order (one, unless
  // commits kept failing before the crash and several turns piled up).
  std::map<std::string, std::map<uint32_t, std::vector<Logged>>> by_job;
  size_t unreadable = 0;
  for (const std::string& text : *lines) {
    absl::StatusOr<metrics::OwnedDeliveryRecord> r = metrics::ParseDeliveryRecord(text);
    if (!r.ok()) {
      ++unreadable;
      continue;
    }
    std::string reply;
    if (r->status == metrics::DeliveryStatus::kDeferred) {
      reply = LastReplyText(r->code, r->enhanced, r->response);
    }
    by_job[r->job][r->line].push_back(
        Logged{r->status, r->attempt, std::move(reply), std::move(r->klass)});
  }
  size_t applied = 0;
  for (const auto& [id, logged] : by_job) {
    ASSIGN_OR_RETURN(std::optional<queue::JobRecord> job, queue->FindJob(id));
    if (!job.has_value()) continue;
    std::vector<uint32_t> wanted;
    for (const auto& [line, unused] : logged) wanted.push_back(line);
    std::vector<queue::QueuedRecipient> found;
    RETURN_IF_ERROR(queue->FindLines(job->job_no, wanted, &found));
    for (queue::QueuedRecipient& r : found) {
      // Each outcome in turn, as Commit would have applied it: a deferral
      // moves the entry (the next outcome applies to where it went).
      for (const Logged& l : logged.at(r.line)) {
        const bool untried = l.status == metrics::DeliveryStatus::kExpired ||
                             l.status == metrics::DeliveryStatus::kCancelled ||
                             l.status == metrics::DeliveryStatus::kSuppressed;
        // Only the attempt the entry is at: anything else was applied already.
        if (l.attempt != r.attempts + 1 && !(untried && l.attempt == r.attempts)) continue;
        std::optional<queue::Final> final;
        for (queue::Final f : {queue::Final::kDelivered, queue::Final::kBounced,
                               queue::Final::kExpired, queue::Final::kCancelled,
                               queue::Final::kSuppressed}) {
          if (l.status == StatusOf(f)) final = f;
        }
        if (final.has_value()) {
          batch->Remove(r, *final);
          ++applied;
          break;
        }
        if (l.status != metrics::DeliveryStatus::kDeferred) continue;
        // The retry time is not in the log: the default policy's interval for
        // this attempt, from now.
        const absl::Time due = now + RetryDelay(retry, l.attempt, 1.0);
        r.last_reply = l.reply;
        r.last_class = l.klass;
        batch->Reschedule(r, due);
        r.key = queue::RecipientKey(r.job_no, r.partition, due, r.line);
        r.due = due;
        ++r.attempts;
        ++applied;
      }
    }
  }
  batch->SetLogPosition(log->position());
  RETURN_IF_ERROR(queue->Apply(*batch));
  base::LogInfo("%zu outcomes were logged but not recorded in the queue before a crash; "
                "recorded now (%zu log lines after the last commit, %zu unreadable)",
                applied, lines->size(), unreadable);
  return absl::OkStatus();
}

}  // namespace volley::engine
