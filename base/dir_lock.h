// dir_lock.h - one process at a time in a folder: an exclusive lock that dies with it
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(base::DirLock lock, base::DirLock::Acquire("var/spool", "spool", "volleyd"));
//   // ... the folder is ours until `lock` is destroyed or the process exits
//
// DESCRIPTION
//   Acquire creates the folder when missing, opens <dir>/<program>.lock (never
//   following a symlink) and takes flock(2) LOCK_EX | LOCK_NB on it, then writes
//   "pid PID host HOST" into it so that the process refused can name the holder.
//
//   The kernel holds the lock, not the file: it is released when the holder
//   exits however it exits (kill -9, a crash, a power cut), so no stale lock is
//   ever left to clean up, and the file left behind means nothing by itself.
//   The descriptor is close-on-exec, so a program the holder starts does not
//   inherit the lock. On NFS, Linux turns flock into a lock the server keeps,
//   so two hosts sharing one folder are kept apart too (the host name in the
//   error says which one holds it).
//
// CONTRACT
//   Move-only; the lock lasts as long as the object. Within one process, a
//   second Acquire of the same folder fails as another process's would (each
//   Acquire opens the file anew).
//
// DIAGNOSTICS
//   FailedPrecondition when another process holds the folder:
//     "spool var/spool is in use by volleyd pid 1234 on host mail1 (lock
//      var/spool/volleyd.lock, released when that process exits)"
//   Unavailable (or ResourceExhausted for a full disk) naming the path when the
//   folder or the lock file cannot be created or locked.
#ifndef VOLLEY_BASE_DIR_LOCK_H_
#define VOLLEY_BASE_DIR_LOCK_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace volley::base {

class DirLock {
 public:
  // Acquire - lock `dir` for `program`; `what` names the folder in errors
  // ("spool", "log folder").
  static absl::StatusOr<DirLock> Acquire(const std::string& dir, std::string_view what,
                                         std::string_view program);

  DirLock(DirLock&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
    other.fd_ = -1;
  }
  DirLock& operator=(DirLock&& other) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();

  // The lock file, <dir>/<program>.lock.
  const std::string& path() const { return path_; }

 private:
  DirLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

}  // namespace volley::base

#endif  // VOLLEY_BASE_DIR_LOCK_H_
