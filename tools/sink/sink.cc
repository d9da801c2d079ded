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
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/file.h"
#include "base/json.h"
#include "base/slot_table.h"
#include "base/status.h"
#include "engine/tls/tls.h"

namespace volley::sink {

// ---------------------------------------------------------------------------
// JSON output

std::string StatsJson(const Stats& s) {
  std::string out = absl::StrCat(
      "{\"sessions\":", s.sessions, ",\"messages\":", s.messages,
      ",\"recipients\":", s.recipients, ",\"bytes\":", s.bytes,
      ",\"connections\":", s.connections,
      ",\"peak_connections\":", s.peak_connections, ",\"rejects\":", s.rejects,
      ",\"tls_sessions\":", s.tls_sessions, ",\"listeners\":[");
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

std::string RecordJson(const AcceptedMessage& m, absl::Time accepted) {
  std::string out = absl::StrFormat("{\"ts\":%.3f,\"from\":",
                                    absl::ToDoubleSeconds(accepted - absl::UnixEpoch()));
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

// Now - the monotonic clock as an absl::Time for the sessions (greylisting):
// only differences between two readings mean anything.
absl::Time Now() { return absl::FromUnixNanos(MonotonicNanos()); }

// ---------------------------------------------------------------------------
// user_data: a base::SlotTable tag (slot | generation | op). A completion for a
// connection that is gone is dropped. Accept and signal tags use the slot part
// for the listener index and do not go through the table.

enum Op : uint8_t { kAccept = 1, kRecv = 2, kSend = 3, kSignal = 4, kTimeout = 5 };

struct Connection {
  Connection(const SessionOptions& options, size_t buffer_size)
      : session(options), buffer(new char[buffer_size]) {}

  int fd = -1;
  uint32_t listener = 0;
  Session session;
  std::unique_ptr<char[]> buffer;  // recv buffer
  std::string out;                 // octets being sent (ciphertext under TLS)
  size_t out_sent = 0;

  // The session's decisions not yet carried out: steps[next_step...], then
  // start TLS or close. `waited` is set once the current step's delay is over.
  std::vector<Step> steps;
  size_t next_step = 0;
  bool waited = false;
  bool start_tls = false;
  bool close = false;
  __kernel_timespec timeout{};  // read by the kernel when the timeout is submitted

  // After STARTTLS: the TLS session, and whether its handshake is done.
  std::optional<tls::Session> tls;
  bool handshaken = false;
  bool tls_shutdown = false;  // close_notify queued
  std::string plain;          // decrypted input, reused
};

using Connections = base::SlotTable<Connection>;

struct Listener {
  BoundSocket socket;
  ListenerStats stats;
  SessionOptions session;  // with the listener's profile
  bool armed = false;   // an accept is in flight
  bool paused = false;  // accept failed for lack of resources; retry at next tick
};

// Mix - SplitMix64's finaliser: turns a session number into an unrelated seed.
uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

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
  void ArmTimeout(uint32_t slot, absl::Duration delay);

  void OnAccept(uint32_t index, int res, uint32_t flags);
  void OnRecv(uint32_t slot, int res);
  void OnTlsRecv(uint32_t slot, std::string_view ciphertext);
  void OnSend(uint32_t slot, int res);
  void OnTimeout(uint32_t slot);
  void Absorb(Connection& c);
  void DrainCiphertext(Connection& c);
  void Pump(uint32_t slot);
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
  Output output_;  // a session's decisions, reused per recv
  std::unique_ptr<Greylist> greylist_;
  std::optional<tls::Context> tls_context_;

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
    l.session = options_.session;
    l.session.profile = &options_.profiles.ForListener(text, b.name);
    l.session.profiles = &options_.profiles;
  }
  // A [listener] entry that matches nothing is a typo, not a profile to ignore.
  for (const std::string& key : options_.profiles.listener_keys()) {
    bool found = false;
    for (size_t i = 0; i < listeners_.size(); ++i) {
      found = found || key == options_.listen[i] || key == listeners_[i].socket.name;
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("profiles: [listener.\"", key, "\"] matches no --listen address"));
    }
  }
  greylist_ = std::make_unique<Greylist>(options_.greylist_max_entries);
  for (Listener& l : listeners_) l.session.greylist = greylist_.get();

  if (options_.profiles.uses_starttls() || !options_.tls_cert_out.empty()) {
    auto pem = tls::GenerateSelfSigned({options_.session.hostname});
    if (!pem.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "STARTTLS certificate for --hostname ", options_.session.hostname, ": ",
          pem.status().message()));
    }
    tls::ServerContextOptions tls_options;
    tls_options.cert_pem = pem->cert_pem;
    tls_options.key_pem = pem->key_pem;
    auto ctx = tls::Context::Server(tls_options);
    if (!ctx.ok()) {
      return absl::InternalError(absl::StrCat("TLS: ", ctx.status().message()));
    }
    tls_context_.emplace(*std::move(ctx));
    if (!options_.tls_cert_out.empty()) {
      RETURN_IF_ERROR(base::WriteFileAtomically(options_.tls_cert_out, pem->cert_pem, 0644));
    }
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

void Server::Impl::ArmTimeout(uint32_t slot, absl::Duration delay) {
  Connection& c = conns_.at(slot);
  const int64_t ns = absl::ToInt64Nanoseconds(delay);
  c.timeout.tv_sec = ns / 1000000000;
  c.timeout.tv_nsec = ns % 1000000000;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_timeout(sqe, &c.timeout, 0, 0);
  io_uring_sqe_set_data64(sqe, conns_.Tag(slot, kTimeout));
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

  // Each session draws its fault decisions from its own seed, so that one
  // session's decisions do not depend on how others interleave.
  SessionOptions session_options = l.session;
  session_options.seed = Mix(options_.seed ^ Mix(stats_.sessions));
  const uint32_t slot = conns_.Acquire(session_options, options_.recv_buffer_size);
  Connection& conn = conns_.at(slot);
  conn.fd = res;
  conn.listener = index;

  ++stats_.sessions;
  ++stats_.connections;
  stats_.peak_connections = std::max(stats_.peak_connections, stats_.connections);
  ++l.stats.sessions;
  ++l.stats.connections;
  l.stats.peak_connections = std::max(l.stats.peak_connections, l.stats.connections);

  output_.Clear();
  conn.session.Start(l.stats.connections, &output_);
  Absorb(conn);
  Pump(slot);
}

// Absorb - take a session's decisions (in output_) into the connection's queue,
// and count what they say.
void Server::Impl::Absorb(Connection& c) {
  for (const AcceptedMessage& m : output_.accepted) {
    ++stats_.messages;
    stats_.recipients += m.recipients;
    stats_.bytes += m.bytes;
    if (record_fd_ >= 0) record_buffer_.append(RecordJson(m, absl::Now()));
  }
  stats_.rejects += output_.rejects;
  if (c.next_step == c.steps.size()) {
    c.steps.clear();
    c.next_step = 0;
  }
  for (Step& s : output_.steps) c.steps.push_back(std::move(s));
  c.start_tls = c.start_tls || output_.start_tls;
  c.close = c.close || output_.close;
  output_.Clear();
}

// DrainCiphertext - move what the TLS session wants sent into the send buffer.
void Server::Impl::DrainCiphertext(Connection& c) {
  const std::string_view pending = c.tls->PendingCiphertext();
  if (pending.empty()) return;
  c.out.append(pending.data(), pending.size());
  c.tls->ConsumeCiphertext(pending.size());
}

// Pump - carry out the connection's decisions in order: send what is waiting,
// then each step (its delay as an io_uring timeout, then its bytes), then start
// TLS or close; with nothing left, read. Invariant: called only when the
// connection has no operation in flight, and it leaves at most one.
void Server::Impl::Pump(uint32_t slot) {
  Connection& c = conns_.at(slot);
  if (c.out_sent < c.out.size()) {
    ArmSend(slot);
    return;
  }
  while (c.next_step < c.steps.size()) {
    Step& s = c.steps[c.next_step];
    if (s.delay > absl::ZeroDuration() && !c.waited) {
      ArmTimeout(slot, s.delay);
      return;
    }
    c.waited = false;
    ++c.next_step;
    if (s.bytes.empty()) continue;
    c.out.clear();
    c.out_sent = 0;
    if (c.tls.has_value()) {
      if (!c.tls->WritePlaintext(s.bytes).ok()) {
        CloseConnection(slot);
        return;
      }
      DrainCiphertext(c);
    } else {
      c.out.swap(s.bytes);
    }
    ArmSend(slot);
    return;
  }
  c.steps.clear();
  c.next_step = 0;
  if (c.close) {
    if (c.tls.has_value() && c.handshaken && !c.tls_shutdown) {
      // Say goodbye in TLS too (close_notify), then close.
      c.tls_shutdown = true;
      c.tls->Shutdown();
      c.out.clear();
      c.out_sent = 0;
      DrainCiphertext(c);
      if (!c.out.empty()) {
        ArmSend(slot);
        return;
      }
    }
    CloseConnection(slot);
    return;
  }
  if (c.start_tls) {
    c.start_tls = false;
    auto session = tls::Session::Create(*tls_context_, tls::Role::kServer);
    if (!session.ok()) {
      CloseConnection(slot);
      return;
    }
    c.tls.emplace(*std::move(session));
  }
  ArmRecv(slot);
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
  const std::string_view input(c.buffer.get(), static_cast<size_t>(res));
  if (c.tls.has_value()) {
    OnTlsRecv(slot, input);
  } else {
    output_.Clear();
    c.session.Feed(input, Now(), &output_);
    Absorb(c);
  }
  if (record_buffer_.size() >= kRecordFlushSize) {
    absl::Status st = FlushRecord();
    if (!st.ok() && record_status_.ok()) record_status_ = st;
  }
  Pump(slot);
}

// OnTlsRecv - ciphertext arrived: drive the handshake, then feed the plaintext
// to the SMTP session. What TLS wants sent (handshake flights, alerts) goes into
// the send buffer ahead of any reply.
void Server::Impl::OnTlsRecv(uint32_t slot, std::string_view ciphertext) {
  Connection& c = conns_.at(slot);
  c.tls->FeedCiphertext(ciphertext);
  c.out.clear();
  c.out_sent = 0;
  if (!c.handshaken) {
    auto progress = c.tls->Handshake();
    DrainCiphertext(c);
    if (!progress.ok()) {
      c.close = true;  // after the alert, if there is one
      return;
    }
    if (*progress == tls::Session::Progress::kWantIo) return;
    c.handshaken = true;
    ++stats_.tls_sessions;
  }
  // Whatever plaintext is ready now: the client's EHLO may have come with the
  // handshake's last flight.
  for (;;) {
    c.plain.clear();
    auto got = c.tls->ReadPlaintext(&c.plain, options_.recv_buffer_size);
    DrainCiphertext(c);
    if (!got.ok()) {
      c.close = true;
      return;
    }
    if (*got == 0) break;
    output_.Clear();
    c.session.Feed(c.plain, Now(), &output_);
    Absorb(c);
    if (c.session.closed()) break;
  }
  if (c.tls->peer_closed()) c.close = true;
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
  Pump(slot);
}

void Server::Impl::OnTimeout(uint32_t slot) {
  // -ETIME is the timer firing; anything else (a cancel at shutdown) ends the
  // wait as well.
  conns_.at(slot).waited = true;
  Pump(slot);
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
          case kTimeout:
            if (conns_.Find(d.data) == nullptr) {
              ++stale_completions_;
              break;
            }
            if (op == kRecv) {
              OnRecv(slot, d.res);
            } else if (op == kSend) {
              OnSend(slot, d.res);
            } else {
              OnTimeout(slot);
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
