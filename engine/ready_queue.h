// ready_queue.h - recipients waiting for a connection to one destination
//
// SYNOPSIS
//   ReadyQueue<Work*> q;
//   q.Push("7/example.test", 100, w);    // group key, recipients per transaction
//   std::vector<Work*> batch = q.Take(); // the next group's turn: up to its limit
//   q.PushFront("7/example.test", 100, w);  // back to the head of its group
//
// DESCRIPTION
//   Items wait in groups: one group holds what may share one SMTP transaction
//   (one job's recipients at one domain when the job's message is the same for
//   all), or what must go one per transaction (a personalised job: its limit is
//   1). Groups of one priority take turns, round robin, so jobs that share a
//   destination share its connections instead of queueing behind one another; a
//   group of a higher priority (the job header's 0..9, 9 first) goes before any
//   of a lower one. PushFront serves a
//   recipient the server asked to send in a next transaction (452 to RCPT)
//   before anything else of its group, and puts the group first in line.
//
// CONTRACT
//   Not thread-safe (one shard). Items are moved in and out, never copied.
#ifndef VOLLEY_ENGINE_READY_QUEUE_H_
#define VOLLEY_ENGINE_READY_QUEUE_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/strings.h"

namespace volley::engine {

template <typename Item>
class ReadyQueue {
 public:
  void Push(std::string_view group, size_t limit, Item item, int priority = 0) {
    Group& g = FindOrAdd(group, limit, priority, /*first=*/false);
    g.items.push_back(std::move(item));
    ++size_;
    if ((g.items.size() - 1) % g.limit == 0) ++transactions_;
  }

  void PushFront(std::string_view group, size_t limit, Item item, int priority = 0) {
    Group& g = FindOrAdd(group, limit, priority, /*first=*/true);
    g.items.push_front(std::move(item));
    ++size_;
    if ((g.items.size() - 1) % g.limit == 0) ++transactions_;
  }

  // Take - the group whose turn it is gives up to its limit of items, in order;
  // empty when nothing waits.
  std::vector<Item> Take() {
    std::vector<Item> out;
    if (turns_.empty()) return out;
    auto level = turns_.begin();  // the highest priority waiting
    std::string key = std::move(level->second.front());
    level->second.pop_front();
    auto it = groups_.find(key);
    Group& g = it->second;
    transactions_ -= Transactions(g);
    while (!g.items.empty() && out.size() < g.limit) {
      out.push_back(std::move(g.items.front()));
      g.items.pop_front();
    }
    size_ -= out.size();
    transactions_ += Transactions(g);
    if (g.items.empty()) {
      groups_.erase(it);
    } else {
      level->second.push_back(std::move(key));
    }
    if (level->second.empty()) turns_.erase(level);
    return out;
  }

  // Peek - the first item Take would give, or null when nothing waits.
  const Item* Peek() const {
    if (turns_.empty()) return nullptr;
    const Group& g = groups_.find(turns_.begin()->second.front())->second;
    return &g.items.front();
  }

  // TakeAll - everything, emptying the queue.
  std::vector<Item> TakeAll() {
    std::vector<Item> out;
    out.reserve(size_);
    for (auto& [priority, keys] : turns_) {
      for (const std::string& key : keys) {
        for (Item& item : groups_.at(key).items) out.push_back(std::move(item));
      }
    }
    groups_.clear();
    turns_.clear();
    size_ = 0;
    transactions_ = 0;
    return out;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // transactions - how many Takes would empty the queue: what is worth a
  // connection each (100 recipients that fit one transaction need one, not 100).
  size_t transactions() const { return transactions_; }

 private:
  struct Group {
    size_t limit = 1;
    std::deque<Item> items;
  };

  static size_t Transactions(const Group& g) { return (g.items.size() + g.limit - 1) / g.limit; }

  Group& FindOrAdd(std::string_view group, size_t limit, int priority, bool first) {
    auto [it, added] = groups_.try_emplace(base::Sv(group));
    if (added) {
      it->second.limit = limit < 1 ? 1 : limit;
      std::deque<std::string>& level = turns_[priority];
      if (first) {
        level.emplace_front(group);
      } else {
        level.emplace_back(group);
      }
    }
    return it->second;
  }

  absl::flat_hash_map<std::string, Group> groups_;
  // Each waiting group once, in turn order, by priority, highest first. A group
  // keeps the priority it was added with.
  std::map<int, std::deque<std::string>, std::greater<int>> turns_;
  size_t size_ = 0;
  size_t transactions_ = 0;  // the sum of Transactions(g) over the groups
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_READY_QUEUE_H_
