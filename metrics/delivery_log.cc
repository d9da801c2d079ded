#include "metrics/delivery_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/json.h"

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
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(path, ": open: ", std::strerror(errno)));
  }
  return std::unique_ptr<DeliveryLog>(new DeliveryLog(fd, std::move(path)));
}

DeliveryLog::~DeliveryLog() {
  (void)Flush();
  ::close(fd_);
}

absl::Status DeliveryLog::Flush() {
  size_t written = 0;
  const absl::Status st = base::WriteAll(fd_, buffer_, path_, &written);
  // Keep what was not written: the next flush tries again.
  buffer_.erase(0, written);
  return st;
}

}  // namespace volley::metrics
