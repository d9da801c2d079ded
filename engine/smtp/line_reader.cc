// line_reader.cc - see line_reader.h.
#include "engine/smtp/line_reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace volley::smtp {

LineReader::LineReader(size_t max_line) : max_line_(max_line) {}

void LineReader::Feed(std::string_view bytes) {
  if (!status_.ok() || bytes.empty()) return;
  // Drop returned lines once they make up half the buffer: each byte is moved at most
  // a bounded number of times, so compaction stays amortised O(1) per byte. Views
  // handed out by Next() die here, as documented.
  if (start_ > 0 && start_ >= buf_.size() / 2) {
    buf_.erase(0, start_);
    scan_ -= start_;
    start_ = 0;
  }
  buf_.append(bytes);
}

absl::StatusOr<std::optional<std::string_view>> LineReader::Next() {
  if (!status_.ok()) return status_;
  size_t pos = buf_.find("\r\n", scan_);
  if (pos == std::string::npos) {
    // A CR in the last byte may yet be followed by its LF: search it again next time.
    scan_ = std::max(start_, buf_.empty() ? 0 : buf_.size() - 1);
    size_t pending = buf_.size() - start_;
    if (pending > 0 && buf_.back() == '\r') --pending;
    if (pending > max_line_) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("line longer than ", max_line_, " octets"));
      buf_.clear();
      start_ = scan_ = 0;
      return status_;
    }
    return std::nullopt;
  }
  size_t len = pos - start_;
  if (len > max_line_) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("line of ", len, " octets, longer than ", max_line_));
    buf_.clear();
    start_ = scan_ = 0;
    return status_;
  }
  std::string_view line(buf_.data() + start_, len);
  start_ = scan_ = pos + 2;
  return line;
}

}  // namespace volley::smtp
