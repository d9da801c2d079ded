// fuzz_smtp_client - libFuzzer target for the sans-I/O smtp::Client (engine/smtp/client.h)
//
// INPUT
//   Byte 0 chooses ClientOptions and harness modes (Configure): bits 0-1 TLS policy
//   (off, opportunistic, required, opportunistic); bit 2 pipelining off; bit 3 chunking
//   on; bits 4-5 max_pipeline_bytes (4096, 64, 200, 1); bit 6 small reply bounds
//   (max_line 100, max_lines 5) and 3 transactions in flight (else 1); bit 7 feed
//   plaintext during a TLS handshake instead of completing it first.
//   The rest is the server's bytes, with caller actions marked by 0xFF followed by an
//   op byte b (op = b & 15, p = b >> 4):
//     0, 12-15  end of a Feed() chunk (no action)
//     1   StartTransaction; the byte after b chooses the envelope (MakeEnvelope)
//     2   Quit()                    3  FeedEof()       4  FeedTimeout()
//     5   FeedIoError("write: EPIPE")
//     6   ConsumeOutput(all)        7  ConsumeOutput(3p + 1, at most what is pending)
//     8   a literal 0xFF byte of server data
//     9   StartTransaction with an invalid envelope (InvalidEnvelope(p))
//     10  toggle "hold": while off (the start), all output is consumed after each step
//     11  TlsEstablished() after StartTls (any other action but 3, 4, 5 does it first)
//   Server bytes between two markers are one Feed(). After every Feed*() or action,
//   Next() is drained to NeedData. At the end of the input, FeedEof() closes the session.
//   With FUZZ_TRACE=1 in the environment each step is printed (to read a reproducer).
//
// DESCRIPTION
//   Checks client.h's CONTRACT and DESCRIPTION, aborting with the rule's text:
//   - events: at most one SessionReady (its tls flag true exactly when the handshake was
//     completed; always true under TlsPolicy::kRequired), before any transaction; StartTls
//     only when TLS is wanted, at most once, and no output until TlsEstablished();
//     exactly one TransactionDone per started transaction (matching id, one outcome per
//     recipient), before SessionClosed; after SessionClosed no event, PendingOutput()
//     empty, closed(), waiting_for() == kNone; after EOF, an I/O error, plaintext during
//     the handshake, or a timeout while something is awaited, the session is closed.
//   - outcomes: code 2xx/4xx/5xx matching kind (accepted/transient/permanent); enhanced
//     "c.s.d" with c the code's class; no control character in the text but "\n";
//     accepted only at stage data-done; a recipient the client must not send fails at
//     stage mail with 550 5.6.7 (non-ASCII address without SMTPUTF8), 554 5.6.3 (8-bit
//     message that DowngradeTo7Bit refuses) or 552 5.3.4 (over SIZE).
//   - calls: StartTransaction succeeds only when accepts_transaction(), which is idle()
//     or, with transactions in flight, behind a whole BDAT with fewer than the bound
//     under way; an invalid envelope is refused with InvalidArgument
//     (FailedPrecondition if not accepted) and changes nothing.
//   - output: only ever appended to; bounded; and the whole byte stream must parse as
//     EHLO [HELO | STARTTLS [EHLO [HELO]]], then per started transaction in order
//     [RSET] MAIL RCPT... (DATA [body | "."] | BDAT n LAST chunk), then at most one
//     QUIT, and nothing after it. Each command is exactly what the envelope, options and
//     capabilities call for (BODY=8BITMIME, SIZE=n with n computed here, SMTPUTF8; BDAT
//     iff chunking is on and offered); RSET comes before the MAIL that follows a failed
//     transaction, unless it was pipelined behind it, and only then (and a MAIL refused
//     behind a failure defers, never bounces); MAIL follows BDAT's chunk in one write
//     only for a transaction pipelined behind it; the message is the content with line
//     ends normalised to CRLF (computed here, not with PrepareData), dot-stuffed for
//     DATA, 7-bit unless 8BITMIME or SMTPUTF8 is in use, and it was sent whenever a
//     recipient is reported accepted. So no command carries a bare CR or LF, and
//     nothing can be injected.
//
// ADAPTING
//   The output grammar is ParseOutput(); the envelopes are MakeEnvelope().
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/smtp/client.h"
#include "engine/smtp/content.h"

namespace {

using namespace volley::smtp;  // NOLINT: a test harness

[[noreturn]] void Broken(const char* rule, int line) {
  std::fprintf(stderr, "fuzz_smtp_client: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}
#define EXPECT(cond)                        \
  do {                                      \
    if (!(cond)) Broken(#cond, __LINE__);   \
  } while (0)

constexpr char kEhloName[] = "client.test";

// With FUZZ_TRACE set in the environment, each step is printed to stderr (for reading
// a reproducer: FUZZ_TRACE=1 fuzz_smtp_client crash-...).
const bool kTrace = std::getenv("FUZZ_TRACE") != nullptr;

std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

void Trace(const char* what, std::string_view detail = "") {
  if (kTrace) std::fprintf(stderr, "%s %s\n", what, Escape(detail).c_str());
}

std::string Describe(const Outcome& o) {
  return std::to_string(o.code) + " " + o.enhanced + " " +
         std::string(StageName(o.stage)) + " \"" + o.text + "\"";
}

// Output per input octet: a transaction costs at least 18 octets of input (the action
// and four 5-octet replies) and writes at most about 3.1 KB (the longest message).
constexpr size_t kMaxOutputPerInputOctet = 256;

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// MakeEnvelope - StartTransaction's envelope from one byte: bits 0-1 recipients - 1,
// bits 2-4 content, bits 5-6 sender, bit 7 makes the last recipient non-ASCII.
Envelope MakeEnvelope(uint8_t b) {
  static const char* const kFrom[] = {"bounce@src.test", "", "b\xc3\xb6@src.test",
                                      "x@src.test"};
  static const char* const kRcpt[] = {"a@dst.test", "b@dst.test", "c@dst.test",
                                      "d@dst.test"};
  static const std::string kContent[] = {
      "Subject: one\r\n\r\nhello\r\n",
      "",
      ".\r\n..\r\n.x\n\rbare\rcr\nlf",
      "Subject: caf\xc3\xa9\n\ncaf\xc3\xa9 is 8-bit\n",          // cannot go 7-bit
      "Subject: two\n\ncaf\xc3\xa9 =, trailing \n.dot\n",       // can
      "\r\n.\r\nMAIL FROM:<evil@x.test>\r\n",
      std::string(1500, 'x') + "\n" + std::string(1500, 'y') + "\n.\n",
      "QUIT\r\nRSET\r\n.",
  };
  Envelope env;
  env.mail_from = kFrom[(b >> 5) & 3];
  size_t n = (b & 3) + 1;
  for (size_t i = 0; i < n; ++i) env.rcpts.push_back(kRcpt[i]);
  if (b & 0x80) env.rcpts.back() = "\xc3\xbc@dst.test";
  env.content = kContent[(b >> 2) & 7];
  return env;
}

// InvalidEnvelope - one that StartTransaction must refuse.
Envelope InvalidEnvelope(uint8_t p) {
  Envelope env;
  env.mail_from = "bounce@src.test";
  env.rcpts = {"a@dst.test"};
  env.content = "hi\r\n";
  switch (p % 7) {
    case 0:
      env.rcpts.clear();
      break;
    case 1:
      env.rcpts.push_back("");
      break;
    case 2:
      env.rcpts.push_back("a@dst.test>\r\nRSET");
      break;
    case 3:
      env.mail_from = "x@src.test>\r\nQUIT";
      break;
    case 4:
      env.rcpts.push_back(std::string("a\0b@dst.test", 12));
      break;
    case 5:
      env.rcpts.push_back("<a@dst.test>");
      break;
    default:
      env.mail_from = "a\nb@src.test";
      break;
  }
  return env;
}

// Normalise - content with every CRLF, bare CR and bare LF as CRLF, and a CRLF added
// after a last line without one (content.h): BDAT's chunk, and DATA's before stuffing.
std::string Normalise(std::string_view content) {
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    if (content[i] == '\r' || content[i] == '\n') {
      if (content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n') ++i;
      out += "\r\n";
    } else {
      out += content[i];
    }
  }
  if (!out.empty() && !out.ends_with("\r\n")) out += "\r\n";
  return out;
}

// DataBody - what follows a 354: normalised, dot-stuffed, ".\r\n" at the end.
std::string DataBody(std::string_view content) {
  std::string norm = Normalise(content);
  std::string out;
  bool line_start = true;
  for (char c : norm) {
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n';
  }
  return out + ".\r\n";
}

void CheckOutcome(const Outcome& o) {
  const int cls = o.code / 100;
  EXPECT(o.code >= 200 && o.code <= 599 && cls != 3);
  EXPECT((o.kind == Outcome::Kind::kAccepted) == (cls == 2));
  EXPECT((o.kind == Outcome::Kind::kTransient) == (cls == 4));
  EXPECT((o.kind == Outcome::Kind::kPermanent) == (cls == 5));
  // "c.s.d", c the class, s and d 1 to 3 digits.
  const std::string& e = o.enhanced;
  EXPECT(e.size() >= 5 && e[0] == static_cast<char>('0' + cls) && e[1] == '.');
  size_t dots = 0;
  size_t run = 0;
  for (size_t i = 2; i < e.size(); ++i) {
    if (e[i] == '.') {
      EXPECT(run > 0);
      ++dots;
      run = 0;
    } else {
      EXPECT(e[i] >= '0' && e[i] <= '9' && ++run <= 3);
    }
  }
  EXPECT(dots == 1 && run > 0);
  for (char c : o.text) {
    unsigned char u = static_cast<unsigned char>(c);
    EXPECT(c == '\n' || (u >= 0x20 && u != 0x7f));
  }
}

// Why a recipient may fail without being sent (bits of Txn::unsendable).
constexpr int kNeedsUtf8 = 1;  // 550 5.6.7
constexpr int kNot7Bit = 2;    // 554 5.6.3
constexpr int kTooBig = 4;     // 552 5.3.4

struct Txn {
  Envelope env;
  Capabilities caps;            // the session's, when it started
  bool utf8 = false;            // the envelope has a non-ASCII address
  bool bdat = false;            // CHUNKING on and offered
  std::string content;          // as it must be sent (after DowngradeTo7Bit)
  std::vector<int> unsendable;  // per recipient
  bool behind = false;          // started while another was under way
  std::optional<TransactionDone> done;
};

// A command found in the output, for CheckGroups.
struct Command {
  enum Kind {
    kAlone,     // EHLO, HELO, STARTTLS, RSET, QUIT, the message after 354
    kGroup,     // MAIL, RCPT: more may follow in the same write under PIPELINING
    kGroupEnd,  // DATA, BDAT (with its chunk): may end a group
  };
  Kind kind;
  size_t pos;
  size_t len;
  size_t window;   // octets counted against max_pipeline_bytes
  bool pipelined;  // PIPELINING offered and enabled
  bool behind = false;  // a MAIL of a transaction pipelined behind another
};

struct Config {
  ClientOptions opts;
  bool plaintext_in_handshake = false;
};

Config Configure(uint8_t b) {
  static constexpr TlsPolicy kTls[] = {TlsPolicy::kOff, TlsPolicy::kOpportunistic,
                                       TlsPolicy::kRequired, TlsPolicy::kOpportunistic};
  static constexpr size_t kWindow[] = {4096, 64, 200, 1};
  Config c;
  c.opts.ehlo_name = kEhloName;
  c.opts.tls = kTls[b & 3];
  c.opts.pipelining = (b & 4) == 0;
  c.opts.chunking = (b & 8) != 0;
  c.opts.max_pipeline_bytes = kWindow[(b >> 4) & 3];
  if (b & 0x40) {
    c.opts.reply = {.max_line = 100, .max_lines = 5};
    c.opts.max_transactions_in_flight = 3;
  }
  c.plaintext_in_handshake = (b & 0x80) != 0;
  return c;
}

class Harness {
 public:
  Harness(Config config, size_t input_size)
      : config_(config),
        c_(config.opts),
        max_output_(kMaxOutputPerInputOctet * input_size + 4096) {}

  void Feed(std::string_view bytes) {
    if (!config_.plaintext_in_handshake) MaybeEstablishTls();
    const bool handshaking = tls_pending_ && !c_.closed();
    Trace("S:", bytes);
    c_.Feed(bytes);
    Step();
    if (handshaking) EXPECT(c_.closed());  // plaintext during the handshake
  }

  void Act(uint8_t op, uint8_t p, std::optional<uint8_t> arg) {
    static const char* const kOps[] = {"split", "start",        "quit",    "eof",
                                       "timeout", "ioerror",    "consume", "consume-some",
                                       "0xff",  "start-invalid", "hold",   "tls-established"};
    Trace("!", op < 12 ? kOps[op] : "split");
    // EOF, a timeout or an I/O error may end a TLS handshake; anything else waits for it.
    if (op != 3 && op != 4 && op != 5) MaybeEstablishTls();
    switch (op) {
      case 1:
        if (arg) Start(MakeEnvelope(*arg), /*valid=*/true);
        break;
      case 2:
        c_.Quit();
        quit_called_ = true;
        break;
      case 3:
        c_.FeedEof();
        Step();
        EXPECT(c_.closed());
        break;
      case 4: {
        Wait w = c_.waiting_for();
        c_.FeedTimeout();
        Step();
        if (w != Wait::kNone) EXPECT(c_.closed());
        break;
      }
      case 5:
        c_.FeedIoError("write: EPIPE");
        Step();
        EXPECT(c_.closed());
        break;
      case 6:
        Consume(c_.PendingOutput().size());
        break;
      case 7:
        Consume(std::min<size_t>(3 * p + 1, c_.PendingOutput().size()));
        break;
      case 9:
        Start(InvalidEnvelope(p), /*valid=*/false);
        break;
      case 10:
        hold_ = !hold_;
        break;
      default:
        break;
    }
    Step();
  }

  void Finish() {
    c_.FeedEof();
    Step();
    EXPECT(c_.closed() && closed_);
    ParseOutput();
  }

 private:
  void MaybeEstablishTls() {
    if (!tls_pending_ || c_.closed()) return;
    Trace("! tls-established");
    EXPECT(out_.size() == out_at_starttls_);  // the client wrote nothing meanwhile
    EXPECT(c_.waiting_for() == Wait::kTlsHandshake);
    tls_pending_ = false;
    tls_established_ = true;
    c_.TlsEstablished();
    Step();
  }

  // Observe - append output produced since the last look to out_.
  void Observe() {
    std::string_view p = c_.PendingOutput();
    if (c_.closed()) {
      EXPECT(p.empty());
      pending_seen_ = 0;
      return;
    }
    // Output is only appended to: what was pending is still there, unchanged.
    EXPECT(p.size() >= pending_seen_);
    EXPECT(out_.size() >= pending_seen_);
    EXPECT(p.substr(0, pending_seen_) ==
           std::string_view(out_).substr(out_.size() - pending_seen_));
    if (p.size() > pending_seen_) Trace("C:", p.substr(pending_seen_));
    out_.append(p.substr(pending_seen_));
    if (p.size() > pending_seen_) batch_ends_.push_back(out_.size());
    pending_seen_ = p.size();
    EXPECT(out_.size() <= max_output_);
  }

  void Consume(size_t n) {
    Observe();
    c_.ConsumeOutput(n);
    pending_seen_ -= n;
    Observe();
  }

  // Step - drain Next() and check the state it leaves.
  void Step() {
    for (int i = 0;; ++i) {
      EXPECT(i < 1000);
      Event ev = c_.Next();
      Observe();
      if (std::holds_alternative<NeedData>(ev)) break;
      EXPECT(!closed_);  // nothing after SessionClosed
      if (auto* ready = std::get_if<SessionReady>(&ev)) {
        OnReady(*ready);
      } else if (std::holds_alternative<StartTls>(ev)) {
        Trace("E: starttls");
        EXPECT(config_.opts.tls != TlsPolicy::kOff);
        EXPECT(!ready_ && !tls_pending_ && !tls_established_);
        tls_pending_ = true;
        out_at_starttls_ = out_.size();
      } else if (auto* done = std::get_if<TransactionDone>(&ev)) {
        OnDone(std::move(*done));
      } else if (auto* closed = std::get_if<SessionClosed>(&ev)) {
        Trace("E: closed", Describe(closed->reason));
        EXPECT(undone_ == 0);  // every TransactionDone comes first
        CheckOutcome(closed->reason);
        closed_ = true;
      }
    }
    EXPECT(c_.closed() == closed_);
    if (closed_) {
      EXPECT(c_.PendingOutput().empty() && c_.waiting_for() == Wait::kNone && !c_.idle());
    }
    if (c_.idle()) {
      EXPECT(ready_ && undone_ == 0 && !quit_called_ && c_.waiting_for() == Wait::kNone);
    }
    EXPECT(c_.transactions() == undone_);
    if (c_.accepts_transaction() && !c_.idle()) {
      EXPECT(undone_ > 0 && undone_ < config_.opts.max_transactions_in_flight && !quit_called_);
      EXPECT(config_.opts.chunking && caps_.chunking && config_.opts.pipelining &&
             caps_.pipelining);
    }
    if (!hold_ && !c_.PendingOutput().empty()) Consume(c_.PendingOutput().size());
  }

  void OnReady(const SessionReady& ready) {
    const Capabilities& caps = ready.caps;
    Trace("E: ready", std::string(caps.esmtp ? "esmtp" : "") +
                          (caps.pipelining ? " pipelining" : "") +
                          (caps.eight_bit_mime ? " 8bitmime" : "") +
                          (caps.smtputf8 ? " smtputf8" : "") +
                          (caps.chunking ? " chunking" : "") + (caps.size ? " size" : "") +
                          (ready.tls ? " tls" : ""));
    EXPECT(!ready_ && txns_.empty() && !tls_pending_);
    EXPECT(ready.tls == tls_established_);
    if (config_.opts.tls == TlsPolicy::kRequired) EXPECT(ready.tls);
    if (!caps.esmtp) {
      EXPECT(!caps.pipelining && !caps.eight_bit_mime && !caps.smtputf8 && !caps.size &&
             !caps.chunking && !caps.starttls && !caps.enhanced_status_codes);
    }
    if (caps.size_limit) EXPECT(caps.size && *caps.size_limit > 0);
    ready_ = true;
    caps_ = caps;
  }

  void OnDone(TransactionDone done) {
    if (kTrace) {
      std::string d = std::to_string(done.id);
      for (const Outcome& o : done.rcpt_outcomes) d += " | " + Describe(o);
      Trace("E: done", d);
    }
    EXPECT(undone_ > 0);  // and in the order they were started
    Txn& t = txns_[txns_.size() - undone_];
    EXPECT(done.id == t.env.id);
    EXPECT(done.rcpt_outcomes.size() == t.env.rcpts.size());
    for (size_t i = 0; i < done.rcpt_outcomes.size(); ++i) {
      const Outcome& o = done.rcpt_outcomes[i];
      CheckOutcome(o);
      if (o.kind == Outcome::Kind::kAccepted) EXPECT(o.stage == Stage::kDataDone);
      if (const int why = t.unsendable[i]; why != 0) {
        EXPECT(o.kind == Outcome::Kind::kPermanent && o.stage == Stage::kMail);
        EXPECT(((why & kNeedsUtf8) && o.code == 550 && o.enhanced == "5.6.7") ||
               ((why & kNot7Bit) && o.code == 554 && o.enhanced == "5.6.3") ||
               ((why & kTooBig) && o.code == 552 && o.enhanced == "5.3.4"));
      }
    }
    t.done = std::move(done);
    --undone_;
  }

  void Start(Envelope env, bool valid) {
    Observe();
    const bool was_idle = c_.idle();
    const bool was_accepting = c_.accepts_transaction();
    const size_t pending = c_.PendingOutput().size();
    env.id = next_id_;
    Envelope copy = env;
    if (kTrace) {
      std::string d = "id=" + std::to_string(copy.id) + " from=" + copy.mail_from + " to=";
      for (const std::string& r : copy.rcpts) d += r + ",";
      Trace(valid ? "! start" : "! start-invalid", d + " content=" + copy.content);
    }
    absl::Status s = c_.StartTransaction(std::move(env));
    Trace("  ->", s.ToString());
    if (!valid || !was_accepting) {
      EXPECT(!s.ok());
      EXPECT(s.code() == (was_accepting ? absl::StatusCode::kInvalidArgument
                                        : absl::StatusCode::kFailedPrecondition));
      // Refused: nothing happened.
      EXPECT(c_.PendingOutput().size() == pending);
      EXPECT(std::holds_alternative<NeedData>(c_.Next()));
      return;
    }
    if (!s.ok()) {
      // Only input that arrived while idle (a 421, garbage, EOF) may stop it, and then
      // the session is over.
      EXPECT(was_idle && s.code() == absl::StatusCode::kFailedPrecondition && c_.closed());
      return;
    }
    ++next_id_;
    Txn t;
    t.env = std::move(copy);
    t.caps = caps_;
    t.bdat = config_.opts.chunking && caps_.chunking;
    t.behind = !was_idle;
    const bool sender_utf8 = !IsAscii(t.env.mail_from);
    t.utf8 = sender_utf8;
    for (const std::string& r : t.env.rcpts) t.utf8 = t.utf8 || !IsAscii(r);
    // RFC 6152: no 8-bit octet without 8BITMIME (or SMTPUTF8 in use); the conversion
    // itself is content.cc's, but what comes out of it must be 7-bit.
    int all = 0;
    t.content = t.env.content;
    if (!IsAscii(t.content) && !caps_.eight_bit_mime && !(t.utf8 && caps_.smtputf8)) {
      absl::StatusOr<std::string> seven = DowngradeTo7Bit(t.content);
      if (seven.ok()) {
        EXPECT(IsAscii(*seven));
        t.content = *seven;
      } else {
        all |= kNot7Bit;
      }
    }
    if (caps_.size_limit && Normalise(t.content).size() > *caps_.size_limit) all |= kTooBig;
    for (const std::string& r : t.env.rcpts) {
      const bool utf8 = !caps_.smtputf8 && (sender_utf8 || !IsAscii(r));
      t.unsendable.push_back(all | (utf8 ? kNeedsUtf8 : 0));
    }
    txns_.push_back(std::move(t));
    ++undone_;
  }

  // ParseOutput - the whole output stream against what the calls asked for.
  void ParseOutput() const {
    std::string_view out = out_;
    size_t pos = 0;
    std::vector<Command> cmds;  // in output order
    bool pipelined = false;     // the transaction being parsed may pipeline
    auto take = [&](std::string_view want, Command::Kind kind = Command::kAlone) {
      if (out.substr(pos, want.size()) != want) return false;
      // A BDAT chunk is not counted against the window, only its command line.
      const size_t window = want.starts_with("BDAT ") ? want.find('\n') + 1 : want.size();
      cmds.push_back({kind, pos, want.size(), window, pipelined});
      pos += want.size();
      return true;
    };
    const std::string ehlo = std::string("EHLO ") + kEhloName + "\r\n";
    const std::string helo = std::string("HELO ") + kEhloName + "\r\n";
    // A refused greeting is answered with QUIT alone.
    bool helo_sent = false;
    bool starttls_sent = false;
    if (take(ehlo)) {
      helo_sent = take(helo);
      if (!helo_sent && take("STARTTLS\r\n")) {
        starttls_sent = true;
        EXPECT(config_.opts.tls != TlsPolicy::kOff);
        if (take(ehlo)) {
          EXPECT(tls_established_);
          helo_sent = take(helo);
        }
      }
    }
    EXPECT(starttls_sent || !tls_established_);
    if (ready_ && !caps_.esmtp) EXPECT(helo_sent);
    bool rset_due = false;  // the last transaction that sent MAIL failed
    for (const Txn& t : txns_) {
      std::vector<const std::string*> send;
      for (size_t i = 0; i < t.env.rcpts.size(); ++i) {
        if (t.unsendable[i] == 0) send.push_back(&t.env.rcpts[i]);
      }
      bool accepted = false;
      bool data_done = false;
      if (t.done) {
        for (const Outcome& o : t.done->rcpt_outcomes) {
          accepted = accepted || o.kind == Outcome::Kind::kAccepted;
          data_done = data_done || o.stage == Stage::kDataDone;
        }
      }
      if (send.empty()) {
        EXPECT(!accepted);
        continue;  // nothing may be sent for it, and it changes nothing
      }
      pipelined = t.caps.pipelining && config_.opts.pipelining;
      const bool rset = take("RSET\r\n");
      // RSET after a failure, and only then; never in a transaction pipelined behind
      // another, which goes out before the failure is known.
      EXPECT(rset == (rset_due && !t.behind));
      if (t.behind && rset_due && t.done) {
        for (size_t i = 0; i < t.env.rcpts.size(); ++i) {
          const Outcome& o = t.done->rcpt_outcomes[i];
          if (t.unsendable[i] == 0 && o.stage == Stage::kMail) {
            EXPECT(o.kind != Outcome::Kind::kPermanent);
          }
        }
      }
      const std::string chunk = Normalise(t.content);
      std::string mail = "MAIL FROM:<" + t.env.mail_from + ">";
      if (t.caps.eight_bit_mime && !IsAscii(t.content)) mail += " BODY=8BITMIME";
      if (t.caps.size) mail += " SIZE=" + std::to_string(chunk.size());
      if (t.utf8 && t.caps.smtputf8) mail += " SMTPUTF8";
      const bool mail_sent = take(mail + "\r\n", Command::kGroup);
      if (mail_sent) cmds.back().behind = t.behind;
      size_t rcpts = 0;
      while (mail_sent && rcpts < send.size() &&
             take("RCPT TO:<" + *send[rcpts] + ">\r\n", Command::kGroup)) {
        ++rcpts;
      }
      bool message = false;  // the whole message went out
      if (rcpts == send.size()) {
        if (t.bdat) {
          message = take("BDAT " + std::to_string(chunk.size()) + " LAST\r\n" + chunk,
                         Command::kGroupEnd);
        } else if (take("DATA\r\n", Command::kGroupEnd)) {
          message = take(DataBody(t.content));
          if (!message) take(".\r\n");
        }
      }
      if (accepted) EXPECT(message);
      // A transaction failed (client.h): MAIL refused, no recipient accepted, DATA or
      // BDAT refused. After end-of-data the server has reset itself, whatever it said.
      if (mail_sent) rset_due = t.bdat ? !accepted : !data_done;
    }
    pipelined = false;
    take("QUIT\r\n");
    // Anything left is a command nobody asked for, or one out of order.
    if (pos != out.size()) {
      std::fprintf(stderr, "fuzz_smtp_client: unexpected output at %zu of %zu: \"%s\"\n",
                   pos, out.size(), Escape(out.substr(pos, 300)).c_str());
    }
    EXPECT(pos == out.size());
    CheckGroups(cmds);
  }

  // CheckGroups - the commands written together (between two looks at the output) make
  // a group that the client was allowed to send without waiting: one command without
  // PIPELINING; with it, MAIL and RCPTs, perhaps ended by DATA or BDAT (RFC 2920: they
  // end a group; RSET, EHLO, STARTTLS, QUIT and the message go alone), and never more
  // than max_pipeline_bytes of them unanswered (all of a group is: a reply to any of it
  // could not have come before it was written).
  void CheckGroups(const std::vector<Command>& cmds) const {
    size_t group_start = 0;
    for (size_t i = 1; i <= cmds.size(); ++i) {
      if (i < cmds.size() && Batch(cmds[i].pos) == Batch(cmds[group_start].pos)) continue;
      size_t bytes = 0;
      for (size_t k = group_start; k < i; ++k) {
        const Command& c = cmds[k];
        bytes += c.window;
        if (k == group_start) continue;
        const Command& prev = cmds[k - 1];
        const bool may_follow =
            prev.kind == Command::kGroup || (prev.kind == Command::kGroupEnd && c.behind);
        if (!(c.pipelined && may_follow && c.kind != Command::kAlone &&
              bytes <= config_.opts.max_pipeline_bytes)) {
          std::fprintf(stderr, "fuzz_smtp_client: written together: \"%s\"\n",
                       Escape(std::string_view(out_).substr(
                                  cmds[group_start].pos, c.pos + c.len - cmds[group_start].pos))
                           .c_str());
        }
        EXPECT(c.pipelined && c.kind != Command::kAlone &&
               (prev.kind == Command::kGroup || (prev.kind == Command::kGroupEnd && c.behind)));
        EXPECT(bytes <= config_.opts.max_pipeline_bytes);
      }
      group_start = i;
    }
  }

  // Batch - which look at the output first saw the byte at `pos`.
  size_t Batch(size_t pos) const {
    return std::upper_bound(batch_ends_.begin(), batch_ends_.end(), pos) -
           batch_ends_.begin();
  }

  Config config_;
  Client c_;
  size_t max_output_;
  std::string out_;          // every byte of output seen, in order
  std::vector<size_t> batch_ends_;  // out_.size() after each look that found more
  size_t pending_seen_ = 0;  // how much of PendingOutput() is already in out_
  bool hold_ = false;
  bool ready_ = false;
  bool closed_ = false;
  bool quit_called_ = false;
  bool tls_pending_ = false;      // StartTls seen, TlsEstablished() not yet called
  bool tls_established_ = false;  // TlsEstablished() called
  size_t out_at_starttls_ = 0;
  size_t undone_ = 0;  // the last undone_ of txns_ await their TransactionDone
  Capabilities caps_;
  std::vector<Txn> txns_;
  uint64_t next_id_ = 1;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  if (size == 0) return 0;
  Harness h(Configure(bytes[0]), size);
  std::string_view in(reinterpret_cast<const char*>(bytes) + 1, size - 1);
  std::string chunk;
  for (size_t i = 0; i < in.size(); ++i) {
    if (static_cast<uint8_t>(in[i]) != 0xFF) {
      chunk += in[i];
      continue;
    }
    if (i + 1 == in.size()) break;
    const uint8_t b = static_cast<uint8_t>(in[++i]);
    const uint8_t op = b & 15;
    if (op == 8) {
      chunk += '\xff';
      continue;
    }
    if (!chunk.empty()) h.Feed(chunk);
    chunk.clear();
    std::optional<uint8_t> arg;
    if (op == 1 && i + 1 < in.size()) arg = static_cast<uint8_t>(in[++i]);
    h.Act(op, b >> 4, arg);
  }
  if (!chunk.empty()) h.Feed(chunk);
  h.Finish();
  return 0;
}
