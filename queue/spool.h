// spool.h - the spool directory and the intake of job files into the queue
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(Spool spool, Spool::Open("var/spool"));
//   for (const auto& name : spool.ListIncoming()) spool.Intake(name, queue, limits, now);
//
// DESCRIPTION
//   <spool>/incoming/  jobs dropped by renaming them in (names starting with '.'
//                      are ignored: they are still being written)
//   <spool>/accepted/  a job whose every recipient is durably queued
//   <spool>/failed/    a job refused whole, with <file>.error saying where and why;
//                      <job>.rejects.jsonl lists the recipient lines skipped
//   <spool>/tmp/       a place on the same filesystem to write a job before the rename
//
//   Intake streams the file (bounded memory whatever its length), checks it as
//   queue/job_check.h says (the checks `volleyctl check` makes: each line
//   validated, a recipient for whom a message line would render longer than 998
//   octets rejected, an `expires` already past refused) and writes recipients in
//   batches. A placeholder no recipient defines is known only after the last
//   line: the job is then refused before its commit, and what was written of it
//   is dropped (Queue::ForgetJob), so it was never ready and nothing of it sent. The file moves to accepted/ only after the
//   queue commit is synced, so from then on a crash loses nothing. A crash before
//   that leaves the file in incoming/ and the job in state kLoading; the next
//   Intake of the file rewrites the same keys (see queue.h) and carries on: no
//   recipient is queued twice.
//
// SUPPRESSION
//   With a suppression check set (SetSuppression), each recipient that passed
//   every other check is looked up in the suppression list for the job's From
//   domain (queue/suppression.h) before it is queued; a suppressed one is not
//   queued, and on_suppressed gets its line, address and the entry that
//   suppressed it. Once the last line is read, before_commit runs, before the
//   job's commit: the caller makes what it was handed durable there (volleyd
//   writes a `suppressed` delivery-log record for each), so that a job is never
//   ready while the record of a recipient left out of it could still be lost.
//   A recipient suppressed is neither accepted nor rejected: IntakeResult
//   counts it apart. An intake resumed after a crash hands the suppressed
//   recipients it had handed before over again (as it rewrites the queued
//   ones): a record may be written twice, never lost. Without a check, intake
//   queues every valid recipient, as before.
//
// FREE SPACE
//   Like Postfix's queue_minfree: with a FreeSpaceFloor set (SetFreeSpaceFloor),
//   Intake takes nothing in while a filesystem holding the spool or one of the
//   floor's paths (the queue) has fewer than min_free bytes free, and stops a
//   long intake between batches when the floor is reached. What is left below
//   the floor is for what must not stop: delivery's outcome writes, RocksDB's
//   flushes and compactions. A job stopped half-way stays kLoading with its file
//   in incoming/, and the next Intake of the file carries on (see above).
//
// ERRORS
//   Intake returns InvalidArgument when the job was refused (the file is already
//   in failed/ with its .error), and ResourceExhausted or Unavailable when the
//   queue or the disk failed, or free space is below the floor: the file then
//   stays in incoming/ to be tried again.
#ifndef VOLLEY_QUEUE_SPOOL_H_
#define VOLLEY_QUEUE_SPOOL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "queue/job.h"
#include "queue/job_check.h"
#include "queue/queue.h"
#include "queue/suppression.h"

namespace volley::queue {

struct IntakeResult {
  std::string job;
  uint32_t job_no = 0;
  uint64_t accepted = 0;   // recipients queued
  uint64_t rejected = 0;   // recipient lines skipped (see <job>.rejects.jsonl)
  uint64_t suppressed = 0; // recipients left out by the suppression list (SUPPRESSION)
  bool resumed = false;    // a crash had interrupted an earlier intake of this job
  // Variables some accepted recipients lack (queue/job_check.h), most first.
  std::vector<LackingVariable> lacking;
  // Set when the job was queued but the file could not be moved to accepted/.
  std::string warning;
};

// FreeSpaceFloor - the free space intake leaves alone (see FREE SPACE).
struct FreeSpaceFloor {
  // Folders whose filesystems are checked besides the spool's (the queue's).
  std::vector<std::string> paths;
  // Bytes that must stay free on each; 0 turns the check off.
  uint64_t min_free = 0;
  // Bytes free on the filesystem holding `path`, for an unprivileged writer.
  // Empty: statvfs(3) (FreeBytes). Tests put a fake here.
  std::function<absl::StatusOr<uint64_t>(const std::string& path)> free_bytes;
};

// IntakeSuppression - the suppression list's check at intake (SUPPRESSION).
struct IntakeSuppression {
  // The list the recipients are looked up in; null: no check. Must outlive
  // the Spool's intakes.
  const SuppressionList* list = nullptr;
  // For each recipient not queued (`line` in the job file, `address` as the
  // job wrote it, `entry` as the list answered). An error stops the intake
  // as a queue error does: the file stays in incoming/ and is taken in again.
  std::function<absl::Status(const JobRecord& job, uint32_t line, std::string_view address,
                             const Suppression& entry)>
      on_suppressed;
  // After the last recipient, before the job's commit, when at least one was
  // suppressed: make what on_suppressed was handed durable. An error stops
  // the intake as above.
  std::function<absl::Status(const JobRecord& job, uint64_t suppressed)> before_commit;
};

// FreeBytes - statvfs(3) f_bavail * f_frsize: what a non-root writer may still
// use (root's reserved blocks are not counted as room).
absl::StatusOr<uint64_t> FreeBytes(const std::string& path);

// Intake checks the floor again after this many recipients: one statvfs per
// intake batch (QueueOptions::intake_batch), nothing beside writing the batch.
inline constexpr uint64_t kFreeSpaceCheckEvery = 10000;

class Spool {
 public:
  // Open - create the four folders when missing.
  static absl::StatusOr<Spool> Open(const std::string& dir);

  // Files waiting in incoming/, oldest name first.
  std::vector<std::string> ListIncoming() const;

  absl::StatusOr<IntakeResult> Intake(const std::string& name, Queue& queue,
                                      const JobLimits& limits, absl::Time now) const;

  // ForgetAbandonedIntakes - a job still kLoading had its intake cut short by a
  // crash; Intake resumes it while its file is in incoming/. When the file is
  // gone (an operator removed it) nothing would ever finish that job and its id
  // could never be used again: drop what was written of it (Queue::ForgetJob).
  // Call before intake starts (the only writer of kLoading jobs). Returns the
  // ids dropped.
  absl::StatusOr<std::vector<std::string>> ForgetAbandonedIntakes(Queue& queue) const;

  // Partitioner - the queue partition (queue.h) of a recipient, from its domain
  // (lower case). The default hashes the domain; the engine passes one that
  // keeps every domain of one static route in one partition.
  using Partitioner = std::function<uint16_t(std::string_view domain)>;
  void SetPartitioner(Partitioner partitioner) { partitioner_ = std::move(partitioner); }

  // JobCheck - a check of a parsed job header against what the daemon can do
  // (signing keys, token keys), run before anything of the job is queued; an error
  // refuses the job with its message ("<field>: <reason>").
  using JobCheck = std::function<absl::Status(const JobHeader&, const Template&)>;
  void SetJobCheck(JobCheck check) { job_check_ = std::move(check); }

  // SetSuppression - look every recipient up in a suppression list (SUPPRESSION).
  void SetSuppression(IntakeSuppression suppression) { suppression_ = std::move(suppression); }

  // SetFreeSpaceFloor - check free space before and during every Intake.
  void SetFreeSpaceFloor(FreeSpaceFloor floor) { floor_ = std::move(floor); }

  // CheckFreeSpace - OK when every checked filesystem has at least the floor
  // free; else ResourceExhausted naming the folder, its free bytes and the floor.
  absl::Status CheckFreeSpace() const;

  const std::string& dir() const { return dir_; }
  std::string incoming() const { return dir_ + "/incoming"; }
  std::string accepted() const { return dir_ + "/accepted"; }
  std::string failed() const { return dir_ + "/failed"; }

 private:
  explicit Spool(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  FreeSpaceFloor floor_;
  Partitioner partitioner_;
  JobCheck job_check_;
  IntakeSuppression suppression_;
};

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_SPOOL_H_
