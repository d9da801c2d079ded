// line_reader.h - bounded line reader for SMTP peers: replies (client) and commands
// (server)
//
// SYNOPSIS
//   LineReader r(/*max_line=*/4096);     // a client's reply reader: BadLine::kFail
//   r.Feed(bytes);                       // buffers only
//   absl::StatusOr<std::optional<std::string_view>> line = r.Next();
//
//   LineReader c(4094, BadLine::kReport);  // a server's command reader
//   size_t used = c.FeedLine(input);       // up to the first LF of input, no further
//   Line line = c.NextLine();              // kNone, kText, kBareLf or kTooLong
//
// DESCRIPTION
//   Splits a byte stream into lines. What ends a line, and what happens to a line
//   that breaks the rules, is the BadLine policy:
//
//   kFail, for a client reading replies. Only CRLF ends a line: a bare LF or a bare CR
//   is an ordinary byte of the line (RFC 5321 section 2.3.8), so a peer cannot make us
//   see a line boundary that another implementation would not. A line longer than
//   max_line is an error that stays: a server that sends one is not to be trusted
//   with the rest of the session.
//
//   kReport, for a server reading commands, which answers a bad line and reads on.
//   Every LF ends a line; one without a CR before it comes out as kBareLf, to be
//   refused (taking it as a line end invites SMTP smuggling). A line longer than
//   max_line is dropped, never stored, and comes out as kTooLong once its LF arrives.
//
//   Feed() only appends. FeedLine() appends input up to and including its first LF
//   and says how much it took, for a server that hands the rest of its input to
//   something else once a line has been read (message content after DATA, nothing
//   after STARTTLS). Next() and NextLine() resume their search for the line end
//   where the previous call stopped, so input delivered one byte at a time costs O(n)
//   in total, not O(n^2) (the same trick as h11's receive buffer).
//
//   The returned view stays valid until the next Feed(), FeedLine() or Reset(), or
//   until a Next() that fails (the error drops the buffer); a successful Next() never
//   moves bytes.
//
//   Shared by the SMTP client's reply parser (reply.h) and volley-sink's command
//   reader (engine/smtpd/session.h).
//
// DIAGNOSTICS
//   kFail: a line longer than max_line octets (CRLF not counted) is an
//   InvalidArgument error from Next() (kTooLong from NextLine()), reported as soon as
//   the excess has arrived rather than when its CRLF does. The reader then stays in
//   error and discards further input.
//
// BOUNDS
//   A line is at most max_line octets without its end, that is max_line + 2 with
//   CRLF; kReport measures a line ended by a bare LF the same way, with its end, so
//   it may have max_line + 1 octets before the LF. Next() and NextLine() never let an
//   unfinished line that cannot fit accumulate unnoticed (kFail fails, kReport drops
//   it); whatever Feed() is given is held until one of them consumes it, so the
//   caller bounds its reads.
//
// SEE ALSO
//   reply.h, the SMTP reply parser built on this reader; engine/smtpd/session.h.
#ifndef VOLLEY_ENGINE_SMTP_LINE_READER_H_
#define VOLLEY_ENGINE_SMTP_LINE_READER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::smtp {

// What a reader does with a line that breaks the rules (see DESCRIPTION).
enum class BadLine : uint8_t {
  kFail,    // only CRLF ends a line; an over-long line is an error that stays
  kReport,  // LF ends a line; bare-LF and over-long lines are reported and skipped
};

// What NextLine() found.
struct Line {
  enum class Kind : uint8_t {
    kNone,     // no complete line yet: feed more
    kText,     // `text` is the line, without its CRLF
    kBareLf,   // kReport: a line ended by LF alone, dropped
    kTooLong,  // a line over max_line: dropped (kReport) or the reader's error (kFail)
  };
  Kind kind = Kind::kNone;
  std::string_view text;
};

class LineReader {
 public:
  explicit LineReader(size_t max_line, BadLine bad_line = BadLine::kFail);

  // Feed - append bytes read from the peer. Ignored once the reader is in error.
  void Feed(std::string_view bytes);

  // FeedLine - Feed() input up to and including its first LF (all of it when it has
  // none); returns the octets taken. At most one line end is then buffered.
  size_t FeedLine(std::string_view input);

  // Next - kFail only: the next complete line without its CRLF; std::nullopt when
  // more bytes are needed; an error (kept for every later call) when a line is too
  // long.
  absl::StatusOr<std::optional<std::string_view>> Next();

  // NextLine - the next line, or what was wrong with it (either policy).
  Line NextLine();

  // Reset - forget whatever is buffered, and any over-long line being dropped.
  void Reset();

  // buffered - octets received but not yet returned as part of a line (for kReport,
  // none of an over-long line: those are dropped as they come).
  size_t buffered() const { return buf_.size() - start_; }

  bool in_error() const { return !status_.ok(); }

 private:
  Line Fail(std::string message);
  Line NextCrlf();
  Line NextLf();

  size_t max_line_;
  BadLine bad_line_;
  std::string buf_;
  size_t start_ = 0;  // first byte not yet returned
  size_t scan_ = 0;   // no line end starts in [start_, scan_): the search resumes here
  bool dropping_ = false;  // kReport: inside an over-long line, dropped up to its LF
  absl::Status status_;
};

}  // namespace volley::smtp

#endif  // VOLLEY_ENGINE_SMTP_LINE_READER_H_
