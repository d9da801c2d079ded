// client.cc - see client.h.
//
// Prepare for disaster. The code below relies on three invariants:
//   1. sent_ holds one entry per command written and not yet answered, in the order
//      written, and replies are matched to it strictly in order (RFC 2920 section 3.1).
//      Nothing else decides which command a reply answers.
//   2. A reply that does not fit (malformed, unsolicited, of the wrong class) ends the
//      session: once the order is in doubt no later reply can be trusted.
//   3. Every recipient gets exactly one final Outcome per transaction, and
//      TransactionDone is emitted exactly once, before any SessionClosed.
#include "engine/smtp/client.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "engine/smtp/content.h"

namespace volley::smtp {
namespace {

using Kind = Outcome::Kind;

// Debian 12's abseil has its own string_view type, distinct from std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view Sv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// BadAddress - a character that must not reach the command line: CR or LF would end
// the command early and let the rest of the address be read as a second command.
bool BadAddress(std::string_view s) {
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '<' || c == '>') return true;
  }
  return false;
}

Kind KindOf(int code) {
  switch (code / 100) {
    case 2:
      return Kind::kAccepted;
    case 4:
      return Kind::kTransient;
    default:
      return Kind::kPermanent;
  }
}

Outcome FromReply(const Reply& reply, Stage stage) {
  Outcome o;
  o.kind = KindOf(reply.code);
  o.code = reply.code;
  // A missing enhanced code defaults to the class's generic one, as Postfix does, so
  // that every outcome in the delivery log carries one.
  o.enhanced =
      reply.enhanced.empty() ? absl::StrCat(reply.code / 100, ".0.0") : reply.enhanced;
  o.text = reply.text;
  o.stage = stage;
  return o;
}

// AwaitingDataDone - where a session stood that ended before end-of-data's reply:
// once the whole message was written the server may have taken it, so the log
// names the duplicate risk.
std::string AwaitingDataDone(bool written) {
  return written ? "while awaiting data-done reply (message may have been delivered)"
                 : "while awaiting data-done reply";
}

Outcome Made(Kind kind, int code, std::string enhanced, std::string text, Stage stage) {
  Outcome o;
  o.kind = kind;
  o.code = code;
  o.enhanced = std::move(enhanced);
  o.text = std::move(text);
  o.stage = stage;
  return o;
}

// ParseSize - RFC 1870's SIZE parameter: digits only (Postfix's alldig check), and
// small enough for uint64_t.
std::optional<uint64_t> ParseSize(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// ParseEhlo - the extensions in an EHLO reply's text. The first line is the server's
// name; each later line is a keyword and its parameters, compared case-insensitively.
Capabilities ParseEhlo(std::string_view text) {
  Capabilities caps;
  caps.esmtp = true;
  bool first = true;
  for (absl::string_view line : absl::StrSplit(Av(text), '\n')) {
    if (first) {
      first = false;
      continue;
    }
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.empty()) continue;
    std::string keyword = absl::AsciiStrToUpper(words[0]);
    if (keyword == "PIPELINING") {
      caps.pipelining = true;
    } else if (keyword == "8BITMIME") {
      caps.eight_bit_mime = true;
    } else if (keyword == "SMTPUTF8") {
      caps.smtputf8 = true;
    } else if (keyword == "ENHANCEDSTATUSCODES") {
      caps.enhanced_status_codes = true;
    } else if (keyword == "CHUNKING") {
      caps.chunking = true;
    } else if (keyword == "STARTTLS") {
      caps.starttls = true;
    } else if (keyword == "SIZE") {
      caps.size = true;
      // "SIZE" alone or "SIZE 0" means no fixed limit; a malformed value is ignored
      // rather than trusted.
      if (words.size() > 1) {
        std::optional<uint64_t> n = ParseSize(Sv(words[1]));
        if (n && *n > 0) caps.size_limit = n;
      }
    }
  }
  return caps;
}

}  // namespace

std::string_view StageName(Stage stage) {
  // Indexed by Stage, in its order.
  static constexpr std::string_view kNames[] = {
      "connect", "greeting", "ehlo", "helo",      "mail",     "rcpt",
      "data",    "data-done", "rset", "quit",     "starttls",
  };
  static_assert(std::size(kNames) == static_cast<size_t>(Stage::kStartTls) + 1);
  const auto i = static_cast<size_t>(stage);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

bool IsUtf8Envelope(const Envelope& env) {
  if (!IsAscii(env.mail_from)) return true;
  for (const std::string& r : env.rcpts) {
    if (!IsAscii(r)) return true;
  }
  return false;
}

bool TakesEightBit(const Capabilities& caps, bool utf8_envelope) {
  return caps.eight_bit_mime || (utf8_envelope && caps.smtputf8);
}

absl::Status ValidateEhloName(std::string_view name) {
  if (name.empty() || name.size() > 255 || BadAddress(name) ||
      name.find(' ') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        "ehlo_name must be 1 to 255 octets without spaces, control characters, '<' or "
        "'>'");
  }
  return absl::OkStatus();
}

Client::Client(ClientOptions opts) : opts_(std::move(opts)), parser_(opts_.reply) {
  // The name goes verbatim into a command line: a CR or LF would inject commands. The
  // config loader is to reject such names, so one reaching here is a bug.
  VOLLEY_CHECK(ValidateEhloName(opts_.ehlo_name).ok(),
               "ClientOptions::ehlo_name fails ValidateEhloName");
}

// The commands, and everything the client needs to know about each one, in one
// table indexed by Cmd (Client::Info).
// kBody (the message after DATA's 354) and kDot (the empty message that ends a DATA
// nobody can receive) are not command lines, but each has a reply of its own.
enum class Client::Cmd : uint8_t {
  kEhlo,
  kHelo,
  kStartTls,
  kRset,
  kMail,
  kRcpt,
  kData,
  kBody,
  kDot,
  kBdat,
  kQuit
};

namespace {

// Expect - the reply class a command wants, besides 4xx and 5xx. Getting the other
// one means the two sides disagree on where they are: a protocol error.
enum class Expect : uint8_t {
  kCompletion,  // 2xx; 3xx is wrong
  kGoAhead,     // 3xx (DATA's 354); 2xx is wrong
  kAnything,    // the lone dot's reply concerns nobody and is ignored
};

// Group - a command's place in a pipelined group (RFC 2920 section 3.1).
enum class Group : uint8_t {
  kAlone,    // written only when no reply is outstanding, and nothing follows it
  kGoesOn,   // may be written behind MAIL or RCPT, and be followed (MAIL, RCPT)
  kEnds,     // may be written behind MAIL or RCPT, and ends the group (DATA, BDAT)
};

}  // namespace

struct Client::CommandInfo {
  Cmd cmd;                // the row's own index, checked below
  std::string_view word;  // the verb; empty for the message itself
  Stage stage;            // what an outcome from its reply names (Postfix's xfer_states)
  Wait wait;              // the timeout class of its reply (Postfix's xfer_timeouts)
  Expect expect;
  Group group;
};

const Client::CommandInfo& Client::Info(Cmd cmd) {
  // RSET goes alone so that a failure cannot leave a pipelined MAIL, RCPT or DATA
  // in flight. EHLO, HELO and STARTTLS wait for the greeting or each other's reply,
  // and QUIT is the last word.
  static constexpr CommandInfo kCommands[] = {
      {Cmd::kEhlo, "EHLO", Stage::kEhlo, Wait::kEhlo, Expect::kCompletion, Group::kAlone},
      {Cmd::kHelo, "HELO", Stage::kHelo, Wait::kEhlo, Expect::kCompletion, Group::kAlone},
      {Cmd::kStartTls, "STARTTLS", Stage::kStartTls, Wait::kEhlo, Expect::kCompletion,
       Group::kAlone},
      {Cmd::kRset, "RSET", Stage::kRset, Wait::kRset, Expect::kCompletion, Group::kAlone},
      {Cmd::kMail, "MAIL", Stage::kMail, Wait::kMail, Expect::kCompletion, Group::kGoesOn},
      {Cmd::kRcpt, "RCPT", Stage::kRcpt, Wait::kRcpt, Expect::kCompletion, Group::kGoesOn},
      {Cmd::kData, "DATA", Stage::kData, Wait::kDataInit, Expect::kGoAhead, Group::kEnds},
      {Cmd::kBody, "", Stage::kDataDone, Wait::kDataDone, Expect::kCompletion,
       Group::kAlone},
      {Cmd::kDot, ".", Stage::kDataDone, Wait::kDataDone, Expect::kAnything, Group::kAlone},
      {Cmd::kBdat, "BDAT", Stage::kDataDone, Wait::kDataDone, Expect::kCompletion,
       Group::kEnds},
      {Cmd::kQuit, "QUIT", Stage::kQuit, Wait::kQuit, Expect::kCompletion, Group::kAlone},
  };
  static_assert(std::size(kCommands) == static_cast<size_t>(Cmd::kQuit) + 1);
  static_assert(
      [] {
        for (size_t i = 0; i < std::size(kCommands); ++i) {
          if (static_cast<size_t>(kCommands[i].cmd) != i) return false;
        }
        return true;
      }(),
      "kCommands rows must be in Cmd order");
  return kCommands[static_cast<size_t>(cmd)];
}

// Line - the command line for `cmd`: its word, then a space and `arg` if any, CRLF.
std::string Client::Line(Cmd cmd, std::string_view arg) {
  const std::string_view word = Info(cmd).word;
  return arg.empty() ? absl::StrCat(Av(word), "\r\n")
                     : absl::StrCat(Av(word), " ", Av(arg), "\r\n");
}

void Client::Feed(std::string_view bytes) {
  if (phase_ == Phase::kClosed || bytes.empty()) return;
  if (phase_ == Phase::kTlsHandshake) {
    // The handshake's bytes belong to the TLS layer; plaintext here is a caller bug or
    // an attack, and must never be parsed as a reply (RFC 3207 section 4.2).
    FeedIoError("plaintext fed during the TLS handshake");
    return;
  }
  received_any_ = true;
  parser_.Feed(bytes);
}

void Client::FeedEof() {
  if (phase_ != Phase::kClosed && !loss_) loss_ = Loss::kEof;
}

void Client::FeedTimeout() {
  // A timer for a wait that no longer exists is stale, not a failure.
  if (phase_ != Phase::kClosed && !loss_ && waiting_for() != Wait::kNone) {
    loss_ = Loss::kTimeout;
  }
}

void Client::FeedIoError(std::string_view what) {
  if (phase_ != Phase::kClosed && !loss_) {
    loss_ = Loss::kIoError;
    loss_what_ = std::string(what);
  }
}

Event Client::Next() {
  Process(/*until_event=*/true);
  if (events_.empty()) return NeedData{};
  Event ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

// Process - handle buffered replies, then any loss fed after them. With until_event,
// stop at the first event so that replies are not handled far ahead of the caller.
void Client::Process(bool until_event) {
  while (phase_ != Phase::kClosed && !(until_event && !events_.empty())) {
    if (parser_.NextReply(&reply_)) {
      HandleReply(reply_);
    } else if (!parser_.status().ok()) {
      ProtocolError(CurrentStage(), Sv(parser_.status().message()));
    } else if (loss_) {
      HandleLoss();
    } else {
      break;
    }
  }
}

absl::Status Client::StartTransaction(Envelope env) {
  if (!accepts_transaction()) {
    return absl::FailedPreconditionError(
        closed() ? "StartTransaction: the session is closed"
                 : "StartTransaction: the client is not idle");
  }
  // Pipelined behind a transaction under way: whatever input is buffered answers
  // that one's commands, and is handled in order with the rest.
  const bool behind = phase_ == Phase::kTransaction;
  if (env.rcpts.empty()) {
    return absl::InvalidArgumentError("StartTransaction: no recipients");
  }
  if (BadAddress(env.mail_from)) {
    return absl::InvalidArgumentError(
        "StartTransaction: sender address has a control character, '<' or '>'");
  }
  for (size_t i = 0; i < env.rcpts.size(); ++i) {
    if (env.rcpts[i].empty() || BadAddress(env.rcpts[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("StartTransaction: recipient ", i + 1,
                       " is empty or has a control character, '<' or '>'"));
    }
  }
  // Bytes that arrived while nothing was outstanding must be dealt with now: sent
  // after MAIL they would be read as its reply (Postfix's early-reply check). A whole
  // 421 closes the session as usual; anything else is a protocol error.
  if (!behind) {
    Process(/*until_event=*/false);
    if (phase_ == Phase::kIdle && parser_.buffered() > 0) {
      ProtocolError(Stage::kConnect, "server sent data while no command was outstanding");
    }
    if (phase_ != Phase::kIdle) {
      return absl::FailedPreconditionError("StartTransaction: the session is closed");
    }
  }

  Transaction t;
  const size_t n = env.rcpts.size();
  t.final.resize(n);
  t.rcpt_accepted.resize(n, false);

  const bool utf8 = IsUtf8Envelope(env);
  if (utf8 && !caps_.smtputf8) {
    // RFC 6531 section 3.2: without SMTPUTF8 the address cannot be sent at all.
    const bool sender = !IsAscii(env.mail_from);
    for (size_t i = 0; i < n; ++i) {
      if (sender || !IsAscii(env.rcpts[i])) {
        t.final[i] = Made(Kind::kPermanent, 550, "5.6.7",
                          sender ? "SMTPUTF8 is required for the non-ASCII sender "
                                   "address, but the server does not offer it"
                                 : "SMTPUTF8 is required for the non-ASCII recipient "
                                   "address, but the server does not offer it",
                          Stage::kMail);
      }
    }
  }

  const bool bdat = content_form() == ContentForm::kBdat;
  // Prepared by the caller for another form, or 8-bit for a server that cannot take
  // it (the downgrade below reads a message): back to the message.
  if (env.form != ContentForm::kMessage &&
      (env.form != content_form() || (env.eight_bit && !TakesEightBit(caps_, utf8)))) {
    if (env.form == ContentForm::kData) env.content = MessageFromData(env.content);
    env.form = ContentForm::kMessage;
  }

  // RFC 6152 section 3: no 8-bit octet to a server that did not offer 8BITMIME.
  // SMTPUTF8 implies 8BITMIME (RFC 6531 section 3.1), so a UTF-8 envelope goes as is.
  bool eight_bit = env.form == ContentForm::kMessage ? HasEightBit(env.content) : env.eight_bit;
  if (eight_bit && !TakesEightBit(caps_, utf8)) {
    absl::StatusOr<std::string> seven_bit = DowngradeTo7Bit(env.content);
    if (seven_bit.ok()) {
      env.content = std::move(*seven_bit);
      eight_bit = false;
    } else {
      for (auto& f : t.final) {
        if (!f) {
          f = Made(Kind::kPermanent, 554, "5.6.3",
                   absl::StrCat("cannot convert the message to 7 bits: ",
                                seven_bit.status().message()),
                   Stage::kMail);
        }
      }
    }
  }

  uint64_t size = 0;
  if (env.form == ContentForm::kMessage) {
    t.data = bdat ? PrepareBdat(env.content, &size) : PrepareData(env.content, &size);
  } else {
    t.data = std::move(env.content);
    size = env.message_size;
  }
  // t.data is what goes out; the message would only be a second copy to hold.
  std::string().swap(env.content);
  if (caps_.size_limit && size > *caps_.size_limit) {
    // RFC 1870: the server would refuse it; sending it would only waste the transfer.
    for (auto& f : t.final) {
      if (!f) {
        f = Made(Kind::kPermanent, 552, "5.3.4",
                 absl::StrCat("message size ", size, " exceeds the server's limit of ",
                              *caps_.size_limit),
                 Stage::kMail);
      }
    }
  }

  bool any_to_send = false;
  for (const auto& f : t.final) any_to_send = any_to_send || !f.has_value();
  // The command lines go into one buffer kept from the last transaction (its
  // capacity with it), not a string each: no allocation per command.
  t.command_text = std::move(spare_command_text_);
  t.command_text.clear();
  t.commands = std::move(spare_commands_);
  t.commands.clear();
  if (any_to_send) {
    // AddCommand - the line "<word>[ <args...>]\r\n" for `cmd`.
    const auto add = [&t](Cmd cmd, size_t rcpt, auto&&... args) {
      const size_t begin = t.command_text.size();
      t.command_text.append(Info(cmd).word);
      (t.command_text.append(args), ...);
      t.command_text.append("\r\n");
      t.commands.push_back({cmd, rcpt, begin, t.command_text.size() - begin});
    };
    if (need_rset_) add(Cmd::kRset, 0);
    const absl::AlphaNum size_digits(size);  // formatted on the stack
    add(Cmd::kMail, 0, std::string_view(" FROM:<"), std::string_view(env.mail_from),
        std::string_view(">"),
        std::string_view(eight_bit && caps_.eight_bit_mime ? " BODY=8BITMIME" : ""),
        std::string_view(caps_.size ? " SIZE=" : ""),
        caps_.size ? Sv(size_digits.Piece()) : std::string_view(),
        std::string_view(utf8 && caps_.smtputf8 ? " SMTPUTF8" : ""));
    for (size_t i = 0; i < n; ++i) {
      if (t.final[i]) continue;
      add(Cmd::kRcpt, i, std::string_view(" TO:<"), std::string_view(env.rcpts[i]),
          std::string_view(">"));
      ++t.rcpt_replies_due;
    }
    if (bdat) {
      // One chunk: the message is already in memory, and one BDAT LAST saves the 354
      // round trip that DATA costs (the point of CHUNKING for a bulk sender).
      const absl::AlphaNum chunk_digits(t.data.size());
      add(Cmd::kBdat, 0, std::string_view(" "), Sv(chunk_digits.Piece()),
          std::string_view(" LAST"));
    } else {
      add(Cmd::kData, 0);
    }
  }
  t.env = std::move(env);
  t.seq = next_txn_seq_++;
  txns_.push_back(std::move(t));
  phase_ = Phase::kTransaction;
  Pump();
  return absl::OkStatus();
}

void Client::Quit() {
  if (phase_ == Phase::kIdle) {
    CallerQuit();
  } else if (phase_ == Phase::kGreeting || phase_ == Phase::kHello ||
             phase_ == Phase::kTlsHandshake || phase_ == Phase::kTransaction) {
    quit_requested_ = true;
  }
  // Already quitting or closed: nothing to add.
}

std::string_view Client::PendingOutput() const {
  return std::string_view(out_).substr(out_start_);
}

void Client::ConsumeOutput(size_t n) {
  VOLLEY_CHECK(n <= out_.size() - out_start_, "ConsumeOutput: more than was pending");
  out_start_ += n;
  consumed_total_ += n;
  if (out_start_ == out_.size()) {
    out_.clear();
    out_start_ = 0;
  }
}

void Client::TakeOutput(std::string* into) {
  const size_t n = out_.size() - out_start_;
  if (out_start_ == 0) {
    into->clear();
    into->swap(out_);
  } else {
    into->assign(out_, out_start_, n);
    out_.clear();
    out_start_ = 0;
  }
  consumed_total_ += n;
}

Wait Client::waiting_for() const {
  if (phase_ == Phase::kClosed) return Wait::kNone;
  if (phase_ == Phase::kGreeting) return Wait::kGreeting;
  if (phase_ == Phase::kTlsHandshake) return Wait::kTlsHandshake;
  if (sent_.empty()) return Wait::kNone;
  return Info(sent_.front().cmd).wait;
}

bool Client::idle() const { return phase_ == Phase::kIdle && !quit_requested_; }

bool Client::accepts_transaction() const {
  if (idle()) return true;
  if (phase_ != Phase::kTransaction || quit_requested_ || loss_.has_value() ||
      !parser_.status().ok() || early_data_) {
    return false;
  }
  // Behind BDAT only: DATA's message waits for a 354, and the server must be in a
  // known state (no RSET owed), or the next MAIL could be taken as nested.
  if (txns_.size() >= opts_.max_transactions_in_flight || !PipelinesTransactions() ||
      need_rset_) {
    return false;
  }
  for (const Transaction& t : txns_) {
    if (t.failed || t.stop_sending || t.next_command < t.commands.size()) return false;
  }
  return true;
}

size_t Client::max_in_flight() const {
  return PipelinesTransactions() ? opts_.max_transactions_in_flight : 1;
}

bool Client::closed() const { return phase_ == Phase::kClosed; }

void Client::Send(std::string_view bytes, Cmd cmd, size_t rcpt, size_t window_bytes,
                  uint64_t txn) {
  // Compact once the written prefix is at least half the buffer: amortised O(1) a byte.
  if (out_start_ > 0 && out_start_ >= out_.size() / 2) {
    out_.erase(0, out_start_);
    out_start_ = 0;
  }
  out_.append(bytes);
  appended_total_ += bytes.size();
  sent_.push_back({cmd, window_bytes, rcpt, appended_total_, txn});
  unacked_bytes_ += window_bytes;
}

// MaySend - whether `command` may be written now. Without PIPELINING one command is
// outstanding at a time. With it, the command's Group decides: MAIL and RCPT may be
// followed by more commands, RSET goes alone and DATA or BDAT ends the group (RFC
// 2920); and the group stops growing at max_pipeline_bytes, since a server that does
// not read while its replies back up would deadlock us. A transaction pipelined
// behind another (accepts_transaction) starts with MAIL right after BDAT LAST.
bool Client::MaySend(const Command& command) const {
  if (sent_.empty()) return true;
  if (!UsePipelining() || Info(command.cmd).group == Group::kAlone) return false;
  const Cmd last = sent_.back().cmd;
  if (Info(last).group != Group::kGoesOn && !(last == Cmd::kBdat && command.cmd == Cmd::kMail)) {
    return false;
  }
  return unacked_bytes_ + command.length <= opts_.max_pipeline_bytes;
}

void Client::Pump() {
  // In order: a later transaction's commands never pass an earlier one's.
  for (Transaction& t : txns_) {
    if (!PumpTransaction(t)) break;
  }
  MaybeFinishTransaction();
}

// PumpTransaction - t's commands that may go now; true when none is left to send.
bool Client::PumpTransaction(Transaction& t) {
  while (t.next_command < t.commands.size()) {
    if (t.stop_sending) {
      t.next_command = t.commands.size();
      break;
    }
    const Command& c = t.commands[t.next_command];
    if ((c.cmd == Cmd::kData || c.cmd == Cmd::kBdat) && t.rcpt_replies_due == 0 &&
        t.accepted == 0) {
      // Every RCPT was refused before DATA went out: there is nobody to send to.
      t.failed = true;
      t.next_command = t.commands.size();
      break;
    }
    if (!MaySend(c)) return false;
    Send(std::string_view(t.command_text).substr(c.begin, c.length), c.cmd, c.rcpt, c.length,
         t.seq);
    if (c.cmd == Cmd::kBdat) {
      out_.append(t.data);  // the chunk follows its command at once (RFC 3030)
      appended_total_ += t.data.size();
      sent_.back().end = appended_total_;
      std::string().swap(t.data);
    }
    ++t.next_command;
  }
  return true;
}

Client::Transaction& Client::TransactionOf(const Sent& sent) {
  VOLLEY_CHECK(!txns_.empty() && sent.txn >= txns_.front().seq &&
                   sent.txn - txns_.front().seq < txns_.size(),
               "a transaction command's reply with no transaction under way");
  return txns_[sent.txn - txns_.front().seq];
}

// AwaitsReplies - t has a command still to send or to be answered. Replies come in
// send order, so only the oldest transaction's can be first in sent_.
bool Client::AwaitsReplies(const Transaction& t) const {
  return t.next_command < t.commands.size() || (!sent_.empty() && sent_.front().txn == t.seq);
}

void Client::MaybeFinishTransaction() {
  if (txns_.empty()) return;
  while (!txns_.empty() && !AwaitsReplies(txns_.front())) {
    Transaction& t = txns_.front();
    TransactionDone done;
    done.id = t.env.id;
    for (auto& f : t.final) {
      VOLLEY_CHECK(f.has_value(), "transaction finished with a recipient undecided");
      done.rcpt_outcomes.push_back(std::move(*f));
    }
    // A transaction decided without a command sent (over SIZE, no SMTPUTF8) leaves
    // the server where the last one did: an RSET still owed stays owed.
    if (!t.commands.empty()) need_rset_ = t.failed;
    spare_command_text_ = std::move(t.command_text);
    spare_commands_ = std::move(t.commands);
    txns_.pop_front();
    events_.push_back(std::move(done));
  }
  if (txns_.empty()) BecomeIdle();
}

void Client::BecomeIdle() {
  phase_ = Phase::kIdle;
  if (quit_requested_) CallerQuit();
}

void Client::CallerQuit() {
  quit_requested_ = false;
  caller_quit_ = true;
  quit_reason_ =
      Made(Kind::kAccepted, 221, "2.0.0", "connection closed after QUIT", Stage::kQuit);
  phase_ = Phase::kQuit;
  Send(Line(Cmd::kQuit), Cmd::kQuit, 0, 6);
}

void Client::QuitWith(Outcome reason) {
  quit_requested_ = false;
  caller_quit_ = false;
  quit_reason_ = std::move(reason);
  phase_ = Phase::kQuit;
  Send(Line(Cmd::kQuit), Cmd::kQuit, 0, 6);
}

void Client::Close(Outcome reason) {
  events_.push_back(SessionClosed{std::move(reason)});
  phase_ = Phase::kClosed;
  sent_.clear();
  unacked_bytes_ = 0;
  out_.clear();
  out_start_ = 0;
  quit_requested_ = false;
}

void Client::Abort(const Outcome& reason, std::string_view cause) {
  if (phase_ == Phase::kQuit) {
    Close(std::move(*quit_reason_));
    return;
  }
  EndTransactions(reason, cause);
  Close(reason);
}

// EndTransactions - a TransactionDone for each transaction under way, oldest first:
// a recipient without a final outcome gets `reason`. The oldest transaction awaited
// the reply `reason` names; a later one (pipelined) awaited its own, which its
// outcomes name instead: with a `cause`, in a text of its own, whether its message
// may have been delivered included.
void Client::EndTransactions(const Outcome& reason, std::string_view cause) {
  bool oldest = true;
  for (Transaction& t : txns_) {
    Outcome own = reason;
    if (!oldest) {
      const auto first = std::find_if(sent_.begin(), sent_.end(),
                                      [&t](const Sent& s) { return s.txn == t.seq; });
      if (first != sent_.end()) {
        own.stage = Info(first->cmd).stage;
        if (!cause.empty()) own.text = absl::StrCat(Av(cause), " ", WhereFor(*first));
      } else {
        own.stage = Stage::kMail;
        if (!cause.empty()) {
          own.text = absl::StrCat(Av(cause), " before the transaction's commands were sent");
        }
      }
    }
    oldest = false;
    TransactionDone done;
    done.id = t.env.id;
    for (auto& f : t.final) done.rcpt_outcomes.push_back(f ? std::move(*f) : own);
    events_.push_back(std::move(done));
  }
  txns_.clear();
}

std::string Client::Where(Stage stage) const {
  switch (stage) {
    case Stage::kConnect:
      return phase_ == Phase::kIdle ? "while idle" : "while connecting";
    case Stage::kGreeting:
      return "while awaiting greeting";
    case Stage::kStartTls:
      return phase_ == Phase::kTlsHandshake ? "during the TLS handshake"
                                            : "while awaiting starttls reply";
    case Stage::kDataDone:
      // Once the final "." has been written the server may have taken the message
      // even though we never saw its reply: the duplicate risk belongs in the log.
      // Behind it may be a pipelined transaction's commands, still unwritten.
      if (!sent_.empty() && (sent_.front().cmd == Cmd::kBdat || sent_.front().cmd == Cmd::kBody)) {
        return WhereFor(sent_.front());
      }
      return AwaitingDataDone(/*written=*/PendingOutput().empty());
    default:
      return absl::StrCat("while awaiting ", Av(StageName(stage)), " reply");
  }
}

std::string Client::WhereFor(const Sent& sent) const {
  const Stage stage = Info(sent.cmd).stage;
  if (sent.cmd != Cmd::kBdat && sent.cmd != Cmd::kBody) return Where(stage);
  return AwaitingDataDone(/*written=*/consumed_total_ >= sent.end);
}

Stage Client::CurrentStage() const {
  if (!sent_.empty()) return Info(sent_.front().cmd).stage;
  if (phase_ == Phase::kGreeting) return Stage::kGreeting;
  if (phase_ == Phase::kTlsHandshake) return Stage::kStartTls;
  return Stage::kConnect;
}

void Client::ProtocolError(Stage stage, std::string_view why) {
  const std::string cause = absl::StrCat("protocol error (", Av(why), ")");
  Abort(Made(Kind::kTransient, 451, "4.4.2", absl::StrCat(cause, " ", Where(stage)), stage),
        cause);
}

void Client::HandleLoss() {
  Stage stage = CurrentStage();
  if (stage == Stage::kGreeting && !received_any_ && loss_ == Loss::kIoError) {
    stage = Stage::kConnect;  // nothing ever arrived: the connect itself failed
  }
  std::string cause;
  switch (*loss_) {
    case Loss::kEof:
      cause = "connection lost";
      break;
    case Loss::kTimeout:
      cause = "timed out";
      break;
    case Loss::kIoError:
      cause = absl::StrCat("I/O error (", loss_what_, ")");
      break;
  }
  // RFC 3463's X.7.5 (cryptographic failure) for a handshake that failed, so that the
  // log and bounce classification can tell TLS failures from lost connections.
  const bool tls_failure = phase_ == Phase::kTlsHandshake && loss_ == Loss::kIoError;
  Abort(Made(Kind::kTransient, 451, tls_failure ? "4.7.5" : "4.4.2",
             absl::StrCat(cause, " ", Where(stage)), stage),
        cause);
}

// HandleReply - dispatch one reply, then make sure it was not followed by bytes the
// server sent before it could have seen our next command.
void Client::HandleReply(const Reply& reply) {
  if (reply.code >= 200 && reply.code < 600) {
    ++reply_counts_[static_cast<size_t>(reply.code / 100 - 2)];
  }
  // Nothing will be outstanding once this reply is taken off: whatever follows it in
  // the buffer was sent unasked. Left there, it would be read as the reply to the
  // command this reply lets us send (a fake EHLO answer after the greeting, a "250"
  // after 354 standing in for end-of-data), so the session ends instead. While idle
  // the same bytes are caught by the unsolicited-reply path, which lets 421 through.
  //
  // The one exception is 421 (RFC 5321 section 3.8: a server may send it at any time
  // before closing), so the bytes are not judged until they make a whole reply: a 421
  // ends the session as usual, anything else is a protocol error.
  //
  // The same holds for a reply that arrives while the command it would answer is still
  // in PendingOutput(): the server cannot have seen it.
  const bool unsent = !sent_.empty() && sent_.front().end > consumed_total_;
  if (early_data_ || unsent) {
    early_data_ = false;
    if (reply.code == 421) {
      Abort(FromReply(reply, CurrentStage()));
    } else {
      ProtocolError(CurrentStage(), "server sent data before the command it answers");
    }
    return;
  }
  const bool last_outstanding = phase_ == Phase::kGreeting || sent_.size() == 1;
  DispatchReply(reply);
  if (last_outstanding && phase_ != Phase::kClosed && phase_ != Phase::kQuit &&
      !sent_.empty() && parser_.buffered() > 0) {
    early_data_ = true;
  }
}

void Client::DispatchReply(const Reply& reply) {
  const int cls = reply.code / 100;
  if (phase_ == Phase::kGreeting) {
    if (cls == 2) {
      phase_ = Phase::kHello;
      Send(Line(Cmd::kEhlo, opts_.ehlo_name), Cmd::kEhlo, 0, 0);
    } else if (reply.code == 421) {
      Abort(FromReply(reply, Stage::kGreeting));
    } else if (cls == 3) {
      ProtocolError(Stage::kGreeting, absl::StrCat("greeting with code ", reply.code));
    } else {
      QuitWith(FromReply(reply, Stage::kGreeting));
    }
    return;
  }
  if (sent_.empty()) {
    // RFC 5321 section 3.8: a server may send 421 at any time before closing, for
    // instance when an idle connection times out. Anything else is unsolicited.
    if (reply.code == 421) {
      Abort(FromReply(reply, Stage::kConnect));
    } else {
      ProtocolError(Stage::kConnect,
                    absl::StrCat("unexpected reply ", reply.code, " while idle"));
    }
    return;
  }
  const Sent sent = sent_.front();
  sent_.pop_front();
  unacked_bytes_ -= sent.bytes;
  const Stage stage = Info(sent.cmd).stage;

  if (sent.cmd == Cmd::kQuit) {
    Outcome reason = std::move(*quit_reason_);
    if (caller_quit_ && cls == 2) {
      reason = FromReply(reply, Stage::kQuit);
      reason.kind = Kind::kAccepted;
    }
    Close(std::move(reason));
    return;
  }
  if (reply.code == 421) {
    Abort(FromReply(reply, stage));
    return;
  }
  // A reply of the wrong class (Expect) means the two sides disagree on where they
  // are.
  const Expect expect = Info(sent.cmd).expect;
  const bool wrong_class = (expect == Expect::kCompletion && cls == 3) ||
                           (expect == Expect::kGoAhead && cls == 2);
  if (wrong_class) {
    ProtocolError(stage, absl::StrCat("unexpected reply ", reply.code, " to ",
                                      Av(StageName(stage))));
    return;
  }
  if (sent.cmd == Cmd::kEhlo || sent.cmd == Cmd::kHelo) {
    HandleHelloReply(sent, reply);
  } else if (sent.cmd == Cmd::kStartTls) {
    HandleStartTlsReply(reply);
  } else {
    HandleTransactionReply(sent, reply);
  }
}

void Client::HandleHelloReply(const Sent& sent, const Reply& reply) {
  const int cls = reply.code / 100;
  if (cls == 2) {
    caps_ = sent.cmd == Cmd::kEhlo ? ParseEhlo(reply.text) : Capabilities();
    if (!tls_ && opts_.tls != TlsPolicy::kOff) {
      if (caps_.starttls) {
        Send(Line(Cmd::kStartTls), Cmd::kStartTls, 0, 0);
        return;
      }
      if (opts_.tls == TlsPolicy::kRequired) {
        QuitWith(Made(Kind::kTransient, 451, "4.7.10",
                      "TLS is required for this destination, but the server does not "
                      "offer STARTTLS",
                      Info(sent.cmd).stage));
        return;
      }
    }
    SessionIsReady();
  } else if (sent.cmd == Cmd::kEhlo && cls == 5) {
    // An old or minimal server (RFC 5321 section 4.1.4 allows HELO-only servers).
    Send(Line(Cmd::kHelo, opts_.ehlo_name), Cmd::kHelo, 0, 0);
  } else {
    QuitWith(FromReply(reply, Info(sent.cmd).stage));
  }
}

void Client::SessionIsReady() {
  events_.push_back(SessionReady{caps_, tls_});
  BecomeIdle();
}

void Client::HandleStartTlsReply(const Reply& reply) {
  if (reply.code / 100 == 2) {
    // RFC 3207 section 4.2: what follows the 220 in the same read was sent before the
    // handshake, so a man in the middle could have put it there to be taken for a
    // reply inside TLS (CVE-2011-0411). It is dropped with the connection, unread.
    if (parser_.buffered() > 0) {
      ProtocolError(Stage::kStartTls,
                    "server sent data after its 220 reply to STARTTLS, before the TLS "
                    "handshake");
      return;
    }
    phase_ = Phase::kTlsHandshake;
    events_.push_back(StartTls{});
    return;
  }
  if (opts_.tls == TlsPolicy::kRequired) {
    QuitWith(Made(Kind::kTransient, 451, "4.7.10",
                  absl::StrCat("TLS is required for this destination, but STARTTLS was "
                               "refused: ",
                               reply.code, " ", reply.text),
                  Stage::kStartTls));
    return;
  }
  // Opportunistic: carry on in plaintext with what EHLO offered (RFC 3207 section 4.1
  // leaves the choice to the client).
  SessionIsReady();
}

void Client::TlsEstablished() {
  VOLLEY_CHECK(phase_ == Phase::kTlsHandshake, "TlsEstablished without StartTls");
  // RFC 3207 section 4.2: forget everything learnt in plaintext and ask again.
  tls_ = true;
  caps_ = Capabilities();
  phase_ = Phase::kHello;
  Send(Line(Cmd::kEhlo, opts_.ehlo_name), Cmd::kEhlo, 0, 0);
}

void Client::HandleTransactionReply(const Sent& sent, const Reply& reply) {
  Transaction& t = TransactionOf(sent);
  const int cls = reply.code / 100;
  switch (sent.cmd) {
    case Cmd::kRset: {
      if (cls == 2) {
        need_rset_ = false;
        break;
      }
      // The server cannot say where it is: end the session. The envelope was never
      // tried, so its recipients are only deferred.
      Outcome o = FromReply(reply, Stage::kRset);
      if (o.kind != Kind::kTransient) {
        o = Made(Kind::kTransient, 451, "4.3.0",
                 absl::StrCat("RSET refused: ", reply.code, " ", reply.text),
                 Stage::kRset);
      }
      EndTransactions(o, {});
      QuitWith(std::move(o));
      return;
    }
    case Cmd::kMail:
      if (cls != 2) {
        t.stop_sending = true;
        t.failed = true;
        Outcome o = FromReply(reply, Stage::kMail);
        if (need_rset_) {
          // This MAIL was pipelined behind a transaction that failed, which the
          // server may still hold open ("503 nested MAIL"): the refusal may say
          // nothing about this envelope, so it is tried again, never bounced.
          o = Made(Kind::kTransient, 451, "4.5.0",
                   absl::StrCat("MAIL refused behind a failed pipelined transaction: ",
                                reply.code, " ", reply.text),
                   Stage::kMail);
        }
        for (auto& f : t.final) {
          if (!f) f = o;
        }
      }
      break;
    case Cmd::kRcpt: {
      --t.rcpt_replies_due;
      // After a refused MAIL, pipelined RCPTs get "503 need MAIL": not news.
      if (!t.final[sent.rcpt]) {
        if (cls == 2) {
          t.rcpt_accepted[sent.rcpt] = true;
          ++t.accepted;
        } else {
          Outcome o = FromReply(reply, Stage::kRcpt);
          if (reply.code == 452 || reply.code == 552) {
            // RFC 5321 section 4.5.3.1.10: "too many recipients" is retried later,
            // and some servers send it as 552.
            o.kind = Kind::kTransient;
            o.code = 452;
            o.enhanced[0] = '4';
          }
          t.final[sent.rcpt] = std::move(o);
        }
      }
      if (t.rcpt_replies_due == 0 && t.accepted == 0) t.failed = true;
      break;
    }
    case Cmd::kData:
      if (cls == 3) {
        if (t.accepted > 0 && !t.stop_sending) {
          Send(t.data, Cmd::kBody, 0, 0, t.seq);
          std::string().swap(t.data);  // out_ holds it now; one copy is enough
        } else {
          // Pipelined DATA was accepted though nobody can receive the message: end it
          // with an empty one, whose reply is ignored (RFC 2920 section 3.1).
          Send(Line(Cmd::kDot), Cmd::kDot, 0, 0, t.seq);
        }
      } else {
        t.failed = true;
        for (size_t i = 0; i < t.final.size(); ++i) {
          if (!t.final[i] && t.rcpt_accepted[i])
            t.final[i] = FromReply(reply, Stage::kData);
        }
      }
      break;
    case Cmd::kBody:
      for (size_t i = 0; i < t.final.size(); ++i) {
        if (!t.final[i] && t.rcpt_accepted[i]) {
          t.final[i] = FromReply(reply, Stage::kDataDone);
        }
      }
      break;
    case Cmd::kBdat:
      // Pipelined BDAT goes out before the RCPT replies are known; when none was
      // accepted its reply (503 or 554) concerns nobody. A refused BDAT leaves the
      // transaction open on the server: RSET before the next one (RFC 3030 section 4).
      if (cls != 2) t.failed = true;
      for (size_t i = 0; i < t.final.size(); ++i) {
        if (!t.final[i] && t.rcpt_accepted[i]) {
          t.final[i] = FromReply(reply, Stage::kDataDone);
        }
      }
      break;
    case Cmd::kDot:
      break;
    case Cmd::kEhlo:
    case Cmd::kHelo:
    case Cmd::kStartTls:
    case Cmd::kQuit:
      VOLLEY_CHECK(false, "HandleTransactionReply: not a transaction command");
  }
  Pump();
}

}  // namespace volley::smtp
