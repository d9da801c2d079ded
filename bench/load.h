// load.h - the pieces of volley-load that can be tested without a daemon
//
// SYNOPSIS
//   GenerateOptions o{.job_id = "j1", .recipients = 1000, .domains = 20};
//   ASSIGN_OR_RETURN(GenerateStats s, GenerateJob(o, [&](std::string_view b) {...}));
//
//   DeliveryTally tally("j1", 1000);     // recipient lines 2..1001
//   LogFollower follower(path, offset);  // offset = size of the log before the drop
//   RETURN_IF_ERROR(follower.Poll(&tally));
//   tally.with_outcome(), tally.counts()
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
//   one job and keeps, per recipient line, the latest status in log order. It takes
//   bytes in any chunking and keeps an unterminated last line until the rest arrives.
//   LogFollower reads a growing log file from an offset into a tally.
#ifndef VOLLEY_BENCH_LOAD_H_
#define VOLLEY_BENCH_LOAD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::load {

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

enum class Outcome : uint8_t {
  kNone = 0,
  kDelivered,
  kDeferred,
  kBounced,
  kExpired,
  kOther,  // cancelled, suppressed, anything newer
};

std::string_view OutcomeName(Outcome outcome);
Outcome ParseOutcome(std::string_view status);

// One delivery-log record, the fields volley-load needs.
struct LogRecord {
  std::string job;
  std::optional<int64_t> line;
  std::string rcpt;
  std::string status;
  std::optional<absl::Time> ts;
};

// ParseLogRecord - parse one delivery-log line (without its newline).
absl::StatusOr<LogRecord> ParseLogRecord(std::string_view text);

// ParseTimestamp - "2026-11-28T13:45:01.123Z" (RFC 3339).
std::optional<absl::Time> ParseTimestamp(std::string_view text);

struct OutcomeCounts {
  uint64_t delivered = 0;
  uint64_t deferred = 0;
  uint64_t bounced = 0;
  uint64_t expired = 0;
  uint64_t other = 0;
};

class DeliveryTally {
 public:
  // Recipient lines of the job are 2 .. recipients + 1.
  DeliveryTally(std::string job_id, uint64_t recipients);

  // Feed - take the next bytes of the log; complete lines are counted now, an
  // unterminated tail waits for the rest of its line.
  void Feed(std::string_view bytes);

  uint64_t recipients() const { return states_.size(); }
  uint64_t with_outcome() const { return with_outcome_; }
  uint64_t missing() const { return states_.size() - with_outcome_; }
  bool complete() const { return with_outcome_ == states_.size(); }
  // Counts by each recipient's latest status (recipients without one are not counted).
  OutcomeCounts counts() const;
  Outcome latest(int64_t line) const;

  uint64_t records() const { return records_; }        // records of this job
  uint64_t malformed() const { return malformed_; }    // lines that did not parse
  uint64_t out_of_range() const { return out_of_range_; }  // this job, bad `line`
  uint64_t pending_bytes() const { return partial_.size(); }
  // Time of the newest outcome record of this job (its `ts`), if any had one.
  std::optional<absl::Time> last_outcome() const { return last_outcome_; }

 private:
  void Line(std::string_view text);

  std::string job_id_;
  std::vector<Outcome> states_;
  uint64_t with_outcome_ = 0;
  uint64_t records_ = 0;
  uint64_t malformed_ = 0;
  uint64_t out_of_range_ = 0;
  std::string partial_;
  std::optional<absl::Time> last_outcome_;
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

}  // namespace volley::load

#endif  // VOLLEY_BENCH_LOAD_H_
