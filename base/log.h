// log.h - the programs' own log lines: one format, a severity each
//
// SYNOPSIS
//   base::SetLogProgram("volleyd", base::LogStyle::kDaemon);   // once, in main
//   base::LogInfo("job \"%s\" finished", id);
//   base::LogWarning("net.core.rmem_max is %d bytes", n);
//   base::LogError("delivery log: cannot rotate %s: %s", path, why);
//
// DESCRIPTION
//   Every line goes to stderr as one write(2), so lines from several threads
//   never interleave. A command-line tool (LogStyle::kTool: volleyctl,
//   volley-load, volley-sink) talks to the person who ran it:
//
//     PROGRAM: MESSAGE                 informational
//     PROGRAM: warning: MESSAGE        something the operator should look at
//     PROGRAM: error: MESSAGE          something failed (the program goes on)
//     PROGRAM: fatal: MESSAGE          the program stops
//
//   A daemon (LogStyle::kDaemon: volleyd) writes a log that is read later, so
//   every line says when and how bad, info included:
//
//     2026-12-06T20:10:47.123Z volleyd: info: running: 2 shards, ...
//     2026-12-06T20:10:47.125Z volleyd: warning: EHLO name "mail" is not ...
//
//   The time is UTC with milliseconds (RFC 3339). Under systemd, when stderr
//   is the journal's stream (JOURNAL_STREAM names it), the time is left to the
//   journal and each line starts with its syslog priority instead ("<6>" info,
//   "<4>" warning, "<3>" error, "<2>" fatal, sd-daemon(3)), so that
//   `journalctl -p warning` finds the warnings. Operators and tests match lines
//   by the text after the severity (docs/operations.md lists the ones that
//   matter). A message is one line: CR and LF in it (a server's reply, a file
//   name) are written as spaces, so a peer cannot forge a log line.
//
// BOUNDS
//   A message is cut at kMaxLogLine bytes.
#ifndef VOLLEY_BASE_LOG_H_
#define VOLLEY_BASE_LOG_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/strings/str_format.h"

namespace volley::base {

enum class Severity { kInfo, kWarning, kError, kFatal };

// LogStyle - who reads the lines: a person at a terminal, or a log.
enum class LogStyle { kTool, kDaemon };

inline constexpr size_t kMaxLogLine = 8192;

// SetLogProgram - the name every line carries ("volley" until set), and the
// style of the lines. Call before any thread logs; the name must outlive the
// program (a literal). kDaemon looks at JOURNAL_STREAM here, once.
void SetLogProgram(const char* name, LogStyle style = LogStyle::kTool);

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

// LogPrefix - what a daemon's line starts with: a time, or a journal priority.
enum class LogPrefix { kNone, kTime, kJournalPriority };

// FormatLogLine - the line Log writes (with its LF), for tests; `unix_ms` is
// the time of the line in milliseconds since the epoch (kTime only).
std::string FormatLogLine(std::string_view program, Severity severity, std::string_view message,
                          LogPrefix prefix = LogPrefix::kNone, int64_t unix_ms = 0);

}  // namespace volley::base

#endif  // VOLLEY_BASE_LOG_H_
