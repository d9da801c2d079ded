#include "engine/window.h"

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "queue/template.h"

namespace volley::engine {

DeliveryWindow::DeliveryWindow(const ShardPlace& place, queue::Queue* queue, Composer* composer)
    : place_(place), window_(place.window), queue_(queue), composer_(composer) {
  for (uint16_t p = 0; p < queue::kPartitions; ++p) {
    if (p % place_.count == place_.index) owned_.push_back(p);
  }
}

DeliveryWindow::~DeliveryWindow() = default;

absl::StatusOr<Job*> DeliveryWindow::Load(const queue::JobRecord& record) {
  if (auto it = jobs_.find(record.job_no); it != jobs_.end()) {
    // Known already: a control command (pause, resume, cancel) changed it.
    // Logged once where the change was made (the admin API, the feedback
    // loop), not here by every shard.
    Job* job = it->second.get();
    const bool changed = (record.state == queue::JobState::kCancelled && !job->cancelled()) ||
                         record.paused != job->record.paused;
    // A resumed or cancelled job is scanned from its start again: what was
    // passed over meanwhile may be due.
    if (changed) {
      for (PartitionScan& scan : job->scans) {
        scan.cursor.clear();
        scan.idle_until = absl::InfinitePast();
      }
    }
    job->record.paused = record.paused;
    job->record.state = record.state;
    if (!changed) return nullptr;
    return record.paused || job->cancelled() ? job : nullptr;
  }
  if (record.state != queue::JobState::kReady && record.state != queue::JobState::kCancelled) {
    return nullptr;  // still loading, or finished: nothing to send
  }
  auto job = std::make_unique<Job>();
  job->record = record;
  auto header = queue::ParseJobHeader(record.header_json, queue::JobLimits{});
  if (!header.ok()) {
    return absl::DataLossError(absl::StrCat("job \"", record.id,
                                            "\": stored header no longer parses: ",
                                            header.status().message()));
  }
  job->header = *std::move(header);
  job->from_domain = absl::AsciiStrToLower(base::Sv(queue::DomainOf(job->header.from)));
  auto tpl = queue::Template::Compile(job->header.message);
  if (!tpl.ok()) {
    return absl::DataLossError(absl::StrCat("job \"", record.id, "\": ", tpl.status().message()));
  }
  job->tpl = std::make_unique<queue::Template>(*std::move(tpl));
  job->plan = composer_->Plan(job->header, *job->tpl, record.job_no);
  job->shared_message = job->tpl->variables().empty() &&
                        job->header.return_path.find("{{") == std::string::npos &&
                        !job->plan->per_recipient();
  job->scans.resize(owned_.size());
  for (size_t i = 0; i < owned_.size(); ++i) job->scans[i].partition = owned_[i];
  jobs_[record.job_no] = std::move(job);
  return nullptr;
}

absl::Status DeliveryWindow::Refill(absl::Time now, const OnTaken& on_taken) {
  last_refill_ = now;
  const absl::Status st = TakeAndMarkDone(now, on_taken);
  if (st.ok()) {
    if (retry_wait_ > absl::ZeroDuration()) {
      base::LogInfo("shard %zu: queue reads work again", place_.index);
      retry_wait_ = absl::ZeroDuration();
    }
    return st;
  }
  // Corruption is for an operator; anything else (EMFILE, EIO, RocksDB holding
  // writes) clears, and what is under way goes on meanwhile.
  if (absl::IsDataLoss(st)) return st;
  if (retry_wait_ == absl::ZeroDuration()) {
    base::LogInfo("shard %zu: taking work from the queue failed: %s (retrying)", place_.index,
                  base::StdSv(st.message()));
  }
  retry_wait_ = std::clamp(retry_wait_ * 2, kRefillInterval, kRefillRetryMax);
  retry_at_ = now + retry_wait_;
  return absl::OkStatus();
}

void DeliveryWindow::WakeRequeued() {
  for (size_t i = 0; i < owned_.size(); ++i) {
    const absl::Time due = queue_->TakeRequeued(owned_[i]);
    if (due == absl::InfiniteFuture()) continue;
    for (auto& [job_no, job] : jobs_) {
      PartitionScan& scan = job->scans[i];
      scan.idle_until = scan.empty ? due : std::min(scan.idle_until, due);
      scan.empty = false;
    }
  }
}

absl::Status DeliveryWindow::TakeAndMarkDone(absl::Time now, const OnTaken& on_taken) {
  // Deferrals written since the last refill bring their scans forward: a scan
  // that came up short sleeps until its next due time otherwise.
  WakeRequeued();
  std::vector<uint32_t> finished;
  // Each refill starts one job further on, so that when the window is short the
  // jobs take turns at it instead of the oldest job always going first.
  std::vector<Job*> order;
  const auto split = jobs_.lower_bound(refill_from_);
  for (auto it = split; it != jobs_.end(); ++it) order.push_back(it->second.get());
  for (auto it = jobs_.begin(); it != split; ++it) order.push_back(it->second.get());
  if (!order.empty()) refill_from_ = order.front()->record.job_no + 1;
  // A job of a higher priority (the header's 0..9, 9 first) takes from the queue
  // first; jobs of one priority keep their turns.
  std::stable_sort(order.begin(), order.end(),
                   [](const Job* a, const Job* b) { return a->header.priority > b->header.priority; });
  // Rounds of at most kTakeBatch per partition of a job, until the window is
  // full or no job has more due: one refill can fill the window, and jobs still
  // alternate. No more than a window's worth is taken in all, even when what is
  // taken ends at once (expired, no route) and frees its place: the outcomes of
  // one loop turn stay bounded too.
  size_t budget = window_;
  for (bool first_round = true; !order.empty(); first_round = false) {
    std::vector<Job*> more;
    for (Job* job : order) {
      if (in_flight_ >= window_ || budget == 0) {
        more.push_back(job);
        continue;
      }
      if (job->record.paused) continue;
      // A cancelled job's recipients all go, due or not.
      const absl::Time due_by = job->cancelled() ? absl::InfiniteFuture() : now;
      bool job_has_more = false;
      const size_t scans = job->scans.size();
      for (size_t i = 0; i < scans; ++i) {
        PartitionScan* scan = &job->scans[(job->next_scan + i) % scans];
        if (scan->empty || now < scan->idle_until) continue;
        if (in_flight_ >= window_ || budget == 0) {
          job_has_more = true;
          break;
        }
        const size_t want = std::min({kTakeBatch, window_ - in_flight_, budget});
        ASSIGN_OR_RETURN(const size_t taken, TakeFromJob(job, scan, want, due_by, on_taken));
        budget -= taken;
        if (taken == want) job_has_more = true;
        // Short (idle_until is set): nothing after the cursor either, and
        // nothing of it unsettled, so no deferral can land in it: find out
        // whether anything is left at all. With something unsettled it
        // sleeps until that settles (ForgetCommitted) or a deferral lands
        // (WakeRequeued), instead of being scanned again at every refill.
        if (taken < want && scan->idle_until == absl::InfiniteFuture() &&
            scan->unsettled == 0) {
          RETURN_IF_ERROR(ScanIdle(job, scan));
        }
      }
      if (scans > 0) job->next_scan = (job->next_scan + 1) % scans;
      if (job_has_more) more.push_back(job);
      // Every outcome written too (taken is empty): a deferral still being
      // written would otherwise be dropped with the job's keys.
      if (first_round && job->in_flight == 0 && job->taken.empty() &&
          std::all_of(job->scans.begin(), job->scans.end(),
                      [](const PartitionScan& p) { return p.empty; })) {
        finished.push_back(job->record.job_no);
      }
    }
    order = std::move(more);
    if (in_flight_ >= window_ || budget == 0) break;
  }
  more_due_ = !order.empty();
  for (uint32_t job_no : finished) {
    auto it = jobs_.find(job_no);
    // The shard that finishes last marks the job done: its keys are dropped
    // only when no shard has any left.
    if (place_.board->ShardFinished(job_no, place_.index)) {
      jobs_to_mark_done_.push_back(std::move(it->second->record));
    }
    jobs_.erase(it);
  }
  while (!jobs_to_mark_done_.empty()) {
    const queue::JobRecord& record = jobs_to_mark_done_.front();
    RETURN_IF_ERROR(queue_->MarkJobDone(record));
    base::LogInfo("job \"%s\" %s", record.id,
                  record.state == queue::JobState::kCancelled ? "cancelled: finished"
                                                              : "finished");
    jobs_to_mark_done_.pop_front();
  }
  return absl::OkStatus();
}

// TakeFromJob - up to `want` due recipients of `job`, each handed to
// on_taken. Returns how many the queue gave.
absl::StatusOr<size_t> DeliveryWindow::TakeFromJob(Job* job, PartitionScan* scan, size_t want,
                                                   absl::Time now, const OnTaken& on_taken) {
  std::vector<queue::QueuedRecipient>& taken = take_buffer_;
  taken.clear();
  absl::Time next_due = absl::InfinitePast();
  RETURN_IF_ERROR(queue_->TakeDueAndNext(job->record.job_no, scan->partition, scan->cursor, now,
                                         want, &taken, &next_due));
  // Came up short: nothing after the cursor is due before next_due, but for
  // deferrals still to land (WakeRequeued brings it forward then).
  if (taken.size() < want) scan->idle_until = next_due;
  for (auto& entry : taken) {
    scan->cursor = entry.key;
    if (!job->taken.emplace(entry.key).second) continue;  // under way already
    ++scan->unsettled;
    auto rcpt = queue::DecodeRecipient(entry.recipient);
    absl::Status decoded = rcpt.status();
    auto* w = new Work{std::move(entry), rcpt.ok() ? *std::move(rcpt) : queue::Recipient{}, job,
                       scan};
    ++job->in_flight;
    ++scan->in_flight;
    ++in_flight_;
    on_taken(w, decoded);
  }
  return taken.size();
}

absl::Status DeliveryWindow::ScanIdle(Job* job, PartitionScan* scan) {
  // Nothing due, nothing after the cursor, nothing unsettled (so no deferral
  // is still to land: each is rescheduled later than the scan that took it).
  // Empty is final (the job's range is dropped once every partition is):
  // make sure from the partition's start, which a resume or a cancel scans
  // again too.
  std::optional<absl::Time> next;
  if (!scan->cursor.empty()) {
    ASSIGN_OR_RETURN(next, queue_->NextDue(job->record.job_no, scan->partition));
  }
  if (next.has_value()) {
    scan->cursor.clear();
    scan->idle_until = *next;
  } else {
    scan->empty = true;
  }
  return absl::OkStatus();
}

std::pair<uint32_t, std::string> DeliveryWindow::Release(Work* w) {
  --w->job->in_flight;
  --w->scan->in_flight;
  --in_flight_;
  std::pair<uint32_t, std::string> key(w->job->record.job_no, std::move(w->entry.key));
  delete w;
  return key;
}

void DeliveryWindow::ForgetCommitted(const std::vector<std::pair<uint32_t, std::string>>& keys) {
  for (const auto& [job_no, key] : keys) {
    auto it = jobs_.find(job_no);
    if (it == jobs_.end() || it->second->taken.erase(key) == 0) continue;
    // The key names its partition (queue.h); this shard owns it, as the
    // index-th of owned_ (p % count == index).
    const auto partition = static_cast<uint16_t>(
        (static_cast<unsigned char>(key[4]) << 8) | static_cast<unsigned char>(key[5]));
    std::vector<PartitionScan>& scans = it->second->scans;
    const size_t i = partition / place_.count;
    if (i >= scans.size() || scans[i].partition != partition) continue;
    PartitionScan& scan = scans[i];
    // The last one settled: a scan waiting for it looks once more, and finds
    // the partition empty or when it is due next (ScanIdle).
    if (--scan.unsettled == 0 && scan.idle_until == absl::InfiniteFuture()) {
      scan.idle_until = absl::InfinitePast();
    }
  }
}

}  // namespace volley::engine
