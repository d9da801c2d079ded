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
//   Intake streams the file (bounded memory whatever its length), validates
//   each line (queue/job.h), rejects a recipient for whom a message line would
//   render longer than 998 octets (Template::CheckLineLength, queue/template.h)
//   and writes recipients in batches. The file moves to accepted/ only after the
//   queue commit is synced, so from then on a crash loses nothing. A crash before
//   that leaves the file in incoming/ and the job in state kLoading; the next
//   Intake of the file rewrites the same keys (see queue.h) and carries on: no
//   recipient is queued twice.
//
// ERRORS
//   Intake returns InvalidArgument when the job was refused (the file is already
//   in failed/ with its .error), and ResourceExhausted or Unavailable when the
//   queue or the disk failed: the file then stays in incoming/ to be tried again.
#ifndef VOLLEY_QUEUE_SPOOL_H_
#define VOLLEY_QUEUE_SPOOL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "queue/job.h"
#include "queue/queue.h"

namespace volley::queue {

struct IntakeResult {
  std::string job;
  uint32_t job_no = 0;
  uint64_t accepted = 0;   // recipients queued
  uint64_t rejected = 0;   // recipient lines skipped (see <job>.rejects.jsonl)
  bool resumed = false;    // a crash had interrupted an earlier intake of this job
  // Set when the job was queued but the file could not be moved to accepted/.
  std::string warning;
};

class Spool {
 public:
  // Open - create the four folders when missing.
  static absl::StatusOr<Spool> Open(const std::string& dir);

  // Files waiting in incoming/, oldest name first.
  std::vector<std::string> ListIncoming() const;

  absl::StatusOr<IntakeResult> Intake(const std::string& name, Queue& queue,
                                      const JobLimits& limits, absl::Time now) const;

  const std::string& dir() const { return dir_; }
  std::string incoming() const { return dir_ + "/incoming"; }
  std::string accepted() const { return dir_ + "/accepted"; }
  std::string failed() const { return dir_ + "/failed"; }

 private:
  explicit Spool(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_SPOOL_H_
