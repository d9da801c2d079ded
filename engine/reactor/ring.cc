// ring.cc - the io_uring reactor; see ring.h. The only file that includes <liburing.h>.
#include "engine/reactor/ring.h"

#include <liburing.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status.h"

namespace volley::reactor {

static_assert(Completion::kFlagBuffer == IORING_CQE_F_BUFFER);
static_assert(Completion::kFlagMore == IORING_CQE_F_MORE);
static_assert(Completion::kBufferShift == IORING_CQE_BUFFER_SHIFT);
static_assert(sizeof(Timespec) == sizeof(__kernel_timespec) &&
              offsetof(Timespec, tv_sec) == offsetof(__kernel_timespec, tv_sec) &&
              offsetof(Timespec, tv_nsec) == offsetof(__kernel_timespec, tv_nsec));

namespace {

// The buffer group of the ring's receive buffers: one group per ring.
constexpr uint16_t kBufferGroup = 0;
// The kernel's limits on a ring's queues.
constexpr unsigned kMaxSqEntries = 32768;
constexpr unsigned kMaxCqEntries = 65536;
constexpr size_t kMaxRecvBufferSize = size_t{1} << 24;

std::string ErrnoText(int err) { return std::strerror(err); }

__kernel_timespec KernelTimespec(absl::Duration d) {
  if (d < absl::ZeroDuration()) return {0, 0};
  const timespec ts = absl::ToTimespec(d);
  return {ts.tv_sec, ts.tv_nsec};
}

}  // namespace

Ring::Ring() : ring_(new io_uring{}) {}

Ring::~Ring() {
  // The ring goes first: that cancels every operation still pointing at a
  // buffer, so the buffers can then go.
  if (initialised_) io_uring_queue_exit(ring_);
  delete ring_;
  if (buffer_ring_ != nullptr) munmap(buffer_ring_, buffer_ring_bytes_);
  if (buffers_ != nullptr) munmap(buffers_, buffers_bytes_);
}

absl::Status Ring::Init(unsigned entries) {
  RingOptions options;
  options.sq_entries = entries;
  options.cq_entries = 2 * entries;
  return Init(options);
}

absl::Status Ring::Init(const RingOptions& options) {
  VOLLEY_CHECK(!initialised_, "Ring::Init called twice");
  if (options.sq_entries == 0 || options.sq_entries > kMaxSqEntries) {
    return absl::InvalidArgumentError(absl::StrCat(
        "io_uring: sq_entries ", options.sq_entries, ": must be 1..", kMaxSqEntries));
  }
  const unsigned cq_entries =
      options.cq_entries == 0 ? 2 * options.sq_entries : options.cq_entries;
  if (cq_entries < options.sq_entries || cq_entries > kMaxCqEntries) {
    return absl::InvalidArgumentError(absl::StrCat("io_uring: cq_entries ", cq_entries,
                                                   ": must be sq_entries (", options.sq_entries,
                                                   ")..", kMaxCqEntries));
  }
  if (options.recv_buffers > 0 &&
      (options.recv_buffers > kMaxRecvBuffers ||
       (options.recv_buffers & (options.recv_buffers - 1)) != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("io_uring: recv_buffers ", options.recv_buffers,
                                                   ": must be a power of two up to ",
                                                   kMaxRecvBuffers));
  }
  if (options.recv_buffers > 0 &&
      (options.recv_buffer_size == 0 || options.recv_buffer_size > kMaxRecvBufferSize)) {
    return absl::InvalidArgumentError(absl::StrCat("io_uring: recv_buffer_size ",
                                                   options.recv_buffer_size, ": must be 1..",
                                                   kMaxRecvBufferSize));
  }

  // One thread submits and reaps: let the kernel skip the locking and defer
  // task work to our io_uring_enter, where we are about to reap anyway. That
  // thread is the one that creates the ring, or enables it (enable_later).
  // Kernels before 6.1 refuse these flags with EINVAL: then any thread may
  // submit and nothing needs enabling.
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                 (options.enable_later ? IORING_SETUP_R_DISABLED : 0);
  params.cq_entries = cq_entries;
  int rc = io_uring_queue_init_params(options.sq_entries, ring_, &params);
  disabled_ = rc == 0 && options.enable_later;
  if (rc == -EINVAL) {
    params = {};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = cq_entries;
    rc = io_uring_queue_init_params(options.sq_entries, ring_, &params);
  }
  if (rc < 0) {
    return absl::UnavailableError(absl::StrCat(
        "io_uring: cannot set up a ring: ", ErrnoText(-rc),
        rc == -ENOSYS || rc == -EPERM ? " (io_uring disabled in this kernel or container?)" : ""));
  }
  initialised_ = true;
  if ((params.features & IORING_FEAT_NODROP) == 0) {
    // Without NODROP an overflowing completion queue loses completions and
    // with them connections: refuse rather than hang connections silently.
    return absl::UnavailableError("io_uring: kernel lacks IORING_FEAT_NODROP (5.5+)");
  }
  io_uring_probe* probe = io_uring_get_probe_ring(ring_);
  if (probe == nullptr) return absl::UnavailableError("io_uring: cannot probe operations");
  std::string missing;
  for (auto [op, name] : {std::pair{IORING_OP_CONNECT, "connect"}, {IORING_OP_SEND, "send"},
                          {IORING_OP_RECV, "recv"}, {IORING_OP_READ, "read"},
                          {IORING_OP_POLL_ADD, "poll_add"}, {IORING_OP_POLL_REMOVE, "poll_remove"},
                          {IORING_OP_ACCEPT, "accept"}, {IORING_OP_TIMEOUT, "timeout"}}) {
    if (!io_uring_opcode_supported(probe, op)) absl::StrAppend(&missing, " ", name);
  }
  io_uring_free_probe(probe);
  if (!missing.empty()) {
    return absl::UnavailableError(absl::StrCat("io_uring: kernel lacks operations:", missing));
  }
  multishot_accept_ = options.multishot_accept;
  recv_buffer_size_ = options.recv_buffer_size;
  if (options.recv_buffers > 0 && options.buffer_ring) {
    RETURN_IF_ERROR(SetUpBufferRing(options.recv_buffers, options.recv_buffer_size));
  }
  return absl::OkStatus();
}

// SetUpBufferRing - the provided buffer ring (5.19+): a refusal by the kernel
// leaves has_buffer_ring() false (the callers' fallback), lack of memory is
// an error.
absl::Status Ring::SetUpBufferRing(unsigned count, size_t size) {
  const size_t ring_bytes = count * sizeof(io_uring_buf);
  const size_t data_bytes = count * size;
  // mmap: page-aligned, as the kernel wants the ring, and the buffers' pages
  // are only backed once the kernel first writes into them.
  void* ring_mem =
      mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* data =
      mmap(nullptr, data_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_mem == MAP_FAILED || data == MAP_FAILED) {
    const int err = errno;
    if (ring_mem != MAP_FAILED) munmap(ring_mem, ring_bytes);
    if (data != MAP_FAILED) munmap(data, data_bytes);
    return absl::ResourceExhaustedError(absl::StrCat("io_uring: mmap of ", count,
                                                     " receive buffers: ", ErrnoText(err)));
  }
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(ring_mem);
  reg.ring_entries = count;
  reg.bgid = kBufferGroup;
  if (io_uring_register_buf_ring(ring_, &reg, 0) != 0) {
    munmap(ring_mem, ring_bytes);
    munmap(data, data_bytes);
    return absl::OkStatus();
  }
  buffer_ring_ = static_cast<io_uring_buf_ring*>(ring_mem);
  buffers_ = static_cast<char*>(data);
  buffer_ring_bytes_ = ring_bytes;
  buffers_bytes_ = data_bytes;
  recv_buffers_ = count;
  held_.assign(count, false);
  io_uring_buf_ring_init(buffer_ring_);
  for (unsigned i = 0; i < count; ++i) {
    io_uring_buf_ring_add(buffer_ring_, buffers_ + i * size, static_cast<unsigned>(size),
                          static_cast<uint16_t>(i), io_uring_buf_ring_mask(count),
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(count));
  return absl::OkStatus();
}

absl::Status Ring::Enable() {
  if (!disabled_) return absl::OkStatus();
  // liburing 2.3 declares io_uring_enable_rings() but does not export it.
  if (syscall(__NR_io_uring_register, ring_->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr,
              0) < 0) {
    return absl::InternalError(
        absl::StrCat("io_uring_register(ENABLE_RINGS): ", ErrnoText(errno)));
  }
  disabled_ = false;
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

void Ring::PrepTimeout(Timespec* storage, absl::Duration delay, uint64_t tag) {
  const __kernel_timespec ts = KernelTimespec(delay);
  storage->tv_sec = ts.tv_sec;
  storage->tv_nsec = ts.tv_nsec;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_timeout(sqe, reinterpret_cast<__kernel_timespec*>(storage), 0, 0);
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepAccept(int listen_fd, uint64_t tag) {
  io_uring_sqe* sqe = GetSqe();
  if (multishot_accept_) {
    io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(sqe, tag);
}

void Ring::PrepRecvFromRing(int fd, uint64_t tag) {
  VOLLEY_CHECK(buffer_ring_ != nullptr, "PrepRecvFromRing without a buffer ring");
  io_uring_sqe* sqe = GetSqe();
  // The kernel picks the buffer when data is there.
  io_uring_prep_recv(sqe, fd, nullptr, recv_buffer_size_, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, tag);
  ring_receive_ops_[OpOf(tag)] = true;
}

std::string_view Ring::Received(const Completion& c) const {
  if (!c.has_buffer() || c.result <= 0 || buffers_ == nullptr) return {};
  return std::string_view(buffers_ + size_t{c.buffer_id()} * recv_buffer_size_,
                          static_cast<size_t>(c.result));
}

void Ring::ReturnBuffer(const Completion& c) {
  if (!c.has_buffer()) return;
  const uint16_t id = c.buffer_id();
  VOLLEY_CHECK(buffer_ring_ != nullptr && id < recv_buffers_ && held_[id],
               "a receive buffer given back twice, or never taken");
  held_[id] = false;
  --buffers_held_;
  io_uring_buf_ring_add(buffer_ring_, buffers_ + size_t{id} * recv_buffer_size_,
                        static_cast<unsigned>(recv_buffer_size_), id,
                        io_uring_buf_ring_mask(recv_buffers_), 0);
  io_uring_buf_ring_advance(buffer_ring_, 1);
}

void Ring::Handle(uint8_t op, Handler handler) { handlers_[op] = std::move(handler); }

void Ring::Unknown(const Completion& c) {
  ++unknown_completions_;
  const uint8_t op = OpOf(c.tag);
  if (!unknown_logged_[op]) {
    unknown_logged_[op] = true;
    base::LogWarning(
        "io_uring: completion of operation %d, which has no handler (tag %#x, result %d): "
        "dropped",
        op, c.tag, c.result);
  }
  ReturnBuffer(c);  // a buffer it holds is no one's: back to the ring
}

absl::Status Ring::SubmitAndDispatch(absl::Duration timeout) {
  return SubmitAndDrain(timeout, [this](const Completion& c) {
    const Handler& handler = handlers_[OpOf(c.tag)];
    if (handler) {
      handler(c);
    } else {
      Unknown(c);
    }
  });
}

absl::Status Ring::SubmitAndWait(absl::Duration timeout,
                                 const std::function<void(uint64_t, int)>& on_completion) {
  return SubmitAndDrain(timeout,
                        [&](const Completion& c) { on_completion(c.tag, c.result); });
}

absl::Status Ring::SubmitAndDrain(absl::Duration timeout, const Handler& on_completion) {
  VOLLEY_CHECK(!disabled_, "a ring created with enable_later used before Enable()");
  __kernel_timespec ts = KernelTimespec(timeout);
  io_uring_cqe* first = nullptr;
  const absl::Time entered = absl::Now();
  const int rc = io_uring_submit_and_wait_timeout(ring_, &first, 1, &ts, nullptr);
  last_wait_ = absl::Now() - entered;
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    return absl::InternalError(absl::StrCat("io_uring_enter: ", ErrnoText(-rc)));
  }
  // Copy each batch out of the queue and advance before handling it: the
  // handlers submit, and a flush of a full submission queue may reap.
  io_uring_cqe* cqes[kCompletionBatch];
  Completion done[kCompletionBatch];
  for (;;) {
    const unsigned n = io_uring_peek_batch_cqe(ring_, cqes, kCompletionBatch);
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) {
      done[i] = Completion{cqes[i]->user_data, cqes[i]->res, cqes[i]->flags};
      if (done[i].result == -ENOBUFS && ring_receive_ops_[OpOf(done[i].tag)]) ++out_of_buffers_;
      if (done[i].has_buffer()) {
        const uint16_t id = done[i].buffer_id();
        VOLLEY_CHECK(id < recv_buffers_ && !held_[id], "the kernel handed out a held buffer");
        held_[id] = true;
        ++buffers_held_;
      }
    }
    io_uring_cq_advance(ring_, n);
    for (unsigned i = 0; i < n; ++i) on_completion(done[i]);
  }
  return absl::OkStatus();
}

}  // namespace volley::reactor
