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
//   <spool>/failed/    a job refused whole, with <file>.error saying where and why
//                      (a name already taken there, by the file or by its .error,
//                      gets .1, .2, ... for both: FailedFileName);
//                      <job>.rejects.jsonl lists the recipient lines skipped
//   <spool>/tmp/       a place on the same filesystem to write a job before the rename
//
//   One process at a time: volleyd holds base::DirLock on the spool (lock file
//   <spool>/volleyd.lock) before it takes any file; nothing here takes it.
//
// WRITERS
//   A file written in place in incoming/ must never be taken as complete
//   while it is still being written. Intake leaves a file alone (IntakeResult::
//   waiting says why; nothing of it is queued, it stays in incoming/) while:
//     - it is empty, or its last byte is not LF (a line is still being written);
//     - it was modified less than settle_time ago (SetSettleTime), by the
//       file's mtime and the `now` Intake is given, unless the caller saw it
//       renamed in (Arrival::kRenamedIn);
//     - another process has it open for writing: a read lease (fcntl
//       F_SETLEASE F_RDLCK) fails with EAGAIN then; it is released at once. A
//       lease needs the file's owner or CAP_LEASE and a local filesystem;
//       where it cannot be taken (IntakeResult::lease_unavailable says why)
//       the other checks stand alone, and a writer that keeps the file open
//       and pauses longer than settle_time is not noticed;
//     - it changed while it was read: size, mtime or ctime differ between the
//       stat before reading and the one before the commit, or more bytes were
//       read than it held, or the lease fails then. What was written of the
//       job is dropped (Queue::ForgetJob, and its rejects file), not resumed:
//       a file rewritten shorter would otherwise keep lines that are gone.
//   Symlinks are never followed (O_NOFOLLOW), and anything but a regular file
//   is left alone (ScanIncoming lists what is ignored, and why).
//
//   Intake streams the file (bounded memory whatever its length), checks it as
//   queue/job_check.h says (the checks `volleyctl check` makes: each line
//   validated, a recipient for whom a message line would render longer than 998
//   octets rejected, an `expires` already past refused) and writes recipients in
//   batches. A placeholder no recipient defines is known only after the last
//   line: the job is then refused before its commit, and what was written of it
//   is dropped (Queue::ForgetJob), so it was never ready and nothing of it
//   sent. The file moves to accepted/ only after the
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
//   A file left alone (WRITERS) is not an error: Intake returns OK with
//   IntakeResult::waiting set.
//   Intake returns InvalidArgument when the job was refused (the file is already
//   in failed/ with its .error), and ResourceExhausted or Unavailable when the
//   queue or the disk failed, or free space is below the floor: the file then
//   stays in incoming/ to be tried again.
#ifndef VOLLEY_QUEUE_SPOOL_H_
#define VOLLEY_QUEUE_SPOOL_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "queue/job.h"
#include "queue/job_check.h"
#include "queue/queue.h"
#include "queue/suppression.h"

namespace volley::queue {

// WaitReason - why a file was left in incoming/ untouched (WRITERS).
enum class WaitReason {
  kEmpty,              // no byte yet
  kNoFinalLf,          // the last line does not end in LF yet
  kRecentlyModified,   // modified less than settle_time ago
  kOpenForWriting,     // another process has it open for writing (lease)
  kChangedWhileRead,   // it changed during the intake
  kGone,               // removed, or no longer a regular file, since it was listed
};
inline constexpr int kWaitReasons = 6;

// WaitReasonText - "still being written", "no LF at end", ... for the log.
std::string_view WaitReasonText(WaitReason reason);

struct IntakeWait {
  WaitReason reason = WaitReason::kEmpty;
  std::string detail;  // "modified 0.2s ago, settle_time 1s"
  // kRecentlyModified: when the settle time will have passed; InfinitePast else.
  absl::Time settles_at = absl::InfinitePast();
};

struct IntakeResult {
  // Set when the file was not taken in (WRITERS): the rest of the result is empty.
  std::optional<IntakeWait> waiting;
  // Why the open-for-writing check could not be made (the errno text of
  // F_SETLEASE); empty when it was made.
  std::string lease_unavailable;
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

// Ignored - what in incoming/ is not a job file, and is never opened.
enum class Ignored { kDotFile, kDirectory, kSymlink, kFifo, kSocket, kDevice, kOther };
inline constexpr int kIgnoredKinds = 7;

// IgnoredText - "a directory", "a symlink (never followed)", ... for the log.
std::string_view IgnoredText(Ignored kind);

struct IncomingScan {
  std::vector<std::string> files;                         // oldest name first
  std::vector<std::pair<std::string, Ignored>> ignored;   // in name order
};

// A name in a folder that is in use (by a file or anything else).
using NameTaken = std::function<bool(const std::string& name)>;

// FailedFileName - the name a refused file goes to failed/ under: `name`, or
// `name.1`, `name.2`, ... the first for which neither it nor `<it>.error` is
// taken, so that every refused file keeps its own .error; never a name ending
// in ".rejects.jsonl" (those are <job>.rejects.jsonl's); and cut (at a UTF-8
// boundary) so that `<it>.error` fits NAME_MAX. Pure: `taken` answers for failed/.
std::string FailedFileName(std::string_view name, const NameTaken& taken);

// AcceptedFileName - `name`, or `name.1`, `name.2`, ... the first not taken in
// accepted/, cut to fit NAME_MAX as above.
std::string AcceptedFileName(std::string_view name, const NameTaken& taken);

// kDefaultSettleTime - a file modified more recently is not taken in yet
// (WRITERS); the config's [intake] settle_time. Default: 1s.
inline constexpr absl::Duration kDefaultSettleTime = absl::Seconds(1);

// Arrival - how a file came into incoming/, as the caller's watch on the folder
// saw it. kRenamedIn: a rename(2) into incoming/ (inotify IN_MOVED_TO) and no
// write closed on it since (IN_CLOSE_WRITE): the way docs/jobs.md says to
// drop a job, so the file was complete when it arrived and does not wait out
// settle_time. Every other check of WRITERS stands (a writer holding it open,
// no LF at the end, a change while it is read). kUnknown: found by a scan, or
// written in place: settle_time applies.
enum class Arrival : uint8_t { kUnknown, kRenamedIn };

class Spool {
 public:
  // Open - create the four folders when missing.
  static absl::StatusOr<Spool> Open(const std::string& dir);

  // Files waiting in incoming/, oldest name first.
  std::vector<std::string> ListIncoming() const;

  // ScanIncoming - ListIncoming, and what is ignored there and why (dot files,
  // folders, symlinks, FIFOs, sockets, devices), from one readdir.
  IncomingScan ScanIncoming() const;

  // SetSettleTime - how long a file must go unmodified before intake takes it
  // (WRITERS); zero turns that check off (the others stay).
  void SetSettleTime(absl::Duration settle) { settle_time_ = settle; }

  absl::StatusOr<IntakeResult> Intake(const std::string& name, Queue& queue,
                                      const JobLimits& limits, absl::Time now,
                                      Arrival arrival = Arrival::kUnknown) const;

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
  absl::Duration settle_time_ = kDefaultSettleTime;
  FreeSpaceFloor floor_;
  Partitioner partitioner_;
  JobCheck job_check_;
  IntakeSuppression suppression_;
};

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_SPOOL_H_
