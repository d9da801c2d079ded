// session.cc - the server side of one SMTP session; see session.h.
#include "engine/smtpd/session.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::smtpd {
namespace {

constexpr std::string_view kNotRecognized = "500 5.5.2 Error: command not recognized\r\n";
constexpr std::string_view kBareLf = "500 5.5.2 Error: bare LF received\r\n";
constexpr std::string_view kLineTooLong = "500 5.5.6 Error: command line too long\r\n";
constexpr std::string_view kOk = "250 2.0.0 Ok\r\n";
constexpr std::string_view kNeedHelo = "503 5.5.1 Error: send HELO/EHLO first\r\n";
constexpr std::string_view kNeedMail = "503 5.5.1 Error: need MAIL command\r\n";
constexpr std::string_view kNoRecipients = "554 5.5.1 Error: no valid recipients\r\n";
constexpr std::string_view kTooBig =
    "552 5.3.4 Error: message size exceeds fixed limit\r\n";
constexpr std::string_view kUnsupported = "555 5.5.4 Unsupported option\r\n";
constexpr std::string_view kBdatSyntax = "501 5.5.4 Syntax: BDAT size [LAST]\r\n";
constexpr std::string_view kGreylisted =
    "451 4.7.1 Greylisted, please try again later\r\n";
constexpr std::string_view kTooManyConnections =
    "421 4.7.0 Error: too many connections, try again later\r\n";
constexpr std::string_view kTooManyFromClient =
    "421 4.7.0 Error: too many connections from your address, try again later\r\n";
constexpr std::string_view kTooManyMessages =
    "421 4.7.0 Error: too many messages on this connection, try again later\r\n";
constexpr std::string_view kRelayDenied = "550 5.7.1 Error: relay access denied\r\n";
constexpr std::string_view kNoService = "503 5.5.1 Error: no service\r\n";
constexpr std::string_view kReadyTls = "220 2.0.0 Ready to start TLS\r\n";

// Content capacity kept between messages; a bigger buffer is freed.
constexpr size_t kKeepContentCapacity = 64 * 1024;

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && base::EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view StripLeadingSpace(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view StripSpace(std::string_view s) {
  s = StripLeadingSpace(s);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// ParseDecimal - digits only (no sign, no space), at most 19 of them.
bool ParseDecimal(std::string_view s, uint64_t* value) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *value = v;
  return true;
}

// ParsePath - split "<addr> params" after "FROM:" or "TO:"; false on bad syntax.
// Spaces after the colon are tolerated (many clients send them).
bool ParsePath(std::string_view arg, std::string_view* address,
               std::string_view* params) {
  arg = StripLeadingSpace(arg);
  if (arg.empty() || arg.front() != '<') return false;
  const size_t close = arg.find('>');
  if (close == std::string_view::npos) return false;
  *address = arg.substr(1, close - 1);
  std::string_view rest = arg.substr(close + 1);
  if (!rest.empty() && rest.front() != ' ') return false;
  *params = StripSpace(rest);
  return true;
}

// StripPrefixIgnoreCase - if s starts with prefix (any case), drop it and say so.
bool StripPrefixIgnoreCase(std::string_view* s, std::string_view prefix) {
  if (!StartsWithIgnoreCase(*s, prefix)) return false;
  s->remove_prefix(prefix.size());
  return true;
}

// Commands whose 4xx and 5xx replies count as rejects.
bool CountsRejects(Command c) {
  return c == Command::kMail || c == Command::kRcpt || c == Command::kData ||
         c == Command::kDot || c == Command::kBdat;
}

// The profile of a session that was given none: volley-sink without faults.
const Profile& BuiltInProfile() {
  static const Profile* const profile = new Profile();
  return *profile;
}

// AddStep - append bytes after delay: to the last step when there is no delay,
// so that the replies to a pipelined group leave in one write.
void AddStep(absl::Duration delay, std::string_view bytes, Output* out) {
  if (delay == absl::ZeroDuration() && !out->steps.empty()) {
    out->steps.back().bytes.append(bytes);
    return;
  }
  Step& s = out->steps.emplace_back();
  s.delay = delay;
  s.bytes.assign(bytes);
}

}  // namespace

void Output::Clear() {
  steps.clear();
  start_tls = false;
  close = false;
  accepted.clear();
  rejects = 0;
}

std::string Output::Bytes() const {
  std::string all;
  for (const Step& s : steps) all.append(s.bytes);
  return all;
}

Session::Session(SessionOptions options)
    : options_(std::move(options)),
      profile_(options_.profile != nullptr ? *options_.profile : BuiltInProfile()),
      rng_(options_.seed),
      // max_line_length counts the CRLF; the reader's bound does not.
      lines_(options_.max_line_length >= 2 ? options_.max_line_length - 2 : 0,
             smtp::BadLine::kReport) {}

void Session::Start(uint64_t connections, Output* out) {
  if (profile_.max_connections > 0 && connections > profile_.max_connections) {
    AddStep(absl::ZeroDuration(), kTooManyConnections, out);
    Close(out);
    return;
  }
  if (Decide(profile_, Command::kConnect, {}).disconnect) {
    Close(out);
    return;
  }
  if (!profile_.greeting.bytes.empty()) {
    AddStep(profile_.greeting_delay, profile_.greeting.bytes, out);
    if (profile_.greeting.code == 421) {
      Close(out);
    } else if (profile_.greeting.code >= 400) {
      refused_ = true;
    }
    return;
  }
  AddStep(profile_.greeting_delay,
          absl::StrCat("220 ", options_.hostname, profile_.esmtp ? " ESMTP " : " ",
                       options_.software, "\r\n"),
          out);
}

void Session::Refuse(bool per_client, Output* out) {
  AddStep(absl::ZeroDuration(), per_client ? kTooManyFromClient : kTooManyConnections, out);
  Close(out);
}

void Session::Timeout(Output* out) {
  if (closed()) return;
  ResetTransaction();
  // Straight out, no tarpit: the client has used up its time already.
  AddStep(absl::ZeroDuration(),
          absl::StrCat("421 4.4.2 ", options_.hostname, " Error: timeout exceeded\r\n"), out);
  Close(out);
}

void Session::Feed(std::string_view input, absl::Time now, Output* out) {
  now_ = now;
  stop_feed_ = false;
  // Each step consumes at least one octet, so this loop ends.
  while (!input.empty() && !stop_feed_) {
    size_t used = 0;
    switch (state_) {
      case State::kCommand:
        used = FeedCommand(input, out);
        break;
      case State::kData:
        used = FeedData(input, out);
        break;
      case State::kChunk:
        used = FeedChunk(input, out);
        break;
      case State::kClosed:
        return;  // input after the decision to close is ignored
    }
    input.remove_prefix(used);
  }
}

// FeedCommand - take at most one command line from input; return octets used.
size_t Session::FeedCommand(std::string_view input, Output* out) {
  const size_t used = lines_.FeedLine(input);
  const smtp::Line line = lines_.NextLine();
  switch (line.kind) {
    case smtp::Line::Kind::kNone:
      break;
    case smtp::Line::Kind::kTooLong:
      Emit(Command::kOther, kLineTooLong, absl::ZeroDuration(), out);
      break;
    case smtp::Line::Kind::kBareLf:
      Emit(Command::kOther, kBareLf, absl::ZeroDuration(), out);
      break;
    case smtp::Line::Kind::kText:
      HandleLine(line.text, out);
      break;
  }
  return used;
}

// FeedData - count DATA content up to CRLF "." CRLF; return octets used.
//
// The scanner state survives between calls, so the terminator (and a stuffed dot)
// may be split across inputs at any byte. A "." at a line start is dropped
// (RFC 5321 4.5.2) and not counted. A bare LF is content: only CRLF starts a line.
size_t Session::FeedData(std::string_view input, Output* out) {
  const char* const p = input.data();
  const size_t n = input.size();
  size_t i = 0;
  while (i < n) {
    switch (scan_) {
      case DataScan::kMid: {
        // Skip to the next CR in one step: this is where bulk content goes.
        const void* cr = std::memchr(p + i, '\r', n - i);
        if (cr == nullptr) {
          Content(p + i, n - i);
          return n;
        }
        const size_t at = static_cast<const char*>(cr) - p;
        Content(p + i, at - i + 1);
        i = at + 1;
        scan_ = DataScan::kCr;
        break;
      }
      case DataScan::kLineStart: {
        const char c = p[i++];
        if (c == '.') {
          scan_ = DataScan::kDot;
        } else {
          Content(&p[i - 1], 1);
          scan_ = c == '\r' ? DataScan::kCr : DataScan::kMid;
        }
        break;
      }
      case DataScan::kCr: {
        const char c = p[i++];
        Content(&p[i - 1], 1);
        scan_ = c == '\n' ? DataScan::kLineStart
                          : (c == '\r' ? DataScan::kCr : DataScan::kMid);
        break;
      }
      case DataScan::kDot:
        if (p[i] == '\r') {
          ++i;
          scan_ = DataScan::kDotCr;
        } else {
          scan_ = DataScan::kMid;  // a stuffed dot: drop it, rescan this octet
        }
        break;
      case DataScan::kDotCr:
        if (p[i] == '\n') {
          ++i;
          scan_ = DataScan::kLineStart;
          EndData(out);
          return i;
        }
        Content("\r", 1);  // ".\r" then something else: the CR is content
        scan_ = DataScan::kCr;  // rescan this octet after that CR
        break;
    }
  }
  return n;
}

// FeedChunk - skip BDAT chunk octets; answer when the chunk is complete.
size_t Session::FeedChunk(std::string_view input, Output* out) {
  const size_t used =
      input.size() < chunk_left_ ? input.size() : static_cast<size_t>(chunk_left_);
  chunk_left_ -= used;
  // Bdat() counted the chunk's octets and checked them against the limit.
  if (chunk_error_.empty() && options_.handler != nullptr) content_.append(input.data(), used);
  if (chunk_left_ == 0) EndChunk(out);
  return used;
}

void Session::HandleLine(std::string_view line, Output* out) {
  const size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view arg =
      space == std::string_view::npos
          ? std::string_view()
          : StripSpace(line.substr(space + 1));
  auto is = [verb](std::string_view name) {
    return base::EqualsIgnoreCase(verb, name);
  };
  if (refused_) {
    // A refusing greeting was sent: wait for QUIT, answer 503 to the rest
    // (RFC 5321 3.1).
    if (is("QUIT")) {
      quit_received_ = true;
      Emit(Command::kQuit, "221 2.0.0 Bye\r\n", absl::ZeroDuration(), out);
      Close(out);
    } else {
      Emit(Command::kOther, kNoService, absl::ZeroDuration(), out);
    }
    return;
  }
  if (is("MAIL")) {
    Mail(arg, out);
  } else if (is("RCPT")) {
    Rcpt(arg, out);
  } else if (is("DATA")) {
    Data(arg, out);
  } else if (is("BDAT") && esmtp_ && profile_.chunking) {
    Bdat(arg, out);
  } else if (is("EHLO")) {
    Ehlo(arg, /*extended=*/true, out);
  } else if (is("HELO")) {
    Ehlo(arg, /*extended=*/false, out);
  } else if (is("STARTTLS")) {
    StartTls(arg, out);
  } else if (is("RSET") || is("NOOP") || is("QUIT")) {
    const Command c = is("RSET") ? Command::kRset : is("NOOP") ? Command::kNoop : Command::kQuit;
    if (c == Command::kQuit) quit_received_ = true;
    const Decision d = Decide(profile_, c, arg);
    if (d.disconnect) return Close(out);
    if (!Respond(c, c == Command::kQuit ? "221 2.0.0 Bye\r\n" : kOk, d, out)) return;
    if (c == Command::kRset) ResetTransaction();
    if (c == Command::kQuit) Close(out);
  } else {
    Emit(Command::kOther, kNotRecognized, absl::ZeroDuration(), out);
  }
}

void Session::Ehlo(std::string_view arg, bool extended, Output* out) {
  const Command c = extended ? Command::kEhlo : Command::kHelo;
  if (arg.empty()) {
    Emit(c, absl::StrCat("501 5.5.4 Syntax: ", extended ? "EHLO" : "HELO", " hostname\r\n"),
         absl::ZeroDuration(), out);
    return;
  }
  if (extended && !profile_.esmtp) {
    Emit(c, "502 5.5.1 Error: command not implemented\r\n", absl::ZeroDuration(), out);
    return;
  }
  const Decision d = Decide(profile_, c, arg);
  if (d.disconnect) return Close(out);
  std::string reply;
  if (!extended) {
    reply = absl::StrCat("250 ", options_.hostname, "\r\n");
  } else {
    std::vector<std::string> lines;
    lines.push_back(options_.hostname);
    if (profile_.pipelining) lines.emplace_back("PIPELINING");
    if (SizeLimit() > 0) lines.push_back(absl::StrCat("SIZE ", SizeLimit()));
    if (profile_.starttls && !tls_) lines.emplace_back("STARTTLS");
    if (profile_.eight_bit_mime) lines.emplace_back("8BITMIME");
    lines.emplace_back("ENHANCEDSTATUSCODES");
    if (profile_.smtputf8) lines.emplace_back("SMTPUTF8");
    if (profile_.chunking) lines.emplace_back("CHUNKING");
    for (size_t i = 0; i < lines.size(); ++i) {
      absl::StrAppend(&reply, i + 1 < lines.size() ? "250-" : "250 ", lines[i], "\r\n");
    }
  }
  if (!Respond(c, reply, d, out)) return;
  ResetTransaction();
  greeted_ = true;
  esmtp_ = extended;
  helo_.assign(arg);
}

void Session::Mail(std::string_view arg, Output* out) {
  const Command c = Command::kMail;
  const auto fail = [&](std::string_view reply) {
    Emit(c, reply, absl::ZeroDuration(), out);
  };
  if (!greeted_) return fail(kNeedHelo);
  if (in_transaction_) return fail("503 5.5.1 Error: nested MAIL command\r\n");
  if (options_.max_messages > 0 && messages_ >= options_.max_messages) {
    return fail(kTooManyMessages);
  }
  std::string_view path = arg;
  std::string_view address, params;
  if (!StripPrefixIgnoreCase(&path, "FROM:") || !ParsePath(path, &address, &params)) {
    return fail("501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  }
  // Parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), each only
  // when this session's EHLO advertised it.
  while (!params.empty()) {
    const size_t end = params.find(' ');
    std::string_view param = params.substr(0, end);
    params = end == std::string_view::npos ? std::string_view()
                                           : StripLeadingSpace(params.substr(end));
    if (StripPrefixIgnoreCase(&param, "SIZE=")) {
      if (!esmtp_ || SizeLimit() == 0) return fail(kUnsupported);
      uint64_t size = 0;
      if (!ParseDecimal(param, &size)) return fail("501 5.5.4 Bad SIZE parameter\r\n");
      if (size > SizeLimit()) return fail(kTooBig);
    } else if (StripPrefixIgnoreCase(&param, "BODY=")) {
      if (!esmtp_ || !profile_.eight_bit_mime) return fail(kUnsupported);
      if (!base::EqualsIgnoreCase(param, "7BIT") &&
          !base::EqualsIgnoreCase(param, "8BITMIME")) {
        return fail("501 5.5.4 Bad BODY parameter\r\n");
      }
    } else if (!base::EqualsIgnoreCase(param, "SMTPUTF8") || !esmtp_ || !profile_.smtputf8) {
      return fail(kUnsupported);
    }
  }
  const Decision d = Decide(profile_, c, arg);
  if (d.disconnect) return Close(out);
  if (!Respond(c, "250 2.1.0 Ok\r\n", d, out)) return;
  in_transaction_ = true;
  from_.assign(address);
  transaction_profile_ = nullptr;
}

void Session::Rcpt(std::string_view arg, Output* out) {
  const Command c = Command::kRcpt;
  const auto fail = [&](std::string_view reply) {
    Emit(c, reply, absl::ZeroDuration(), out);
  };
  if (!in_transaction_) return fail(kNeedMail);
  if (chunking_) return fail("503 5.5.1 Error: RCPT after BDAT\r\n");
  std::string_view path = arg;
  std::string_view address, params;
  if (!StripPrefixIgnoreCase(&path, "TO:") || !ParsePath(path, &address, &params)) {
    return fail("501 5.5.4 Syntax: RCPT TO:<address>\r\n");
  }
  if (address.empty()) return fail("501 5.1.3 Bad recipient address syntax\r\n");
  if (recipients_ >= options_.max_recipients) {
    return fail("452 4.5.3 Error: too many recipients\r\n");
  }
  if (!options_.accepted_domains.empty()) {
    const size_t at = address.rfind('@');
    const std::string_view domain =
        at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
    const bool ours = std::any_of(
        options_.accepted_domains.begin(), options_.accepted_domains.end(),
        [domain](const std::string& d) { return base::EqualsIgnoreCase(domain, d); });
    if (!ours) return fail(kRelayDenied);
  }
  const Profile* domain_profile = nullptr;
  if (options_.profiles != nullptr && options_.profiles->has_domains()) {
    const size_t at = address.rfind('@');
    if (at != std::string_view::npos) {
      domain_profile = options_.profiles->ForDomain(address.substr(at + 1));
    }
  }
  const Profile& p = domain_profile != nullptr ? *domain_profile : profile_;
  const Decision d = Decide(p, c, arg);
  if (d.disconnect) return Close(out);
  if (d.reply == nullptr && p.greylist > absl::ZeroDuration() && options_.greylist != nullptr &&
      !options_.greylist->Pass(from_, address, p.greylist, now_)) {
    Emit(c, kGreylisted, d.delay, out);
    return;
  }
  if (!Respond(c, "250 2.1.5 Ok\r\n", d, out)) return;
  if (recipients_ == 0) transaction_profile_ = domain_profile;
  ++recipients_;
  if (options_.keep_addresses || options_.handler != nullptr) rcpts_.emplace_back(address);
}

void Session::Data(std::string_view arg, Output* out) {
  const Command c = Command::kData;
  if (!arg.empty()) {
    Emit(c, "501 5.5.4 Syntax: DATA\r\n", absl::ZeroDuration(), out);
  } else if (!in_transaction_) {
    Emit(c, kNeedMail, absl::ZeroDuration(), out);
  } else if (chunking_) {
    Emit(c, "503 5.5.1 Error: DATA after BDAT\r\n", absl::ZeroDuration(), out);
  } else if (recipients_ == 0) {
    Emit(c, kNoRecipients, absl::ZeroDuration(), out);
  } else {
    const Decision d = Decide(TransactionProfile(), c, arg);
    if (d.disconnect) return Close(out);
    if (!Respond(c, "354 End data with <CR><LF>.<CR><LF>\r\n", d, out)) return;
    state_ = State::kData;
    scan_ = DataScan::kLineStart;
    message_bytes_ = 0;
    content_.clear();
    content_over_ = false;
  }
}

// EndData - the end-of-data sequence arrived: answer for the message.
void Session::EndData(Output* out) {
  state_ = State::kCommand;
  const uint64_t limit = SizeLimit();
  if (limit > 0 && message_bytes_ > limit) {
    Emit(Command::kDot, kTooBig, absl::ZeroDuration(), out);
    ResetTransaction();
    return;
  }
  const Decision d = Decide(TransactionProfile(), Command::kDot, {});
  if (d.disconnect) {
    ResetTransaction();
    return Close(out);
  }
  const std::string normal = d.reply != nullptr ? std::string() : Deliver();
  // The handler may refuse the message (451, 452...): then it is not accepted.
  if (Respond(Command::kDot, normal, d, out) && (d.reply != nullptr || normal[0] == '2')) {
    Accept(out);
  } else {
    ResetTransaction();
  }
}

void Session::Bdat(std::string_view arg, Output* out) {
  const size_t space = arg.find(' ');
  const std::string_view size_text = arg.substr(0, space);
  const std::string_view rest =
      space == std::string_view::npos ? std::string_view()
                                      : StripSpace(arg.substr(space));
  uint64_t size = 0;
  if (!ParseDecimal(size_text, &size)) {
    // The chunk's length is unknown, so the octets that follow can be framed
    // neither as a chunk nor as commands: give up on the connection.
    Emit(Command::kBdat, kBdatSyntax, absl::ZeroDuration(), out);
    ResetTransaction();
    return Close(out);
  }
  const bool last = base::EqualsIgnoreCase(rest, "LAST");
  const uint64_t limit = SizeLimit();
  // A refused chunk is still read and dropped (RFC 3030 2): the client sends it
  // without waiting for our reply.
  chunk_error_.clear();
  if (!rest.empty() && !last) {
    chunk_error_ = kBdatSyntax;
  } else if (!in_transaction_) {
    chunk_error_ = kNeedMail;
  } else if (recipients_ == 0) {
    chunk_error_ = kNoRecipients;
  } else if (limit > 0 && size > limit - message_bytes_) {
    chunk_error_ = kTooBig;
  } else {
    chunking_ = true;
    message_bytes_ += size;
  }
  chunk_left_ = size;
  chunk_last_ = last;
  chunk_arg_.assign(arg);
  if (chunk_left_ == 0) {
    EndChunk(out);
  } else {
    state_ = State::kChunk;
  }
}

void Session::EndChunk(Output* out) {
  state_ = State::kCommand;
  if (!chunk_error_.empty()) {
    Emit(Command::kBdat, chunk_error_, absl::ZeroDuration(), out);
    chunk_error_.clear();
    // The transaction failed; the client must not send more chunks of it.
    ResetTransaction();
    return;
  }
  const Decision d = Decide(TransactionProfile(), Command::kBdat, chunk_arg_);
  if (d.disconnect) {
    ResetTransaction();
    return Close(out);
  }
  const std::string normal =
      chunk_last_ ? (d.reply != nullptr ? std::string() : Deliver())
                  : absl::StrCat("250 2.0.0 Ok: ", message_bytes_, " octets received\r\n");
  if (!Respond(Command::kBdat, normal, d, out) ||
      (chunk_last_ && d.reply == nullptr && normal[0] != '2')) {
    ResetTransaction();
    return;
  }
  if (chunk_last_) Accept(out);
}

void Session::StartTls(std::string_view arg, Output* out) {
  const Command c = Command::kStartTls;
  const auto fail = [&](std::string_view reply) {
    Emit(c, reply, absl::ZeroDuration(), out);
  };
  if (!arg.empty()) return fail("501 5.5.4 Syntax: STARTTLS\r\n");
  if (tls_) return fail("503 5.5.1 Error: TLS already active\r\n");
  if (!profile_.starttls) return fail("502 5.5.1 Error: STARTTLS not offered\r\n");
  if (!esmtp_) return fail("503 5.5.1 Error: send EHLO first\r\n");
  if (in_transaction_) return fail("503 5.5.1 Error: MAIL transaction in progress\r\n");
  const Decision d = Decide(profile_, c, arg);
  if (d.disconnect) return Close(out);
  const bool go = d.reply == nullptr || (d.reply->code >= 200 && d.reply->code < 400);
  std::string reply(d.reply != nullptr ? d.reply->bytes : std::string(kReadyTls));
  // The injection test: bytes right behind the 220, in the same write.
  if (go) reply.append(profile_.inject_after_starttls);
  Emit(c, reply, d.delay, out);
  if (!go || closed()) return;
  // RFC 3207 4.2: forget everything learned before TLS, and read nothing more
  // of this input: it was sent in plaintext after STARTTLS.
  tls_ = true;
  greeted_ = false;
  esmtp_ = false;
  ResetTransaction();
  lines_.Reset();
  stop_feed_ = true;
  out->start_tls = true;
}

// Content - DATA content octets: counted, and kept with a handler until they pass
// the size limit (then the message gets 552 at its end and nothing is kept).
void Session::Content(const char* p, size_t n) {
  message_bytes_ += n;
  if (options_.handler == nullptr || content_over_) return;
  const uint64_t limit = SizeLimit();
  if (limit > 0 && message_bytes_ > limit) {
    content_over_ = true;
    std::string().swap(content_);
    return;
  }
  content_.append(p, n);
}

// Deliver - the reply to a complete message: the handler's (it stores the
// message, or says why not), or volley-sink's "discarded".
std::string Session::Deliver() {
  if (options_.handler == nullptr) {
    return absl::StrCat("250 2.0.0 Ok: ", message_bytes_, " octets, discarded\r\n");
  }
  Envelope envelope;
  envelope.helo = helo_;
  envelope.mail_from = from_;
  envelope.rcpt_to = rcpts_;
  envelope.peer = options_.peer;
  envelope.tls = tls_;
  std::string reply = (*options_.handler)(envelope, content_);
  if (reply.size() < 2 || reply.compare(reply.size() - 2, 2, "\r\n") != 0) reply.append("\r\n");
  return reply;
}

// Accept - count the transaction's message and reset the transaction.
void Session::Accept(Output* out) {
  ++messages_;
  AcceptedMessage& m = out->accepted.emplace_back();
  if (options_.keep_addresses) m.from = std::move(from_);
  m.rcpts = std::move(rcpts_);
  m.recipients = recipients_;
  m.bytes = message_bytes_;
  ResetTransaction();
}

void Session::ResetTransaction() {
  in_transaction_ = false;
  chunking_ = false;
  from_.clear();
  rcpts_.clear();
  recipients_ = 0;
  message_bytes_ = 0;
  transaction_profile_ = nullptr;
  // A message's content may be megabytes: do not keep the capacity idle.
  if (content_.capacity() > kKeepContentCapacity) {
    std::string().swap(content_);
  } else {
    content_.clear();
  }
  content_over_ = false;
}

Session::Decision Session::Decide(const Profile& p, Command c, std::string_view arg) {
  Decision d;
  if (p.replies.empty() && p.disconnects.empty()) return d;
  std::string lower;
  bool lowered = false;
  const auto matches = [&](const std::string& m) {
    if (m.empty()) return true;
    if (!lowered) {
      lower = absl::AsciiStrToLower(base::Sv(arg));
      lowered = true;
    }
    return lower.find(m) != std::string::npos;
  };
  // Every rule keyed on this command counts it, even when an earlier rule
  // fired, so that nth always means the nth such command of the session.
  const auto fires = [&](const auto& rule, bool already) {
    if (rule.id >= seen_.size()) seen_.resize(rule.id + 1, 0);
    const uint32_t n = ++seen_[rule.id];
    if (already) return false;
    if (rule.nth != 0 && n != rule.nth) return false;
    return rule.rate >= 1.0 || NextRandom() < rule.rate;
  };
  for (const DisconnectRule& r : p.disconnects) {
    if (r.after != c || !matches(r.match)) continue;
    if (fires(r, d.disconnect)) d.disconnect = true;
  }
  bool fired = false;
  for (const ReplyRule& r : p.replies) {
    if (r.command != c || !matches(r.match)) continue;
    if (fires(r, fired || d.disconnect)) {
      fired = true;
      if (!r.reply.bytes.empty()) d.reply = &r.reply;
      d.delay = r.delay;
    }
  }
  return d;
}

bool Session::Respond(Command c, std::string_view normal, const Decision& d, Output* out) {
  if (d.reply == nullptr) {
    Emit(c, normal, d.delay, out);
    return !closed();
  }
  Emit(c, d.reply->bytes, d.delay, out);
  return !closed() && d.reply->code >= 200 && d.reply->code < 400;
}

void Session::Emit(Command c, std::string_view reply, absl::Duration delay, Output* out) {
  AddStep(profile_.tarpit + delay, reply, out);
  if (CountsRejects(c) && !reply.empty() && (reply[0] == '4' || reply[0] == '5')) {
    ++out->rejects;
  }
  // A 421 reply means the server is closing the channel (RFC 5321 3.8).
  if (reply.substr(0, 3) == "421") Close(out);
}

void Session::Close(Output* out) {
  state_ = State::kClosed;
  out->close = true;
  // The reader keeps its buffer: the line being handled may still be in use, and a
  // closed session reads nothing more.
  stop_feed_ = true;
}

const Profile& Session::TransactionProfile() const {
  return transaction_profile_ != nullptr ? *transaction_profile_ : profile_;
}

uint64_t Session::SizeLimit() const {
  return profile_.size_limit.has_value() ? *profile_.size_limit : options_.max_message_size;
}

double Session::NextRandom() {
  // SplitMix64: tiny, seedable with any value, and good enough for fault rates.
  uint64_t z = (rng_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

}  // namespace volley::smtpd
