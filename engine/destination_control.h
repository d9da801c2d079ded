// destination_control.h - an operator's hold on destinations: suspend, unsuspend, retry; kept backoff levels
//
// SYNOPSIS
//   DestinationControl control(queue, shards);
//   RETURN_IF_ERROR(control.Load(absl::Now()));            // at start, before the shards run
//   control.Suspend("example.test", absl::Hours(2), "blocklisted", "volleyctl", now);   // admin
//   control.Unsuspend("example.test", now);                                             // admin
//   control.Retry(ShardCommand{ShardCommand::Kind::kRetryDomain, "example.test"});     // admin
//   // each shard, every loop turn:
//   control.ExpireDue(now);
//   if (control.generation() != seen) { seen = control.generation(); held = control.Snapshot(); }
//   for (ShardCommand& c : control.TakeCommands(shard)) control.Answer(c.id, Run(c));
//
// DESCRIPTION
//   A suspension holds one recipient domain (the part after '@', lower case):
//   its recipients stay queued and nothing is sent to it until the suspension
//   ends, by Unsuspend or by itself at `until`. The shards hold it (engine/
//   shard.h): a recipient of a suspended domain taken from the queue goes back
//   to it, due when the suspension ends, with its attempts as they were; an
//   unsuspend sends every shard a kRelease command, which makes those held
//   recipients due at once.
//
//   Suspensions are kept in the queue's RocksDB (Queue::PutDestinationRecord):
//   the queue is volleyd's one durable store, already synced and already what
//   a restart reads; a file under the state dir would need its own atomic
//   replace and its own crash story. Every set, clear and expiry is logged
//   once:
//     destination D suspended for 2h by volleyctl: REASON
//     destination D unsuspended by volleyctl (N recipients released)
//     destination D: suspension ended (set for 2h by volleyctl: REASON)
//
//   Retry: the deferred recipients (at least one attempt, due later) of a
//   domain or of a job become due now, their attempts as they were. Each shard
//   does its own share (the shard owns its partitions' keys and knows which
//   are taken), and the admin thread waits up to kControlAnswerWait for the
//   counts. A destination's backoff level is not changed by a retry: the
//   recipients made due go out at the pace the backoff allows.
//
//   Backoff levels (docs/config.md, "Adaptive backoff") are kept the same way,
//   per destination pool ("ROUTE|POLICY"): a shard saves a level when it
//   changes (SaveBackoff, once a second at most) and a pool made after a
//   restart starts at its kept level (KeptBackoff).
//
// CONTRACT
//   Thread-safe: the admin threads and every shard call it.
//
// BOUNDS
//   kMaxSuspensions suspensions at once (kept and in memory); a suspension
//   lasts kMaxSuspension at most (kDefaultSuspension when not given); a reason
//   kMaxSuspensionReason octets; a retry moves at most kMaxRetryScan queue
//   entries per shard per command (scanning stops there, `more` says so);
//   kMaxShardCommands commands wait per shard.
//
// DIAGNOSTICS
//   Suspend: InvalidArgument naming the field ("domain: ...", "for: ...",
//   "reason: ..."), ResourceExhausted past kMaxSuspensions, the queue's error
//   when it cannot be stored (nothing changes then). Unsuspend: NotFound when
//   the domain is not suspended. Retry: ResourceExhausted when a shard's
//   command box is full, DeadlineExceeded when no shard answered in time.
//   Load: the queue's error; a record that does not decode is logged
//   (warning), deleted and skipped.
//
// SEE ALSO
//   engine/admin.h (the endpoints), docs/volleyctl.md, queue/queue.h
#ifndef VOLLEY_ENGINE_DESTINATION_CONTROL_H_
#define VOLLEY_ENGINE_DESTINATION_CONTROL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "queue/queue.h"

namespace volley::engine {

inline constexpr absl::Duration kDefaultSuspension = absl::Hours(1);
// A forgotten suspension ends by itself within a week.
inline constexpr absl::Duration kMaxSuspension = absl::Hours(24 * 7);
inline constexpr size_t kMaxSuspensions = 10000;
inline constexpr size_t kMaxSuspensionReason = 256;
inline constexpr size_t kMaxDomainName = 253;
// Queue entries one shard looks at for one retry command: the scan runs on
// the shard's loop thread, so it is bounded (about a tenth of a second).
inline constexpr size_t kMaxRetryScan = 200000;
inline constexpr size_t kMaxShardCommands = 64;
// How long an admin request waits for the shards' counts (under the admin
// API's request timeout).
inline constexpr absl::Duration kControlAnswerWait = absl::Seconds(3);

struct Suspension {
  std::string domain;
  absl::Time since;
  absl::Time until;
  std::string reason;
  std::string by;  // who set it: "volleyctl" (the admin API)
};

// What a shard is asked to do; `target` a domain (lower case) or a job id.
struct ShardCommand {
  enum class Kind { kRetryDomain, kRetryJob, kRelease };
  Kind kind = Kind::kRetryDomain;
  std::string target;
  // kRelease: the end of the suspension that held them; entries due later
  // (a send_after, a retry after it) are left as they are.
  absl::Time held_until = absl::InfiniteFuture();
  uint64_t id = 0;  // set by Retry
};

struct RetryResult {
  uint64_t made_due = 0;
  size_t shards_answered = 0;
  size_t shards = 0;
  bool more = false;  // a shard stopped at kMaxRetryScan
};

// A pool's backoff as kept across a restart.
struct KeptBackoff {
  int level = 0;
  absl::Time step_at;       // the next step up
  absl::Duration period;    // the rule's period
  std::string reason;
};

// EncodeSuspension / DecodeSuspension - the stored value (domain is the key).
std::string EncodeSuspension(const Suspension& s);
absl::StatusOr<Suspension> DecodeSuspension(std::string_view domain, std::string_view value);
std::string EncodeKeptBackoff(const KeptBackoff& b);
absl::StatusOr<KeptBackoff> DecodeKeptBackoff(std::string_view value);

// NormalizeDomain - a recipient domain as suspensions key it: lower case,
// letters, digits, '-', '.', '_'; InvalidArgument "domain: ..." otherwise.
absl::StatusOr<std::string> NormalizeDomain(std::string_view domain);

// FormatSuspensionDuration - "2h", "30m", "1h30m", "45s": as the log says it.
std::string FormatSuspensionDuration(absl::Duration d);

class DestinationControl {
 public:
  using Suspensions = std::map<std::string, Suspension>;

  DestinationControl(queue::Queue* queue, size_t shards);
  DestinationControl(const DestinationControl&) = delete;
  DestinationControl& operator=(const DestinationControl&) = delete;

  // Load - the kept suspensions and backoff levels; suspensions that ended
  // while volleyd was down are logged as ended and deleted.
  absl::Status Load(absl::Time now);

  // Suspend - hold `domain` for `duration` (kDefaultSuspension when zero);
  // suspending a suspended domain again replaces its suspension.
  absl::StatusOr<Suspension> Suspend(std::string_view domain, absl::Duration duration,
                                     std::string_view reason, std::string_view by,
                                     absl::Time now);
  // Unsuspend - end it now; the shards release what it held (the count of
  // released recipients is waited for as Retry's is).
  absl::StatusOr<RetryResult> Unsuspend(std::string_view domain, std::string_view by,
                                        absl::Time now);
  // ExpireDue - suspensions whose time ended are logged once, deleted and
  // released; cheap when none did (one atomic read).
  void ExpireDue(absl::Time now);

  // generation - changes with every suspension set or ended: a shard compares
  // it every loop turn and reads Snapshot when it changed.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::shared_ptr<const Suspensions> Snapshot() const;

  // Retry - hand `command` to every shard and wait up to `wait` for their
  // counts.
  absl::StatusOr<RetryResult> Retry(ShardCommand command,
                                    absl::Duration wait = kControlAnswerWait);
  // TakeCommands / Answer - the shard's side.
  std::vector<ShardCommand> TakeCommands(size_t shard);
  bool HasCommands(size_t shard) const {
    return pending_commands_[shard]->load(std::memory_order_acquire) != 0;
  }
  void Answer(uint64_t id, uint64_t made_due, bool more);

  // SaveBackoff - `pool`'s level changed (level 0: forget it); a failed
  // write is logged (warning) and the level is kept in memory only.
  void SaveBackoff(const std::string& pool, const KeptBackoff& backoff);
  std::optional<KeptBackoff> KeptBackoffFor(const std::string& pool) const;

  size_t shards() const { return boxes_.size(); }

 private:
  void Publish();  // under mu_: a new snapshot and generation
  absl::StatusOr<RetryResult> Send(ShardCommand command, absl::Duration wait);

  queue::Queue* queue_;
  mutable std::mutex mu_;
  Suspensions suspensions_;
  std::shared_ptr<const Suspensions> snapshot_;
  std::atomic<uint64_t> generation_{0};
  // The earliest `until` of any suspension, in Unix microseconds: ExpireDue's
  // cheap test.
  std::atomic<int64_t> next_expiry_us_{INT64_MAX};
  std::map<std::string, KeptBackoff> backoff_;

  // Commands: one box per shard; answers by command id.
  struct Pending {
    size_t waiting = 0;  // shards yet to answer
    RetryResult result;
  };
  std::vector<std::vector<ShardCommand>> boxes_;
  std::vector<std::unique_ptr<std::atomic<size_t>>> pending_commands_;
  std::map<uint64_t, Pending> answers_;
  std::condition_variable answered_;
  uint64_t next_command_ = 1;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_DESTINATION_CONTROL_H_
