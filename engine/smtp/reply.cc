// reply.cc - see reply.h.
#include "engine/smtp/reply.h"

#include <cstddef>
#include <utility>

#include "absl/strings/str_cat.h"

namespace volley::smtp {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Printable - a short, loggable rendering of a line the server got wrong.
std::string Printable(std::string_view line) {
  constexpr size_t kMax = 64;
  std::string out;
  for (char c : line.substr(0, kMax)) {
    unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (line.size() > kMax) out += "...";
  return out;
}

// DigitRun - length of the run of 1 to 3 digits at s[pos], or 0 when there is none or
// it is longer (RFC 3463: subject and detail have 1 to 3 digits).
size_t DigitRun(std::string_view s, size_t pos) {
  size_t n = 0;
  while (pos + n < s.size() && IsDigit(s[pos + n])) ++n;
  return n <= 3 ? n : 0;
}

// SplitEnhanced - if text opens with "c.s.d" followed by a space or its end, set
// *enhanced to that code and return the rest; otherwise return text unchanged.
std::string_view SplitEnhanced(std::string_view text, std::string_view* enhanced) {
  if (text.size() < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') ||
      text[1] != '.') {
    return text;
  }
  size_t subject = DigitRun(text, 2);
  if (subject == 0 || 2 + subject >= text.size() || text[2 + subject] != '.') return text;
  size_t detail_at = 3 + subject;
  size_t detail = DigitRun(text, detail_at);
  if (detail == 0) return text;
  size_t end = detail_at + detail;
  if (end < text.size() && text[end] != ' ') return text;
  *enhanced = text.substr(0, end);
  return text.substr(end < text.size() ? end + 1 : end);
}

// AppendSanitised - text with each control octet as '?'. Appended whole and
// then mended: replies are almost always clean, and push_back octet by octet
// was an eighth of the parser's instructions (callgrind, bench/RESULTS.md).
void AppendSanitised(std::string* out, std::string_view text) {
  const size_t start = out->size();
  out->append(text);
  for (auto it = out->begin() + static_cast<std::ptrdiff_t>(start); it != out->end(); ++it) {
    const auto u = static_cast<unsigned char>(*it);
    if (u < 0x20 || u == 0x7f) *it = '?';
  }
}

}  // namespace

void AssignSanitisedEnhancedCode(int code, std::string_view enhanced, std::string* out) {
  out->clear();
  if (enhanced.empty()) return;
  const char cls = static_cast<char>('0' + code / 100);
  if (enhanced[0] == cls) {
    out->assign(enhanced);
  } else {
    out->push_back(cls);
    out->append(".0.0");
  }
}

std::string SanitiseEnhancedCode(int code, std::string_view enhanced) {
  std::string out;
  AssignSanitisedEnhancedCode(code, enhanced, &out);
  return out;
}

ReplyParser::ReplyParser(ReplyParserOptions opts) : opts_(opts), lines_(opts.max_line) {}

void ReplyParser::Feed(std::string_view bytes) {
  if (status_.ok()) lines_.Feed(bytes);
}

bool ReplyParser::Fail(absl::Status status) {
  status_ = std::move(status);
  partial_ = Reply();
  in_reply_ = false;
  return false;
}

absl::StatusOr<std::optional<Reply>> ReplyParser::Next() {
  Reply reply;
  if (NextReply(&reply)) return reply;
  if (!status_.ok()) return status_;
  return std::nullopt;
}

bool ReplyParser::NextReply(Reply* reply) {
  if (!status_.ok()) return false;
  for (;;) {
    absl::StatusOr<std::optional<std::string_view>> got = lines_.Next();
    if (!got.ok()) {
      return Fail(
          absl::InvalidArgumentError(absl::StrCat("malformed reply: ", got.status().message())));
    }
    if (!got->has_value()) return false;
    std::string_view line = **got;

    // Exactly three digits, first 2-5, then '-', ' ' or the end of the line: anything
    // looser lets "2500 ok" or "250ok" through, which another reader might split
    // differently.
    if (line.size() < 3 || !IsDigit(line[0]) || !IsDigit(line[1]) || !IsDigit(line[2]) ||
        line[0] < '2' || line[0] > '5' ||
        (line.size() > 3 && line[3] != '-' && line[3] != ' ')) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("malformed reply line \"", Printable(line), "\"")));
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (in_reply_ && code != partial_.code) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("reply code changed from ",
                                                          partial_.code, " to ", code,
                                                          " within a multi-line reply")));
    }
    if (++line_count_ > opts_.max_lines) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("reply has more than ", opts_.max_lines, " lines")));
    }
    bool last = line.size() == 3 || line[3] == ' ';
    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();

    std::string_view enhanced;
    text = SplitEnhanced(text, &enhanced);
    if (!in_reply_) {
      in_reply_ = true;
      partial_.code = code;
      AssignSanitisedEnhancedCode(code, enhanced, &partial_.enhanced);
    } else {
      partial_.text += '\n';
    }
    AppendSanitised(&partial_.text, text);

    if (last) {
      // Swapped, not moved: the strings the caller's Reply held are reused for
      // the next one (the client parses thousands of replies per connection).
      std::swap(*reply, partial_);
      partial_.code = 0;
      partial_.enhanced.clear();
      partial_.text.clear();
      in_reply_ = false;
      line_count_ = 0;
      return true;
    }
  }
}

}  // namespace volley::smtp
