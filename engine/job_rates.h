// job_rates.h - how fast each job is going: rate and ETA from sampled progress counters
//
// SYNOPSIS
//   JobRates rates;
//   rates.Record(job.job_no, absl::Now(), progress);   // every kJobRateInterval, and on reads
//   std::optional<double> rate = rates.Rate(job.job_no);            // recipients/s
//   std::optional<absl::Duration> eta = JobEta(progress.pending(), rate);
//
//   std::string age = FormatAge(absl::Minutes(95));                  // "1h35m"
//   int bucket = QueueAgeBucket(absl::Minutes(12));                  // 2 ("10-20m")
//
// DESCRIPTION
//   A job's progress counters (queue::JobProgress) only ever grow; the number
//   of recipients finished (delivered, bounced, expired, cancelled, suppressed)
//   sampled now and a minute ago gives the rate over that minute, and the
//   recipients still pending divided by that rate an estimate of the time left.
//   The admin API (engine/admin.h) records a sample for every job every
//   kJobRateInterval, on its own thread, and whenever a job is read, so the
//   rate exists even when nobody asked before.
//
//   The rate is unknown (nullopt) until two samples kJobRateMinSpan apart
//   exist: a job just taken in has no rate yet, rather than a wild one. The
//   ETA is zero when nothing is pending, unknown when the rate is unknown or
//   zero (a stalled job has no finish time to promise).
//
//   QueueAgeBucket and kQueueAgeBuckets are the age classes GET /queue counts
//   in, Postfix qshape's doubling ones.
//
// BOUNDS
//   kJobRateSamples samples per job (the oldest dropped), kJobRateMaxJobs jobs
//   (the one sampled least recently forgotten first: a job that is done stops
//   being sampled and so goes first).
//
// CONTRACT
//   JobRates is thread-safe (one mutex; every call is a few dozen operations).
//   The rest is pure.
//
// DIAGNOSTICS
//   None: an unknown rate or ETA is nullopt, shown as null in JSON and "-" by
//   volleyctl.
#ifndef VOLLEY_ENGINE_JOB_RATES_H_
#define VOLLEY_ENGINE_JOB_RATES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/time/time.h"
#include "queue/queue.h"

namespace volley::engine {

// How often the admin API samples every job's progress. Default: 5 s.
inline constexpr absl::Duration kJobRateInterval = absl::Seconds(5);
// The span the rate is measured over: samples older than this (but one) are
// dropped. Default: 60 s.
inline constexpr absl::Duration kJobRateWindow = absl::Seconds(60);
// The shortest span a rate is given for. Default: 4 s.
inline constexpr absl::Duration kJobRateMinSpan = absl::Seconds(4);
// Samples kept per job: kJobRateWindow / kJobRateInterval plus room for the
// samples reads add (one a second at most). Default: 64.
inline constexpr size_t kJobRateSamples = 64;
// Jobs followed at once. Default: 4096.
inline constexpr size_t kJobRateMaxJobs = 4096;

// Finished - recipients of the job that left the queue for good.
uint64_t Finished(const queue::JobProgress& progress);

class JobRates {
 public:
  // Record - the job's counters at `at`. A sample less than a second after
  // the last one of the same job replaces nothing and is dropped.
  void Record(uint32_t job_no, absl::Time at, const queue::JobProgress& progress);
  // Rate - recipients finished per second over the last kJobRateWindow (or
  // what is sampled of it), or nullopt (DESCRIPTION).
  std::optional<double> Rate(uint32_t job_no) const;
  size_t jobs() const;

 private:
  struct Sample {
    absl::Time at;
    uint64_t finished = 0;
  };
  struct Job {
    std::deque<Sample> samples;
  };
  mutable std::mutex mu_;
  std::unordered_map<uint32_t, Job> jobs_;
};

// JobEta - the time left for `pending` recipients at `rate` (DESCRIPTION).
std::optional<absl::Duration> JobEta(uint64_t pending, std::optional<double> rate);

// FormatAge - a duration as an operator reads it: "45s", "12m", "1h35m",
// "3d4h"; negative durations as "0s".
std::string FormatAge(absl::Duration d);

// The age classes of GET /queue (qshape's): upper bounds in minutes, the last
// class open-ended.
inline constexpr std::array<int, 6> kQueueAgeBoundsMinutes = {5, 10, 20, 40, 80, 160};
inline constexpr size_t kQueueAgeBuckets = kQueueAgeBoundsMinutes.size() + 1;
// QueueAgeBucketName - "0-5m", "5-10m", ... "160m+".
std::string_view QueueAgeBucketName(size_t bucket);
// QueueAgeBucket - the class of `age` (negative counts as 0).
size_t QueueAgeBucket(absl::Duration age);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_JOB_RATES_H_
