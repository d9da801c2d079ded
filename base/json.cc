#include "base/json.h"

#include <array>

#include "base/strings.h"

namespace volley::base {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// kPassesAsIs[c]: byte c goes into a JSON string unchanged without a look at
// its neighbours: printable ASCII but the quote and the backslash. Everything
// else (controls, DEL, and bytes of 0x80 and up, which must be checked as
// UTF-8) takes the slow path. Most strings (addresses, replies, host names)
// are all such bytes, and are appended in one piece.
constexpr std::array<bool, 256> kPassesAsIs = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x7f; ++c) t[c] = c != '"' && c != '\\';
  return t;
}();

void AppendUnicodeEscape(std::string* out, unsigned char byte) {
  const char escape[] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xf]};
  out->append(escape, sizeof escape);
}

}  // namespace

void AppendJsonString(std::string* out, std::string_view value) {
  out->push_back('"');
  size_t i = 0;
  while (i < value.size()) {
    size_t plain_end = i;
    while (plain_end < value.size() &&
           kPassesAsIs[static_cast<unsigned char>(value[plain_end])]) {
      ++plain_end;
    }
    out->append(value.data() + i, plain_end - i);
    i = plain_end;
    if (i == value.size()) break;
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x80) {
      const size_t len = base::Utf8SequenceLength(value, i);
      if (len == 0) {
        AppendUnicodeEscape(out, c);
        ++i;
      } else {
        out->append(value.data() + i, len);
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"': out->append("\\\"", 2); break;
      case '\\': out->append("\\\\", 2); break;
      case '\n': out->append("\\n", 2); break;
      case '\r': out->append("\\r", 2); break;
      case '\t': out->append("\\t", 2); break;
      default: AppendUnicodeEscape(out, c);  // the other controls and DEL
    }
    ++i;
  }
  out->push_back('"');
}

}  // namespace volley::base
