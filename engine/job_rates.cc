// job_rates.cc - rate, ETA and age classes (see job_rates.h)
#include "engine/job_rates.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace volley::engine {

uint64_t Finished(const queue::JobProgress& p) {
  return p.delivered + p.bounced + p.expired + p.cancelled + p.suppressed;
}

void JobRates::Record(uint32_t job_no, absl::Time at, const queue::JobProgress& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_no);
  if (it == jobs_.end()) {
    if (jobs_.size() >= kJobRateMaxJobs) {
      // Forget the job sampled least recently: a finished one stops being
      // sampled, so it is the one that goes.
      auto stalest = jobs_.begin();
      for (auto j = jobs_.begin(); j != jobs_.end(); ++j) {
        if (j->second.samples.back().at < stalest->second.samples.back().at) stalest = j;
      }
      jobs_.erase(stalest);
    }
    it = jobs_.emplace(job_no, Job{}).first;
  }
  std::deque<Sample>& samples = it->second.samples;
  if (!samples.empty() && at - samples.back().at < absl::Seconds(1)) return;
  samples.push_back(Sample{at, Finished(progress)});
  // Keep one sample at or before the window's start, so that the span is the
  // whole window once the job has run that long.
  while (samples.size() > 2 && at - samples[1].at >= kJobRateWindow) samples.pop_front();
  while (samples.size() > kJobRateSamples) samples.pop_front();
}

std::optional<double> JobRates::Rate(uint32_t job_no) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_no);
  if (it == jobs_.end() || it->second.samples.size() < 2) return std::nullopt;
  const Sample& first = it->second.samples.front();
  const Sample& last = it->second.samples.back();
  const absl::Duration span = last.at - first.at;
  if (span < kJobRateMinSpan) return std::nullopt;
  // Counters only grow; a smaller one would be a job number reused after the
  // queue was wiped: no rate rather than a negative one.
  if (last.finished < first.finished) return std::nullopt;
  return static_cast<double>(last.finished - first.finished) / absl::ToDoubleSeconds(span);
}

size_t JobRates::jobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

std::optional<absl::Duration> JobEta(uint64_t pending, std::optional<double> rate) {
  if (pending == 0) return absl::ZeroDuration();
  if (!rate || !(*rate > 0) || !std::isfinite(*rate)) return std::nullopt;
  const double seconds = static_cast<double>(pending) / *rate;
  // Beyond a year is "unknown" in any sense an operator cares about, and keeps
  // the conversion below far from overflow.
  if (seconds > 365.0 * 86400) return std::nullopt;
  return absl::Seconds(std::ceil(seconds));
}

std::string FormatAge(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) {
    const int64_t m = (s % 3600) / 60;
    return m == 0 ? absl::StrCat(s / 3600, "h") : absl::StrCat(s / 3600, "h", m, "m");
  }
  const int64_t h = (s % 86400) / 3600;
  return h == 0 ? absl::StrCat(s / 86400, "d") : absl::StrCat(s / 86400, "d", h, "h");
}

std::string_view QueueAgeBucketName(size_t bucket) {
  static constexpr std::array<std::string_view, kQueueAgeBuckets> kNames = {
      "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+"};
  return bucket < kNames.size() ? kNames[bucket] : std::string_view("160m+");
}

size_t QueueAgeBucket(absl::Duration age) {
  for (size_t i = 0; i < kQueueAgeBoundsMinutes.size(); ++i) {
    if (age < absl::Minutes(kQueueAgeBoundsMinutes[i])) return i;
  }
  return kQueueAgeBoundsMinutes.size();
}

}  // namespace volley::engine
