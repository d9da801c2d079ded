// connection_guard.cc - see connection_guard.h
#include "engine/http/connection_guard.h"

#include <algorithm>
#include <utility>

namespace volley::http {

ConnectionGuard::ConnectionGuard(size_t max_connections, absl::Duration request_timeout)
    : max_connections_(std::max<size_t>(1, max_connections)), request_timeout_(request_timeout) {}

int ConnectionGuard::Forget(absl::flat_hash_map<Id, Entry>::iterator it) {
  int fd = -1;
  if (it->second.phase == Phase::kHead) {
    fd = it->second.at->fd;
    waiting_head_.erase(it->second.at);
  } else if (it->second.phase == Phase::kBody) {
    fd = it->second.at->fd;
    reading_body_.erase(it->second.at);
  }
  connections_.erase(it);
  return fd;
}

std::optional<int> ConnectionGuard::Opened(Id id, int fd, absl::Time now) {
  std::optional<int> evict;
  // The new one is not in the list yet, so it cannot be named.
  if (connections_.size() >= max_connections_ && !waiting_head_.empty()) {
    evict = Forget(connections_.find(waiting_head_.front().id));
    ++evicted_;
  }
  if (auto old = connections_.find(id); old != connections_.end()) Forget(old);  // id reused
  waiting_head_.push_back(Waiting{id, fd, now + request_timeout_});
  connections_.emplace(id, Entry{Phase::kHead, std::prev(waiting_head_.end())});
  return evict;
}

void ConnectionGuard::HeadReceived(Id id, absl::Time now) {
  auto it = connections_.find(id);
  if (it == connections_.end() || it->second.phase != Phase::kHead) return;
  const int fd = it->second.at->fd;
  waiting_head_.erase(it->second.at);
  reading_body_.push_back(Waiting{id, fd, now + request_timeout_});
  it->second = Entry{Phase::kBody, std::prev(reading_body_.end())};
}

void ConnectionGuard::Answered(Id id) {
  auto it = connections_.find(id);
  if (it == connections_.end() || it->second.phase == Phase::kAnswered) return;
  if (it->second.phase == Phase::kHead) {
    waiting_head_.erase(it->second.at);
  } else {
    reading_body_.erase(it->second.at);
  }
  it->second = Entry{Phase::kAnswered, {}};
}

void ConnectionGuard::Closed(Id id) {
  if (auto it = connections_.find(id); it != connections_.end()) Forget(it);
}

std::vector<int> ConnectionGuard::Expired(absl::Time now) {
  std::vector<int> fds;
  for (std::list<Waiting>* list : {&waiting_head_, &reading_body_}) {
    while (!list->empty() && list->front().deadline <= now) {
      fds.push_back(Forget(connections_.find(list->front().id)));
      ++expired_;
    }
  }
  return fds;
}

}  // namespace volley::http
