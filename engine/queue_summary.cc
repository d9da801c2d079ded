// queue_summary.cc - counts by state and age over a bounded scan (see queue_summary.h)
#include "engine/queue_summary.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "queue/job.h"

namespace volley::engine {
namespace {

bool InDomain(std::string_view encoded, std::string_view domain) {
  absl::StatusOr<queue::Recipient> r = queue::DecodeRecipient(encoded);
  if (!r.ok()) return false;
  const size_t at = r->to.rfind('@');
  if (at == std::string::npos) return false;
  return absl::EqualsIgnoreCase(base::Sv(std::string_view(r->to).substr(at + 1)), base::Sv(domain));
}

void AppendTime(std::string* out, const std::optional<absl::Time>& t) {
  if (!t) {
    *out += "null";
    return;
  }
  base::AppendJsonString(
      out, base::StdSv(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *t, absl::UTCTimeZone())));
}

}  // namespace

absl::StatusOr<QueueSummary> SummarizeQueue(queue::Queue& queue,
                                            const std::vector<queue::JobRecord>& jobs,
                                            const QueueSummaryFilter& filter, absl::Time now,
                                            uint64_t max_scan) {
  QueueSummary s;
  std::vector<queue::QueuedRecipient> page;
  for (const queue::JobRecord& job : jobs) {
    if (!filter.job.empty() && job.id != filter.job) continue;
    if (job.state != queue::JobState::kReady && job.state != queue::JobState::kCancelled) continue;
    const size_t age_bucket = QueueAgeBucket(now - job.queued_at);
    bool counted_job = false;
    for (uint16_t partition = 0; partition < queue::kPartitions; ++partition) {
      std::string after;
      for (;;) {
        if (s.scanned >= max_scan) {
          s.truncated = true;
          return s;
        }
        page.clear();
        const size_t want =
            static_cast<size_t>(std::min<uint64_t>(kQueueSummaryPage, max_scan - s.scanned));
        RETURN_IF_ERROR(queue.TakeDue(job.job_no, partition, after, absl::InfiniteFuture(),
                                      want, &page));
        for (const queue::QueuedRecipient& r : page) {
          ++s.scanned;
          if (!filter.domain.empty() && !InDomain(r.recipient, filter.domain)) continue;
          if (r.attempts > 0) {
            ++s.deferred;
          } else if (r.due <= now) {
            ++s.ready;
          } else {
            ++s.scheduled;
          }
          ++s.ages[age_bucket];
          counted_job = true;
          if (!s.next_due || r.due < *s.next_due) s.next_due = r.due;
        }
        if (page.size() < want) break;
        after = page.back().key;
      }
    }
    if (counted_job && (!s.oldest_queued_at || job.queued_at < *s.oldest_queued_at)) {
      s.oldest_queued_at = job.queued_at;
    }
  }
  return s;
}

std::string QueueSummaryJson(const QueueSummary& s, std::optional<uint64_t> in_flight,
                             absl::Time now) {
  std::string out = absl::StrCat("{\"ready\":", s.ready, ",\"deferred\":", s.deferred,
                                 ",\"scheduled\":", s.scheduled, ",\"in_flight\":");
  if (in_flight) {
    absl::StrAppend(&out, *in_flight);
  } else {
    out += "null";
  }
  absl::StrAppend(&out, ",\"total\":", s.total(), ",\"ages\":{");
  for (size_t i = 0; i < s.ages.size(); ++i) {
    if (i > 0) out += ",";
    base::AppendJsonString(&out, QueueAgeBucketName(i));
    absl::StrAppend(&out, ":", s.ages[i]);
  }
  out += "},\"oldest_queued_at\":";
  AppendTime(&out, s.oldest_queued_at);
  out += ",\"oldest_age_seconds\":";
  if (s.oldest_queued_at) {
    absl::StrAppend(&out, std::max<int64_t>(0, absl::ToInt64Seconds(now - *s.oldest_queued_at)));
  } else {
    out += "null";
  }
  out += ",\"next_due\":";
  AppendTime(&out, s.next_due);
  absl::StrAppend(&out, ",\"scanned\":", s.scanned, ",\"truncated\":",
                  s.truncated ? "true" : "false", "}\n");
  return out;
}

}  // namespace volley::engine
