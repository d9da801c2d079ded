// client.h - the SMTP client protocol as a sans-I/O state machine
//
// SYNOPSIS
//   Client c(opts);                 // awaits the greeting; nothing to write yet
//   c.Feed(bytes); c.FeedEof(); c.FeedTimeout(); c.FeedIoError("write: EPIPE");
//   for (Event ev = c.Next(); !std::holds_alternative<NeedData>(ev); ev = c.Next())
//     Handle(ev);           // SessionReady, StartTls, TransactionDone, SessionClosed
//   Write(c.PendingOutput()); c.ConsumeOutput(n);   // or c.TakeOutput(&buffer)
//   c.StartTransaction(envelope);   // when idle
//   c.Quit();
//   Wait w = c.waiting_for();       // which timeout the reactor should run
//
// DESCRIPTION
//   Bytes in, bytes and events out: no sockets and no clock. The reactor moves bytes
//   and maps waiting_for() to a configured timeout; this class owns every protocol
//   decision (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and
//   ENHANCEDSTATUSCODES).
//
//   Session: await the whole greeting; EHLO <ehlo_name>; on a 5xx to EHLO, HELO on the
//   same connection (no extensions). Then SessionReady, and the client is idle.
//
//   STARTTLS (RFC 3207), by ClientOptions::tls. When the policy is not kOff and EHLO
//   offered it: STARTTLS; on 220, the StartTls event, after which the reactor runs the
//   handshake and calls TlsEstablished() (or FeedIoError()); the client then forgets
//   the extensions and sends EHLO again. Bytes behind the 220 are a protocol error
//   (they were sent in plaintext and could be forged). Not offered, or refused with
//   4xx/5xx: kOpportunistic goes on in plaintext, kRequired ends the session with QUIT
//   and 451 4.7.10 (the recipients are deferred, never sent in plaintext).
//
//   Transaction (StartTransaction): MAIL FROM (with BODY=8BITMIME, SIZE=n and SMTPUTF8
//   as advertised and needed), RCPT TO per recipient, DATA, then the message from
//   PrepareData() after a 354; or, with CHUNKING advertised and ClientOptions::chunking,
//   one "BDAT <n> LAST" followed at once by the message from PrepareBdat() (no 354
//   round trip; a refused BDAT means RSET before the next MAIL). With PIPELINING (and
//   ClientOptions::pipelining), MAIL, the RCPTs and DATA or BDAT go out in one write;
//   DATA and BDAT always end a group, and the client stops to wait for replies when more
//   than max_pipeline_bytes of commands would be unacknowledged. Without PIPELINING one
//   command is outstanding at a time. The result is one TransactionDone, with one
//   Outcome per recipient in envelope order, after which the client is idle again and
//   may be given another Envelope (connection reuse). A transaction that failed (MAIL
//   refused, no recipient accepted, DATA refused) leaves the server in an unknown
//   state, so the next StartTransaction first sends RSET alone and waits for its 250.
//
//   Outcomes: a recipient whose RCPT got 2xx takes the outcome of the end-of-data reply
//   (stage kDataDone) or of a refused DATA (stage kData); a refused RCPT keeps that reply
//   (stage kRcpt); a refused MAIL is every recipient's outcome (stage kMail). 2xx is
//   accepted, 4xx transient, 5xx permanent, whatever the other digits; 452 and 552 to
//   RCPT mean "too many recipients" (RFC 5321 section 4.5.3.1.10) and are reported as
//   452 transient. An Outcome's enhanced code is the server's (sanitised) or, when it
//   sent none, "<class>.0.0". An address with non-ASCII octets needs SMTPUTF8: without
//   it that recipient (every recipient, for a non-ASCII sender) fails permanently with
//   550 5.6.7 and is never sent. A message over the advertised SIZE limit fails every
//   recipient with 552 5.3.4 without being sent. A message with 8-bit octets to a
//   server without 8BITMIME (nor SMTPUTF8 in use) is converted by DowngradeTo7Bit(),
//   or, when that cannot be done faithfully, fails with 554 5.6.3 without being sent.
//
//   Failures that end the session. A 421 at any point, EOF, FeedTimeout(), FeedIoError()
//   and any protocol error close the session at once, without QUIT: first a
//   TransactionDone if a transaction was under way, in which every recipient without a
//   final outcome gets a transient one (the 421 reply itself, or 451 4.4.2 with a text
//   naming the reply awaited, e.g. "connection lost while awaiting data-done reply
//   (message may have been delivered)"), then SessionClosed. A protocol error (a
//   malformed reply, a reply nobody asked for, bytes that arrive before the command
//   they would answer was sent, a reply of the wrong class such as 354 to MAIL) always
//   ends the session (bytes sent early that turn out to be a 421 end it as a 421): under pipelining, trusting the stream after garbage could make
//   QUIT's reply pass for end-of-data's and lose mail (Postfix's rule). A loss or 421
//   while idle ends the session with stage kConnect.
//
//   Failures that end the session with QUIT. A non-2xx greeting, a HELO refusal or a
//   non-5xx EHLO refusal: SessionClosed, after QUIT's reply or EOF, carries the refusal
//   (4xx transient, 5xx permanent, stage kGreeting/kEhlo/kHelo); the caller decides
//   what a 5xx greeting means. A refused RSET: its envelope was never tried, so every
//   recipient is deferred (the 4xx reply, or 451 4.3.0 "RSET refused: ..."), then QUIT.
//
//   Quit() when idle sends QUIT; SessionClosed (kind kAccepted) follows the reply, EOF,
//   a timeout or an I/O error. Quit() during the handshake or a transaction takes effect
//   as soon as the client is next idle (after SessionReady or TransactionDone).
//
// CONTRACT
//   Single-threaded; the caller owns the socket. Feed*() only record input; all work
//   happens in Next(), which the caller runs until NeedData after every Feed*(). Input
//   already fed is handled before EOF, a timeout or an I/O error fed after it. After
//   SessionClosed there are no more events: Next() returns NeedData, Feed*() are ignored
//   and PendingOutput() is empty (a QUIT is always written before its reply comes).
//   FeedTimeout() while nothing is awaited (waiting_for() == kNone) is ignored. A
//   command counts as sent once ConsumeOutput() has taken its last byte: a reply fed
//   before then cannot be its reply, and is a protocol error (or a 421).
//   StartTransaction() first handles any input fed while idle, so that it cannot be
//   taken for MAIL's reply.
//
//   Transactions in flight (ClientOptions::max_transactions_in_flight above 1): while
//   accepts_transaction(), StartTransaction() may be called again before the last
//   one's TransactionDone; each transaction still ends in exactly one TransactionDone,
//   in the order they were started. The later transaction's commands went out before
//   the server had answered the earlier one: when the earlier one failed (the server
//   may still hold it open) and the later MAIL is refused, the later transaction's
//   recipients are deferred (451 4.5.0, naming the server's reply), never bounced, and
//   RSET goes before the next. A loss or 421 ends every transaction under way, each
//   naming the reply it awaited.
//
// DIAGNOSTICS
//   StartTransaction: FailedPrecondition unless accepts_transaction(); InvalidArgument
//   for no recipients, an empty recipient, or an address with a control character, '<'
//   or '>' (which could inject commands).
//
// BOUNDS
//   Reply lines and lines per reply as ClientOptions::reply; unacknowledged pipelined
//   command bytes as ClientOptions::max_pipeline_bytes (a single larger command is
//   still sent, alone).
//
// BUGS
//   XXX(scope) No AUTH (a bulk sender relays by IP). BDAT sends the message as one
//   chunk, so a message is held whole in memory (it is anyway: it is rendered whole).
//
// SEE ALSO
//   reply.h, content.h; Postfix smtp_proto.c (smtp_loop), h11's _connection.py.
#ifndef VOLLEY_ENGINE_SMTP_CLIENT_H_
#define VOLLEY_ENGINE_SMTP_CLIENT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "engine/smtp/content.h"
#include "engine/smtp/reply.h"

namespace volley::smtp {

// The command whose reply an outcome came from (Postfix's xfer_states). kConnect is the
// connection itself: a failed connect, or a loss while idle.
enum class Stage {
  kConnect,
  kGreeting,
  kEhlo,
  kHelo,
  kMail,
  kRcpt,
  kData,
  kDataDone,
  kRset,
  kQuit,
  kStartTls
};

// StageName - "connect", "greeting", "ehlo", "helo", "mail", "rcpt", "data",
// "data-done", "rset", "quit", "starttls": the names used in logs and outcome texts.
std::string_view StageName(Stage stage);

struct Outcome {
  enum class Kind { kAccepted, kTransient, kPermanent };
  Kind kind = Kind::kTransient;
  int code = 0;
  std::string enhanced;  // "4.4.2"; never empty
  std::string text;
  Stage stage = Stage::kConnect;
};

// What the EHLO reply advertised (RFC 1869 keywords, case-insensitive). All false and
// empty after a HELO fallback.
struct Capabilities {
  bool esmtp = false;                  // EHLO succeeded
  bool pipelining = false;             // RFC 2920
  bool eight_bit_mime = false;         // RFC 6152
  bool smtputf8 = false;               // RFC 6531
  bool enhanced_status_codes = false;  // RFC 2034
  bool chunking = false;               // RFC 3030
  bool starttls = false;               // RFC 3207
  std::optional<uint64_t> size_limit;  // RFC 1870 "SIZE n", n all digits and > 0
  bool size = false;                   // SIZE advertised (with or without a limit)
};

// ValidateEhloName - OK when `name` may be sent with EHLO/HELO: 1 to 255 octets, no
// space or control character (which would inject commands), no '<' or '>'. For the
// config loader: Client aborts on a name that fails this check.
absl::Status ValidateEhloName(std::string_view name);

// When to use STARTTLS (RFC 3207). Certificate checks are the TLS layer's business;
// to this machine "verify" is kRequired.
enum class TlsPolicy {
  kOff,            // never send STARTTLS
  kOpportunistic,  // STARTTLS when offered; plaintext when not offered or refused
  kRequired,       // STARTTLS or nothing: defer (4.7.10) when not offered or refused
};

struct ClientOptions {
  // The name sent with EHLO/HELO: a domain or address literal. Must pass
  // ValidateEhloName(); the constructor aborts otherwise. Default: "localhost".
  std::string ehlo_name = "localhost";
  // Bounds on server replies (see reply.h).
  ReplyParserOptions reply;
  // Unacknowledged pipelined command bytes before the client waits for replies
  // (Postfix's PIPELINING_BUFSIZE): the server may not read while its replies back up,
  // so more than a socket buffer's worth could deadlock. Default: 4096.
  size_t max_pipeline_bytes = 4096;
  // STARTTLS policy. Default: kOff (the reactor's config defaults to opportunistic).
  TlsPolicy tls = TlsPolicy::kOff;
  // Use PIPELINING when advertised; false for servers that break with it. Default: true.
  bool pipelining = true;
  // Use CHUNKING (BDAT) when advertised instead of DATA. Default: false.
  bool chunking = false;
  // Transactions under way at once on the session: above 1, the next transaction's
  // MAIL, RCPTs and BDAT follow the last one's "BDAT n LAST" and its message without
  // waiting for its replies (RFC 2920 section 3.1 keeps only EHLO, DATA, VRFY, EXPN,
  // TURN, QUIT and NOOP at the end of a group, not BDAT; RFC 3030 section 4.2
  // pipelines BDAT). Only with PIPELINING
  // and CHUNKING in use, never behind DATA (whose 354 must be awaited) or RSET.
  // Default: 1 (a transaction's replies are all in before the next starts).
  size_t max_transactions_in_flight = 1;
};

struct Envelope {
  uint64_t id = 0;                 // the caller's tag, echoed in TransactionDone
  std::string mail_from;           // without <>; "" is the null reverse path
  std::vector<std::string> rcpts;  // without <>
  std::string content;             // the rendered message; see PrepareData() and `form`
  // What `content` holds (content.h). kMessage: the rendered message, which
  // StartTransaction scans for 8-bit octets and prepares itself. kBdat or kData:
  // already the bytes that go out (PrepareBdat's or PrepareData's form, which the
  // caller vouches for), with eight_bit and message_size set to match: sent without
  // another pass. Content in a form the session does not send (content_form()), or
  // 8-bit content for a server that cannot take it, is turned back into a message
  // and takes the kMessage path, so a stale form costs time, never correctness.
  ContentForm form = ContentForm::kMessage;
  bool eight_bit = false;     // form != kMessage: some octet of content is >= 0x80
  uint64_t message_size = 0;  // form != kMessage: the RFC 1870 size (PrepareData's)
};

// IsUtf8Envelope - the sender or a recipient address is not ASCII, so the
// transaction needs SMTPUTF8 (RFC 6531 3.2).
bool IsUtf8Envelope(const Envelope& env);

// TakesEightBit - a server with these capabilities may be sent 8-bit octets in a
// message: it offered 8BITMIME (RFC 6152 3), or SMTPUTF8 for a UTF-8 envelope, which
// implies it (RFC 6531 3.1). Otherwise the message is converted to 7 bits first
// (DowngradeTo7Bit); the client and whoever signs the message decide alike.
bool TakesEightBit(const Capabilities& caps, bool utf8_envelope);

struct NeedData {};
struct SessionReady {
  Capabilities caps;
  bool tls = false;  // the session runs over TLS (STARTTLS succeeded)
};  // idle: StartTransaction or Quit
// The server said 220 to STARTTLS: run the TLS handshake on the connection, then call
// TlsEstablished(), or FeedIoError() if it failed. Until then the client neither
// writes nor reads; from then on Feed() takes the decrypted bytes.
struct StartTls {};
struct TransactionDone {
  uint64_t id;
  std::vector<Outcome> rcpt_outcomes;  // one per rcpt, envelope order
};
struct SessionClosed {
  Outcome reason;
};  // no further events; close the socket
using Event =
    std::variant<NeedData, SessionReady, StartTls, TransactionDone, SessionClosed>;

// The reply the client awaits; the reactor maps it to a timeout (Postfix's
// xfer_timeouts[]). kEhlo also covers HELO and STARTTLS; kTlsHandshake is the
// reactor's own handshake; kDataDone also covers BDAT.
enum class Wait {
  kNone,
  kGreeting,
  kEhlo,
  kTlsHandshake,
  kMail,
  kRcpt,
  kDataInit,
  kDataDone,
  kRset,
  kQuit
};

class Client {
 public:
  explicit Client(ClientOptions opts);

  void Feed(std::string_view bytes);
  void FeedEof();                           // the peer closed
  void FeedTimeout();                       // the current Wait expired
  void FeedIoError(std::string_view what);  // connect or write failure
  Event Next();

  absl::Status StartTransaction(Envelope env);
  void Quit();
  void TlsEstablished();  // after StartTls: the handshake succeeded

  std::string_view PendingOutput() const;
  void ConsumeOutput(size_t n);  // the reactor wrote n bytes
  // TakeOutput - all of PendingOutput() moved into *into (whatever it held is
  // dropped), without copying a large message: the same as ConsumeOutput() of
  // all of it. The client goes on with *into's old buffer.
  void TakeOutput(std::string* into);

  Wait waiting_for() const;
  bool idle() const;
  // accepts_transaction - StartTransaction() may be called now: idle(), or a
  // transaction under way that the next one may be pipelined behind (its commands
  // and message all written, nothing failed so far, fewer than
  // max_transactions_in_flight under way).
  bool accepts_transaction() const;
  // transactions - those started whose TransactionDone is still to be made (one
  // already made and waiting to be returned by Next() is not counted).
  size_t transactions() const { return txns_.size(); }
  // max_in_flight - the transactions this session may have under way at once:
  // ClientOptions::max_transactions_in_flight with PIPELINING and CHUNKING in
  // use, else 1 (known from SessionReady on).
  size_t max_in_flight() const;
  // caps - what the server offered in its EHLO reply (empty before SessionReady).
  const Capabilities& caps() const { return caps_; }
  // content_form - the form the next StartTransaction sends a message in: kBdat
  // when the server offered CHUNKING and ClientOptions::chunking allows it, else
  // kData. An Envelope already in this form is sent as it is.
  ContentForm content_form() const {
    return caps_.chunking && opts_.chunking ? ContentForm::kBdat : ContentForm::kData;
  }
  bool closed() const;

  // TakeReplyCounts - replies parsed since the last call, by code class (2xx,
  // 3xx, 4xx, 5xx), for the metrics; the counts start again from zero.
  std::array<uint32_t, 4> TakeReplyCounts() { return std::exchange(reply_counts_, {}); }

 private:
  enum class Phase { kGreeting, kHello, kTlsHandshake, kIdle, kTransaction, kQuit, kClosed };
  // The commands the client sends, and what each one means (its word, stage, wait,
  // expected reply class, place in a pipelined group), live in one table in client.cc.
  enum class Cmd : uint8_t;
  struct CommandInfo;
  static const CommandInfo& Info(Cmd cmd);
  static std::string Line(Cmd cmd, std::string_view arg = {});
  struct Command {
    Cmd cmd;
    size_t rcpt = 0;    // kRcpt: index into the envelope's recipients
    size_t begin = 0;   // its line: Transaction::command_text[begin, begin + length)
    size_t length = 0;
  };
  struct Sent {  // a command whose reply is still to come, in send order
    Cmd cmd;
    size_t bytes;  // counted against max_pipeline_bytes (0 for the message body)
    size_t rcpt;
    uint64_t end;  // output offset just past this command (and its data): its reply
                   // cannot come before the caller has taken that much output
    uint64_t txn;  // Transaction::seq of the transaction it belongs to; 0: none
  };
  struct Transaction {
    uint64_t seq = 0;  // 1, 2, ...: its place among the session's transactions
    Envelope env;
    std::string data;               // PrepareData(env.content), or PrepareBdat's
    std::vector<Command> commands;  // in send order
    std::string command_text;       // their lines, CRLF-ended, one after another
    size_t next_command = 0;
    std::vector<std::optional<Outcome>> final;  // per rcpt, once known
    std::vector<bool> rcpt_accepted;            // RCPT got 2xx
    size_t rcpt_replies_due = 0;                // RCPTs queued or sent, reply not yet in
    size_t accepted = 0;
    bool stop_sending = false;  // MAIL or RSET refused
    bool failed = false;        // RSET before the next MAIL
  };
  enum class Loss { kEof, kTimeout, kIoError };

  void Process(bool until_event);
  void Send(std::string_view bytes, Cmd cmd, size_t rcpt, size_t window_bytes,
            uint64_t txn = 0);
  void Pump();
  bool PumpTransaction(Transaction& t);
  bool MaySend(const Command& command) const;
  Transaction& TransactionOf(const Sent& sent);
  bool AwaitsReplies(const Transaction& t) const;
  void HandleReply(const Reply& reply);
  void DispatchReply(const Reply& reply);
  void HandleHelloReply(const Sent& sent, const Reply& reply);
  void HandleStartTlsReply(const Reply& reply);
  void SessionIsReady();
  bool UsePipelining() const { return caps_.pipelining && opts_.pipelining; }
  // PipelinesTransactions - a transaction may go behind another here: PIPELINING
  // in use and messages sent by BDAT (DATA's 354 must be awaited).
  bool PipelinesTransactions() const {
    return UsePipelining() && content_form() == ContentForm::kBdat;
  }
  void HandleTransactionReply(const Sent& sent, const Reply& reply);
  void MaybeFinishTransaction();
  void BecomeIdle();
  void CallerQuit();
  void QuitWith(Outcome reason);      // QUIT, then SessionClosed{reason}
  void Close(Outcome reason);         // SessionClosed now
  // Abort - a 421, loss or protocol error: close now. Every transaction under way
  // ends with `reason`; with a `cause`, each one's text is the cause and the reply
  // that transaction awaited (Where).
  void Abort(const Outcome& reason, std::string_view cause = {});
  void EndTransactions(const Outcome& reason, std::string_view cause);
  void ProtocolError(Stage stage, std::string_view why);
  void HandleLoss();
  Stage CurrentStage() const;
  std::string Where(Stage stage) const;
  // Where - for the transaction whose first unanswered command is `sent`.
  std::string WhereFor(const Sent& sent) const;

  ClientOptions opts_;
  ReplyParser parser_;
  Reply reply_;  // the reply being handled; its strings are reused for the next
  std::array<uint32_t, 4> reply_counts_{};
  Phase phase_ = Phase::kGreeting;
  Capabilities caps_;
  std::deque<Sent> sent_;
  size_t unacked_bytes_ = 0;
  std::string out_;
  size_t out_start_ = 0;
  uint64_t appended_total_ = 0;  // octets ever put in out_
  uint64_t consumed_total_ = 0;  // octets ever taken by ConsumeOutput()
  // The transactions under way, oldest first; replies finish them in this order.
  std::deque<Transaction> txns_;
  uint64_t next_txn_seq_ = 1;
  // The last transaction's command buffers, emptied: the next one reuses their
  // capacity (a connection sends thousands of transactions of much the same size).
  std::string spare_command_text_;
  std::vector<Command> spare_commands_;
  bool need_rset_ = false;
  bool quit_requested_ = false;  // Quit() before the client was idle
  bool caller_quit_ = false;     // the QUIT under way is the caller's
  std::optional<Outcome> quit_reason_;
  bool received_any_ = false;  // any byte from the server (connect vs greeting)
  bool tls_ = false;           // STARTTLS done: the session runs over TLS
  // Bytes followed the reply to the last outstanding command, before the server could
  // have seen the next one: the next reply is a 421 or a protocol error.
  bool early_data_ = false;
  Capabilities plaintext_caps_;  // kept while STARTTLS is tried (opportunistic fallback)
  std::optional<Loss> loss_;
  std::string loss_what_;
  std::deque<Event> events_;
};

}  // namespace volley::smtp

#endif  // VOLLEY_ENGINE_SMTP_CLIENT_H_
