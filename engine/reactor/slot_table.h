// NAME
//   slot_table.h - objects named by io_uring completion tags, safe against reuse
//
// SYNOPSIS
//   #include "engine/reactor/slot_table.h"
//
//   reactor::SlotTable<Conn> conns;
//   const uint32_t slot = conns.Acquire(args...);    // a new Conn in a free slot
//   ring.PrepRecv(c.fd, c.buf, n, conns.Tag(slot, kOpRecv));   // ring.h
//   ...
//   if (Conn* c = conns.Find(cqe->user_data)) ...    // nullptr: stale completion
//   conns.Release(slot);                             // destroys the Conn
//
// DESCRIPTION
//   A completion can arrive after the object it was for is gone and its slot
//   reused (a cancelled receive, a send that raced a close). The tag carries the
//   slot's generation, which moves on at every Release, so such a completion is
//   recognised as stale and dropped instead of being applied to a stranger.
//
//   Tags are the reactor's one codec (tag.h): slot (32 bits) | generation (16)
//   | operation (8); MakeTag, OpOf, SlotOf and GenerationOf here are that
//   codec's, kept as members so callers can name them through the table. A
//   generation wraps after 65,536 reuses of one slot; a completion that late is
//   not a risk the reactors here run (each frees a slot only once its
//   operations are done).
//
// CONTRACT
//   Not thread-safe: one table per reactor. Objects have stable addresses until
//   released.
#ifndef VOLLEY_ENGINE_REACTOR_SLOT_TABLE_H_
#define VOLLEY_ENGINE_REACTOR_SLOT_TABLE_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "base/status.h"
#include "engine/reactor/tag.h"

namespace volley::reactor {

template <typename T>
class SlotTable {
 public:
  static constexpr uint64_t MakeTag(uint32_t slot, uint16_t generation, uint8_t op) {
    return reactor::MakeTag(slot, generation, op);
  }
  static constexpr uint8_t OpOf(uint64_t tag) { return reactor::OpOf(tag); }
  static constexpr uint32_t SlotOf(uint64_t tag) { return reactor::SlotOf(tag); }
  static constexpr uint16_t GenerationOf(uint64_t tag) { return reactor::GenerationOf(tag); }

  template <typename... Args>
  uint32_t Acquire(Args&&... args) {
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      slot = static_cast<uint32_t>(entries_.size());
      entries_.emplace_back();
    }
    entries_[slot].value = std::make_unique<T>(std::forward<Args>(args)...);
    ++live_;
    return slot;
  }

  void Release(uint32_t slot) {
    VOLLEY_CHECK(slot < entries_.size() && entries_[slot].value != nullptr,
                 "release of a free slot");
    entries_[slot].value.reset();
    ++entries_[slot].generation;
    free_.push_back(slot);
    --live_;
  }

  // The tag for an operation on `slot` by its current occupant.
  uint64_t Tag(uint32_t slot, uint8_t op) const {
    return MakeTag(slot, entries_[slot].generation, op);
  }

  // The occupant a completion's tag names, or nullptr when it is gone.
  T* Find(uint64_t tag) const {
    const uint32_t slot = SlotOf(tag);
    if (slot >= entries_.size() || entries_[slot].generation != GenerationOf(tag)) {
      return nullptr;
    }
    return entries_[slot].value.get();
  }

  T* Get(uint32_t slot) const {
    return slot < entries_.size() ? entries_[slot].value.get() : nullptr;
  }

  // at - the occupant of a slot known to be occupied (aborts otherwise).
  T& at(uint32_t slot) const {
    T* value = Get(slot);
    VOLLEY_CHECK(value != nullptr, "use of a free slot");
    return *value;
  }

  // ForEach - f(slot, T&) for every occupied slot. f may not Acquire or Release.
  template <typename F>
  void ForEach(F&& f) const {
    for (uint32_t slot = 0; slot < entries_.size(); ++slot) {
      if (entries_[slot].value != nullptr) f(slot, *entries_[slot].value);
    }
  }

  size_t live() const { return live_; }

 private:
  struct Entry {
    uint16_t generation = 0;
    std::unique_ptr<T> value;
  };
  std::vector<Entry> entries_;
  std::vector<uint32_t> free_;
  size_t live_ = 0;
};

}  // namespace volley::reactor

#endif  // VOLLEY_ENGINE_REACTOR_SLOT_TABLE_H_
