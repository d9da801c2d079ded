// line_reader.cc - see line_reader.h.
#include "engine/smtp/line_reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace volley::smtp {

LineReader::LineReader(size_t max_line, BadLine bad_line)
    : max_line_(max_line), bad_line_(bad_line) {}

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

size_t LineReader::FeedLine(std::string_view input) {
  const size_t lf = input.find('\n');
  const size_t n = lf == std::string_view::npos ? input.size() : lf + 1;
  Feed(input.substr(0, n));
  return n;
}

void LineReader::Reset() {
  buf_.clear();
  start_ = scan_ = 0;
  dropping_ = false;
}

absl::StatusOr<std::optional<std::string_view>> LineReader::Next() {
  VOLLEY_CHECK(bad_line_ == BadLine::kFail, "LineReader::Next needs BadLine::kFail");
  const Line line = NextLine();
  switch (line.kind) {
    case Line::Kind::kNone:
      return std::nullopt;
    case Line::Kind::kText:
      return line.text;
    case Line::Kind::kTooLong:
    case Line::Kind::kBareLf:  // not under kFail
      break;
  }
  return status_;
}

Line LineReader::NextLine() {
  if (!status_.ok()) return {Line::Kind::kTooLong, {}};
  return bad_line_ == BadLine::kFail ? NextCrlf() : NextLf();
}

Line LineReader::Fail(std::string message) {
  status_ = absl::InvalidArgumentError(std::move(message));
  Reset();
  return {Line::Kind::kTooLong, {}};
}

Line LineReader::NextCrlf() {
  size_t pos = buf_.find("\r\n", scan_);
  if (pos == std::string::npos) {
    // A CR in the last byte may yet be followed by its LF: search it again next time.
    scan_ = std::max(start_, buf_.empty() ? 0 : buf_.size() - 1);
    size_t pending = buf_.size() - start_;
    if (pending > 0 && buf_.back() == '\r') --pending;
    if (pending > max_line_) return Fail(absl::StrCat("line longer than ", max_line_, " octets"));
    return {};
  }
  size_t len = pos - start_;
  if (len > max_line_) {
    return Fail(absl::StrCat("line of ", len, " octets, longer than ", max_line_));
  }
  std::string_view line(buf_.data() + start_, len);
  start_ = scan_ = pos + 2;
  return {Line::Kind::kText, line};
}

// NextLf - kReport. A line is measured with its end: at most max_line + 2 octets
// through the LF, whether a CR comes before it or not.
Line LineReader::NextLf() {
  const size_t limit = max_line_ + 2;
  const size_t pos = buf_.find('\n', scan_);
  if (pos == std::string::npos) {
    scan_ = buf_.size();
    // Drop what can no longer fit even if the next byte is its LF: an over-long
    // line is never stored, whatever the peer sends.
    if (dropping_ || buf_.size() - start_ + 1 > limit) {
      dropping_ = true;
      buf_.clear();
      start_ = scan_ = 0;
    }
    return {};
  }
  const size_t len = pos - start_;  // through the CR, if any, not the LF
  const size_t begin = start_;
  start_ = scan_ = pos + 1;
  if (dropping_ || len + 1 > limit) {
    dropping_ = false;
    return {Line::Kind::kTooLong, {}};
  }
  if (len == 0 || buf_[pos - 1] != '\r') return {Line::Kind::kBareLf, {}};
  return {Line::Kind::kText, std::string_view(buf_.data() + begin, len - 1)};
}

}  // namespace volley::smtp
