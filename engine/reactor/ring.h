// NAME
//   ring.h - Volley's io_uring reactor: one ring, tagged operations, batch drain
//
// SYNOPSIS
//   #include "engine/reactor/ring.h"
//
//   reactor::RingOptions opts;
//   opts.cq_entries = 16384;                 // explicit: never overflow
//   opts.recv_buffers = 512;                 // a provided buffer ring
//   opts.recv_buffer_size = 16384;
//   reactor::Ring ring;
//   RETURN_IF_ERROR(ring.Init(opts));
//
//   ring.Handle(kOpRecv, [&](const reactor::Completion& c) { OnRecv(c); });
//   ring.Handle(kOpAccept, [&](const reactor::Completion& c) { OnAccept(c); });
//   ring.PrepAccept(listen_fd, reactor::MakeTag(0, 0, kOpAccept));
//   for (;;) RETURN_IF_ERROR(ring.SubmitAndDispatch(absl::Seconds(1)));
//
// DESCRIPTION
//   Ring is the only code in Volley that includes <liburing.h> (ring.cc);
//   volleyd and volley-sink both run on it. Its callers see tags, results and
//   flags, never liburing's types.
//
//   Tags. Every operation carries a 64-bit tag (tag.h: slot | generation |
//   operation) that comes back with its completion. SlotTable (slot_table.h)
//   makes tags for objects, so that a completion arriving after its object is
//   gone is recognised as stale.
//
//   Submission is batched: Prep* only fills submission entries; they reach the
//   kernel in one io_uring_enter per loop turn (SubmitAndDispatch), and a full
//   submission queue is flushed rather than failing.
//
//   Completions are drained in batches of kCompletionBatch: each batch is
//   copied out of the completion queue and the queue advanced before any
//   handler runs, so handlers may submit (and flush) freely; batches are taken
//   until the queue is empty. The completion queue has an explicit size
//   (RingOptions::cq_entries) and Init refuses a kernel without
//   IORING_FEAT_NODROP: an overflow must never lose a completion, and with it
//   a connection.
//
//   Dispatch and unknown tags. Handle(op, handler) registers the handler of one
//   operation; SubmitAndDispatch calls it for each completion of that
//   operation. A completion whose operation has no handler is not applied to
//   anything: it is counted (unknown_completions()), the first of each
//   operation is logged as a warning naming the tag and result, and a receive
//   buffer it holds goes back to the buffer ring.
//
//   Receive buffers (provided buffer ring). With RingOptions::recv_buffers > 0
//   Init registers a ring of that many buffers of recv_buffer_size octets with
//   the kernel; a receive armed with PrepRecvFromRing holds no memory while it
//   waits: the kernel picks a buffer when data arrives. How a caller uses it:
//
//     ring.PrepRecvFromRing(fd, tag);                  // no buffer of its own
//     ... in the handler of that completion c:
//     if (c.result == -ENOBUFS) {                      // every buffer is taken
//       // either re-arm once buffers were given back (they are, as the batch
//       // is handled), or receive into a buffer of the caller's own:
//       ring.PrepRecv(fd, own_buffer, own_size, tag);  // the fallback
//     } else if (c.result > 0) {
//       Consume(ring.Received(c));                     // c.result octets: copy
//     }                                                // or parse them now
//     ring.ReturnBuffer(c);   // then give the buffer back (no-op without one)
//
//   Every -ENOBUFS completion of an operation armed with PrepRecvFromRing is
//   counted (out_of_buffers()): an owner exports it so that an operator sees
//   the ring is too small for the receives that arrive at once. (A receive
//   into the caller's own buffer never fails with ENOBUFS: recv(2) has no such
//   error, so a fallback receive that shares the operation is not miscounted.)
//
//   A completion that carries a buffer must have it returned exactly once
//   (ReturnBuffer aborts on a second return), stale completions included: the
//   buffer ring runs dry otherwise. The kernel may refuse buffer rings (before
//   5.19) or the caller may turn them off (RingOptions::buffer_ring = false,
//   which tests use): has_buffer_ring() is then false and every receive needs
//   a buffer of the caller's own (PrepRecv).
//
//   Accepts. PrepAccept arms a multishot accept (one submission, a completion
//   per connection while Completion::more()) unless multishot_accept() is
//   false, when it arms a one-shot accept. A kernel without multishot accept
//   (before 5.19) answers -EINVAL: the caller then calls
//   FallBackToOneShotAccept() and arms again.
//
//   Single issuer. Init sets IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN (one
//   thread submits and reaps: no locking, task work done when we reap), and
//   falls back to a plain ring on kernels that refuse them. The issuer is the
//   thread that calls Init; with RingOptions::enable_later the ring is created
//   disabled and the thread that will run it calls Enable().
//
// CONTRACT
//   Not thread-safe: one thread (the issuer) calls everything after Init.
//   Buffers passed to Prep* (and a PrepTimeout's Timespec) must stay valid
//   until the operation's completion. The destructor cancels what is in
//   flight before it frees the receive buffers, so the owner may free its own
//   buffers after the Ring is gone, not before.
//
// DIAGNOSTICS
//   Init returns InvalidArgument for bad options (the message names the
//   option), Unavailable when the kernel has no io_uring or lacks an operation
//   or feature (the message names what). SubmitAndDispatch returns Internal
//   when io_uring_enter fails for any reason but a timeout or interruption.
//
// BOUNDS
//   sq_entries and cq_entries as RingOptions says (at most 32768 and 65536);
//   recv_buffers buffers (a power of two, at most kMaxRecvBuffers) of
//   recv_buffer_size octets; kCompletionBatch completions copied per batch.
#ifndef VOLLEY_ENGINE_REACTOR_RING_H_
#define VOLLEY_ENGINE_REACTOR_RING_H_

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/reactor/tag.h"

struct io_uring;
struct io_uring_sqe;
struct io_uring_buf_ring;

namespace volley::reactor {

// Completions copied out of the completion queue at a time.
inline constexpr unsigned kCompletionBatch = 256;
// Buffers a provided buffer ring holds at most (the kernel's limit).
inline constexpr unsigned kMaxRecvBuffers = 32768;

struct RingOptions {
  // Submission queue entries: operations prepared per loop turn before the
  // queue is flushed early. Rounded up to a power of two by the kernel.
  // Default: 4096.
  unsigned sq_entries = 4096;

  // Completion queue entries: completions that may wait to be reaped. Every
  // operation in flight may complete at once, so make it at least the most
  // operations the caller keeps in flight. 0: twice sq_entries (what the
  // kernel picks by itself). Default: 0.
  unsigned cq_entries = 0;

  // Create the ring disabled; the thread that will submit calls Enable()
  // (Init on one thread, run on another, still single issuer). Default: false.
  bool enable_later = false;

  // Receive buffers in the provided buffer ring; 0 for no buffer ring. A power
  // of two, at most kMaxRecvBuffers. Default: 0.
  unsigned recv_buffers = 0;

  // Octets per receive buffer (1 .. 16 MiB). Default: 16384.
  size_t recv_buffer_size = 16384;

  // Use the kernel's buffer ring when recv_buffers > 0; false leaves
  // has_buffer_ring() false as if the kernel refused it (tests of the
  // fallback). Default: true.
  bool buffer_ring = true;

  // Arm accepts multishot; false arms them one-shot as if the kernel had no
  // multishot accept (tests of the fallback). Default: true.
  bool multishot_accept = true;
};

// Completion - one completion, copied out of the queue.
struct Completion {
  uint64_t tag = 0;
  int result = 0;      // bytes, a descriptor, or -errno
  uint32_t flags = 0;  // IORING_CQE_F_*

  // more - a multishot operation (accept) stays armed after this completion.
  bool more() const { return (flags & kFlagMore) != 0; }
  // has_buffer - the kernel put this receive's bytes in a ring buffer.
  bool has_buffer() const { return (flags & kFlagBuffer) != 0; }
  uint16_t buffer_id() const { return static_cast<uint16_t>(flags >> kBufferShift); }

  // The kernel's IORING_CQE_F_BUFFER, IORING_CQE_F_MORE and
  // IORING_CQE_BUFFER_SHIFT (ring.cc checks they match).
  static constexpr uint32_t kFlagBuffer = 1u << 0;
  static constexpr uint32_t kFlagMore = 1u << 1;
  static constexpr int kBufferShift = 16;
};

// Timespec - a timeout's duration as the kernel reads it (__kernel_timespec);
// PrepTimeout's storage, owned by the caller until the completion.
struct Timespec {
  int64_t tv_sec = 0;
  long long tv_nsec = 0;  // NOLINT(runtime/int): the kernel's type
};

class Ring {
 public:
  using Handler = std::function<void(const Completion&)>;

  Ring();
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Init - set up the ring (and buffer ring); says what the kernel lacks.
  absl::Status Init(const RingOptions& options);
  // Init - `entries` submission entries, twice as many completion entries,
  // no buffer ring.
  absl::Status Init(unsigned entries);
  // Enable - on the thread that will submit, after Init with enable_later.
  absl::Status Enable();

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
  // PrepTimeout - a completion with -ETIME after `delay` (-ECANCELED if the
  // ring goes first). `storage` is read by the kernel at submission.
  void PrepTimeout(Timespec* storage, absl::Duration delay, uint64_t tag);

  // PrepAccept - accept connections on `listen_fd` (SOCK_CLOEXEC); multishot
  // while multishot_accept(). The result is the new descriptor or -errno.
  void PrepAccept(int listen_fd, uint64_t tag);
  bool multishot_accept() const { return multishot_accept_; }
  // FallBackToOneShotAccept - the kernel answered a multishot accept with
  // -EINVAL: arm one-shot accepts from now on.
  void FallBackToOneShotAccept() { multishot_accept_ = false; }

  // Provided buffer ring (see DESCRIPTION): receive with a buffer the kernel
  // picks, read its bytes, give it back.
  bool has_buffer_ring() const { return buffer_ring_ != nullptr; }
  size_t recv_buffer_size() const { return recv_buffer_size_; }
  // PrepRecvFromRing - a receive of up to recv_buffer_size() octets into a
  // buffer of the ring. Only when has_buffer_ring().
  void PrepRecvFromRing(int fd, uint64_t tag);
  // Received - the bytes a completion with has_buffer() brought: valid until
  // ReturnBuffer(c). Empty when it has no buffer or no bytes.
  std::string_view Received(const Completion& c) const;
  // ReturnBuffer - give c's buffer back to the ring; a no-op when it has none.
  void ReturnBuffer(const Completion& c);
  // Buffers the caller holds now (taken by completions, not yet returned).
  size_t buffers_held() const { return buffers_held_; }
  // Receives armed with PrepRecvFromRing that completed with -ENOBUFS (every
  // buffer held), since Init: each is a fallback to the caller's own buffer.
  uint64_t out_of_buffers() const { return out_of_buffers_; }

  // Handle - call `handler` for each completion of operation `op` (tag.h).
  void Handle(uint8_t op, Handler handler);
  // SubmitAndDispatch - submit everything prepared, wait up to `timeout` for
  // at least one completion, then dispatch every completion in the queue to
  // its operation's handler (unknown ones are reported: DESCRIPTION).
  absl::Status SubmitAndDispatch(absl::Duration timeout);
  // Completions whose operation had no handler, since Init.
  uint64_t unknown_completions() const { return unknown_completions_; }

  // SubmitAndDrain - as SubmitAndDispatch, but every completion goes to
  // `on_completion`, which does its own dispatch.
  absl::Status SubmitAndDrain(absl::Duration timeout, const Handler& on_completion);
  // SubmitAndWait - SubmitAndDrain with the tag and result alone.
  absl::Status SubmitAndWait(absl::Duration timeout,
                             const std::function<void(uint64_t tag, int result)>& on_completion);

  // How long the last submit-and-wait spent in the kernel (waiting, mostly):
  // the rest of a loop turn is work, which the shard's utilisation metric counts.
  absl::Duration last_wait() const { return last_wait_; }

 private:
  ::io_uring_sqe* GetSqe();
  absl::Status SetUpBufferRing(unsigned count, size_t size);
  void AddBuffer(uint16_t id);
  void Unknown(const Completion& c);

  ::io_uring* ring_;
  bool initialised_ = false;
  bool disabled_ = false;  // created with enable_later, Enable() not yet called
  bool multishot_accept_ = true;
  absl::Duration last_wait_;

  ::io_uring_buf_ring* buffer_ring_ = nullptr;
  char* buffers_ = nullptr;
  unsigned recv_buffers_ = 0;
  size_t recv_buffer_size_ = 0;
  size_t buffer_ring_bytes_ = 0;
  size_t buffers_bytes_ = 0;
  std::vector<bool> held_;  // by buffer id: out with a completion
  size_t buffers_held_ = 0;
  // Operations (tag.h) armed with PrepRecvFromRing at least once: their
  // -ENOBUFS completions are what out_of_buffers() counts.
  std::array<bool, kOperations> ring_receive_ops_{};
  uint64_t out_of_buffers_ = 0;

  std::array<Handler, kOperations> handlers_;
  std::array<bool, kOperations> unknown_logged_{};
  uint64_t unknown_completions_ = 0;
};

}  // namespace volley::reactor
#endif  // VOLLEY_ENGINE_REACTOR_RING_H_
