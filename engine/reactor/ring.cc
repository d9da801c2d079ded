#include "engine/reactor/ring.h"

#include <liburing.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status.h"

namespace volley::engine {

Ring::Ring() : ring_(new io_uring{}) {}

Ring::~Ring() {
  if (initialised_) io_uring_queue_exit(ring_);
  delete ring_;
}

absl::Status Ring::Init(unsigned entries) {
  io_uring_params params{};
  // One thread submits and reaps: let the kernel skip the locking and defer
  // task work to our io_uring_enter, where we are about to reap anyway.
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc = io_uring_queue_init_params(entries, ring_, &params);
  if (rc == -EINVAL) {
    params = {};
    rc = io_uring_queue_init_params(entries, ring_, &params);
  }
  if (rc < 0) {
    return absl::UnavailableError(absl::StrCat(
        "io_uring: cannot set up a ring: ", std::strerror(-rc),
        rc == -ENOSYS || rc == -EPERM ? " (io_uring disabled in this kernel or container?)" : ""));
  }
  initialised_ = true;
  io_uring_probe* probe = io_uring_get_probe_ring(ring_);
  if (probe == nullptr) return absl::UnavailableError("io_uring: cannot probe operations");
  std::string missing;
  for (auto [op, name] : {std::pair{IORING_OP_CONNECT, "connect"}, {IORING_OP_SEND, "send"},
                          {IORING_OP_RECV, "recv"}, {IORING_OP_READ, "read"},
                          {IORING_OP_POLL_ADD, "poll_add"}, {IORING_OP_POLL_REMOVE, "poll_remove"}}) {
    if (!io_uring_opcode_supported(probe, op)) absl::StrAppend(&missing, " ", name);
  }
  io_uring_free_probe(probe);
  if (!missing.empty()) {
    return absl::UnavailableError(absl::StrCat("io_uring: kernel lacks operations:", missing));
  }
  return absl::OkStatus();
}

io_uring_sqe* Ring::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_);
  if (sqe == nullptr) {
    io_uring_submit(ring_);  // full: hand the batch to the kernel and go on
    sqe = io_uring_get_sqe(ring_);
  }
  VOLLEY_CHECK(sqe != nullptr, "no submission entry after a flush");
  return sqe;
}

void Ring::PrepConnect(int fd, const sockaddr* addr, socklen_t len, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_connect(sqe, fd, addr, len);
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepSend(int fd, const void* data, size_t len, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_send(sqe, fd, data, len, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepRecv(int fd, void* data, size_t len, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_recv(sqe, fd, data, len, 0);
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepRead(int fd, void* data, size_t len, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, fd, data, static_cast<unsigned>(len), 0);
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepPollAdd(int fd, unsigned events, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, fd, events);
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepPollRemove(uint64_t target, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_remove(sqe, target);
  io_uring_sqe_set_data64(sqe, tag);
}

absl::Status Ring::SubmitAndWait(absl::Duration timeout,
                                 const std::function<void(uint64_t, int)>& on_completion) {
  __kernel_timespec ts = absl::ToTimespec(timeout).tv_sec >= 0
                             ? __kernel_timespec{absl::ToTimespec(timeout).tv_sec,
                                                 absl::ToTimespec(timeout).tv_nsec}
                             : __kernel_timespec{0, 0};
  io_uring_cqe* cqe = nullptr;
  const absl::Time entered = absl::Now();
  const int rc = io_uring_submit_and_wait_timeout(ring_, &cqe, 1, &ts, nullptr);
  last_wait_ = absl::Now() - entered;
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    return absl::InternalError(absl::StrCat("io_uring_enter: ", std::strerror(-rc)));
  }
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_for_each_cqe(ring_, head, cqe) {
    on_completion(io_uring_cqe_get_data64(cqe), cqe->res);
    ++seen;
  }
  io_uring_cq_advance(ring_, seen);
  return absl::OkStatus();
}

}  // namespace volley::engine
