// log.h - the programs' own log lines: one format, a severity each
//
// SYNOPSIS
//   base::SetLogProgram("volleyd");          // once, in main
//   base::LogInfo("job \"%s\" finished", id);
//   base::LogWarning("net.core.rmem_max is %d bytes", n);
//   base::LogError("delivery log: cannot rotate %s: %s", path, why);
//
// DESCRIPTION
//   Every line goes to stderr as one write(2), so lines from several threads
//   never interleave, in one format:
//
//     PROGRAM: MESSAGE                 informational
//     PROGRAM: warning: MESSAGE        something the operator should look at
//     PROGRAM: error: MESSAGE          something failed (the program goes on)
//     PROGRAM: fatal: MESSAGE          the program stops
//
//   No timestamp: under systemd the journal stamps each line, and tests and
//   operators match lines by their text (docs/operations.md lists the ones
//   that matter). A message is one line: CR and LF in it (a server's reply, a
//   file name) are written as spaces, so a peer cannot forge a log line.
//
// BOUNDS
//   A message is cut at kMaxLogLine bytes.
#ifndef VOLLEY_BASE_LOG_H_
#define VOLLEY_BASE_LOG_H_

#include <cstddef>
#include <string_view>

#include "absl/strings/str_format.h"

namespace volley::base {

enum class Severity { kInfo, kWarning, kError, kFatal };

inline constexpr size_t kMaxLogLine = 8192;

// SetLogProgram - the name every line starts with ("volley" until set). Call
// before any thread logs; the name must outlive the program (a literal).
void SetLogProgram(const char* name);

// Log - one line of `severity`.
void Log(Severity severity, std::string_view message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  Log(Severity::kInfo, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  Log(Severity::kWarning, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& format, const Args&... args) {
  Log(Severity::kError, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogFatal(const absl::FormatSpec<Args...>& format, const Args&... args) {
  Log(Severity::kFatal, absl::StrFormat(format, args...));
}

// FormatLogLine - the line Log writes (with its LF), for tests.
std::string FormatLogLine(std::string_view program, Severity severity, std::string_view message);

}  // namespace volley::base

#endif  // VOLLEY_BASE_LOG_H_
