#include "base/status.h"

#include <cstdio>
#include <cstdlib>

namespace volley::base {

void CheckFailed(const char* file, int line, const char* condition, std::string_view why) {
  std::fprintf(stderr, "volley: panic: %s:%d: check failed: %s: %.*s\n", file, line,
               condition, static_cast<int>(why.size()), why.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace volley::base
