// sink.cc - volley-sink's io_uring server; see sink.h.
#include "tools/sink/sink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/json.h"
#include "base/slot_table.h"
#include "base/status.h"

namespace volley::sink {

// ---------------------------------------------------------------------------
// JSON output

std::string StatsJson(const Stats& s) {
  std::string out = absl::StrCat(
      "{\"sessions\":", s.sessions, ",\"messages\":", s.messages,
      ",\"recipients\":", s.recipients, ",\"bytes\":", s.bytes,
      ",\"connections\":", s.connections,
      ",\"peak_connections\":", s.peak_connections, ",\"listeners\":[");
  for (size_t i = 0; i < s.listeners.size(); ++i) {
    const ListenerStats& l = s.listeners[i];
    if (i > 0) out.push_back(',');
    out.append("{\"listen\":");
    base::AppendJsonString(&out, l.listen);
    absl::StrAppend(&out, ",\"sessions\":", l.sessions,
                    ",\"peak_connections\":", l.peak_connections, "}");
  }
  out.append("]}");
  return out;
}

std::string RecordJson(const AcceptedMessage& m) {
  std::string out = "{\"from\":";
  base::AppendJsonString(&out, m.from);
  out.append(",\"rcpts\":[");
  for (size_t i = 0; i < m.rcpts.size(); ++i) {
    if (i > 0) out.push_back(',');
    base::AppendJsonString(&out, m.rcpts[i]);
  }
  absl::StrAppend(&out, "],\"bytes\":", m.bytes, "}\n");
  return out;
}

namespace {

// ---------------------------------------------------------------------------
// Addresses and files

std::string ErrnoText(int err) { return std::strerror(err); }

// Av - Debian 12's absl::string_view is not std::string_view; convert for StrCat.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct BoundSocket {
  int fd = -1;
  std::string name;  // "127.0.0.1:2525" after bind, with the real port
};

std::string FormatAddress(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    return absl::StrCat("[", host, "]:", ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
  return absl::StrCat(host, ":", ntohs(a->sin_port));
}

// ParseListen - "HOST:PORT" into a socket address.
absl::Status ParseListen(std::string_view text, sockaddr_storage* ss,
                         socklen_t* len) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen '", Av(text), "': want HOST:PORT"));
  }
  std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  uint32_t port = 0;
  bool port_ok = !port_text.empty() && port_text.size() <= 5;
  for (char c : port_text) {
    if (c < '0' || c > '9') port_ok = false;
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!port_ok || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen '", Av(text), "': bad port"));
  }
  *ss = {};
  if (host == "localhost") host = "127.0.0.1";
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a = reinterpret_cast<sockaddr_in6*>(ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(),
                  &a->sin6_addr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen '", Av(text), "': bad IPv6 address"));
    }
    *len = sizeof(sockaddr_in6);
    return absl::OkStatus();
  }
  auto* a = reinterpret_cast<sockaddr_in*>(ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen '", Av(text), "': want an IPv4 literal, localhost or [IPv6]"));
  }
  *len = sizeof(sockaddr_in);
  return absl::OkStatus();
}

absl::StatusOr<BoundSocket> Listen(std::string_view text) {
  sockaddr_storage ss;
  socklen_t len = 0;
  RETURN_IF_ERROR(ParseListen(text, &ss, &len));
  BoundSocket b;
  b.fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (b.fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen '", Av(text), "': socket: ", ErrnoText(errno)));
  }
  const int one = 1;
  setsockopt(b.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(b.fd, reinterpret_cast<sockaddr*>(&ss), len) < 0 ||
      listen(b.fd, SOMAXCONN) < 0) {
    const int err = errno;
    close(b.fd);
    return absl::UnavailableError(
        absl::StrCat("--listen '", Av(text), "': ", ErrnoText(err)));
  }
  socklen_t got = sizeof(ss);
  getsockname(b.fd, reinterpret_cast<sockaddr*>(&ss), &got);
  b.name = FormatAddress(ss);
  return b;
}

int64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// ---------------------------------------------------------------------------
// user_data: a base::SlotTable tag (slot | generation | op). A completion for a
// connection that is gone is dropped. Accept and signal tags use the slot part
// for the listener index and do not go through the table.

enum Op : uint8_t { kAccept = 1, kRecv = 2, kSend = 3, kSignal = 4 };

struct Connection {
  Connection(const SessionOptions& options, size_t buffer_size)
      : session(options), buffer(new char[buffer_size]) {}

  int fd = -1;
  uint32_t listener = 0;
  Session session;
  std::unique_ptr<char[]> buffer;  // recv buffer
  std::string out;                 // replies being sent
  size_t out_sent = 0;
};

using Connections = base::SlotTable<Connection>;

struct Listener {
  BoundSocket socket;
  ListenerStats stats;
  bool armed = false;   // an accept is in flight
  bool paused = false;  // accept failed for lack of resources; retry at next tick
};

// Replies bigger than this are not kept as spare capacity after being sent.
constexpr size_t kKeepOutCapacity = 64 * 1024;
// Recorded lines are written once this many octets are buffered.
constexpr size_t kRecordFlushSize = 64 * 1024;
// Completions handled per batch.
constexpr unsigned kCqeBatch = 256;

}  // namespace

// ---------------------------------------------------------------------------
// The server

class Server::Impl {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)) {}
  ~Impl();

  absl::Status Init();
  absl::Status Run();
  Stats stats() const;
  std::vector<std::string> listening() const;

 private:
  io_uring_sqe* GetSqe();
  void ArmAccept(uint32_t index);
  void ArmSignal();
  void ArmRecv(uint32_t slot);
  void ArmSend(uint32_t slot);

  void OnAccept(uint32_t index, int res, uint32_t flags);
  void OnRecv(uint32_t slot, int res);
  void OnSend(uint32_t slot, int res);
  void CloseConnection(uint32_t slot);

  absl::Status Tick();
  absl::Status FlushRecord();

  ServerOptions options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool multishot_accept_ = true;
  int signal_fd_ = -1;
  sigset_t old_mask_{};
  bool mask_set_ = false;
  signalfd_siginfo siginfo_{};
  bool stop_ = false;

  std::vector<Listener> listeners_;
  Connections conns_;
  std::vector<AcceptedMessage> accepted_;  // reused per recv

  int record_fd_ = -1;
  std::string record_buffer_;
  absl::Status record_status_;  // first failure writing the record file

  Stats stats_;
  uint64_t stale_completions_ = 0;
};

Server::Impl::~Impl() {
  // The ring goes first: that cancels every operation still pointing at a
  // connection's buffer, so the buffers and descriptors can then go.
  if (ring_ready_) io_uring_queue_exit(&ring_);
  conns_.ForEach([](uint32_t, Connection& c) {
    if (c.fd >= 0) close(c.fd);
  });
  for (Listener& l : listeners_) {
    if (l.socket.fd >= 0) close(l.socket.fd);
  }
  if (signal_fd_ >= 0) close(signal_fd_);
  if (mask_set_) pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  if (record_fd_ >= 0) close(record_fd_);
}

absl::Status Server::Impl::Init() {
  if (options_.listen.empty()) options_.listen.push_back("127.0.0.1:2525");
  if (options_.session.hostname.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') {
      options_.session.hostname = name;
    } else {
      options_.session.hostname = "localhost";
    }
  }
  options_.session.keep_addresses = !options_.record_path.empty();
  if (options_.recv_buffer_size == 0) {
    return absl::InvalidArgumentError("recv_buffer_size must be positive");
  }

  for (const std::string& text : options_.listen) {
    ASSIGN_OR_RETURN(BoundSocket b, Listen(text));
    Listener& l = listeners_.emplace_back();
    l.socket = b;
    l.stats.listen = b.name;
  }

  if (!options_.record_path.empty()) {
    record_fd_ = open(options_.record_path.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (record_fd_ < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--record ", options_.record_path, ": ", ErrnoText(errno)));
    }
  }

  // Signals arrive through a signalfd read by the ring, never as handlers.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &mask, &old_mask_) != 0) {
    return absl::InternalError("pthread_sigmask failed");
  }
  mask_set_ = true;
  signal_fd_ = signalfd(-1, &mask, SFD_CLOEXEC);
  if (signal_fd_ < 0) {
    return absl::InternalError(absl::StrCat("signalfd: ", ErrnoText(errno)));
  }

  // A large completion queue: every connection may complete at once. Try the
  // single-thread flags first; older kernels refuse them with EINVAL.
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN;
  params.cq_entries = 16384;
  int ret = io_uring_queue_init_params(4096, &ring_, &params);
  if (ret == -EINVAL) {
    params = {};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = 16384;
    ret = io_uring_queue_init_params(4096, &ring_, &params);
  }
  if (ret < 0) {
    return absl::InternalError(absl::StrCat("io_uring_queue_init: ", ErrnoText(-ret)));
  }
  ring_ready_ = true;
  if ((params.features & IORING_FEAT_NODROP) == 0) {
    // Without NODROP an overflowing completion queue loses completions and with
    // them connections; refuse rather than hang connections silently.
    return absl::InternalError("io_uring lacks IORING_FEAT_NODROP (kernel 5.5+)");
  }
  return absl::OkStatus();
}

std::vector<std::string> Server::Impl::listening() const {
  std::vector<std::string> out;
  for (const Listener& l : listeners_) out.push_back(l.socket.name);
  return out;
}

Stats Server::Impl::stats() const {
  Stats s = stats_;
  s.listeners.clear();
  for (const Listener& l : listeners_) s.listeners.push_back(l.stats);
  return s;
}

// GetSqe - a submission entry; submit to make room when the queue is full.
io_uring_sqe* Server::Impl::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  VOLLEY_CHECK(sqe != nullptr, "no submission entry after submit");
  return sqe;
}

void Server::Impl::ArmAccept(uint32_t index) {
  Listener& l = listeners_[index];
  io_uring_sqe* sqe = GetSqe();
  if (multishot_accept_) {
    io_uring_prep_multishot_accept(sqe, l.socket.fd, nullptr, nullptr, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, l.socket.fd, nullptr, nullptr, SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(sqe, Connections::MakeTag(index, 0, kAccept));
  l.armed = true;
}

void Server::Impl::ArmSignal() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, signal_fd_, &siginfo_, sizeof(siginfo_), 0);
  io_uring_sqe_set_data64(sqe, Connections::MakeTag(0, 0, kSignal));
}

void Server::Impl::ArmRecv(uint32_t slot) {
  Connection& c = conns_.at(slot);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_recv(sqe, c.fd, c.buffer.get(), options_.recv_buffer_size, 0);
  io_uring_sqe_set_data64(sqe, conns_.Tag(slot, kRecv));
}

void Server::Impl::ArmSend(uint32_t slot) {
  Connection& c = conns_.at(slot);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_send(sqe, c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent,
                     MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, conns_.Tag(slot, kSend));
}

void Server::Impl::OnAccept(uint32_t index, int res, uint32_t flags) {
  Listener& l = listeners_[index];
  if ((flags & IORING_CQE_F_MORE) == 0) l.armed = false;
  if (res < 0) {
    switch (-res) {
      case EINVAL:
        if (multishot_accept_) {
          // The kernel predates multishot accept (5.19): fall back to one-shot.
          multishot_accept_ = false;
          break;
        }
        l.paused = true;
        break;
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM:
        // Out of descriptors or memory: retrying at once would spin.
        l.paused = true;
        break;
      default:
        break;  // ECONNABORTED and the like: the next client is fine
    }
    if (!l.armed && !l.paused && !stop_) ArmAccept(index);
    return;
  }
  if (!l.armed && !stop_) ArmAccept(index);

  const int one = 1;
  // Replies go out once per input; Nagle would hold one back behind a delayed ACK.
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  const uint32_t slot = conns_.Acquire(options_.session, options_.recv_buffer_size);
  Connection& conn = conns_.at(slot);
  conn.fd = res;
  conn.listener = index;

  ++stats_.sessions;
  ++stats_.connections;
  stats_.peak_connections = std::max(stats_.peak_connections, stats_.connections);
  ++l.stats.sessions;
  ++l.stats.connections;
  l.stats.peak_connections = std::max(l.stats.peak_connections, l.stats.connections);

  conn.session.Start(&conn.out);
  ArmSend(slot);
}

void Server::Impl::OnRecv(uint32_t slot, int res) {
  Connection& c = conns_.at(slot);
  if (res == -EINTR || res == -EAGAIN) {
    ArmRecv(slot);
    return;
  }
  if (res <= 0) {  // EOF or a connection error: nothing more to say
    CloseConnection(slot);
    return;
  }
  accepted_.clear();
  c.session.Feed(std::string_view(c.buffer.get(), static_cast<size_t>(res)), &c.out,
                 &accepted_);
  for (const AcceptedMessage& m : accepted_) {
    ++stats_.messages;
    stats_.recipients += m.recipients;
    stats_.bytes += m.bytes;
    if (record_fd_ >= 0) record_buffer_.append(RecordJson(m));
  }
  if (record_buffer_.size() >= kRecordFlushSize) {
    absl::Status st = FlushRecord();
    if (!st.ok() && record_status_.ok()) record_status_ = st;
  }
  if (!c.out.empty()) {
    ArmSend(slot);
  } else if (c.session.closed()) {
    CloseConnection(slot);
  } else {
    ArmRecv(slot);
  }
}

void Server::Impl::OnSend(uint32_t slot, int res) {
  Connection& c = conns_.at(slot);
  if (res == -EINTR || res == -EAGAIN) {
    ArmSend(slot);
    return;
  }
  if (res < 0) {
    CloseConnection(slot);
    return;
  }
  c.out_sent += static_cast<size_t>(res);
  if (c.out_sent < c.out.size()) {
    ArmSend(slot);  // a short send: the rest, in order
    return;
  }
  c.out_sent = 0;
  if (c.out.capacity() > kKeepOutCapacity) {
    std::string().swap(c.out);
  } else {
    c.out.clear();
  }
  if (c.session.closed()) {
    CloseConnection(slot);  // QUIT answered
  } else {
    ArmRecv(slot);
  }
}

// CloseConnection - close and free a connection. Invariant: it has no operation in
// flight (each connection has at most one, and it is this completion's).
void Server::Impl::CloseConnection(uint32_t slot) {
  Connection& c = conns_.at(slot);
  Listener& l = listeners_[c.listener];
  close(c.fd);
  conns_.Release(slot);
  --stats_.connections;
  --l.stats.connections;
  // A descriptor came free: a listener paused for lack of them may go on.
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    if (listeners_[i].paused && !stop_) {
      listeners_[i].paused = false;
      if (!listeners_[i].armed) ArmAccept(i);
    }
  }
}

absl::Status Server::Impl::FlushRecord() {
  if (record_fd_ < 0 || record_buffer_.empty()) return absl::OkStatus();
  absl::Status st = base::WriteAll(record_fd_, record_buffer_, options_.record_path);
  record_buffer_.clear();
  return st;
}

// Tick - the once-a-second work: record lines, stats file, paused listeners.
absl::Status Server::Impl::Tick() {
  RETURN_IF_ERROR(record_status_);
  RETURN_IF_ERROR(FlushRecord());
  if (!options_.stats_path.empty()) {
    RETURN_IF_ERROR(base::WriteFileAtomically(options_.stats_path, StatsJson(stats()), 0644));
  }
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    if (listeners_[i].paused && !stop_) {
      listeners_[i].paused = false;
      if (!listeners_[i].armed) ArmAccept(i);
    }
  }
  return absl::OkStatus();
}

absl::Status Server::Impl::Run() {
  for (uint32_t i = 0; i < listeners_.size(); ++i) ArmAccept(i);
  ArmSignal();
  RETURN_IF_ERROR(Tick());

  const int64_t interval =
      std::max<int64_t>(absl::ToInt64Nanoseconds(options_.flush_interval), 1000000);
  int64_t next_tick = MonotonicNanos() + interval;
  io_uring_cqe* cqes[kCqeBatch];
  while (!stop_) {
    const int64_t wait = std::max<int64_t>(next_tick - MonotonicNanos(), 1000000);
    __kernel_timespec ts{};
    ts.tv_sec = wait / 1000000000;
    ts.tv_nsec = wait % 1000000000;
    io_uring_cqe* first = nullptr;
    const int ret = io_uring_submit_and_wait_timeout(&ring_, &first, 1, &ts, nullptr);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN &&
        ret != -EBUSY) {
      return absl::InternalError(
          absl::StrCat("io_uring_submit_and_wait_timeout: ", ErrnoText(-ret)));
    }
    // Copy each batch out of the ring before handling it: handlers submit.
    for (;;) {
      const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, kCqeBatch);
      if (n == 0) break;
      struct Done {
        uint64_t data;
        int res;
        uint32_t flags;
      } done[kCqeBatch];
      for (unsigned i = 0; i < n; ++i) {
        done[i] = {cqes[i]->user_data, cqes[i]->res, cqes[i]->flags};
      }
      io_uring_cq_advance(&ring_, n);
      for (unsigned i = 0; i < n; ++i) {
        const Done& d = done[i];
        const auto op = static_cast<Op>(Connections::OpOf(d.data));
        const uint32_t slot = Connections::SlotOf(d.data);
        switch (op) {
          case kAccept:
            OnAccept(slot, d.res, d.flags);
            break;
          case kSignal:
            if (d.res == -EINTR || d.res == -EAGAIN) {
              ArmSignal();
            } else {
              stop_ = true;  // SIGTERM or SIGINT (or the signalfd broke)
            }
            break;
          case kRecv:
          case kSend:
            if (conns_.Find(d.data) == nullptr) {
              ++stale_completions_;
              break;
            }
            if (op == kRecv) {
              OnRecv(slot, d.res);
            } else {
              OnSend(slot, d.res);
            }
            break;
          default:
            VOLLEY_CHECK(false, "bad user_data in completion");
        }
      }
    }
    if (MonotonicNanos() >= next_tick) {
      RETURN_IF_ERROR(Tick());
      next_tick = MonotonicNanos() + interval;
    }
  }
  return Tick();
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status Server::Run() { return impl_->Run(); }
std::vector<std::string> Server::listening() const { return impl_->listening(); }
Stats Server::stats() const { return impl_->stats(); }

}  // namespace volley::sink
