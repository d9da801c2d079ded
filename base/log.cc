#include "base/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

namespace volley::base {
namespace {

std::atomic<const char*> g_program{"volley"};
std::atomic<LogPrefix> g_prefix{LogPrefix::kNone};

std::string_view SeverityWord(Severity severity, bool always) {
  switch (severity) {
    case Severity::kInfo: return always ? "info: " : "";
    case Severity::kWarning: return "warning: ";
    case Severity::kError: return "error: ";
    case Severity::kFatal: return "fatal: ";
  }
  return "";
}

// sd-daemon(3)'s prefixes: the journal takes the line's priority from them.
std::string_view JournalPriority(Severity severity) {
  switch (severity) {
    case Severity::kInfo: return "<6>";
    case Severity::kWarning: return "<4>";
    case Severity::kError: return "<3>";
    case Severity::kFatal: return "<2>";
  }
  return "<6>";
}

// StderrIsTheJournal - systemd sets JOURNAL_STREAM=DEV:INODE for a service
// whose stderr is the journal; the variable is inherited by children whose
// stderr may be redirected elsewhere, so the descriptor itself is compared.
bool StderrIsTheJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

void AppendTime(int64_t unix_ms, std::string* line) {
  const time_t seconds = static_cast<time_t>(unix_ms / 1000);
  struct tm utc {};
  gmtime_r(&seconds, &utc);
  char text[40];
  const int n = std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ",
                              utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                              utc.tm_min, utc.tm_sec, static_cast<int>(unix_ms % 1000));
  if (n > 0) line->append(text, static_cast<size_t>(n));
}

}  // namespace

void SetLogProgram(const char* name, LogStyle style) {
  g_program.store(name, std::memory_order_relaxed);
  LogPrefix prefix = LogPrefix::kNone;
  if (style == LogStyle::kDaemon) {
    prefix = StderrIsTheJournal() ? LogPrefix::kJournalPriority : LogPrefix::kTime;
  }
  g_prefix.store(prefix, std::memory_order_relaxed);
}

std::string FormatLogLine(std::string_view program, Severity severity, std::string_view message,
                          LogPrefix prefix, int64_t unix_ms) {
  if (message.size() > kMaxLogLine) message = message.substr(0, kMaxLogLine);
  std::string line;
  line.reserve(program.size() + message.size() + 48);
  if (prefix == LogPrefix::kTime) AppendTime(unix_ms, &line);
  if (prefix == LogPrefix::kJournalPriority) line.append(JournalPriority(severity));
  line.append(program);
  line.append(": ");
  line.append(SeverityWord(severity, /*always=*/prefix != LogPrefix::kNone));
  const size_t start = line.size();
  line.append(message);
  for (size_t i = start; i < line.size(); ++i) {
    if (line[i] == '\r' || line[i] == '\n') line[i] = ' ';
  }
  line.push_back('\n');
  return line;
}

void Log(Severity severity, std::string_view message) {
  const LogPrefix prefix = g_prefix.load(std::memory_order_relaxed);
  int64_t unix_ms = 0;
  if (prefix == LogPrefix::kTime) {
    struct timespec now {};
    clock_gettime(CLOCK_REALTIME, &now);
    unix_ms = static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
  }
  const std::string line =
      FormatLogLine(g_program.load(std::memory_order_relaxed), severity, message, prefix, unix_ms);
  // One write per line (stderr is unbuffered, but fprintf may split a line
  // into several writes); a short write to a pipe is finished, nothing more.
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace volley::base
