// NAME
//   session.h - the server side of one SMTP session, as a pure state machine
//
// SYNOPSIS
//   #include "engine/smtpd/session.h"
//
//   volley::smtpd::Session s(opts);          // opts: hostname, profile, ...
//   volley::smtpd::Output out;
//   s.Start(open_connections, &out);        // the greeting (or a refusal)
//   s.Feed(bytes, now, &out);               // replies to the commands in bytes
//   for (const Step& step : out.steps) ...; // wait step.delay, send step.bytes
//   if (out.start_tls) ...;                 // then begin the TLS handshake
//   if (out.close) ...;                     // then close the connection
//
// DESCRIPTION
//   Session parses what an SMTP client sends and decides what the server does
//   about it: which replies, after which delays, and whether the connection then
//   closes or switches to TLS. It is volley-sink's and volleyd's inbound
//   listener's. By default (volley-sink) it accepts every well-formed
//   transaction and discards the mail, unless its fault profile (profile.h) says
//   otherwise. A receiving server sets accepted_domains (RCPT elsewhere: 550
//   5.7.1, nothing is relayed) and a handler, which gets each message's
//   envelope and content and decides the reply to its end of data. It
//   does no I/O and reads no clock: the caller executes the decisions in Output,
//   passes the time in (only greylisting uses it), and unit tests can feed input
//   split at any byte.
//
//   Feed() consumes all of its input, except after a decision to close or to
//   start TLS (the rest is dropped: plaintext after STARTTLS must never be read
//   as a command, RFC 3207 5 and CVE-2011-0411). Every complete command is
//   answered in order. Replies without a delay are appended to the last step, so
//   a pipelined group (RFC 2920) is answered with one write; a reply with a delay
//   (a rule's delay or the profile's tarpit) starts a new step. Message content
//   after DATA or BDAT is counted and dropped as it streams in; the end-of-data
//   sequence CRLF "." CRLF is recognised when split across Feed() calls at any
//   byte.
//
//   Commands: EHLO, HELO, MAIL, RCPT, DATA, BDAT (RFC 3030), RSET, NOOP, QUIT,
//   STARTTLS (RFC 3207). EHLO advertises what the profile offers (by default
//   PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING; STARTTLS
//   when the profile offers it and TLS is not yet active). An extension's command
//   or MAIL parameter is accepted only when this session's EHLO advertised it:
//   BDAT otherwise is an unknown command (500), SIZE=, BODY=8BITMIME and SMTPUTF8
//   get 555.
//
//   Command lines end in CRLF only. A line ended by a bare LF is discarded and
//   answered 500 5.5.2 (RFC 5321 2.3.8; accepting it invites SMTP smuggling).
//   Lines are split by smtp::LineReader (engine/smtp/line_reader.h) under its
//   BadLine::kReport rules, the client's reply reader under kFail.
//   In DATA content a bare LF is content, never part of the terminator.
//
//   After STARTTLS is answered 220, the session forgets EHLO and any transaction
//   (RFC 3207 4.2) and reads the client's EHLO again over TLS; STARTTLS is then
//   neither advertised nor accepted.
//
//   Profiles. The listener's profile (SessionOptions::profile) governs the
//   greeting, EHLO, tarpit and every command; a [domain] profile
//   (SessionOptions::profiles) governs the RCPT of a recipient in its domain,
//   and DATA, BDAT and the end of data of a transaction whose first accepted
//   recipient is in its domain. Rules apply only to commands the sink would
//   accept: syntax and sequence errors are answered as usual. For a command, the
//   disconnect rules go first (close, no reply), then the reply rules (the first
//   that fires gives the reply and/or delay), then greylisting (RCPT). A rule's
//   nth counts the commands it matches in this session; its rate draws from the
//   session's own PRNG, seeded by SessionOptions::seed, so a session's decisions
//   are reproducible.
//
//   A message's byte count is its content after dot-unstuffing (DATA) or the sum
//   of its chunk sizes (BDAT), including the final CRLF of DATA content but not
//   the terminating "." line.
//
// CONTRACT
//   Not thread-safe; one Session per connection. Once Output::close is set,
//   closed() is true and further input is ignored. End of input is the caller's
//   business: a session has nothing to say on EOF. The profiles and greylist
//   that SessionOptions points at must outlive the session.
//
// DIAGNOSTICS (replies)
//   500 5.5.2 unknown command or bare LF; 500 5.5.6 command line too long;
//   501 5.5.4 bad arguments (for BDAT without a readable size the connection is
//   then closed: the chunk's length is unknown); 502 5.5.1 EHLO under no-esmtp,
//   STARTTLS not offered; 503 5.5.1 command out of sequence; 554 5.5.1 DATA
//   without recipients; 452 4.5.3 too many recipients; 550 5.7.1 relaying
//   denied (a recipient outside accepted_domains); 552 5.3.4 message too big;
//   555 5.5.4 unsupported MAIL parameter; 451 4.7.1 greylisted; 421 4.7.0 too
//   many connections (from the client's address) or messages; 421 4.4.2
//   timeout; the handler's reply at the end of data. Any reply with code 421
//   closes the connection.
//
// BOUNDS
//   A command line longer than max_line_length octets (CRLF included) is
//   discarded, not stored, and answered with 500 5.5.6. Without a handler,
//   message content is never buffered; with one, at most the size limit
//   (max_message_size, or the profile's size_limit) of it is. The sender of the
//   open transaction is kept, and its recipients only when keep_addresses is
//   set or there is a handler (at most max_recipients of them). Rule counters:
//   one per rule of the profile set.
//
// SEE ALSO
//   profile.h, the fault profiles; greylist.h; server.h, the io_uring server that
//   drives one Session per connection. RFC 5321 (SMTP), RFC 2920 (PIPELINING),
//   RFC 3030 (CHUNKING), RFC 1870 (SIZE), RFC 3207 (STARTTLS).
#ifndef VOLLEY_ENGINE_SMTPD_SESSION_H_
#define VOLLEY_ENGINE_SMTPD_SESSION_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "engine/smtp/line_reader.h"
#include "engine/smtpd/greylist.h"
#include "engine/smtpd/profile.h"

namespace volley::smtpd {

// The envelope of a message, as the message handler gets it.
struct Envelope {
  std::string helo;                  // the EHLO or HELO argument
  std::string mail_from;             // reverse-path without <>; "" for the null sender
  std::vector<std::string> rcpt_to;  // accepted forward-paths without <>, in order
  std::string peer;                  // SessionOptions::peer, "ip:port"
  bool tls = false;                  // the message came over STARTTLS
};

// MessageHandler - takes a message at its end of data (DATA's final dot, BDAT
// LAST) and returns the complete reply to send, such as "250 2.0.0 Ok: queued
// as X" or "451 4.3.0 Error: could not store the message" (CRLF appended when
// missing). Runs on the thread that feeds the session (a shard's): what it
// blocks on, the shard waits for. A 2xx reply counts the message as accepted.
using MessageHandler =
    std::function<std::string(const Envelope& envelope, std::string_view content)>;

struct SessionOptions {
  // Name in the greeting and the EHLO reply. Default: "localhost".
  std::string hostname = "localhost";

  // Software named in the greeting, "220 HOSTNAME ESMTP SOFTWARE". Default:
  // "volley-sink".
  std::string software = "volley-sink";

  // Longest command line accepted, CRLF included; longer lines are discarded and
  // answered 500 5.5.6. RFC 5321 4.5.3.1.4 requires at least 512. Default: 4096.
  size_t max_line_length = 4096;

  // Recipients per transaction; RCPT past this gets 452 4.5.3. Default: 1000.
  size_t max_recipients = 1000;

  // Largest message accepted, advertised as SIZE; bigger ones get 552 5.3.4 at the
  // end of data. A profile's size_limit overrides it. Default: 104857600 (100 MiB).
  uint64_t max_message_size = 104857600;

  // Keep the envelope addresses to report them in AcceptedMessage. When false, the
  // recipients are parsed but not stored, and AcceptedMessage carries counts only.
  // Default: true.
  bool keep_addresses = true;

  // The listener's profile; nullptr: the built-in default (no faults).
  const Profile* profile = nullptr;
  // The whole set, for [domain] profiles of recipients; nullptr: none.
  const ProfileSet* profiles = nullptr;
  // The server's greylisting table; nullptr: greylisting is off.
  Greylist* greylist = nullptr;
  // Seed of this session's PRNG (rule rates). Default: 1.
  uint64_t seed = 1;

  // Recipient domains accepted (lower case; compared in any case); RCPT to any
  // other domain gets 550 5.7.1 (relaying denied). Empty: every domain, as
  // volley-sink. Looked through in order: meant for a handful. Default: {}.
  std::vector<std::string> accepted_domains;

  // Called at each end of data with the envelope and the content (see
  // MessageHandler); nullptr: the content is counted and dropped, and the
  // reply is "250 2.0.0 Ok: N octets, discarded". With a handler the content
  // is kept (dot-unstuffed, chunks joined) up to the size limit, which must not
  // be 0; past it nothing more is kept and the message gets 552 5.3.4. The
  // handler must outlive the session. Default: nullptr.
  const MessageHandler* handler = nullptr;

  // Messages per connection: a MAIL after this many accepted messages gets
  // 421 4.7.0 and the connection closes. 0: no limit. Default: 0.
  uint64_t max_messages = 0;

  // The client's address, "ip:port", for the handler's Envelope. Default: "".
  std::string peer;
};

// A message the session accepted (answered 2xx at end of data or BDAT LAST).
struct AcceptedMessage {
  std::string from;                 // reverse-path without <>; empty if not kept
  std::vector<std::string> rcpts;   // forward-paths without <>; empty if not kept
  uint64_t recipients = 0;          // number of accepted RCPTs
  uint64_t bytes = 0;               // content octets, see DESCRIPTION
};

// One thing for the server to do: wait, then send.
struct Step {
  absl::Duration delay = absl::ZeroDuration();
  std::string bytes;  // may be empty (a delay before closing)
};

// What the session decided, for the server to execute in order: every step,
// then start TLS or close.
struct Output {
  std::vector<Step> steps;
  bool start_tls = false;  // begin the server side of a TLS handshake
  bool close = false;      // close the connection
  std::vector<AcceptedMessage> accepted;
  // 4xx and 5xx replies to MAIL, RCPT, DATA, BDAT and the end of data.
  uint64_t rejects = 0;

  void Clear();
  // Every step's bytes, concatenated (for tests).
  std::string Bytes() const;
};

class Session {
 public:
  // Where the session stands; exposed for tests and logs.
  enum class State {
    kCommand,      // reading command lines
    kData,         // after 354, reading content up to CRLF "." CRLF
    kChunk,        // reading the octets of a BDAT chunk
    kClosed,       // decided to close (QUIT answered, 421, a disconnect rule...)
  };

  explicit Session(SessionOptions options);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Start - the session's opening: the greeting, or 421 when the listener
  // already has more than max_connections open (connections counts this one),
  // or a silent close (a CONNECT disconnect rule).
  void Start(uint64_t connections, Output* out);

  // Refuse - the opening of a connection over a server bound: 421 4.7.0 and
  // close; per_client says the bound was the client address's.
  void Refuse(bool per_client, Output* out);

  // Feed - consume input received at `now`; append decisions to out.
  void Feed(std::string_view input, absl::Time now, Output* out);

  // Timeout - the client stayed silent past the server's idle timeout (RFC
  // 5321 4.5.3.2): 421 4.4.2 and close. A transaction in progress is dropped.
  void Timeout(Output* out);

  State state() const { return state_; }
  bool closed() const { return state_ == State::kClosed; }
  // The client sent QUIT (however it was answered): it ended the session
  // politely, where a connection closed without it was dropped.
  bool quit_received() const { return quit_received_; }
  bool tls() const { return tls_; }
  // Octets of a partial command line held, for tests of the bound.
  size_t buffered() const { return lines_.buffered(); }

 private:
  // Where the scanner is in DATA content relative to a line start.
  enum class DataScan {
    kLineStart,  // just after CRLF (or the DATA command)
    kMid,        // inside a line
    kCr,         // after CR inside a line
    kDot,        // after "." at a line start
    kDotCr,      // after "." CR at a line start
  };

  // What the rules decided for one command.
  struct Decision {
    bool disconnect = false;
    const Reply* reply = nullptr;  // an override, or nullptr
    absl::Duration delay = absl::ZeroDuration();
  };

  size_t FeedCommand(std::string_view input, Output* out);
  size_t FeedData(std::string_view input, Output* out);
  size_t FeedChunk(std::string_view input, Output* out);

  void HandleLine(std::string_view line, Output* out);
  void Ehlo(std::string_view arg, bool extended, Output* out);
  void Mail(std::string_view arg, Output* out);
  void Rcpt(std::string_view arg, Output* out);
  void Data(std::string_view arg, Output* out);
  void Bdat(std::string_view arg, Output* out);
  void StartTls(std::string_view arg, Output* out);
  void EndData(Output* out);
  void EndChunk(Output* out);
  void Accept(Output* out);
  void ResetTransaction();
  // Content - n octets of message content: counted, and kept when capturing.
  void Content(const char* p, size_t n);
  // Deliver - the reply for a complete message: the handler's, or "discarded".
  std::string Deliver();

  // Decide - apply profile p's rules to command c with argument arg.
  Decision Decide(const Profile& p, Command c, std::string_view arg);
  // Respond - send the override in d, or `normal`; true when the command is to
  // take effect (the reply is 2xx or 3xx and the session stays open).
  bool Respond(Command c, std::string_view normal, const Decision& d, Output* out);
  // Emit - send a reply after the tarpit and `delay`; count rejects; 421 closes.
  void Emit(Command c, std::string_view reply, absl::Duration delay, Output* out);
  // Close - stop here: no more input is read.
  void Close(Output* out);
  // The profile for a transaction's DATA, BDAT and end of data.
  const Profile& TransactionProfile() const;
  uint64_t SizeLimit() const;  // 0: none
  double NextRandom();         // uniform in [0, 1)

  const SessionOptions options_;
  const Profile& profile_;
  State state_ = State::kCommand;
  uint64_t rng_;

  // Command lines: the SMTP library's reader under server rules (a bare LF and an
  // over-long line are reported, never stored). It is fed one line at a time, so
  // what follows DATA, BDAT or STARTTLS in the same input never enters it.
  smtp::LineReader lines_;
  // Set when the rest of the current Feed() input must be dropped (STARTTLS).
  bool stop_feed_ = false;
  absl::Time now_;

  // Session and transaction state.
  bool refused_ = false;        // the greeting was 4xx/5xx: only QUIT works
  bool quit_received_ = false;  // quit_received()
  bool greeted_ = false;        // EHLO or HELO accepted
  bool esmtp_ = false;          // ... and it was EHLO: extensions were advertised
  bool tls_ = false;            // STARTTLS was answered 220
  bool in_transaction_ = false; // MAIL accepted
  bool chunking_ = false;       // a BDAT without LAST was accepted
  std::string from_;
  std::vector<std::string> rcpts_;
  uint64_t recipients_ = 0;
  uint64_t message_bytes_ = 0;
  uint64_t messages_ = 0;        // accepted on this connection
  std::string helo_;             // the last accepted EHLO or HELO argument
  // Message content, kept only with a handler; cleared (and content_over_
  // set) once it passes the size limit.
  std::string content_;
  bool content_over_ = false;
  const Profile* transaction_profile_ = nullptr;  // first recipient's domain

  // Per rule: how many commands it matched in this session (ReplyRule::id).
  std::vector<uint32_t> seen_;

  // DATA content scanning.
  DataScan scan_ = DataScan::kLineStart;

  // BDAT chunk in progress: octets still to skip, its argument, and how to
  // answer at its end.
  uint64_t chunk_left_ = 0;
  bool chunk_last_ = false;
  std::string chunk_arg_;
  // The reply for the chunk when it is refused (501/503/554/552), else empty.
  std::string chunk_error_;
};

}  // namespace volley::smtpd

#endif  // VOLLEY_ENGINE_SMTPD_SESSION_H_
