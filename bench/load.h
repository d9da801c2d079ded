// load.h - the pieces of volley-load that can be tested without a daemon
//
// SYNOPSIS
//   GenerateOptions o{.job_id = "j1", .recipients = 1000, .domains = 20};
//   ASSIGN_OR_RETURN(GenerateStats s, GenerateJob(o, [&](std::string_view b) {...}));
//
//   DeliveryTally tally("j1", 1000, drop);  // recipient lines 2..1001, dropped at `drop`
//   LogFollower follower(path, offset);     // offset = size of the log before the drop
//   RETURN_IF_ERROR(follower.Poll(&tally));
//   tally.with_outcome(), tally.counts(), tally.latency().Percentile(99)
//   tally.messages()                        // transactions that delivered: distinct txn
//
//   ASSIGN_OR_RETURN(AddressRange r, ParseAddressRange("127.0.1.1-127.0.1.250"));
//   RETURN_IF_ERROR(WriteRoutes({.domains = 100, .addresses = r}, sink));
//   RETURN_IF_ERROR(WriteZone({.domains = 100, .addresses = r}, sink));
//
//   std::string json = ReportJson(report);
//
// DESCRIPTION
//   GenerateJob writes a job file (JSON Lines: a header, then one recipient a line; see
//   docs/jobs.md) to a byte sink as it goes, so a million recipients never sit in
//   memory. Recipients spread over domains d0001.test, d0002.test, ... with a Zipf skew
//   (a few big domains, a long tail), every domain getting at least one recipient when
//   there are enough of them, in an order shuffled from the seed: the same options give
//   the same bytes.
//
//   DeliveryTally reads delivery-log records (JSON Lines, <log>/deliveries.jsonl) for
//   one job with the log's own reader (metrics::ParseDeliveryRecord) and keeps, per
//   recipient line, the latest status in log order. It takes
//   bytes in any chunking and keeps an unterminated last line until the rest arrives.
//   Given the drop time it also keeps a histogram of delivery latency (a delivered
//   record's `ts` minus the drop). LogFollower reads a growing log file from an offset
//   into a tally.
//
//   Recipients and messages are counted apart: a message shared by 100 recipients of
//   a domain is one SMTP transaction, 100 records. Each delivered record names its
//   transaction (`txn`, docs/delivery-log.md), and messages() is the number of
//   distinct names among the job's delivered records: the messages servers accepted,
//   counted, not inferred from the job's shape. A delivered record without a txn (a
//   log written by a volleyd older than the field) makes the count unknown (nullopt).
//
//   WriteRoutes and WriteZone route the generated domains to volley-sink listeners on
//   loopback: a TOML [routes] table for volleyd's config, or one nsd zone file for the
//   zone "test." (an MX and an A record per domain). Domain i gets address i of the
//   range, round robin. docs/volley-load.md shows both in use.
//
// LIMITS
//   Sink addresses: 127.0.0.0/8 only, at most kMaxSinkAddresses. Domains: at most
//   kMaxDomains. The latency histogram is a fixed LatencyHistogram::kBuckets counters (58 KiB)
//   whatever the number of recipients, with a relative error under 1/128. The tally keeps
//   two bytes per recipient and one txn name per message delivered (a hash-set entry of
//   about 60 bytes: 60 MB for a million personalised messages).
#ifndef VOLLEY_BENCH_LOAD_H_
#define VOLLEY_BENCH_LOAD_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "metrics/delivery_status.h"

namespace volley::load {

// Domains d0001.test .. d1000000.test at most: a routes table or zone of that many is
// tens of megabytes, as much as anyone would load into volleyd or nsd for a benchmark.
inline constexpr uint32_t kMaxDomains = 1'000'000;
// A /16 of loopback: more listeners than one volley-sink would want.
inline constexpr uint64_t kMaxSinkAddresses = 65536;
// A zone's $TTL at most (a week): a benchmark zone is regenerated, not cached for long.
inline constexpr uint32_t kMaxZoneTtl = 7 * 24 * 3600;

struct GenerateOptions {
  std::string job_id;
  uint64_t recipients = 0;
  uint32_t domains = 1;
  uint64_t size = 1024;  // about this many bytes of message (headers and body)
  bool personalised = false;
  std::string from = "bulk@sender.test";
  uint64_t seed = 1;
};

struct GenerateStats {
  uint64_t recipients = 0;
  uint64_t bytes = 0;                   // bytes written to the sink
  std::vector<uint64_t> domain_counts;  // recipients per domain, index 0 = d0001.test
};

// DomainName - "d0001.test" for index 0 (at least four digits).
std::string DomainName(uint32_t index);

// RecipientAddress - the address of recipient `index` (0-based) in domain `domain`.
std::string RecipientAddress(uint64_t index, uint32_t domain);

// DomainCounts - how many of `recipients` each of `domains` domains gets: proportional
// to 1/rank (Zipf, s = 1), at least one each while recipients last, summing to
// `recipients`, largest first.
std::vector<uint64_t> DomainCounts(uint64_t recipients, uint32_t domains);

// MessageTemplate - an RFC 5322 message (CRLF lines) of about `size` bytes; with
// `personalised` it uses {{first_name}}.
std::string MessageTemplate(const GenerateOptions& options);

// GenerateJob - write the job file to `sink` in chunks of up to about 64 KiB.
absl::StatusOr<GenerateStats> GenerateJob(
    const GenerateOptions& options,
    absl::FunctionRef<absl::Status(std::string_view)> sink);

// GenerateJobFile - GenerateJob into a new file at `path` (created exclusively,
// fsynced and closed before it returns).
absl::StatusOr<GenerateStats> GenerateJobFile(const GenerateOptions& options,
                                              const std::string& path);

// ParseTimestamp - "2026-11-28T13:45:01.123Z" (RFC 3339).
std::optional<absl::Time> ParseTimestamp(std::string_view text);

struct OutcomeCounts {
  uint64_t delivered = 0;
  uint64_t deferred = 0;
  uint64_t bounced = 0;
  uint64_t expired = 0;
  uint64_t other = 0;
};

// LatencyHistogram - durations in microseconds, in log-linear buckets: values below
// 2^kSubBucketBits us each have a bucket of their own; above, every power of two is cut
// into 2^kSubBucketBits equal buckets. So memory is fixed and a percentile is within
// 1/128 of the true value (it is reported as the top of its bucket, never above the
// largest value seen).
class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr size_t kSubBuckets = size_t{1} << kSubBucketBits;
  static constexpr size_t kBuckets = (64 - kSubBucketBits + 1) * kSubBuckets;

  LatencyHistogram() : counts_(kBuckets, 0) {}

  // Add - one sample; a negative duration (clocks a millisecond apart) counts as zero.
  void Add(absl::Duration d);
  uint64_t count() const { return count_; }
  // Percentile - the smallest bucket value at or below which `p` percent of the
  // samples lie (0 < p <= 100); zero when there are none.
  absl::Duration Percentile(double p) const;
  absl::Duration min() const { return absl::Microseconds(count_ == 0 ? 0 : min_us_); }
  absl::Duration max() const { return absl::Microseconds(max_us_); }
  absl::Duration mean() const;

  // BucketOf / BucketTop - the bucket of a value in microseconds, and the largest value
  // it holds (for tests and for Percentile).
  static size_t BucketOf(uint64_t us);
  static uint64_t BucketTop(size_t bucket);

 private:
  std::vector<uint64_t> counts_;  // kBuckets, allocated once
  uint64_t count_ = 0;
  uint64_t min_us_ = UINT64_MAX;
  uint64_t max_us_ = 0;
  long double sum_us_ = 0;
};

class DeliveryTally {
 public:
  // Recipient lines of the job are 2 .. recipients + 1. With `drop`, each recipient's
  // first `delivered` record adds its ts - drop to latency().
  DeliveryTally(std::string job_id, uint64_t recipients,
                std::optional<absl::Time> drop = std::nullopt);

  // Feed - take the next bytes of the log; complete lines are counted now, an
  // unterminated tail waits for the rest of its line.
  void Feed(std::string_view bytes);

  uint64_t recipients() const { return states_.size(); }
  uint64_t with_outcome() const { return with_outcome_; }
  uint64_t missing() const { return states_.size() - with_outcome_; }
  bool complete() const { return with_outcome_ == states_.size(); }
  // Counts by each recipient's latest status (recipients without one are not counted).
  OutcomeCounts counts() const;
  // latest - the status of line `line`'s latest record; nullopt when it has none yet
  // (or is not one of the job's recipient lines).
  std::optional<metrics::DeliveryStatus> latest(int64_t line) const;

  uint64_t records() const { return records_; }        // records of this job
  // messages - the SMTP transactions that delivered at least one of the job's
  // recipients: distinct txn among its delivered records (DESCRIPTION). nullopt
  // when a delivered record had no txn.
  std::optional<uint64_t> messages() const;
  // Lines that mention the job but are not a record (metrics::ParseDeliveryRecord).
  uint64_t malformed() const { return malformed_; }
  uint64_t out_of_range() const { return out_of_range_; }  // this job, bad `line`
  uint64_t pending_bytes() const { return partial_.size(); }
  // Time of the newest outcome record of this job (its `ts`), if any.
  std::optional<absl::Time> last_outcome() const { return last_outcome_; }
  const LatencyHistogram& latency() const { return latency_; }

 private:
  void Line(std::string_view text);

  std::string job_id_;
  std::vector<std::optional<metrics::DeliveryStatus>> states_;  // index: line - 2
  uint64_t with_outcome_ = 0;
  uint64_t records_ = 0;
  uint64_t malformed_ = 0;
  uint64_t out_of_range_ = 0;
  std::string partial_;
  std::optional<absl::Time> last_outcome_;
  std::optional<absl::Time> drop_;
  absl::flat_hash_set<std::string> delivered_txns_;
  uint64_t delivered_without_txn_ = 0;
  LatencyHistogram latency_;
};

class LogFollower {
 public:
  LogFollower(std::string path, uint64_t offset) : path_(std::move(path)), offset_(offset) {}

  // Poll - feed whatever was appended since the last call. A missing file is not an
  // error (nothing yet); a file shorter than the offset (replaced) is read from 0.
  absl::Status Poll(DeliveryTally* tally);
  uint64_t offset() const { return offset_; }

 private:
  std::string path_;
  uint64_t offset_;
  uint64_t inode_ = 0;
};

// FileSize - the size of `path`, 0 when it does not exist.
absl::StatusOr<uint64_t> FileSize(const std::string& path);

// ---- Routing the generated domains to volley-sink on loopback

// AddressRange - IPv4 addresses first..last (host byte order), all in 127.0.0.0/8.
struct AddressRange {
  uint32_t first = 0;
  uint32_t last = 0;
  uint64_t size() const { return uint64_t{last} - first + 1; }
  // At - the address of domain index i: round robin over the range.
  uint32_t At(uint64_t i) const { return first + static_cast<uint32_t>(i % size()); }
};

// ParseAddressRange - "127.0.1.1-127.0.1.250" or one address "127.0.0.1". Refuses
// anything outside 127.0.0.0/8, the network and broadcast addresses of 127.0.0.0/8, a
// range that runs backwards and one of more than kMaxSinkAddresses addresses; the error
// names the text and what is wrong with it.
absl::StatusOr<AddressRange> ParseAddressRange(std::string_view text);

// FormatAddress - dotted quad of a host-order IPv4 address.
std::string FormatAddress(uint32_t address);

struct RoutingOptions {
  uint32_t domains = 1;        // d0001.test .. (DomainName)
  AddressRange addresses;      // round robin
  uint32_t port = 2525;        // WriteRoutes: the sink's port, 1..65535
  uint32_t ttl = 3600;         // WriteZone: $TTL of every record, seconds
  uint32_t serial = 1;         // WriteZone: SOA serial
};

// WriteRoutes - a TOML [routes] table, one `"dNNNN.test" = "ADDRESS:PORT"` line a
// domain, written to `sink` in chunks of up to about 64 KiB.
absl::Status WriteRoutes(const RoutingOptions& options,
                         absl::FunctionRef<absl::Status(std::string_view)> sink);

// WriteZone - an nsd (RFC 1035 master file) zone for "test.": SOA and NS, then per
// domain `dNNNN MX 10 mx.dNNNN` and `mx.dNNNN A ADDRESS`.
absl::Status WriteZone(const RoutingOptions& options,
                       absl::FunctionRef<absl::Status(std::string_view)> sink);

// ---- volleyd's cost, from /proc

// ParseProcStatCpuTicks - utime + stime (fields 14 and 15) of a /proc/PID/stat text, in
// clock ticks; the command name in parentheses may hold spaces and parentheses.
absl::StatusOr<uint64_t> ParseProcStatCpuTicks(std::string_view stat);

// ParseProcStatusKb - the kB value of `field` ("VmHWM", "VmRSS") in a /proc/PID/status.
absl::StatusOr<uint64_t> ParseProcStatusKb(std::string_view status, std::string_view field);

// ReadCpuSeconds / ReadPeakRssKb - the same for a live process.
absl::StatusOr<double> ReadCpuSeconds(pid_t pid);
absl::StatusOr<uint64_t> ReadPeakRssKb(pid_t pid);

// ---- The report of a run

struct Report {
  std::string job;
  uint64_t recipients = 0;
  uint64_t domains = 0;
  uint64_t size = 0;           // --size
  uint64_t message_bytes = 0;  // the generated message (template) size
  uint64_t with_outcome = 0;
  uint64_t missing = 0;
  OutcomeCounts counts;
  // Messages (SMTP transactions) that delivered: DeliveryTally::messages().
  std::optional<uint64_t> messages;
  uint64_t records = 0;
  uint64_t malformed_log_lines = 0;
  double generate_seconds = 0;
  double elapsed_seconds = 0;  // drop to the last outcome
  bool timed_out = false;
  std::string refused;  // the spool's .error text when the job was refused
  // Delivery latency; samples 0 means none (the percentiles are then null).
  uint64_t latency_samples = 0;
  double latency_p50_seconds = 0;
  double latency_p99_seconds = 0;
  double latency_max_seconds = 0;
  double latency_mean_seconds = 0;
  // With --volleyd-pid: CPU seconds from the drop to the end, and VmHWM at the end.
  std::optional<int64_t> volleyd_pid;
  std::optional<double> volleyd_cpu_seconds;
  std::optional<uint64_t> volleyd_peak_rss_kb;

  // Recipients delivered a second (the JSON's recipients_per_second, and its older
  // messages_per_second, which counted recipients under that name).
  double RecipientsPerSecond() const;
  // Messages (transactions) delivered a second; nullopt when `messages` is.
  std::optional<double> MessagesPerSecond() const;
  double MegabytesPerSecond() const;  // delivered x message_bytes / 10^6 a second
  std::optional<double> CpuSecondsPer10k() const;  // needs CPU seconds and deliveries
};

// FillLatency - the latency fields of `report` from a histogram.
void FillLatency(const LatencyHistogram& latency, Report* report);

// ReportJson - the whole report as one JSON object and a newline; keys in
// docs/volley-load.md, null for what was not measured.
std::string ReportJson(const Report& report);

// ReportText - the report for people, several lines.
std::string ReportText(const Report& report);

// ProgressLine - one status line for a terminal (no newline): a bar of the recipients
// with an outcome, delivered, the delivery rate and the time left at the current pace.
std::string ProgressLine(uint64_t with_outcome, uint64_t recipients, uint64_t delivered,
                         absl::Duration elapsed);

}  // namespace volley::load

#endif  // VOLLEY_BENCH_LOAD_H_
