// connection_guard.cc - see connection_guard.h
#include "engine/http/connection_guard.h"

#include <algorithm>
#include <utility>

namespace volley::http {

ConnectionGuard::ConnectionGuard(size_t max_connections, absl::Duration request_timeout,
                                 absl::Duration keep_alive)
    : max_connections_(std::max<size_t>(1, max_connections)),
      request_timeout_(request_timeout),
      keep_alive_(keep_alive) {}

std::list<ConnectionGuard::Waiting>* ConnectionGuard::ListOf(Phase phase) {
  switch (phase) {
    case Phase::kHead: return &waiting_head_;
    case Phase::kBody: return &reading_body_;
    case Phase::kIdle: return &idle_;
    case Phase::kAnswered: return nullptr;
  }
  return nullptr;
}

int ConnectionGuard::Forget(absl::flat_hash_map<Id, Entry>::iterator it) {
  const int fd = it->second.fd;
  if (std::list<Waiting>* list = ListOf(it->second.phase)) list->erase(it->second.at);
  connections_.erase(it);
  return fd;
}

void ConnectionGuard::MoveTo(absl::flat_hash_map<Id, Entry>::iterator it, Phase phase,
                             absl::Time deadline) {
  Entry& e = it->second;
  if (std::list<Waiting>* from = ListOf(e.phase)) from->erase(e.at);
  e.phase = phase;
  e.at = {};
  if (std::list<Waiting>* to = ListOf(phase)) {
    to->push_back(Waiting{it->first, e.fd, deadline});
    e.at = std::prev(to->end());
  }
}

std::optional<int> ConnectionGuard::Opened(Id id, int fd, absl::Time now) {
  std::optional<int> evict;
  // The new one is not in a list yet, so it cannot be named.
  if (connections_.size() >= max_connections_) {
    std::list<Waiting>* from = !waiting_head_.empty() ? &waiting_head_
                               : !idle_.empty()       ? &idle_
                                                      : nullptr;
    if (from != nullptr) {
      evict = Forget(connections_.find(from->front().id));
      ++evicted_;
    }
  }
  if (auto old = connections_.find(id); old != connections_.end()) Forget(old);  // id reused
  waiting_head_.push_back(Waiting{id, fd, now + request_timeout_});
  connections_.emplace(id, Entry{Phase::kHead, fd, std::prev(waiting_head_.end())});
  return evict;
}

void ConnectionGuard::HeadReceived(Id id, absl::Time now) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  if (it->second.phase != Phase::kHead && it->second.phase != Phase::kIdle) return;
  MoveTo(it, Phase::kBody, now + request_timeout_);
}

void ConnectionGuard::Answered(Id id) {
  auto it = connections_.find(id);
  if (it == connections_.end() || it->second.phase == Phase::kAnswered) return;
  MoveTo(it, Phase::kAnswered, absl::InfiniteFuture());
}

void ConnectionGuard::Idle(Id id, absl::Time now) {
  auto it = connections_.find(id);
  if (it == connections_.end() || it->second.phase != Phase::kAnswered) return;
  MoveTo(it, Phase::kIdle, now + keep_alive_);
}

void ConnectionGuard::Closed(Id id) {
  if (auto it = connections_.find(id); it != connections_.end()) Forget(it);
}

std::vector<int> ConnectionGuard::Expired(absl::Time now) {
  std::vector<int> fds;
  for (std::list<Waiting>* list : {&waiting_head_, &reading_body_, &idle_}) {
    while (!list->empty() && list->front().deadline <= now) {
      fds.push_back(Forget(connections_.find(list->front().id)));
      ++expired_;
    }
  }
  return fds;
}

}  // namespace volley::http
