// memory.h - how the process's allocator treats freed message buffers
#ifndef VOLLEY_BASE_MEMORY_H_
#define VOLLEY_BASE_MEMORY_H_

#include <cstdint>

namespace volley::base {

// The most glibc lets a block take from the heap instead of a mapping of
// its own (M_MMAP_THRESHOLD's ceiling on 64-bit: half a heap of 64 MiB).
inline constexpr uint64_t kLargestHeapBlock = uint64_t{32} << 20;

// KeepFreedMemory - asks glibc's malloc to keep up to `bytes` of free memory
// at the top of each arena instead of returning it to the kernel (it trims
// above 128 KiB by default), and to serve blocks up to kLargestHeapBlock from
// the heap instead of one mmap/munmap each.
//
// Why: a shard renders a 100 KiB message, sends it and frees it. With the
// defaults each free gave the pages back (madvise) and the next message
// faulted them in again: 25 page faults a message, which on this VM cost
// more than the sends (bench/RESULTS.md, "scenario 2 and the allocator").
// What is kept is what the process already used at its peak; the callers
// pass the bound on what is in flight ([delivery]
// max_message_bytes_in_flight), so the peak stays bounded by configuration.
// Returns false when the allocator refused (another malloc, as under ASan,
// ignores it: nothing breaks, pages are returned as before).
bool KeepFreedMemory(uint64_t bytes);

}  // namespace volley::base

#endif  // VOLLEY_BASE_MEMORY_H_
