// transcript.h - replay an S:/C: transcript through smtp::Client (test helper)
//
// SYNOPSIS
//   std::string err = ReplayTranscript(text, FeedMode::kWhole);   // "" when it matches
//
// DESCRIPTION
//   A transcript is a list of lines, one directive each:
//     # ...                  comment (blank lines are ignored too)
//     S: <line>              server sends <line> CRLF
//     R: <bytes>             server sends raw bytes; \r \n \\ \xHH escapes, no CRLF added
//     C: <line>              the client must have written <line> CRLF
//     M: <line>              a line of the next message's content (joined with "\n")
//     E: <event>             the next event from Next() must read <event> (DescribeEvent)
//     ! options [ehlo=NAME] [pipeline=N] [max_line=N] [max_lines=N]
//               [tls=off|opportunistic|required] [chunking=on|off] [pipelining=on|off]
//               [transactions=N]
//                                          (first line only)
//     ! start id=N from=ADDR to=A[,B...]   StartTransaction (must succeed); from=<> is
//                                          the null path; content from the M: lines
//     ! quit | ! eof | ! timeout | ! ioerror WHAT
//     ! tls-established      TlsEstablished(), after E: starttls
//     ! wait NAME            waiting_for() must be NAME (none, greeting, ehlo, ...)
//   Consecutive S:/R: lines form one block that is fed in the chosen FeedMode, with
//   Next() drained after every piece; consecutive C: lines are compared with the
//   client's whole pending output at once, which is then consumed. At the end no
//   output or event may be left unchecked.
#ifndef VOLLEY_TESTS_UNIT_SMTP_TRANSCRIPT_H_
#define VOLLEY_TESTS_UNIT_SMTP_TRANSCRIPT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "engine/smtp/client.h"

namespace volley::smtp {

struct FeedMode {
  enum class Kind { kWhole, kByte, kSplit };
  Kind kind = Kind::kWhole;
  size_t split = 0;  // kSplit: each block is fed as [0, split) then the rest

  static FeedMode Whole() { return {}; }
  static FeedMode Byte() { return {Kind::kByte, 0}; }
  static FeedMode Split(size_t at) { return {Kind::kSplit, at}; }
};

// DescribeEvent - "need-data", "ready esmtp pipelining size=1000",
// "done 7 accepted:250:2.0.0:data-done transient:452:4.5.3:rcpt",
// "closed transient:421:4.0.0:rcpt".
std::string DescribeEvent(const Event& ev);
std::string DescribeOutcome(const Outcome& o);

// ReplayTranscript - "" when the client behaves as the transcript says, else a
// message naming the transcript line that failed and what differed.
std::string ReplayTranscript(std::string_view transcript, FeedMode mode);

// LongestServerBlock - the most bytes in one S:/R: block, to bound split points.
size_t LongestServerBlock(std::string_view transcript);

}  // namespace volley::smtp

#endif  // VOLLEY_TESTS_UNIT_SMTP_TRANSCRIPT_H_
