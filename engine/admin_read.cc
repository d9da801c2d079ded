// admin_read.cc - the admin API's read side: a job's rate, ETA and refusal,
// every destination, the queue summary (see admin.h, job_rates.h,
// queue_summary.h)
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "base/strings.h"
#include "engine/admin.h"
#include "engine/queue_summary.h"
#include "simdjson.h"

namespace volley::engine {
namespace {

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// HeaderTime - the job header's `field` (RFC 3339), or nullopt when absent or
// unreadable (intake checked it; a header that cannot be read here shows null).
std::optional<absl::Time> HeaderTime(std::string_view header_json, std::string_view field) {
  simdjson::ondemand::parser parser;
  const simdjson::padded_string padded(header_json.data(), header_json.size());
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS) return std::nullopt;
  std::string_view text;
  if (doc.find_field_unordered(field).get_string().get(text) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, base::Sv(text), &t, &err)) return std::nullopt;
  return t;
}

void AppendOptionalTime(std::string* out, const std::optional<absl::Time>& t) {
  if (t) {
    base::AppendJsonString(out, Rfc3339(*t));
  } else {
    *out += "null";
  }
}

// RefusedName - whether `name` in failed/ is job `id`'s file: "ID", "ID.job"
// or "ID.jsonl", with or without the ".N" FailedFileName adds.
bool RefusedName(std::string_view name, std::string_view id) {
  if (!absl::StartsWith(base::Sv(name), base::Sv(id))) return false;
  std::string_view rest = name.substr(id.size());
  for (std::string_view ext : {".job", ".jsonl"}) {
    if (absl::StartsWith(base::Sv(rest), base::Sv(ext))) {
      rest.remove_prefix(ext.size());
      break;
    }
  }
  if (rest.empty()) return true;
  if (rest.front() != '.' || rest.size() == 1) return false;
  return std::all_of(rest.begin() + 1, rest.end(), [](char c) { return absl::ascii_isdigit(c); });
}

}  // namespace

std::string AdminJobJson(const queue::JobRecord& job, const queue::JobProgress& progress,
                         const AdminJobReading& reading) {
  std::string out = AdminJobJson(job, progress);
  // A ready job whose send_after is still ahead is waiting for it: said so,
  // rather than "ready" for an hour of nothing.
  const std::optional<absl::Time> send_after = HeaderTime(job.header_json, "send_after");
  if (job.state == queue::JobState::kReady && send_after && *send_after > reading.now) {
    const std::string ready = "\"state\":\"ready\"";
    if (const size_t at = out.find(ready); at != std::string::npos) {
      out.replace(at, ready.size(), "\"state\":\"scheduled\"");
    }
  }
  out.pop_back();  // the closing brace: fields are only ever added at the end
  out += ",\"rate\":";
  if (reading.rate) {
    absl::StrAppend(&out, absl::StrFormat("%.3f", *reading.rate));
  } else {
    out += "null";
  }
  const std::optional<absl::Duration> eta = JobEta(progress.pending(), reading.rate);
  out += ",\"eta_seconds\":";
  if (eta) {
    absl::StrAppend(&out, absl::ToInt64Seconds(*eta));
  } else {
    out += "null";
  }
  out += ",\"eta\":";
  AppendOptionalTime(&out, eta ? std::optional<absl::Time>(reading.now + *eta) : std::nullopt);
  out += ",\"rejected\":";
  if (reading.rejected) {
    absl::StrAppend(&out, *reading.rejected);
  } else {
    out += "null";
  }
  out += ",\"send_after\":";
  AppendOptionalTime(&out, send_after);
  out += ",\"expires\":";
  AppendOptionalTime(&out, HeaderTime(job.header_json, "expires"));
  out += "}";
  return out;
}

std::string AdminRefusedJobJson(std::string_view id, std::string_view file,
                                std::string_view error) {
  std::string out = "{\"id\":";
  base::AppendJsonString(&out, id);
  out += ",\"state\":\"refused\",\"file\":";
  base::AppendJsonString(&out, absl::StrCat("failed/", base::Sv(file)));
  out += ",\"error\":";
  std::string_view text = error.substr(0, kAdminMaxRefusalText);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  base::AppendJsonString(&out, text);
  out += "}";
  return out;
}

std::string DestinationStates::AllJson(size_t limit, bool only_busy) const {
  std::vector<const DestinationEntry*> chosen;
  std::lock_guard<std::mutex> lock(mu_);
  size_t total = 0;
  for (const auto& shard : all_) {
    for (const DestinationEntry& e : shard) {
      ++total;
      if (only_busy && e.queued == 0 && !e.troubled) continue;
      chosen.push_back(&e);
    }
  }
  // Busiest first; the troubled before the quiet at equal counts.
  std::stable_sort(chosen.begin(), chosen.end(),
                   [](const DestinationEntry* a, const DestinationEntry* b) {
                     if (a->queued != b->queued) return a->queued > b->queued;
                     return a->troubled && !b->troubled;
                   });
  const bool truncated = chosen.size() > limit;
  if (truncated) chosen.resize(limit);
  std::string json = "{\"destinations\":[";
  for (size_t i = 0; i < chosen.size(); ++i) {
    if (i > 0) json += ",";
    json += chosen[i]->json;
  }
  absl::StrAppend(&json, "],\"total\":", total, ",\"truncated\":", truncated ? "true" : "false",
                  "}\n");
  return json;
}

void DestinationStates::Attach(size_t shard) {
  std::lock_guard<std::mutex> lock(mu_);
  attached_[shard] = true;
}

void DestinationStates::Detach(size_t shard) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    attached_[shard] = false;
  }
  answered_cv_.notify_all();
}

void DestinationStates::Answered(size_t shard, uint64_t ticket) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    answered_[shard] = std::max(answered_[shard], ticket);
  }
  answered_cv_.notify_all();
}

bool DestinationStates::Refresh(absl::Duration wait) {
  const uint64_t ticket = asked_.fetch_add(1, std::memory_order_acq_rel) + 1;
  std::unique_lock<std::mutex> lock(mu_);
  return answered_cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [&] {
    for (size_t i = 0; i < answered_.size(); ++i) {
      if (attached_[i] && answered_[i] < ticket) return false;
    }
    return true;
  });
}

uint64_t DestinationStates::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t n = 0;
  for (const auto& shard : all_) {
    for (const DestinationEntry& e : shard) n += e.in_flight;
  }
  return n;
}

std::optional<uint64_t> AdminServer::RejectedOf(const queue::JobRecord& job) {
  if (spool_dir_.empty() || job.state == queue::JobState::kLoading) return std::nullopt;
  {
    std::lock_guard<std::mutex> lock(rejected_mu_);
    if (auto it = rejected_.find(job.job_no); it != rejected_.end()) return it->second;
  }
  // One line per rejected recipient line; no file: none rejected. Counted
  // once, streaming: the file does not change after the job is accepted.
  const std::string path = absl::StrCat(spool_dir_, "/failed/", job.id, ".rejects.jsonl");
  uint64_t lines = 0;
  if (FILE* f = std::fopen(path.c_str(), "re")) {
    char buf[64 << 10];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      lines += static_cast<uint64_t>(std::count(buf, buf + n, '\n'));
    }
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) return std::nullopt;
  } else if (errno != ENOENT) {
    return std::nullopt;
  }
  std::lock_guard<std::mutex> lock(rejected_mu_);
  if (rejected_.size() >= kJobRateMaxJobs) rejected_.clear();
  rejected_[job.job_no] = lines;
  return lines;
}

AdminJobReading AdminServer::ReadingOf(const queue::JobRecord& job,
                                       const queue::JobProgress& progress) {
  AdminJobReading r;
  r.now = absl::Now();
  rates_.Record(job.job_no, r.now, progress);
  r.rate = rates_.Rate(job.job_no);
  r.rejected = RejectedOf(job);
  return r;
}

absl::StatusOr<std::string> AdminServer::RefusedJobJson(std::string_view id) {
  const std::string not_found = absl::StrCat("no such job: ", base::Sv(id));
  if (spool_dir_.empty()) return absl::NotFoundError(not_found);
  const std::string failed = spool_dir_ + "/failed";
  DIR* dir = opendir(failed.c_str());
  if (dir == nullptr) return absl::NotFoundError(not_found);
  std::string best;
  struct timespec best_time {};
  size_t seen = 0;
  while (const dirent* e = readdir(dir)) {
    if (++seen > kAdminMaxFailedScan) break;
    const std::string_view name = e->d_name;
    if (!RefusedName(name, id)) continue;
    struct stat st;
    if (stat(absl::StrCat(failed, "/", base::Sv(name), ".error").c_str(), &st) != 0) continue;
    // The newest refusal, when the same job was dropped and refused again.
    if (best.empty() || st.st_mtim.tv_sec > best_time.tv_sec ||
        (st.st_mtim.tv_sec == best_time.tv_sec && st.st_mtim.tv_nsec > best_time.tv_nsec)) {
      best = std::string(name);
      best_time = st.st_mtim;
    }
  }
  closedir(dir);
  if (best.empty()) return absl::NotFoundError(not_found);
  std::string error(kAdminMaxRefusalText, '\0');
  std::ifstream in(absl::StrCat(failed, "/", best, ".error"), std::ios::binary);
  in.read(error.data(), static_cast<std::streamsize>(error.size()));
  error.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  return AdminRefusedJobJson(id, best, error);
}

http::Response AdminServer::HandleQueueSummary(const AdminRequest& req) {
  auto answer = [](int status, std::string body) {
    return http::Response{status, "application/json", std::move(body), {}};
  };
  auto error = [&](const absl::Status& st) {
    std::string body = "{\"error\":";
    base::AppendJsonString(&body, base::StdSv(st.message()));
    body += "}\n";
    return answer(AdminHttpStatus(st), std::move(body));
  };
  QueueSummaryFilter filter;
  if (auto d = req.Param("domain")) filter.domain = std::string(*d);
  if (auto j = req.Param("job")) {
    if (!IsAdminJobId(*j)) {
      return error(absl::InvalidArgumentError(
          absl::StrCat("job: must match [A-Za-z0-9._-]{1,", kAdminMaxJobId, "}")));
    }
    filter.job = std::string(*j);
  }
  if (filter.domain.size() > 255) {
    return error(absl::InvalidArgumentError("domain: longer than 255 octets"));
  }
  std::lock_guard<std::mutex> one_at_a_time(summary_mu_);
  absl::StatusOr<std::vector<queue::JobRecord>> jobs = queue_->ListJobs();
  if (!jobs.ok()) return error(jobs.status());
  if (!filter.job.empty() &&
      std::none_of(jobs->begin(), jobs->end(),
                   [&](const queue::JobRecord& j) { return j.id == filter.job; })) {
    return error(absl::NotFoundError(absl::StrCat("no such job: ", filter.job)));
  }
  const absl::Time now = absl::Now();
  absl::StatusOr<QueueSummary> s = SummarizeQueue(*queue_, *jobs, filter, now);
  if (!s.ok()) return error(s.status());
  // In flight is per destination, not per job: given for the whole queue only.
  std::optional<uint64_t> in_flight;
  if (destinations_ != nullptr && filter.job.empty() && filter.domain.empty()) {
    destinations_->Refresh(kAdminDestinationsWait);
    in_flight = destinations_->InFlight();
  }
  return answer(200, QueueSummaryJson(*s, in_flight, now));
}

void AdminServer::SampleJobs() {
  // XXX(memory): as GET /jobs, ListJobs copies each job's header; fine for
  // the tens of jobs a queue holds.
  absl::StatusOr<std::vector<queue::JobRecord>> jobs = queue_->ListJobs();
  if (!jobs.ok()) return;  // the next sample tries again; GET /jobs reports it
  for (const queue::JobRecord& job : *jobs) {
    if (job.state != queue::JobState::kReady && job.state != queue::JobState::kCancelled) continue;
    absl::StatusOr<queue::JobProgress> progress = queue_->ReadProgress(job.job_no);
    if (progress.ok()) rates_.Record(job.job_no, absl::Now(), *progress);
  }
}

}  // namespace volley::engine
