#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

namespace volley::base {
namespace {

std::atomic<const char*> g_program{"volley"};

std::string_view SeverityWord(Severity severity) {
  switch (severity) {
    case Severity::kInfo: return "";
    case Severity::kWarning: return "warning: ";
    case Severity::kError: return "error: ";
    case Severity::kFatal: return "fatal: ";
  }
  return "";
}

}  // namespace

void SetLogProgram(const char* name) { g_program.store(name, std::memory_order_relaxed); }

std::string FormatLogLine(std::string_view program, Severity severity, std::string_view message) {
  if (message.size() > kMaxLogLine) message = message.substr(0, kMaxLogLine);
  std::string line;
  line.reserve(program.size() + message.size() + 16);
  line.append(program);
  line.append(": ");
  line.append(SeverityWord(severity));
  const size_t start = line.size();
  line.append(message);
  for (size_t i = start; i < line.size(); ++i) {
    if (line[i] == '\r' || line[i] == '\n') line[i] = ' ';
  }
  line.push_back('\n');
  return line;
}

void Log(Severity severity, std::string_view message) {
  const std::string line =
      FormatLogLine(g_program.load(std::memory_order_relaxed), severity, message);
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
