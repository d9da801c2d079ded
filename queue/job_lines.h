// job_lines.h - read an accepted job file by line number: who was line L of job J
//
// SYNOPSIS
//   AcceptedJobFiles files("var/spool");
//   ASSIGN_OR_RETURN(std::string rcpt, files.RecipientAt("spring-sale", 3, limits));
//
// DESCRIPTION
//   What comes back about a message (a bounce to a VERP address, a complaint with
//   a Volley-Trace field, a one-click unsubscribe) names its recipient by job
//   number and line (engine/token), not by address: the address is read back
//   from the job file, which stays in <spool>/accepted/ after intake. The queue
//   no longer holds a delivered recipient.
//
//   A job of millions of lines is not read whole for every report: the first
//   lookup in a file reads it once and keeps the offset of every kStride-th
//   line, so each later lookup reads at most kStride lines from the nearest
//   one. The indexes of the kMaxIndexedFiles files used last are kept (8 bytes
//   per kStride lines: 8 KiB for a job of a million recipients).
//
//   Files are found by the job id in their header line, as volleyctl verp
//   decode finds them: accepted/ is scanned once, every file's id remembered,
//   and scanned again only when an id is not known and the folder changed.
//
//   Line numbers are those of intake: physical lines counted from 1 (the
//   header), split at LF, a CR before the LF dropped.
//
// CONTRACT
//   Not thread-safe: one owner (the feedback thread). A file that changes after
//   its index was made (nobody should rewrite accepted/) gives wrong lines until
//   it leaves the cache; a file shorter than a line asked for says so.
//
// DIAGNOSTICS
//   NotFound: "no job file in var/spool/accepted is job \"x\"", "var/spool/
//   accepted/x.job: has no line 12"; InvalidArgument: "...: line 1 is the job
//   header, not a recipient", "...: line 3: <why it is not a recipient line>",
//   "...: line 3 is longer than 65536 octets"; an errno error naming the file.
#ifndef VOLLEY_QUEUE_JOB_LINES_H_
#define VOLLEY_QUEUE_JOB_LINES_H_

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "queue/job.h"

namespace volley::queue {

// JobFileLines - one file's sparse line index.
class JobFileLines {
 public:
  static constexpr uint32_t kStride = 1024;

  // Open - read the file once to index it.
  static absl::StatusOr<std::unique_ptr<JobFileLines>> Open(const std::string& path);
  ~JobFileLines();
  JobFileLines(const JobFileLines&) = delete;
  JobFileLines& operator=(const JobFileLines&) = delete;

  // Line - line `number` (from 1), without its line end; at most max_bytes long.
  absl::StatusOr<std::string> Line(uint32_t number, size_t max_bytes) const;
  uint32_t lines() const { return lines_; }
  const std::string& path() const { return path_; }

 private:
  JobFileLines(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
  uint32_t lines_ = 0;
  // checkpoints_[k]: the offset where line k * kStride + 1 starts.
  std::vector<uint64_t> checkpoints_;
};

// AcceptedJobFiles - a spool's accepted/ folder, read by job id and line.
class AcceptedJobFiles {
 public:
  static constexpr size_t kMaxIndexedFiles = 16;

  explicit AcceptedJobFiles(std::string spool);

  // RecipientAt - the address of the recipient on `line` of job `job_id`.
  absl::StatusOr<std::string> RecipientAt(std::string_view job_id, uint32_t line,
                                          const JobLimits& limits);
  // PathOf - the accepted file of job `job_id`.
  absl::StatusOr<std::string> PathOf(std::string_view job_id);

 private:
  absl::Status Rescan();
  absl::StatusOr<const JobFileLines*> Indexed(const std::string& path);

  std::string dir_;
  std::map<std::string, std::string, std::less<>> path_of_id_;
  int64_t scanned_mtime_ns_ = -1;  // accepted/'s mtime at the last scan
  // Most recently used first.
  std::list<std::unique_ptr<JobFileLines>> indexed_;
};

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_JOB_LINES_H_
