// reply.h - bounded, incremental parser for SMTP server replies
//
// SYNOPSIS
//   ReplyParser p({.max_line = 4096, .max_lines = 100});
//   p.Feed(bytes);                                    // buffers only
//   absl::StatusOr<std::optional<Reply>> r = p.Next();  // one whole reply, or nullopt
//   Reply reply; while (p.NextReply(&reply)) Handle(reply);  // the same, reusing reply
//
//   std::string SanitiseEnhancedCode(int code, std::string_view enhanced);
//
// DESCRIPTION
//   A reply is one or more CRLF-ended lines "xyz-text" ... "xyz text" (RFC 5321
//   section 4.2). Next() returns a reply only when its last line has arrived, so a
//   multi-line greeting or EHLO answer is seen whole however the bytes were split.
//
//   Reply::enhanced is the RFC 3463 code at the start of the first line (for example
//   "2.1.5"), or "" when there is none. It is sanitised as Postfix's smtp_chat_resp does:
//   when its class digit differs from the reply code's first digit, it becomes
//   "<class>.0.0", because the enhanced code decides whether a failure is transient or
//   permanent and a server must not be able to turn a 4xx into a bounce with it.
//   Reply::text joins each line's text (after the code and any enhanced code) with
//   "\n". Control characters in the text (bare CR, bare LF, NUL, ...) become '?', so the
//   text is safe to log and cannot forge a line of its own.
//
// DIAGNOSTICS
//   Malformed input is an InvalidArgument error, after which the parser stays in error
//   and every later Next() returns the same status. Postfix's rule applies: garbage is
//   never skipped, because under pipelining a skipped line could make one command's
//   reply pass for another's. Errors: a code that is not exactly three digits with a
//   first digit 2 to 5, followed by '-', ' ' or the end of the line; a multi-line reply
//   whose lines carry different codes; a line over max_line; more than max_lines lines.
//
// BOUNDS
//   At most max_line octets per line and max_lines lines per reply (ReplyParserOptions),
//   so one reply holds at most max_line * max_lines octets of text.
//
// SEE ALSO
//   line_reader.h (the line splitter), client.h (the state machine that consumes
//   replies). RFC 5321 section 4.2, RFC 3463, RFC 2034.
#ifndef VOLLEY_ENGINE_SMTP_REPLY_H_
#define VOLLEY_ENGINE_SMTP_REPLY_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/smtp/line_reader.h"

namespace volley::smtp {

struct Reply {
  int code = 0;          // 200-599
  std::string enhanced;  // "2.1.5", or "" when the server sent none; sanitised
  std::string text;      // each line's text after the code(s), joined with "\n"
};

struct ReplyParserOptions {
  // Longest reply line accepted, CRLF not counted; a longer line is a protocol error.
  // RFC 5321 section 4.5.3.1.5 promises only 512. Default: 4096.
  size_t max_line = 4096;
  // Most lines in one multi-line reply (an EHLO reply has one per extension); more is a
  // protocol error. Default: 100.
  size_t max_lines = 100;
};

class ReplyParser {
 public:
  explicit ReplyParser(ReplyParserOptions opts = {});

  // Feed - buffer bytes from the server; no parsing happens here.
  void Feed(std::string_view bytes);

  // Next - the next complete reply; std::nullopt when more bytes are needed; an error
  // status (for this and every later call) on malformed input.
  absl::StatusOr<std::optional<Reply>> Next();

  // NextReply - Next() for the hot path: true with *reply replaced by the next
  // complete reply (whatever it held before is reused as scratch); false when more
  // bytes are needed or the input is malformed, told apart by status().
  bool NextReply(Reply* reply);
  const absl::Status& status() const { return status_; }

  // buffered - non-zero exactly when bytes arrived after the last reply returned (a
  // lower bound on their count, not the count): the client uses it to catch a server
  // that talks while nothing is outstanding.
  size_t buffered() const { return lines_.buffered() + (in_reply_ ? 1 : 0); }

 private:
  bool Fail(absl::Status status);  // records the error; returns false

  ReplyParserOptions opts_;
  LineReader lines_;
  absl::Status status_;
  // The reply being assembled from lines received so far.
  bool in_reply_ = false;
  size_t line_count_ = 0;
  Reply partial_;
};

// SanitiseEnhancedCode - the enhanced code to keep for a reply with this code: "" stays
// "", and a code whose class digit is not code / 100 becomes "<code / 100>.0.0".
std::string SanitiseEnhancedCode(int code, std::string_view enhanced);
// AssignSanitisedEnhancedCode - the same, into *out (replacing what it held).
void AssignSanitisedEnhancedCode(int code, std::string_view enhanced, std::string* out);

}  // namespace volley::smtp

#endif  // VOLLEY_ENGINE_SMTP_REPLY_H_
