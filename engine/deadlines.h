// deadlines.h - the connections' deadlines, earliest first, found without a scan
//
// SYNOPSIS
//   DeadlineHeap deadlines;
//   deadlines.Set(slot, now + timeout);        // set, move or (InfiniteFuture) clear
//   deadlines.Remove(slot);                    // the connection is gone
//   if (auto t = deadlines.Earliest()) ...     // how long the loop may sleep
//   deadlines.Due(now, &late);                 // every slot at or past its deadline
//
// DESCRIPTION
//   A binary min-heap of (deadline, slot) with each slot's position kept, so a
//   deadline moves in O(log n) and the due ones are found in O(due): the shard's
//   loop no longer walks every connection each turn to find the late ones, which
//   at 10,000 connections was most of an idle turn's work.
//
//   Why not io_uring linked timeouts: a deadline belongs to a step of the SMTP
//   conversation (the reply to RCPT, the idle time between transactions), not to
//   one operation. A connection's receive stays posted across many steps, so a
//   timeout linked to it would have to be cancelled and the receive posted again
//   at every step: two more submissions per reply, where this costs nothing in
//   the kernel and the loop's one wait already has a timeout.
//
// LIMITS
//   One entry per slot: memory is bounded by the connection table.
#ifndef VOLLEY_ENGINE_DEADLINES_H_
#define VOLLEY_ENGINE_DEADLINES_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace volley::engine {

class DeadlineHeap {
 public:
  // Set - slot's deadline is `at`; InfiniteFuture() means none (it is removed).
  void Set(uint32_t slot, absl::Time at) {
    if (at == absl::InfiniteFuture()) {
      Remove(slot);
      return;
    }
    if (slot >= pos_.size()) pos_.resize(slot + 1, kAbsent);
    if (pos_[slot] == kAbsent) {
      heap_.push_back({at, slot});
      pos_[slot] = heap_.size() - 1;
      SiftUp(heap_.size() - 1);
      return;
    }
    const size_t i = pos_[slot];
    const absl::Time before = heap_[i].at;
    heap_[i].at = at;
    if (at < before) {
      SiftUp(i);
    } else {
      SiftDown(i);
    }
  }

  void Remove(uint32_t slot) {
    if (slot >= pos_.size() || pos_[slot] == kAbsent) return;
    const size_t i = pos_[slot];
    pos_[slot] = kAbsent;
    const size_t last = heap_.size() - 1;
    if (i != last) {
      heap_[i] = heap_[last];
      pos_[heap_[i].slot] = i;
    }
    heap_.pop_back();
    if (i < heap_.size()) {
      // The last entry took the hole: it may belong above it or below it.
      const uint32_t moved = heap_[i].slot;
      SiftUp(i);
      SiftDown(pos_[moved]);
    }
  }

  std::optional<absl::Time> Earliest() const {
    if (heap_.empty()) return std::nullopt;
    return heap_.front().at;
  }

  // Due - appends every slot whose deadline is at or before `now`, in no order.
  void Due(absl::Time now, std::vector<uint32_t>* out) const {
    std::vector<size_t> stack;
    if (!heap_.empty()) stack.push_back(0);
    while (!stack.empty()) {
      const size_t i = stack.back();
      stack.pop_back();
      if (heap_[i].at > now) continue;  // nor anything below it
      out->push_back(heap_[i].slot);
      for (size_t child : {2 * i + 1, 2 * i + 2}) {
        if (child < heap_.size()) stack.push_back(child);
      }
    }
  }

  size_t size() const { return heap_.size(); }

 private:
  static constexpr size_t kAbsent = static_cast<size_t>(-1);
  struct Entry {
    absl::Time at;
    uint32_t slot;
  };

  void Swap(size_t a, size_t b) {
    std::swap(heap_[a], heap_[b]);
    pos_[heap_[a].slot] = a;
    pos_[heap_[b].slot] = b;
  }
  void SiftUp(size_t i) {
    while (i > 0) {
      const size_t parent = (i - 1) / 2;
      if (!(heap_[i].at < heap_[parent].at)) break;
      Swap(i, parent);
      i = parent;
    }
  }
  void SiftDown(size_t i) {
    for (;;) {
      size_t least = i;
      for (size_t child : {2 * i + 1, 2 * i + 2}) {
        if (child < heap_.size() && heap_[child].at < heap_[least].at) least = child;
      }
      if (least == i) break;
      Swap(i, least);
      i = least;
    }
  }

  std::vector<Entry> heap_;
  std::vector<size_t> pos_;  // by slot: index into heap_, or kAbsent
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_DEADLINES_H_
