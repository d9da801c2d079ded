// queue.h - the durable recipient queue on RocksDB
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(auto q, Queue::Open("var/queue", QueueOptions{}));
//   intake:    BeginJob -> IntakeWriter::Add... -> IntakeWriter::Commit
//   delivery:  TakeDue -> (send) -> OutcomeBatch{Remove, Reschedule} -> Apply
//
// DESCRIPTION
//   A job's header (and so its message template) is stored once; each recipient
//   is one key in the "recipients" column family:
//
//       job_no (4, BE) | partition (2, BE) | due time in microseconds (8, BE) | line (4, BE)
//
//   so one job's due recipients of one partition are one ordered scan, and a
//   retry is a delete plus a put at the new due time. The partition is chosen at
//   intake from the recipient's destination (PartitionOf); each shard of the
//   engine scans only the partitions it owns, so a destination's recipients, its
//   limits and its connections all live on one shard. A job's keys stay one
//   contiguous range (MarkJobDone drops it with one range delete). Scanning per job (not one
//   global due-time order) is what lets the scheduler share the line fairly
//   between a large job and a small one, and keeps a job that is still being
//   taken in (state kLoading) out of every scan. queue/README.md has the schema.
//
//   Intake is idempotent: every recipient of a job gets the same due time (the
//   job's first_due, stored in its record), so taking the same file in again
//   after a crash rewrites the same keys and never adds a second copy.
//
// DURABILITY
//   Every write goes through RocksDB's write-ahead log. A write with sync=false
//   survives a crash of volleyd (kill -9) but may be lost on power failure; with
//   sync=true it is on disk (fdatasync) before the call returns.
//   IntakeWriter::Commit syncs: once it returns, the file may move to accepted/
//   and no accepted recipient can be lost. Outcomes are not synced by default:
//   losing one on power failure means a retry (a possible duplicate), never a loss.
//
// ERRORS
//   Every failed write refuses the whole write: a RocksDB write batch is applied
//   whole or not at all, so the caller retries the same batch (the committer,
//   engine/committer.h) or the same job file (intake). Errors come back as:
//   DataLoss for corruption, never retried; ResourceExhausted for a full disk
//   or a write RocksDB holds back; Unavailable for the rest (no descriptor left,
//   EIO), which clears too. A failed file open, write or sync other than a full
//   disk (EMFILE, ENFILE, EIO, ...) is handed to RocksDB marked "retryable": it
//   then holds writes (a hard error, not a fatal one) and tries to resume by
//   itself every kResumeRetryInterval; RocksDB 7.8 treats the same error
//   unmarked as fatal, which no DB::Resume clears (a failed new write-ahead log
//   after EMFILE, issue 16). A full disk keeps RocksDB's own handling: its
//   SstFileManager polls for room. queue/README.md, "Write errors", has the
//   details and the limits.
//
// CONTRACT
//   Thread-safe as RocksDB is; BeginJob is called from one thread (intake) only,
//   because it allocates job numbers by read-modify-write.
#ifndef VOLLEY_QUEUE_QUEUE_H_
#define VOLLEY_QUEUE_QUEUE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::queue {

struct QueueOptions {
  // fdatasync the WAL when a job's intake commits. Turning it off makes a power
  // failure able to lose a job whose file already moved to accepted/.
  // Default: true.
  bool sync_intake_commit = true;

  // fdatasync the WAL for every batch of outcomes. Off, a power failure may
  // forget recent outcomes, and those recipients are sent again.
  // Default: false.
  bool sync_outcomes = false;

  // Recipients written per RocksDB batch during intake. Bounds intake memory.
  // Default: 10000.
  size_t intake_batch = 10000;

  // RocksDB block cache. Default: 64 MiB.
  size_t block_cache_bytes = 64u << 20;

  // Memory for RocksDB's write buffers (memtables), all column families
  // together: with the block cache, what bounds volleyd's memory however many
  // recipients are queued. Default: 32 MiB.
  size_t write_buffer_bytes = 32u << 20;

  // Write-ahead log kept before RocksDB flushes the column families holding it
  // back (the small metadata family would otherwise pin every log file), so the
  // log, and the replay after a restart, stay this small. Default: 128 MiB.
  size_t max_wal_bytes = 128u << 20;

  // Table (SST) files RocksDB keeps open at once, each a file descriptor; past
  // it the least recently used one is closed before another is opened. RocksDB's
  // own default (-1) keeps every table file open as long as it exists, a number
  // that grows with the queue and that no descriptor budget can count (issue
  // 16). Besides these RocksDB holds a few descriptors of its own (the
  // write-ahead log, MANIFEST, LOCK, its LOG) and one more for each file it is
  // writing (a new log, a flush's or a compaction's output). RocksDB raises a
  // value under 20 to 20 (it keeps 10 of them for its own files); Open refuses 0
  // or less. Default: 256 ([queue] max_open_files).
  int max_open_files = 256;
};

// A job's life: kLoading while intake writes it, kReady while it has recipients
// to send, kDone when none is left. kCancelled is a cancelled job's kReady: its
// remaining recipients are being taken out (each logged as cancelled); it stays
// kCancelled after that, so the record says how it ended.
enum class JobState : uint8_t { kLoading = 1, kReady = 2, kDone = 3, kCancelled = 4 };

// JobStateName - "loading", "ready", "done", "cancelled".
std::string_view JobStateName(JobState state);

// How a recipient left the queue (OutcomeBatch::Remove).
// kSuppressed: on the suppression list when its turn came (never sent).
enum class Final : uint8_t { kDelivered, kBounced, kExpired, kCancelled, kSuppressed };

// Counted - feedback events a job's progress counts (OutcomeBatch::Count).
enum class Counted : uint8_t { kBouncedAsync, kComplained, kUnsubscribed };

// JobProgress - a job's counters, kept in the queue and changed in the same
// atomic write as the outcomes they count: they cannot drift from the queue
// after a crash, and reading them is one key lookup however large the job.
struct JobProgress {
  uint64_t total = 0;      // recipients accepted at intake
  uint64_t delivered = 0;
  uint64_t bounced = 0;
  uint64_t expired = 0;
  uint64_t cancelled = 0;
  // Not sent because the suppression list named them: at intake (counted in
  // total too, never queued) or when their turn came.
  uint64_t suppressed = 0;
  // Feedback that came back later (docs/feedback.md); not outcomes: a delivered
  // recipient that bounces later stays counted as delivered too.
  uint64_t bounced_async = 0;
  uint64_t complained = 0;
  uint64_t unsubscribed = 0;
  // Recipients still queued that have been deferred at least once (waiting for
  // a retry, or being retried now).
  uint64_t deferred = 0;
  // Deferral replies so far, every attempt counted.
  uint64_t deferrals = 0;
  // Still queued: not yet delivered, bounced, expired or cancelled.
  uint64_t pending() const {
    const uint64_t done = delivered + bounced + expired + cancelled + suppressed;
    return total > done ? total - done : 0;
  }
};

struct JobRecord {
  std::string id;
  uint32_t job_no = 0;
  JobState state = JobState::kLoading;
  absl::Time queued_at;      // when intake began: the start of max_age
  absl::Time first_due;      // due time of every recipient at intake
  uint64_t recipients = 0;   // set at commit
  std::string header_json;   // line 1 of the job file, as accepted
  // Which file the job came from ("dev:inode"): a file still in incoming/ after a
  // crash between commit and the move to accepted/ is recognised as this job's
  // own file, not as a second drop of the same job id.
  std::string source;
  // Paused: kept in the queue, nothing of it is sent until it is resumed.
  bool paused = false;
};

// The size of every recipient key (job_no 4, partition 2, due 8, line 4).
inline constexpr size_t kRecipientKeyBytes = 4 + 2 + 8 + 4;

// Partitions of the recipient keys. Fixed: it is part of the stored keys. A
// shard owns the partitions p with p % shards == its index, so up to kPartitions
// shards can share the work.
inline constexpr uint16_t kPartitions = 64;

// After a retryable write error (ERRORS above) RocksDB tries to resume writes by
// itself this often, for as long as it takes; Queue::Recover asks at once.
inline constexpr absl::Duration kResumeRetryInterval = absl::Seconds(1);

// PartitionOf - `name` (a destination: a domain, or a route's name) hashed into
// 0..kPartitions-1 with FNV-1a: the same in every build and on every machine,
// since it is stored in keys.
uint16_t PartitionOf(std::string_view name);

// The longest reply, and class, a deferred recipient keeps from its last
// attempt (QueuedRecipient::last_reply): what its `expired` record names when
// it expires without another try. Longer ones are cut (at a UTF-8 boundary).
inline constexpr size_t kMaxLastReplyBytes = 512;
inline constexpr size_t kMaxLastClassBytes = 64;

struct QueuedRecipient {
  std::string key;
  uint32_t job_no = 0;
  uint16_t partition = 0;
  uint32_t line = 0;
  absl::Time due;
  uint32_t attempts = 0;     // attempts made so far
  std::string recipient;     // EncodeRecipient() bytes
  // The reply of the last attempt that failed for now ("451 4.7.1 Greylisted")
  // and its [[classify]] class; empty before any, or in an entry written by a
  // volleyd that did not keep them. Stored with the entry by Reschedule and
  // Postpone, cut to kMaxLastReplyBytes and kMaxLastClassBytes.
  std::string last_reply;
  std::string last_class;
};

class Queue {
 public:
  static absl::StatusOr<std::unique_ptr<Queue>> Open(const std::string& path,
                                                      const QueueOptions& options);
  virtual ~Queue() = default;

  virtual absl::StatusOr<std::optional<JobRecord>> FindJob(std::string_view id) = 0;
  virtual absl::StatusOr<std::vector<JobRecord>> ListJobs() = 0;

  // BeginJob - record a new job in state kLoading with a fresh job number.
  virtual absl::StatusOr<JobRecord> BeginJob(std::string_view id, std::string_view header_json,
                                             std::string_view source, absl::Time queued_at,
                                             absl::Time first_due) = 0;

  class IntakeWriter {
   public:
    virtual ~IntakeWriter() = default;
    // Add one recipient (its line number in the job file, its partition and its
    // encoding). Writes a batch every QueueOptions::intake_batch recipients.
    virtual absl::Status Add(uint32_t line, uint16_t partition, std::string_view recipient) = 0;
    // Commit - write what is left and mark the job kReady, synced (see DURABILITY).
    // `suppressed`: recipient lines intake did not queue because the suppression
    // list named them; counted in the job's progress (total and suppressed) in
    // the same write, so a resumed intake counts them once.
    virtual absl::Status Commit(uint64_t recipients, uint64_t suppressed = 0) = 0;
  };
  virtual std::unique_ptr<IntakeWriter> NewIntakeWriter(const JobRecord& job) = 0;

  // TakeDue - up to `max` recipients of job `job_no` in `partition` due at or
  // before `now`, in due order, starting after `after_key` (empty: from the
  // partition's first key).
  virtual absl::Status TakeDue(uint32_t job_no, uint16_t partition, std::string_view after_key,
                               absl::Time now, size_t max, std::vector<QueuedRecipient>* out) = 0;
  // TakeDueAndNext - TakeDue, and where the scan stopped: when fewer than `max`
  // were due, `*next_due` is the due time of the partition's first recipient
  // after them (one not due by `now`), or InfiniteFuture when there is none;
  // when `max` were taken, InfinitePast (more may be due now). One seek for
  // both: a scan that comes up short learns when to look again for free
  // (engine/window.h). The default is TakeDue then NextDue (test doubles).
  virtual absl::Status TakeDueAndNext(uint32_t job_no, uint16_t partition,
                                      std::string_view after_key, absl::Time now, size_t max,
                                      std::vector<QueuedRecipient>* out, absl::Time* next_due);

  // The earliest due time of job `job_no` in `partition` after `after_key`
  // (empty: from the partition's first key), or nullopt when it has no recipient
  // there. Starting after a scan's cursor skips the tombstones of what that scan
  // took and finished.
  virtual absl::StatusOr<std::optional<absl::Time>> NextDue(uint32_t job_no, uint16_t partition,
                                                            std::string_view after_key = {}) = 0;

  class OutcomeBatch {
   public:
    virtual ~OutcomeBatch() = default;
    // The recipient reached a final state; counted in its job's progress.
    virtual void Remove(const QueuedRecipient& r, Final how) = 0;
    // The recipient was deferred: it moves to `due`, with attempts + 1 and
    // r.last_reply and r.last_class (set them to the reply that deferred it).
    virtual void Reschedule(const QueuedRecipient& r, absl::Time due) = 0;
    // The recipient was not tried (volleyd's own bound stopped it, not the
    // destination): it moves to `due`, its attempts and its job's progress as
    // they were, and so its last reply.
    virtual void Postpone(const QueuedRecipient& r, absl::Time due) = 0;
    // Count - add feedback that came back for job `job_no` to its progress
    // (JobProgress::bounced_async and the like), in the same write as the
    // records that log it.
    virtual void Count(uint32_t job_no, Counted what, uint64_t n = 1) = 0;
    // SetLogPosition - record, in the same write, where the delivery log ended
    // after these outcomes were logged (metrics::DeliveryLog::position).
    virtual void SetLogPosition(std::string_view position) = 0;
    virtual size_t size() const = 0;
  };
  virtual std::unique_ptr<OutcomeBatch> NewOutcomeBatch() = 0;
  virtual absl::Status Apply(OutcomeBatch& batch) = 0;

  // TakeRequeued - the earliest due time of the recipients that applied
  // batches moved into `partition` (Reschedule, Postpone) since the last call,
  // or InfiniteFuture when none; the call starts over. A moved recipient's new
  // key is written before it counts here, so a scan woken by the answer finds
  // it. For the partition's one owner (a shard's window, engine/window.h): a
  // scan that came up short sleeps until its next due time, and this is how it
  // learns that a deferral landed before that. Any thread. The default,
  // InfinitePast, says "anything may have moved" (test doubles).
  virtual absl::Time TakeRequeued(uint16_t partition);

  // MarkJobDone - no recipient of the job is left: kReady becomes kDone
  // (kCancelled stays), and the job's key range is dropped with one range
  // delete, so the tombstones its recipients left behind cost later scans
  // nothing once compaction meets it.
  virtual absl::Status MarkJobDone(const JobRecord& job) = 0;

  // ReadLogPosition - the position last stored by SetLogPosition ("" if none).
  virtual absl::StatusOr<std::string> ReadLogPosition() = 0;

  // FindLines - the queued recipients of job `job_no` whose line is in `lines`
  // (sorted), in key order. One pass over the job's keys: for recovery, not for
  // the hot path.
  virtual absl::Status FindLines(uint32_t job_no, const std::vector<uint32_t>& lines,
                                 std::vector<QueuedRecipient>* out) = 0;

  // ReadProgress - the job's counters (zero for a job that never counted).
  virtual absl::StatusOr<JobProgress> ReadProgress(uint32_t job_no) = 0;

  // SetPaused - record that job `id` is paused (or no longer). FailedPrecondition
  // when the job is done or cancelled, NotFound when there is no such job.
  // Durable: a paused job stays paused across restarts.
  virtual absl::StatusOr<JobRecord> SetPaused(std::string_view id, bool paused) = 0;

  // CancelJob - record job `id` as kCancelled. The caller (the shard) then takes
  // every recipient left out with Remove(r, Final::kCancelled). FailedPrecondition
  // while the job is still loading or when it is done already.
  virtual absl::StatusOr<JobRecord> CancelJob(std::string_view id) = 0;

  // ForgetJob - delete a job that never finished loading (its file is gone from
  // incoming/): its recipients and its record.
  virtual absl::Status ForgetJob(const JobRecord& job) = 0;

  // Recover - a failed write (a full disk, no descriptor left, an I/O error)
  // makes RocksDB refuse every write until the error is cleared (a "background
  // error"); this asks RocksDB to clear it now (DB::Resume). OK when writes work
  // (nothing was wrong, or they resumed); ResourceExhausted while RocksDB's own
  // recovery is under way (it retries by itself, see ERRORS below) or the cause
  // lasts; Unavailable when RocksDB cannot resume in this process (a fatal
  // error: only a restart clears it); DataLoss for corruption, which only an
  // operator can mend. Cheap when nothing is wrong: the committer and a paused
  // intake call it before each retry (queue/README.md, "Write errors").
  virtual absl::Status Recover() = 0;

  // Destination records: small values an engine keeps about a destination
  // across restarts (engine/destination_control.h: operator suspensions,
  // backoff levels), in the metadata family under a prefix of their own, one
  // key per kind and name. The queue does not read the value. Put and Delete
  // are synced (an operator's suspension must not come back, or vanish, after
  // a power failure). The defaults (Unimplemented) are for test doubles.
  enum class DestinationRecord : char { kSuspension = 'S', kBackoff = 'B' };
  virtual absl::Status PutDestinationRecord(DestinationRecord kind, std::string_view name,
                                            std::string_view value);
  virtual absl::Status DeleteDestinationRecord(DestinationRecord kind, std::string_view name);
  // ListDestinationRecords - every record of `kind`, as (name, value), by name.
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  ListDestinationRecords(DestinationRecord kind);

  // Stats - RocksDB's health for the metrics (docs/metrics.md); any thread.
  struct StoreStats {
    uint64_t sst_bytes = 0;                 // rocksdb.total-sst-files-size, all families
    uint64_t pending_compaction_bytes = 0;  // rocksdb.estimate-pending-compaction-bytes
    uint64_t write_stalls = 0;              // times writes began to be delayed or stopped
    bool write_stopped = false;             // rocksdb.is-write-stopped
    // Writes RocksDB refused (outcomes, intake, job records; each try counted):
    // a failed file open or write, or a background error holding writes.
    uint64_t write_errors = 0;
  };
  virtual StoreStats Stats() = 0;
};

// Key helpers, public for tests and tools.
std::string RecipientKey(uint32_t job_no, uint16_t partition, absl::Time due, uint32_t line);

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_QUEUE_H_
