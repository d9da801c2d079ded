#include "metrics/delivery_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::metrics {

void FormatDeliveryRecord(const DeliveryRecord& r, std::string* out) {
  out->append("{\"ts\":\"");
  out->append(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", r.ts, absl::UTCTimeZone()));
  out->append("\",\"job\":");
  base::AppendJsonString(out, r.job);
  absl::StrAppend(out, ",\"line\":", r.line, ",\"rcpt\":");
  base::AppendJsonString(out, r.rcpt);
  out->append(",\"status\":");
  base::AppendJsonString(out, r.status);
  absl::StrAppend(out, ",\"code\":", r.code, ",\"enhanced\":");
  base::AppendJsonString(out, r.enhanced);
  out->append(",\"response\":");
  base::AppendJsonString(out, r.response);
  out->append(",\"host\":");
  base::AppendJsonString(out, r.host);
  absl::StrAppend(out, ",\"port\":", r.port, ",\"attempt\":", r.attempt);
  if (!r.mx.empty()) {
    *out += ",\"mx\":";
    base::AppendJsonString(out, r.mx);
  }
  if (!r.tls_version.empty()) {
    *out += ",\"tls_version\":";
    base::AppendJsonString(out, r.tls_version);
    *out += ",\"tls_cipher\":";
    base::AppendJsonString(out, r.tls_cipher);
  }
  *out += "}\n";
}

absl::StatusOr<std::unique_ptr<DeliveryLog>> DeliveryLog::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  }
  std::string path = absl::StrCat(dir, "/deliveries.jsonl");
  // Read and write: LinesAfter reads back what a crash kept from the queue.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(path, ": open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(path, ": fstat: ", std::strerror(err)));
  }
  auto log = std::unique_ptr<DeliveryLog>(new DeliveryLog(
      fd, std::move(path), static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
      static_cast<uint64_t>(st.st_size)));
  char last = '\n';
  if (st.st_size > 0 && ::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') {
    log->buffer_ = "\n";  // end the torn record's line before anything follows it
    RETURN_IF_ERROR(log->Flush());
  }
  return log;
}

std::string DeliveryLog::position() const { return absl::StrCat(dev_, ":", ino_, ":", size_); }

absl::StatusOr<std::vector<std::string>> DeliveryLog::LinesAfter(std::string_view position) const {
  const std::vector<absl::string_view> parts = absl::StrSplit(base::Sv(position), ':');
  uint64_t dev = 0, ino = 0, offset = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &dev) ||
      !absl::SimpleAtoi(parts[1], &ino) || !absl::SimpleAtoi(parts[2], &offset)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delivery log position \"", base::Sv(position), "\" is malformed"));
  }
  if (dev != dev_ || ino != ino_ || offset > size_) {
    return absl::NotFoundError(absl::StrCat(path_, " is not the file the queue last saw"));
  }
  const uint64_t length = std::min<uint64_t>(size_ - offset, kMaxReplayBytes);
  std::string bytes(length, '\0');
  size_t got = 0;
  while (got < length) {
    const ssize_t n = ::pread(fd_, bytes.data() + got, length - got,
                              static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat(path_, ": read: ",
                                                 n < 0 ? std::strerror(errno) : "file shrank"));
    }
    got += static_cast<size_t>(n);
  }
  std::vector<std::string> lines;
  for (std::string_view rest = bytes;;) {
    const size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) break;  // a torn or cut-off last line: not whole
    if (nl > 0) lines.emplace_back(rest.substr(0, nl));
    rest.remove_prefix(nl + 1);
  }
  return lines;
}

DeliveryLog::~DeliveryLog() {
  (void)Flush();
  ::close(fd_);
}

absl::Status DeliveryLog::Flush() {
  size_t written = 0;
  const absl::Status st = base::WriteAll(fd_, buffer_, path_, &written);
  size_ += written;
  // Keep what was not written: the next flush tries again.
  buffer_.erase(0, written);
  return st;
}

}  // namespace volley::metrics
