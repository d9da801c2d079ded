// content.cc - see content.h.
#include "engine/smtp/content.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::smtp {
namespace {

std::string Prepare(std::string_view message, bool dot_stuff, uint64_t* message_size) {
  std::string out;
  // Room for the usual case (LF-only input grows by one octet a line) without resizing.
  out.reserve(message.size() + message.size() / 16 + 8);
  uint64_t stuffed = 0;
  const char* const data = message.data();
  const size_t n = message.size();
  // Where the next CR and the next LF are (n: none left). Each is looked for again
  // only once passed, so the two memchr scans cover the message once each, and a
  // line is copied whole: byte by byte this was most of the cost of a message
  // (bench/RESULTS.md, the callgrind profile).
  const auto find = [&](size_t from, char c) -> size_t {
    const void* hit = from < n ? std::memchr(data + from, c, n - from) : nullptr;
    return hit == nullptr ? n : static_cast<size_t>(static_cast<const char*>(hit) - data);
  };
  size_t next_cr = find(0, '\r');
  size_t next_lf = find(0, '\n');
  size_t pos = 0;
  while (pos < n) {
    if (next_cr < pos) next_cr = find(pos, '\r');
    if (next_lf < pos) next_lf = find(pos, '\n');
    const size_t end = std::min(next_cr, next_lf);  // the line's ending, or n
    if (dot_stuff && end > pos && data[pos] == '.') {
      out += '.';
      ++stuffed;
    }
    out.append(data + pos, end - pos);
    // CRLF, a bare CR or a bare LF all end a line as CRLF; so does the end of
    // a message whose last line has no ending.
    out += "\r\n";
    pos = end + 1;
    if (end < n && data[end] == '\r' && pos < n && data[pos] == '\n') ++pos;
  }
  *message_size = out.size() - stuffed;
  if (dot_stuff) out += ".\r\n";
  return out;
}

// SplitLines - the lines of `text` without their endings (CRLF, bare CR or bare LF,
// as PrepareData reads them); a final line ending does not start an empty line.
std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\r' && text[i] != '\n') continue;
    lines.push_back(text.substr(start, i - start));
    if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

// A header field with its continuation lines (RFC 5322 section 2.2.3).
struct Field {
  std::string_view name;  // as written
  std::string value;      // unfolded, trimmed, lower case: for comparisons only
  std::vector<std::string_view> lines;
};

// AppendQuotedPrintable - one body line, encoded per RFC 2045 section 6.7: octets
// outside printable ASCII and '=' as =XX; a space or tab at the end of the line too
// (rule 3, transports strip trailing white space); soft line breaks keep every
// encoded line within 76 octets (rule 5).
void AppendQuotedPrintable(std::string_view line, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  size_t width = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(line[i]);
    const bool last = i + 1 == line.size();
    char token[3];
    size_t token_len = 1;
    if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
      token[0] = static_cast<char>(c);
    } else {
      token[0] = '=';
      token[1] = kHex[c >> 4];
      token[2] = kHex[c & 0xf];
      token_len = 3;
    }
    // 75 leaves room for the '=' of a soft break, unless this is the line's end.
    const size_t limit = last ? 76 : 75;
    if (width + token_len > limit) {
      *out += "=\r\n";
      width = 0;
    }
    out->append(token, token_len);
    width += token_len;
  }
  *out += "\r\n";
}

}  // namespace

std::string PrepareData(std::string_view message) {
  uint64_t unused = 0;
  return PrepareData(message, &unused);
}

std::string PrepareData(std::string_view message, uint64_t* message_size) {
  return Prepare(message, /*dot_stuff=*/true, message_size);
}

std::string PrepareBdat(std::string_view message, uint64_t* message_size) {
  return Prepare(message, /*dot_stuff=*/false, message_size);
}

std::string MessageFromData(std::string_view data) {
  if (data.size() >= 3 && data.substr(data.size() - 3) == ".\r\n" &&
      (data.size() == 3 || data[data.size() - 4] == '\n')) {
    data.remove_suffix(3);
  }
  std::string out;
  out.reserve(data.size());
  bool line_start = true;
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    // PrepareData doubled every '.' that starts a line: keep one of the two.
    if (line_start && c == '.' && i + 1 < data.size() && data[i + 1] == '.') ++i;
    out.push_back(data[i]);
    line_start = c == '\n';
  }
  return out;
}

bool HasEightBit(std::string_view message) { return base::HasEightBit(message); }

absl::StatusOr<std::string> DowngradeTo7Bit(std::string_view message) {
  std::vector<std::string_view> lines = SplitLines(message);
  size_t body_start = lines.size();
  std::vector<Field> fields;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (line.empty()) {
      body_start = i + 1;
      break;
    }
    if (HasEightBit(line)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "8-bit octets in header line ", i + 1,
          "; the server offers neither 8BITMIME nor SMTPUTF8"));
    }
    if ((line[0] == ' ' || line[0] == '\t') && !fields.empty()) {
      fields.back().lines.push_back(line);
      absl::StrAppend(&fields.back().value, base::Sv(line));
      continue;
    }
    Field f;
    size_t colon = line.find(':');
    f.name = line.substr(0, colon);
    if (colon != std::string_view::npos) f.value = std::string(line.substr(colon + 1));
    f.lines.push_back(line);
    fields.push_back(std::move(f));
  }
  for (Field& f : fields) {
    f.value = absl::AsciiStrToLower(absl::StripAsciiWhitespace(f.value));
  }

  std::string out;
  out.reserve(message.size() + message.size() / 4 + 64);
  bool has_mime_version = false;
  for (const Field& f : fields) {
    if (base::EqualsIgnoreCase(f.name, "Content-Type") &&
        (absl::StartsWith(f.value, "multipart/") || absl::StartsWith(f.value, "message/"))) {
      return absl::InvalidArgumentError(
          "8-bit octets in a multipart message, which Volley does not convert, and the "
          "server does not offer 8BITMIME");
    }
    if (base::EqualsIgnoreCase(f.name, "Content-Transfer-Encoding")) {
      // 7bit, 8bit and binary describe the octets as they are: replaced below. An
      // encoded body cannot hold 8-bit octets, so the message is malformed.
      if (f.value != "7bit" && f.value != "8bit" && f.value != "binary") {
        return absl::InvalidArgumentError(absl::StrCat(
            "8-bit octets in a body declared Content-Transfer-Encoding: ", f.value));
      }
      continue;
    }
    has_mime_version = has_mime_version || base::EqualsIgnoreCase(f.name, "MIME-Version");
    for (std::string_view l : f.lines) absl::StrAppend(&out, base::Sv(l), "\r\n");
  }
  if (!has_mime_version) out += "MIME-Version: 1.0\r\n";
  out += "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
  for (size_t i = body_start; i < lines.size(); ++i) AppendQuotedPrintable(lines[i], &out);
  return out;
}

absl::Status CheckLineLengths(std::string_view message, size_t max) {
  size_t line = 1;
  size_t len = 0;
  for (size_t i = 0; i < message.size(); ++i) {
    char c = message[i];
    if (c == '\r' || c == '\n') {
      if (len > max) break;
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
      ++line;
      len = 0;
      continue;
    }
    ++len;
  }
  if (len > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line, " is ", len, " octets, over ", max));
  }
  return absl::OkStatus();
}

}  // namespace volley::smtp
