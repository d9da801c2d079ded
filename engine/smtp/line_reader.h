// line_reader.h - bounded CRLF line reader for SMTP peers
//
// SYNOPSIS
//   LineReader r(/*max_line=*/4096);
//   r.Feed(bytes);                       // buffers only
//   absl::StatusOr<std::optional<std::string_view>> line = r.Next();
//
// DESCRIPTION
//   Splits a byte stream into lines ended by CRLF. Only CRLF ends a line: a bare LF or
//   a bare CR is an ordinary byte of the line (RFC 5321 section 2.3.8), so a peer cannot
//   make us see a line boundary that another implementation would not.
//
//   Feed() only appends. Next() resumes its search for CRLF where the previous call
//   stopped, so input delivered one byte at a time costs O(n) in total, not O(n^2)
//   (the same trick as h11's receive buffer).
//
//   The returned view stays valid until the next Feed(), or until a Next() that fails
//   (the error drops the buffer); a successful Next() never moves bytes.
//
//   Shared by the SMTP client's reply parser and by volley-sink's command reader.
//
// DIAGNOSTICS
//   A line longer than max_line octets (CRLF not counted) is an InvalidArgument
//   error, reported as soon as the excess has arrived rather than when its CRLF does.
//   The reader then stays in error and discards further input: a peer that sends an
//   over-long line is not to be trusted with the rest of the session.
//
// BOUNDS
//   Next() never lets more than max_line + 1 octets of an unfinished line accumulate
//   unnoticed; whatever Feed() is given is held until Next() consumes it, so the caller
//   bounds its reads.
//
// SEE ALSO
//   reply.h, the SMTP reply parser built on this reader.
#ifndef VOLLEY_ENGINE_SMTP_LINE_READER_H_
#define VOLLEY_ENGINE_SMTP_LINE_READER_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::smtp {

class LineReader {
 public:
  explicit LineReader(size_t max_line);

  // Feed - append bytes read from the peer. Ignored once the reader is in error.
  void Feed(std::string_view bytes);

  // Next - the next complete line without its CRLF; std::nullopt when more bytes are
  // needed; an error (kept for every later call) when a line is too long.
  absl::StatusOr<std::optional<std::string_view>> Next();

  // buffered - octets received but not yet returned as part of a line.
  size_t buffered() const { return buf_.size() - start_; }

  bool in_error() const { return !status_.ok(); }

 private:
  size_t max_line_;
  std::string buf_;
  size_t start_ = 0;  // first byte not yet returned
  size_t scan_ = 0;   // no CRLF starts in [start_, scan_): the search resumes here
  absl::Status status_;
};

}  // namespace volley::smtp

#endif  // VOLLEY_ENGINE_SMTP_LINE_READER_H_
