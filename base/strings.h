// strings.h - bridge std::string_view and absl::string_view; small text checks
//
// Debian 12's abseil is built with its own absl::string_view (not an alias of
// std::string_view), so absl::StrCat and friends do not take std::string_view,
// and absl::Status::message() is not a std::string_view. These two calls
// convert without copying.
#ifndef VOLLEY_BASE_STRINGS_H_
#define VOLLEY_BASE_STRINGS_H_

#include <cstddef>
#include <string_view>

#include "absl/strings/string_view.h"

namespace volley::base {

inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view StdSv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// EqualsIgnoreCase - ASCII case-insensitive equality (SMTP keywords, header names).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// Utf8SequenceLength - length (2..4) of the well-formed UTF-8 sequence at s[i],
// or 0 when there is none: overlong forms, surrogates and code points past
// U+10FFFF are refused. Only meaningful when s[i] is not ASCII.
size_t Utf8SequenceLength(std::string_view s, size_t i);

// HasEightBit - true when some octet of `s` is 0x80 or above (not 7-bit ASCII).
// Eight octets a step: it runs once per message on the send path (engine/smtp,
// queue/template), where a loop over single octets was 5 instructions an octet.
bool HasEightBit(std::string_view s);

// FindCrLfNul - the position of the first CR, LF or NUL in `s`, or npos: the
// octets that would end a header line or an SMTP command early (and let the rest
// of a value inject new ones), or cut a C string short. Eight octets a step, as
// HasEightBit: it runs on every recipient at intake and at every queue read,
// where std::string_view::find_first_of calls memchr once per octet.
size_t FindCrLfNul(std::string_view s);

}  // namespace volley::base

#endif  // VOLLEY_BASE_STRINGS_H_
