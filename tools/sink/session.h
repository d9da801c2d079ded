// NAME
//   session.h - the server side of one SMTP session, as a pure state machine
//
// SYNOPSIS
//   #include "tools/sink/session.h"
//
//   volley::sink::Session s(opts);          // opts.hostname names us in replies
//   s.Start(&out);                          // appends the 220 greeting
//   s.Feed(bytes, &out, &accepted);         // replies appended to out, messages
//                                           // accepted by this call to accepted
//   if (s.closed()) ...;                    // QUIT was answered: send out, close
//
// DESCRIPTION
//   Session parses what an SMTP client sends and produces the replies volley-sink
//   gives: it accepts every well-formed transaction and discards the mail. It does no
//   I/O and reads no clock, so the caller decides how bytes arrive and leave, and unit
//   tests can feed it input split at any byte.
//
//   Feed() consumes all of its input. Every complete command is answered in order and
//   the replies for one Feed() are appended to one string, so a pipelined group
//   (RFC 2920) is answered with one write. Message content after DATA or BDAT is
//   counted and dropped as it streams in; the end-of-data sequence CRLF "." CRLF is
//   recognised when split across Feed() calls at any byte.
//
//   Commands: EHLO, HELO, MAIL, RCPT, DATA, BDAT (RFC 3030), RSET, NOOP, QUIT.
//   EHLO advertises PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES, SMTPUTF8 and
//   CHUNKING. Command lines end in CRLF; a bare LF is accepted as a line end too.
//
//   A message's byte count is its content after dot-unstuffing (DATA) or the sum of
//   its chunk sizes (BDAT), including the final CRLF of DATA content but not the
//   terminating "." line.
//
// CONTRACT
//   Not thread-safe; one Session per connection. After QUIT is answered, closed() is
//   true and further input is ignored. End of input is the caller's business: a
//   session has nothing to say on EOF.
//
// DIAGNOSTICS (replies)
//   500 5.5.2 unknown command; 500 5.5.6 command line too long; 501 5.5.4 bad
//   arguments; 503 5.5.1 command out of sequence; 554 5.5.1 DATA without
//   recipients; 452 4.5.3 too many recipients; 552 5.3.4 message too big.
//
// BOUNDS
//   A command line longer than max_line_length octets (CRLF included) is discarded,
//   not stored, and answered with 500 5.5.6. Message content is never buffered. The
//   sender and recipient addresses of the open transaction are kept only when
//   keep_addresses is set, and at most max_recipients of them.
//
// SEE ALSO
//   sink.h, the io_uring server that drives one Session per connection.
//   RFC 5321 (SMTP), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING), RFC 1870 (SIZE).
#ifndef VOLLEY_TOOLS_SINK_SESSION_H_
#define VOLLEY_TOOLS_SINK_SESSION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace volley::sink {

struct SessionOptions {
  // Name in the greeting and the EHLO reply. Default: "localhost".
  std::string hostname = "localhost";

  // Longest command line accepted, CRLF included; longer lines are discarded and
  // answered 500 5.5.6. RFC 5321 4.5.3.1.4 requires at least 512. Default: 4096.
  size_t max_line_length = 4096;

  // Recipients per transaction; RCPT past this gets 452 4.5.3. Default: 1000.
  size_t max_recipients = 1000;

  // Largest message accepted, advertised as SIZE; bigger ones get 552 5.3.4 at the
  // end of data. Default: 104857600 (100 MiB).
  uint64_t max_message_size = 104857600;

  // Keep the envelope addresses to report them in AcceptedMessage. When false, the
  // addresses are parsed but not stored, and AcceptedMessage carries counts only.
  // Default: true.
  bool keep_addresses = true;
};

// A message the session accepted (answered 250 at end of data or BDAT LAST).
struct AcceptedMessage {
  std::string from;                 // reverse-path without <>; empty if not kept
  std::vector<std::string> rcpts;   // forward-paths without <>; empty if not kept
  uint64_t recipients = 0;          // number of accepted RCPTs
  uint64_t bytes = 0;               // content octets, see DESCRIPTION
};

class Session {
 public:
  // Where the session stands; exposed for tests and logs.
  enum class State {
    kCommand,      // reading command lines
    kData,         // after 354, reading content up to CRLF "." CRLF
    kChunk,        // reading the octets of a BDAT chunk
    kClosed,       // QUIT answered
  };

  explicit Session(SessionOptions options);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Start - append the 220 greeting to out.
  void Start(std::string* out) const;

  // Feed - consume input; append replies to out and accepted messages to accepted.
  void Feed(std::string_view input, std::string* out,
            std::vector<AcceptedMessage>* accepted);

  State state() const { return state_; }
  bool closed() const { return state_ == State::kClosed; }
  // Octets of a partial command line held, for tests of the bound.
  size_t buffered() const { return line_.size(); }

 private:
  // Where the scanner is in DATA content relative to a line start.
  enum class DataScan {
    kLineStart,  // just after CRLF (or the DATA command)
    kMid,        // inside a line
    kCr,         // after CR inside a line
    kDot,        // after "." at a line start
    kDotCr,      // after "." CR at a line start
  };

  size_t FeedCommand(std::string_view input, std::string* out,
                     std::vector<AcceptedMessage>* accepted);
  size_t FeedData(std::string_view input, std::string* out,
                  std::vector<AcceptedMessage>* accepted);
  size_t FeedChunk(std::string_view input, std::string* out,
                   std::vector<AcceptedMessage>* accepted);

  void HandleLine(std::string_view line, std::string* out,
                  std::vector<AcceptedMessage>* accepted);
  void Ehlo(std::string_view arg, bool extended, std::string* out);
  void Mail(std::string_view arg, std::string* out);
  void Rcpt(std::string_view arg, std::string* out);
  void Data(std::string_view arg, std::string* out);
  void Bdat(std::string_view arg, std::string* out,
            std::vector<AcceptedMessage>* accepted);
  void EndChunk(std::string* out, std::vector<AcceptedMessage>* accepted);
  void Accept(std::string* out, std::vector<AcceptedMessage>* accepted);
  void ResetTransaction();

  const SessionOptions options_;
  State state_ = State::kCommand;

  // Command line assembly. line_ never exceeds options_.max_line_length octets;
  // while discarding_ is set the rest of an over-long line is dropped.
  std::string line_;
  bool discarding_ = false;

  // Session and transaction state.
  bool greeted_ = false;        // EHLO or HELO accepted
  bool in_transaction_ = false; // MAIL accepted
  bool chunking_ = false;       // a BDAT without LAST was accepted
  std::string from_;
  std::vector<std::string> rcpts_;
  uint64_t recipients_ = 0;
  uint64_t message_bytes_ = 0;

  // DATA content scanning.
  DataScan scan_ = DataScan::kLineStart;

  // BDAT chunk in progress: octets still to skip, and how to answer at its end.
  uint64_t chunk_left_ = 0;
  bool chunk_last_ = false;
  // The reply for the chunk when it is refused (503/554/552), else empty.
  std::string chunk_error_;
};

}  // namespace volley::sink

#endif  // VOLLEY_TOOLS_SINK_SESSION_H_
