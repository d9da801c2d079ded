// ring.h - a thin io_uring wrapper: the only header that includes <liburing.h>
//
// DESCRIPTION
//   Completions carry a 64-bit tag chosen by the caller. The engine packs
//   slot (32 bits) | generation (16) | operation (8) into it, so a completion
//   that arrives after its connection slot was reused is recognised as stale
//   by its generation and dropped, instead of being applied to a stranger.
//
//   Submission is batched: Prep* only fills submission entries; they reach the
//   kernel in one io_uring_enter per loop turn (SubmitAndWait), and a full
//   submission queue is flushed rather than failing.
#ifndef VOLLEY_ENGINE_REACTOR_RING_H_
#define VOLLEY_ENGINE_REACTOR_RING_H_

#include <sys/socket.h>

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"

struct io_uring;
struct io_uring_sqe;

namespace volley::engine {

class Ring {
 public:
  Ring();
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Init - set up a ring of `entries` submission entries; says what the kernel lacks.
  absl::Status Init(unsigned entries);

  void PrepConnect(int fd, const sockaddr* addr, socklen_t len, uint64_t tag);
  void PrepSend(int fd, const void* data, size_t len, uint64_t tag);
  void PrepRecv(int fd, void* data, size_t len, uint64_t tag);
  void PrepRead(int fd, void* data, size_t len, uint64_t tag);
  // PrepPollAdd - one-shot readiness of `fd` for `events` (POLLIN, POLLOUT); the
  // completion's result is the events seen, or -ECANCELED after PrepPollRemove.
  void PrepPollAdd(int fd, unsigned events, uint64_t tag);
  // PrepPollRemove - cancel the poll submitted with `target`; this request's own
  // completion comes with `tag`.
  void PrepPollRemove(uint64_t target, uint64_t tag);

  // SubmitAndWait - submit everything prepared, wait up to `timeout` for at
  // least one completion, then call on_completion(tag, result) for each.
  absl::Status SubmitAndWait(absl::Duration timeout,
                             const std::function<void(uint64_t tag, int result)>& on_completion);

  // How long the last SubmitAndWait spent in the kernel (waiting, mostly): the
  // rest of a loop turn is work, which the shard's utilisation metric counts.
  absl::Duration last_wait() const { return last_wait_; }

 private:
  ::io_uring_sqe* GetSqe();
  ::io_uring* ring_;
  bool initialised_ = false;
  absl::Duration last_wait_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_REACTOR_RING_H_
