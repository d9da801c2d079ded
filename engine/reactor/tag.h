// NAME
//   tag.h - the reactor's completion tag: slot | generation | operation in 64 bits
//
// SYNOPSIS
//   #include "engine/reactor/tag.h"
//
//   const uint64_t tag = reactor::MakeTag(slot, generation, kOpRecv);
//   ring.PrepRecv(fd, buf, len, tag);
//   ...  // in the completion:
//   reactor::OpOf(tag) == kOpRecv; reactor::SlotOf(tag) == slot; ...
//
// DESCRIPTION
//   Every io_uring submission carries 64 bits of user data that come back in
//   its completion. Volley packs three fields into them, the one codec every
//   reactor user shares (volleyd, volley-sink, SlotTable):
//
//     bits 63..32  slot        which object (a SlotTable slot, a listener
//                              index, a descriptor): the caller's choice
//     bits 23..8   generation  the slot's generation when the operation was
//                              submitted, so that a completion arriving after
//                              the slot was reused is seen as stale
//     bits  7..0   operation   what was submitted; Ring::Handle registers a
//                              handler per operation, and a completion whose
//                              operation has none is reported (ring.h)
//
//   Bits 31..24 are zero. Operation 0 is never registered by convention, so a
//   zeroed tag (a bug) is always reported as unknown.
//
// BOUNDS
//   2^32 slots, 2^16 generations per slot (they wrap), 256 operations.
#ifndef VOLLEY_ENGINE_REACTOR_TAG_H_
#define VOLLEY_ENGINE_REACTOR_TAG_H_

#include <cstdint>

namespace volley::reactor {

inline constexpr int kOperations = 256;  // every value of the operation byte

constexpr uint64_t MakeTag(uint32_t slot, uint16_t generation, uint8_t op) {
  return (uint64_t{slot} << 32) | (uint64_t{generation} << 8) | op;
}
constexpr uint8_t OpOf(uint64_t tag) { return static_cast<uint8_t>(tag & 0xff); }
constexpr uint32_t SlotOf(uint64_t tag) { return static_cast<uint32_t>(tag >> 32); }
constexpr uint16_t GenerationOf(uint64_t tag) { return static_cast<uint16_t>(tag >> 8); }

}  // namespace volley::reactor

#endif  // VOLLEY_ENGINE_REACTOR_TAG_H_
