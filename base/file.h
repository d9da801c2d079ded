// file.h - whole writes to files, with errors that say what and where
//
// SYNOPSIS
//   RETURN_IF_ERROR(WriteAll(fd, bytes, path));
//   RETURN_IF_ERROR(WriteFileAtomically("stats.json", json, 0644));
//   return ErrnoError(path, "open");     // reads errno
//
// DESCRIPTION
//   ErrnoError turns errno into a Status named "<where>: <what>: <reason>": a full
//   disk or quota (ENOSPC, EDQUOT) is ResourceExhausted, so that callers refuse new
//   work and wait, and anything else is Unavailable.
//
//   WriteAll writes every byte, retrying short writes and EINTR; on an error,
//   *written (when given) says how much did reach the file, so that a caller can
//   keep the rest and try again.
//
//   WriteFileAtomically writes <path>.tmp and renames it over <path>, so that a
//   reader never sees the file half written.
//
//   RaiseFileLimit lets the process open as many descriptors as its hard limit
//   allows: thousands of connections need more than the usual soft limit of 1024.
#ifndef VOLLEY_BASE_FILE_H_
#define VOLLEY_BASE_FILE_H_

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace volley::base {

absl::Status ErrnoError(std::string_view where, std::string_view what);

absl::Status WriteAll(int fd, std::string_view data, std::string_view where,
                      size_t* written = nullptr);

absl::Status WriteFileAtomically(const std::string& path, std::string_view data,
                                 mode_t mode = 0640);

void RaiseFileLimit();

}  // namespace volley::base

#endif  // VOLLEY_BASE_FILE_H_
