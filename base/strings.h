// strings.h - bridge std::string_view and absl::string_view
//
// Debian 12's abseil is built with its own absl::string_view (not an alias of
// std::string_view), so absl::StrCat and friends do not take std::string_view,
// and absl::Status::message() is not a std::string_view. These two calls
// convert without copying.
#ifndef VOLLEY_BASE_STRINGS_H_
#define VOLLEY_BASE_STRINGS_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace volley::base {

inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view StdSv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace volley::base

#endif  // VOLLEY_BASE_STRINGS_H_
