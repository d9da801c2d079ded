#include "base/memory.h"

#include <malloc.h>

#include <algorithm>
#include <climits>

namespace volley::base {

bool KeepFreedMemory(uint64_t bytes) {
  // mallopt takes an int; a keep of 0 would trim at every free.
  const int keep = static_cast<int>(std::clamp<uint64_t>(bytes, 128 << 10, INT_MAX));
  // Setting either turns off glibc's sliding thresholds, which would move
  // them by the size of whatever large block was freed last.
  const bool trim = mallopt(M_TRIM_THRESHOLD, keep) == 1;
  const bool mmap = mallopt(M_MMAP_THRESHOLD, static_cast<int>(kLargestHeapBlock)) == 1;
  return trim && mmap;
}

}  // namespace volley::base
