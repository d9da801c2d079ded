#include "base/strings.h"

#include <cstdint>
#include <cstring>

namespace volley::base {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  uint32_t min = 0;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2; min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3; min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4; min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  uint32_t cp = b0 & (0x7f >> len);
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

bool HasEightBit(std::string_view s) {
  constexpr uint64_t kHighBits = 0x8080808080808080ULL;
  const char* p = s.data();
  size_t n = s.size();
  uint64_t any = 0;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof word);  // unaligned: memcpy, which compiles to one load
    any |= word;
  }
  for (; n > 0; ++p, --n) any |= static_cast<unsigned char>(*p);
  return (any & kHighBits) != 0;
}

size_t FindCrLfNul(std::string_view s) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHighBits = 0x8080808080808080ULL;
  // A word has a zero octet exactly when (w - ones) & ~w & high is not zero;
  // XOR with CR or LF in every octet makes those octets the zeros to look for.
  auto has_zero = [](uint64_t w) { return ((w - kOnes) & ~w & kHighBits) != 0; };
  const char* const begin = s.data();
  const char* p = begin;
  size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof word);
    if (has_zero(word) || has_zero(word ^ (kOnes * '\r')) || has_zero(word ^ (kOnes * '\n'))) {
      break;  // in these eight octets: the loop below finds which
    }
  }
  for (const char* end = begin + s.size(); p < end; ++p) {
    if (*p == '\r' || *p == '\n' || *p == '\0') return static_cast<size_t>(p - begin);
  }
  return std::string_view::npos;
}

}  // namespace volley::base
