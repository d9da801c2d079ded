// session.cc - the server side of one SMTP session; see session.h.
#include "tools/sink/session.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::sink {
namespace {

constexpr std::string_view kNotRecognized = "500 5.5.2 Error: command not recognized\r\n";
constexpr std::string_view kLineTooLong = "500 5.5.6 Error: command line too long\r\n";
constexpr std::string_view kOk = "250 2.0.0 Ok\r\n";
constexpr std::string_view kNeedHelo = "503 5.5.1 Error: send HELO/EHLO first\r\n";
constexpr std::string_view kNeedMail = "503 5.5.1 Error: need MAIL command\r\n";
constexpr std::string_view kNoRecipients = "554 5.5.1 Error: no valid recipients\r\n";
constexpr std::string_view kTooBig =
    "552 5.3.4 Error: message size exceeds fixed limit\r\n";

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

}  // namespace

Session::Session(SessionOptions options) : options_(std::move(options)) {}

void Session::Start(std::string* out) const {
  absl::StrAppend(out, "220 ", options_.hostname, " ESMTP volley-sink\r\n");
}

void Session::Feed(std::string_view input, std::string* out,
                   std::vector<AcceptedMessage>* accepted) {
  // Each step consumes at least one octet, so this loop ends.
  while (!input.empty()) {
    size_t used = 0;
    switch (state_) {
      case State::kCommand:
        used = FeedCommand(input, out, accepted);
        break;
      case State::kData:
        used = FeedData(input, out, accepted);
        break;
      case State::kChunk:
        used = FeedChunk(input, out, accepted);
        break;
      case State::kClosed:
        return;  // input after QUIT is ignored
    }
    input.remove_prefix(used);
  }
}

// FeedCommand - take at most one command line from input; return octets used.
size_t Session::FeedCommand(std::string_view input, std::string* out,
                            std::vector<AcceptedMessage>* accepted) {
  const size_t lf = input.find('\n');
  if (lf == std::string_view::npos) {
    // No line end yet. Keep the partial line only while it can still fit: a line
    // of max_line_length octets needs room for its LF too.
    if (!discarding_ && line_.size() + input.size() + 1 > options_.max_line_length) {
      line_.clear();
      line_.shrink_to_fit();
      discarding_ = true;
    }
    if (!discarding_) line_.append(input);
    return input.size();
  }
  const std::string_view part = input.substr(0, lf);
  if (discarding_ || line_.size() + part.size() + 1 > options_.max_line_length) {
    discarding_ = false;
    line_.clear();
    out->append(kLineTooLong);
    return lf + 1;
  }
  if (line_.empty()) {
    // The common case: the whole line is in this input; no copy.
    std::string_view line = part;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    HandleLine(line, out, accepted);
  } else {
    line_.append(part);
    std::string line = std::move(line_);
    line_.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    HandleLine(line, out, accepted);
  }
  return lf + 1;
}

// FeedData - count DATA content up to CRLF "." CRLF; return octets used.
//
// The scanner state survives between calls, so the terminator (and a stuffed dot)
// may be split across inputs at any byte. A "." at a line start is dropped
// (RFC 5321 4.5.2) and not counted.
size_t Session::FeedData(std::string_view input, std::string* out,
                         std::vector<AcceptedMessage>* accepted) {
  const char* const p = input.data();
  const size_t n = input.size();
  size_t i = 0;
  while (i < n) {
    switch (scan_) {
      case DataScan::kMid: {
        // Skip to the next CR in one step: this is where bulk content goes.
        const void* cr = std::memchr(p + i, '\r', n - i);
        if (cr == nullptr) {
          message_bytes_ += n - i;
          return n;
        }
        const size_t at = static_cast<const char*>(cr) - p;
        message_bytes_ += at - i + 1;
        i = at + 1;
        scan_ = DataScan::kCr;
        break;
      }
      case DataScan::kLineStart: {
        const char c = p[i++];
        if (c == '.') {
          scan_ = DataScan::kDot;
        } else {
          ++message_bytes_;
          scan_ = c == '\r' ? DataScan::kCr : DataScan::kMid;
        }
        break;
      }
      case DataScan::kCr: {
        const char c = p[i++];
        ++message_bytes_;
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
          state_ = State::kCommand;
          if (message_bytes_ > options_.max_message_size) {
            out->append(kTooBig);
            ResetTransaction();
          } else {
            Accept(out, accepted);
          }
          return i;
        }
        ++message_bytes_;  // ".\r" then something else: the CR is content
        scan_ = DataScan::kCr;  // rescan this octet after that CR
        break;
    }
  }
  return n;
}

// FeedChunk - skip BDAT chunk octets; answer when the chunk is complete.
size_t Session::FeedChunk(std::string_view input, std::string* out,
                          std::vector<AcceptedMessage>* accepted) {
  const size_t used =
      input.size() < chunk_left_ ? input.size() : static_cast<size_t>(chunk_left_);
  chunk_left_ -= used;
  if (chunk_left_ == 0) EndChunk(out, accepted);
  return used;
}

void Session::HandleLine(std::string_view line, std::string* out,
                         std::vector<AcceptedMessage>* accepted) {
  const size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view arg =
      space == std::string_view::npos
          ? std::string_view()
          : StripSpace(line.substr(space + 1));
  auto is = [verb](std::string_view name) {
    return base::EqualsIgnoreCase(verb, name);
  };
  if (is("MAIL")) {
    Mail(arg, out);
  } else if (is("RCPT")) {
    Rcpt(arg, out);
  } else if (is("DATA")) {
    Data(arg, out);
  } else if (is("BDAT")) {
    Bdat(arg, out, accepted);
  } else if (is("EHLO")) {
    Ehlo(arg, /*extended=*/true, out);
  } else if (is("HELO")) {
    Ehlo(arg, /*extended=*/false, out);
  } else if (is("RSET")) {
    ResetTransaction();
    out->append(kOk);
  } else if (is("NOOP")) {
    out->append(kOk);
  } else if (is("QUIT")) {
    out->append("221 2.0.0 Bye\r\n");
    state_ = State::kClosed;
  } else {
    out->append(kNotRecognized);
  }
}

void Session::Ehlo(std::string_view arg, bool extended, std::string* out) {
  if (arg.empty()) {
    absl::StrAppend(out, "501 5.5.4 Syntax: ", extended ? "EHLO" : "HELO",
                    " hostname\r\n");
    return;
  }
  ResetTransaction();
  greeted_ = true;
  if (!extended) {
    absl::StrAppend(out, "250 ", options_.hostname, "\r\n");
    return;
  }
  absl::StrAppend(out, "250-", options_.hostname,
                  "\r\n"
                  "250-PIPELINING\r\n"
                  "250-SIZE ",
                  options_.max_message_size,
                  "\r\n"
                  "250-8BITMIME\r\n"
                  "250-ENHANCEDSTATUSCODES\r\n"
                  "250-SMTPUTF8\r\n"
                  "250 CHUNKING\r\n");
}

void Session::Mail(std::string_view arg, std::string* out) {
  if (!greeted_) {
    out->append(kNeedHelo);
    return;
  }
  if (in_transaction_) {
    out->append("503 5.5.1 Error: nested MAIL command\r\n");
    return;
  }
  std::string_view address, params;
  if (!StripPrefixIgnoreCase(&arg, "FROM:") || !ParsePath(arg, &address, &params)) {
    out->append("501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    return;
  }
  // Parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531).
  while (!params.empty()) {
    const size_t end = params.find(' ');
    std::string_view param = params.substr(0, end);
    params = end == std::string_view::npos ? std::string_view()
                                           : StripLeadingSpace(params.substr(end));
    if (StripPrefixIgnoreCase(&param, "SIZE=")) {
      uint64_t size = 0;
      if (!ParseDecimal(param, &size)) {
        out->append("501 5.5.4 Bad SIZE parameter\r\n");
        return;
      }
      if (size > options_.max_message_size) {
        out->append(kTooBig);
        return;
      }
    } else if (StripPrefixIgnoreCase(&param, "BODY=")) {
      if (!base::EqualsIgnoreCase(param, "7BIT") &&
          !base::EqualsIgnoreCase(param, "8BITMIME")) {
        out->append("501 5.5.4 Bad BODY parameter\r\n");
        return;
      }
    } else if (!base::EqualsIgnoreCase(param, "SMTPUTF8")) {
      out->append("555 5.5.4 Unsupported option\r\n");
      return;
    }
  }
  in_transaction_ = true;
  if (options_.keep_addresses) from_.assign(address);
  out->append("250 2.1.0 Ok\r\n");
}

void Session::Rcpt(std::string_view arg, std::string* out) {
  if (!in_transaction_) {
    out->append(kNeedMail);
    return;
  }
  if (chunking_) {
    out->append("503 5.5.1 Error: RCPT after BDAT\r\n");
    return;
  }
  std::string_view address, params;
  if (!StripPrefixIgnoreCase(&arg, "TO:") || !ParsePath(arg, &address, &params)) {
    out->append("501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    return;
  }
  if (address.empty()) {
    out->append("501 5.1.3 Bad recipient address syntax\r\n");
    return;
  }
  if (recipients_ >= options_.max_recipients) {
    out->append("452 4.5.3 Error: too many recipients\r\n");
    return;
  }
  ++recipients_;
  if (options_.keep_addresses) rcpts_.emplace_back(address);
  out->append("250 2.1.5 Ok\r\n");
}

void Session::Data(std::string_view arg, std::string* out) {
  if (!arg.empty()) {
    out->append("501 5.5.4 Syntax: DATA\r\n");
  } else if (!in_transaction_) {
    out->append(kNeedMail);
  } else if (chunking_) {
    out->append("503 5.5.1 Error: DATA after BDAT\r\n");
  } else if (recipients_ == 0) {
    out->append(kNoRecipients);
  } else {
    out->append("354 End data with <CR><LF>.<CR><LF>\r\n");
    state_ = State::kData;
    scan_ = DataScan::kLineStart;
    message_bytes_ = 0;
  }
}

void Session::Bdat(std::string_view arg, std::string* out,
                   std::vector<AcceptedMessage>* accepted) {
  const size_t space = arg.find(' ');
  const std::string_view size_text = arg.substr(0, space);
  const std::string_view rest =
      space == std::string_view::npos ? std::string_view()
                                      : StripSpace(arg.substr(space));
  uint64_t size = 0;
  if (!ParseDecimal(size_text, &size) ||
      (!rest.empty() && !base::EqualsIgnoreCase(rest, "LAST"))) {
    // XXX(no size, no framing): the chunk's length is unknown, so its octets will be
    // read as commands; each line of it gets an error reply.
    out->append("501 5.5.4 Syntax: BDAT size [LAST]\r\n");
    return;
  }
  // A refused chunk is still read and dropped (RFC 3030 2): the client sends it
  // without waiting for our reply.
  chunk_error_.clear();
  if (!in_transaction_) {
    chunk_error_ = kNeedMail;
  } else if (recipients_ == 0) {
    chunk_error_ = kNoRecipients;
  } else if (size > options_.max_message_size - message_bytes_) {
    chunk_error_ = kTooBig;
  } else {
    chunking_ = true;
    message_bytes_ += size;
  }
  chunk_left_ = size;
  chunk_last_ = !rest.empty();
  if (chunk_left_ == 0) {
    EndChunk(out, accepted);
  } else {
    state_ = State::kChunk;
  }
}

void Session::EndChunk(std::string* out, std::vector<AcceptedMessage>* accepted) {
  state_ = State::kCommand;
  if (!chunk_error_.empty()) {
    out->append(chunk_error_);
    chunk_error_.clear();
    // The transaction failed; the client must not send more chunks of it.
    ResetTransaction();
  } else if (chunk_last_) {
    Accept(out, accepted);
  } else {
    absl::StrAppend(out, "250 2.0.0 Ok: ", message_bytes_, " octets received\r\n");
  }
}

// Accept - count the transaction's message, answer 250, reset the transaction.
void Session::Accept(std::string* out, std::vector<AcceptedMessage>* accepted) {
  absl::StrAppend(out, "250 2.0.0 Ok: ", message_bytes_, " octets, discarded\r\n");
  AcceptedMessage& m = accepted->emplace_back();
  m.from = std::move(from_);
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
}

}  // namespace volley::sink
