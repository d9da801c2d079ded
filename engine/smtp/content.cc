// content.cc - see content.h.
#include "engine/smtp/content.h"

#include "absl/strings/str_cat.h"

namespace volley::smtp {

std::string PrepareData(std::string_view message) {
  uint64_t unused = 0;
  return PrepareData(message, &unused);
}

std::string PrepareData(std::string_view message, uint64_t* message_size) {
  std::string out;
  // Room for the usual case (LF-only input grows by one octet a line) without resizing.
  out.reserve(message.size() + message.size() / 16 + 8);
  uint64_t stuffed = 0;
  bool line_start = true;
  for (size_t i = 0; i < message.size(); ++i) {
    char c = message[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
      out += "\r\n";
      line_start = true;
      continue;
    }
    if (line_start && c == '.') {
      out += '.';
      ++stuffed;
    }
    out += c;
    line_start = false;
  }
  if (!line_start) out += "\r\n";
  *message_size = out.size() - stuffed;
  out += ".\r\n";
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
