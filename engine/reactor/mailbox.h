// NAME
//   mailbox.h - a bounded hand-over from any thread to one reactor thread
//
// SYNOPSIS
//   #include "engine/reactor/mailbox.h"
//
//   ASSIGN_OR_RETURN(auto box, reactor::Mailbox<std::string>::Create(1024));
//   // any thread:
//   if (!box->Push("job-1")) ...                 // full: the item was not taken
//   // the reactor thread: the eventfd is readable when something waits
//   ring.PrepRead(box->event_fd(), &counter, sizeof counter, tag);
//   ... in that read's completion:
//   for (std::string& job : box->TakeAll()) ...;
//   ring.PrepRead(box->event_fd(), &counter, sizeof counter, tag);   // re-arm
//
// DESCRIPTION
//   A Mailbox<T> is a vector under a mutex plus an eventfd: producers append
//   under the lock, and the consumer's ring learns through the eventfd that
//   there is something to take, so a reactor thread waits for its mailbox and
//   its sockets in the same io_uring_enter. The consumer takes everything in
//   one locked swap, so the lock is held for one move per wake-up, never per
//   item consumed.
//
//   The eventfd is written only when the box goes from empty to not empty: a
//   consumer always takes everything, so a write per item would only make
//   the counter larger. A wake-up may find the box empty (items taken by an
//   earlier TakeAll that raced the write): harmless.
//
//   The eventfd is blocking: the consumer reads it through io_uring, which
//   waits for it without a thread of ours, while on a kernel where io_uring
//   honours O_NONBLOCK a non-blocking one would come back at once with -EAGAIN
//   and make the reader spin. (Never read it with a plain read() unless poll
//   says it is readable.)
//
// CONTRACT
//   Push from any thread; TakeAll and the eventfd's reads from one consumer
//   thread at a time. The Mailbox outlives every producer and the consumer's
//   read in flight.
//
// BOUNDS
//   At most `capacity` items wait; Push of one more returns false and leaves
//   the item with the caller, which decides (retry later, drop and count).
#ifndef VOLLEY_ENGINE_REACTOR_MAILBOX_H_
#define VOLLEY_ENGINE_REACTOR_MAILBOX_H_

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace volley::reactor {

// EventFd - a blocking, close-on-exec eventfd; Notify adds one.
class EventFd {
 public:
  static absl::StatusOr<EventFd> Create();
  EventFd(EventFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  EventFd& operator=(EventFd&& other) noexcept;
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  ~EventFd();

  int fd() const { return fd_; }
  // Notify - from any thread: make the eventfd readable.
  void Notify() const;

 private:
  explicit EventFd(int fd) : fd_(fd) {}
  int fd_ = -1;
};

template <typename T>
class Mailbox {
 public:
  // Create - a mailbox holding at most `capacity` items (> 0).
  static absl::StatusOr<std::unique_ptr<Mailbox>> Create(size_t capacity) {
    absl::StatusOr<EventFd> fd = EventFd::Create();
    if (!fd.ok()) return fd.status();
    return std::unique_ptr<Mailbox>(new Mailbox(*std::move(fd), capacity));
  }

  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  int event_fd() const { return event_.fd(); }
  size_t capacity() const { return capacity_; }

  // Push - hand `item` over; false (and `item` untouched) when full.
  bool Push(T&& item) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (items_.size() >= capacity_) return false;
      was_empty = items_.empty();
      items_.push_back(std::move(item));
    }
    if (was_empty) event_.Notify();
    return true;
  }
  bool Push(const T& item) {
    T copy = item;
    return Push(std::move(copy));
  }

  // TakeAll - everything waiting, oldest first.
  std::vector<T> TakeAll() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(items_, {});
  }

 private:
  Mailbox(EventFd event, size_t capacity) : event_(std::move(event)), capacity_(capacity) {}

  EventFd event_;
  const size_t capacity_;
  std::mutex mu_;
  std::vector<T> items_;  // guarded by mu_
};

}  // namespace volley::reactor

#endif  // VOLLEY_ENGINE_REACTOR_MAILBOX_H_
