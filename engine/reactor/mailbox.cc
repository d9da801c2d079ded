// mailbox.cc - the mailbox's eventfd; see mailbox.h.
#include "engine/reactor/mailbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace volley::reactor {

absl::StatusOr<EventFd> EventFd::Create() {
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return absl::ResourceExhaustedError(absl::StrCat("eventfd: ", std::strerror(errno)));
  return EventFd(fd);
}

EventFd& EventFd::operator=(EventFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

EventFd::~EventFd() {
  if (fd_ >= 0) ::close(fd_);
}

void EventFd::Notify() const {
  const uint64_t one = 1;
  // Only a counter at its maximum (2^64 - 2 unread notifications) could block.
  while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

}  // namespace volley::reactor
