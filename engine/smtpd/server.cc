// server.cc - the io_uring SMTP server of volley-sink and volleyd's inbound listener; see
// server.h.
#include "engine/smtpd/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/file.h"
#include "base/json.h"
#include "base/status.h"
#include "engine/reactor/ring.h"
#include "engine/reactor/slot_table.h"
#include "engine/smtpd/listen.h"
#include "engine/tls/tls.h"

namespace volley::smtpd {

// ---------------------------------------------------------------------------
// JSON output

std::string StatsJson(const Stats& s) {
  std::string out = absl::StrCat(
      "{\"sessions\":", s.sessions, ",\"messages\":", s.messages,
      ",\"recipients\":", s.recipients, ",\"bytes\":", s.bytes,
      ",\"connections\":", s.connections,
      ",\"peak_connections\":", s.peak_connections, ",\"rejects\":", s.rejects,
      ",\"tls_sessions\":", s.tls_sessions, ",\"tls_resumed\":", s.tls_resumed,
      ",\"sessions_without_quit\":", s.sessions_without_quit, ",\"listeners\":[");
  for (size_t i = 0; i < s.listeners.size(); ++i) {
    const ListenerStats& l = s.listeners[i];
    if (i > 0) out.push_back(',');
    out.append("{\"listen\":");
    base::AppendJsonString(&out, l.listen);
    absl::StrAppend(&out, ",\"sessions\":", l.sessions,
                    ",\"peak_connections\":", l.peak_connections,
                    ",\"connections\":", l.connections, ",\"messages\":", l.messages,
                    ",\"recipients\":", l.recipients, "}");
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

std::string ErrnoText(int err) { return std::strerror(err); }

int64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Now - the monotonic clock as an absl::Time for the sessions (greylisting):
// only differences between two readings mean anything. The same clock in every
// thread, so the shared greylist compares like with like.
absl::Time Now() { return absl::FromUnixNanos(MonotonicNanos()); }

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
// Ring sizes: a large completion queue, since every connection may complete at once.
constexpr unsigned kSqEntries = 4096;
constexpr unsigned kCqEntries = 16384;
// Descriptors kept free, beyond the listening sockets, when checking
// RLIMIT_NOFILE: rings, eventfds, signalfd, the stats, record and HTTP sockets.
constexpr uint64_t kSpareDescriptors = 64;
// A STARTTLS certificate chain or key file larger than this is not one.
constexpr size_t kMaxPemFileSize = 1 << 20;

// ---------------------------------------------------------------------------
// Counters

// Counter - a count written by one thread (its shard) and read by any. Relaxed
// atomics: the writer's add is a plain load and store, no locked instruction.
class Counter {
 public:
  void Add(uint64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Gauge - open connections, changed by every shard, with its peak.
class Gauge {
 public:
  // Up - one more; returns how many are open now, this one included.
  uint64_t Up() {
    const uint64_t now = now_.fetch_add(1, std::memory_order_relaxed) + 1;
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak &&
           !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return now;
  }
  void Down() { now_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t now() const { return now_.load(std::memory_order_relaxed); }
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> now_{0};
  std::atomic<uint64_t> peak_{0};
};

// A shard's own counters, on their own cache lines.
struct alignas(64) ShardCounters {
  Counter sessions;
  Counter messages;
  Counter recipients;
  Counter bytes;
  Counter rejects;
  Counter tls_sessions;
  Counter tls_resumed;
  Counter sessions_without_quit;
};

// A shard's counters for one listening address.
struct ListenerCounters {
  Counter sessions;
  Counter messages;
  Counter recipients;
};

// Address - one listening address; every shard has a socket for it.
struct Address {
  std::string name;                 // bound, "127.0.0.1:2525"
  const Profile* profile = nullptr;
  alignas(64) Gauge connections;    // open on it, over every shard
};

// Common - what the shards share: fixed once Create() returns, but for the atomics
// and the greylist (which locks).
struct Common {
  ServerOptions options;  // hostname resolved
  std::vector<std::unique_ptr<Address>> addresses;
  alignas(64) Gauge connections;
  alignas(64) std::atomic<uint64_t> accepted{0};  // session numbers, accept order
  std::unique_ptr<Greylist> greylist;
  int record_fd = -1;
  std::string cert_pem;  // STARTTLS certificate and key; empty: no STARTTLS
  std::string key_pem;
  // Seals the session tickets of every shard's tls::Context alike, so that a
  // client resumes whichever shard the kernel hands its next connection to.
  std::string ticket_key;

  // Open connections per client IP, when max_connections_per_ip is set (like
  // Postfix's anvil, but in process): shards add and remove under the mutex.
  std::mutex per_ip_mu;
  absl::flat_hash_map<std::string, uint32_t> per_ip;  // guarded by per_ip_mu
};

// ReadPemFile - a whole PEM file of at most kMaxPemFileSize octets.
absl::StatusOr<std::string> ReadPemFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InvalidArgumentError(ErrnoText(errno));
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return absl::InvalidArgumentError(ErrnoText(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxPemFileSize) {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat("larger than ", kMaxPemFileSize, " octets: not a PEM file"));
    }
  }
  close(fd);
  return text;
}

// PeerAddress - the peer's IP address and its "ip:port" text; false when unknown.
bool PeerAddress(int fd, std::string* ip, std::string* ip_port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  *ip_port = FormatAddress(ss);
  const size_t colon = ip_port->rfind(':');
  *ip = ip_port->substr(0, colon);
  if (ip->size() >= 2 && ip->front() == '[') *ip = ip->substr(1, ip->size() - 2);
  return true;
}

// ---------------------------------------------------------------------------
// Tags: the reactor's codec (engine/reactor/tag.h: slot | generation | op). A
// completion for a connection that is gone is dropped. Accept tags use the slot
// part for the listener index and do not go through the table, nor does the
// wake-up read.

enum Op : uint8_t { kAccept = 1, kRecv = 2, kSend = 3, kWake = 4, kTimeout = 5 };

struct Connection {
  // own_buffer: octets of a receive buffer of its own (kernels without buffer
  // rings); 0 when receives take one from the shard's ring.
  Connection(const SessionOptions& options, size_t own_buffer)
      : session(options), buffer(own_buffer > 0 ? new char[own_buffer] : nullptr) {}

  int fd = -1;
  uint32_t listener = 0;
  Session session;
  std::unique_ptr<char[]> buffer;  // own recv buffer, or nullptr
  std::string out;                 // octets being sent (ciphertext under TLS)
  size_t out_sent = 0;

  // The session's decisions not yet carried out: steps[next_step...], then
  // start TLS or close. `waited` is set once the current step's delay is over.
  std::vector<Step> steps;
  size_t next_step = 0;
  bool waited = false;
  bool start_tls = false;
  bool close = false;
  reactor::Timespec timeout;  // read by the kernel when the timeout is submitted

  // After STARTTLS: the TLS session, and whether its handshake is done.
  std::optional<tls::Session> tls;
  bool handshaken = false;
  bool tls_shutdown = false;  // close_notify queued
  std::string plain;          // decrypted input, reused

  // Idle timeout: when the pending recv was armed (monotonic ns; 0: no recv in
  // flight), and whether the timeout fired (the socket's read side is shut,
  // so the recv ends; then the session's 421 is sent).
  int64_t reading_since = 0;
  bool timed_out = false;
  std::string client_ip;  // counted in Common::per_ip; empty: not counted
};

using Connections = reactor::SlotTable<Connection>;

// A shard's socket for one address.
struct Listener {
  int fd = -1;
  bool armed = false;   // an accept is in flight
  bool paused = false;  // accept failed for lack of resources; retry later
};

// ---------------------------------------------------------------------------
// Shard: one thread's ring, listeners and connections.

class Shard {
 public:
  explicit Shard(Common& common) : common_(common), options_(common.options) {}
  ~Shard();

  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Init - on the creating thread: the ring (disabled until Run, so that its
  // single issuer is the shard's thread), buffers, TLS. Takes the sockets.
  absl::Status Init(std::vector<int> listen_fds);
  // Run - on the shard's own thread, until Wake().
  absl::Status Run();
  // Wake - from any thread: make Run() return.
  void Wake();

  const ShardCounters& counters() const { return counters_; }
  const ListenerCounters& listener(size_t i) const { return listener_counters_[i]; }

 private:
  void ArmAccept(uint32_t index);
  void ArmWake();
  void ArmRecv(uint32_t slot);
  void ArmSend(uint32_t slot);
  void ArmTimeout(uint32_t slot, absl::Duration delay);

  void OnAccept(const reactor::Completion& done);
  void OnWake(const reactor::Completion& done);
  // OnConnection - a completion for a connection: dropped when it is stale.
  void OnConnection(const reactor::Completion& done);
  void OnRecv(uint32_t slot, const reactor::Completion& done);
  void OnTlsRecv(uint32_t slot, std::string_view ciphertext);
  void OnSend(uint32_t slot, int res);
  void OnTimeout(uint32_t slot);
  void Absorb(Connection& c);
  void DrainCiphertext(Connection& c);
  void Pump(uint32_t slot);
  void CloseConnection(uint32_t slot);
  void Unpause();

  absl::Status Tick();
  absl::Status FlushRecord();
  // ExpireIdle - shut the read side of connections silent past idle_timeout.
  void ExpireIdle();

  Common& common_;
  const ServerOptions& options_;
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
  bool stop_ = false;

  std::vector<Listener> listeners_;  // by address index
  size_t paused_ = 0;                // listeners paused
  std::unique_ptr<ListenerCounters[]> listener_counters_;
  Connections conns_;
  Output output_;  // a session's decisions, reused per recv
  std::optional<tls::Context> tls_context_;

  std::string record_buffer_;
  absl::Status record_status_;  // first failure writing the record file

  ShardCounters counters_;
  uint64_t stale_completions_ = 0;

  // Declared last, so destroyed first: that cancels every operation still
  // pointing at a connection's buffer or timeout before the connections go.
  reactor::Ring ring_;
};

Shard::~Shard() {
  conns_.ForEach([](uint32_t, Connection& c) {
    if (c.fd >= 0) close(c.fd);
  });
  for (Listener& l : listeners_) {
    if (l.fd >= 0) close(l.fd);
  }
  if (wake_fd_ >= 0) close(wake_fd_);
}

absl::Status Shard::Init(std::vector<int> listen_fds) {
  for (int fd : listen_fds) listeners_.push_back(Listener{fd, false, false});
  listener_counters_ = std::make_unique<ListenerCounters[]>(listeners_.size());

  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", ErrnoText(errno)));

  // The ring is created disabled and enabled by the shard's thread in Run(),
  // so that its single issuer is that thread. Receive buffers come from a
  // buffer ring (5.19+), so that an idle connection holds none; without it,
  // each connection gets its own (see Connection).
  reactor::RingOptions ring_options;
  ring_options.sq_entries = kSqEntries;
  ring_options.cq_entries = kCqEntries;
  ring_options.enable_later = true;
  ring_options.recv_buffers = kRecvBuffers;
  ring_options.recv_buffer_size = options_.recv_buffer_size;
  ring_options.buffer_ring = options_.buffer_ring;
  if (absl::Status st = ring_.Init(ring_options); !st.ok()) {
    return absl::InternalError(st.message());
  }
  ring_.Handle(kAccept, [this](const reactor::Completion& done) { OnAccept(done); });
  ring_.Handle(kWake, [this](const reactor::Completion& done) { OnWake(done); });
  for (Op op : {kRecv, kSend, kTimeout}) {
    ring_.Handle(op, [this](const reactor::Completion& done) { OnConnection(done); });
  }

  if (!common_.cert_pem.empty()) {
    // tls::Context is single-threaded: one per shard, on the one certificate.
    tls::ServerContextOptions tls_options;
    tls_options.cert_pem = common_.cert_pem;
    tls_options.key_pem = common_.key_pem;
    // One ticket per full handshake, as mail servers commonly send: a client's
    // next connection resumes instead of repeating the certificate's work.
    tls_options.session_tickets = 1;
    tls_options.ticket_key = common_.ticket_key;
    auto ctx = tls::Context::Server(tls_options);
    if (!ctx.ok()) {
      return absl::InternalError(absl::StrCat("TLS: ", ctx.status().message()));
    }
    tls_context_.emplace(*std::move(ctx));
  }
  return absl::OkStatus();
}

void Shard::Wake() {
  const uint64_t one = 1;
  while (write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

void Shard::ArmAccept(uint32_t index) {
  Listener& l = listeners_[index];
  ring_.PrepAccept(l.fd, reactor::MakeTag(index, 0, kAccept));
  l.armed = true;
}

void Shard::ArmWake() {
  ring_.PrepRead(wake_fd_, &wake_value_, sizeof(wake_value_), reactor::MakeTag(0, 0, kWake));
}

void Shard::ArmRecv(uint32_t slot) {
  Connection& c = conns_.at(slot);
  if (options_.idle_timeout > absl::ZeroDuration()) c.reading_since = MonotonicNanos();
  if (ring_.has_buffer_ring()) {
    ring_.PrepRecvFromRing(c.fd, conns_.Tag(slot, kRecv));
  } else {
    ring_.PrepRecv(c.fd, c.buffer.get(), options_.recv_buffer_size, conns_.Tag(slot, kRecv));
  }
}

void Shard::ArmSend(uint32_t slot) {
  Connection& c = conns_.at(slot);
  ring_.PrepSend(c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent,
                 conns_.Tag(slot, kSend));
}

void Shard::ArmTimeout(uint32_t slot, absl::Duration delay) {
  Connection& c = conns_.at(slot);
  ring_.PrepTimeout(&c.timeout, delay, conns_.Tag(slot, kTimeout));
}

void Shard::OnAccept(const reactor::Completion& done) {
  const uint32_t index = reactor::SlotOf(done.tag);
  const int res = done.result;
  Listener& l = listeners_[index];
  if (!done.more()) l.armed = false;
  if (res < 0) {
    bool pause = false;
    switch (-res) {
      case EINVAL:
        if (ring_.multishot_accept()) {
          // The kernel predates multishot accept (5.19): fall back to one-shot.
          ring_.FallBackToOneShotAccept();
          break;
        }
        pause = true;
        break;
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM:
        // Out of descriptors or memory: retrying at once would spin.
        pause = true;
        break;
      default:
        break;  // ECONNABORTED and the like: the next client is fine
    }
    if (pause && !l.paused) {
      l.paused = true;
      ++paused_;
    }
    if (!l.armed && !l.paused && !stop_) ArmAccept(index);
    return;
  }
  if (!l.armed && !stop_) ArmAccept(index);

  const int one = 1;
  // Replies go out once per input; Nagle would hold one back behind a delayed ACK.
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  Address& address = *common_.addresses[index];
  const uint64_t open_here = address.connections.Up();
  // Each session draws its fault decisions from its own seed, so that one
  // session's decisions do not depend on how others interleave.
  const uint64_t number = common_.accepted.fetch_add(1, std::memory_order_relaxed);
  const uint64_t open_total = common_.connections.Up();
  SessionOptions session_options = options_.session;
  session_options.profile = address.profile;
  session_options.seed = Mix(options_.seed ^ Mix(number));
  std::string ip;
  if (options_.max_connections_per_ip > 0 || options_.session.handler != nullptr) {
    PeerAddress(res, &ip, &session_options.peer);
  }
  const uint32_t slot =
      conns_.Acquire(session_options, ring_.has_buffer_ring() ? 0 : options_.recv_buffer_size);
  Connection& conn = conns_.at(slot);
  conn.fd = res;
  conn.listener = index;

  counters_.sessions.Add(1);
  listener_counters_[index].sessions.Add(1);

  bool over_ip = false;
  if (options_.max_connections_per_ip > 0 && !ip.empty()) {
    std::lock_guard<std::mutex> lock(common_.per_ip_mu);
    over_ip = ++common_.per_ip[ip] > options_.max_connections_per_ip;
    conn.client_ip = std::move(ip);
  }
  output_.Clear();
  if (options_.max_connections > 0 && open_total > options_.max_connections) {
    conn.session.Refuse(/*per_client=*/false, &output_);
  } else if (over_ip) {
    conn.session.Refuse(/*per_client=*/true, &output_);
  } else {
    conn.session.Start(open_here, &output_);
  }
  Absorb(conn);
  Pump(slot);
}

// Absorb - take a session's decisions (in output_) into the connection's queue,
// and count what they say.
void Shard::Absorb(Connection& c) {
  if (!output_.accepted.empty()) {
    uint64_t recipients = 0;
    uint64_t bytes = 0;
    for (const AcceptedMessage& m : output_.accepted) {
      recipients += m.recipients;
      bytes += m.bytes;
      if (common_.record_fd >= 0) record_buffer_.append(RecordJson(m, absl::Now()));
    }
    const uint64_t messages = output_.accepted.size();
    counters_.messages.Add(messages);
    counters_.recipients.Add(recipients);
    counters_.bytes.Add(bytes);
    ListenerCounters& lc = listener_counters_[c.listener];
    lc.messages.Add(messages);
    lc.recipients.Add(recipients);
  }
  if (output_.rejects > 0) counters_.rejects.Add(output_.rejects);
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
void Shard::DrainCiphertext(Connection& c) {
  const std::string_view pending = c.tls->PendingCiphertext();
  if (pending.empty()) return;
  c.out.append(pending.data(), pending.size());
  c.tls->ConsumeCiphertext(pending.size());
}

// Pump - carry out the connection's decisions in order: send what is waiting,
// then each step (its delay as an io_uring timeout, then its bytes), then start
// TLS or close; with nothing left, read. Invariant: called only when the
// connection has no operation in flight, and it leaves at most one.
void Shard::Pump(uint32_t slot) {
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

void Shard::OnWake(const reactor::Completion& done) {
  if (done.result == -EINTR || done.result == -EAGAIN) {
    ArmWake();
  } else {
    stop_ = true;  // Wake() (or the eventfd broke)
  }
}

void Shard::OnConnection(const reactor::Completion& done) {
  const uint32_t slot = reactor::SlotOf(done.tag);
  if (conns_.Find(done.tag) == nullptr) {
    ++stale_completions_;
  } else {
    switch (reactor::OpOf(done.tag)) {
      case kRecv:
        OnRecv(slot, done);
        break;
      case kSend:
        OnSend(slot, done.result);
        break;
      default:
        OnTimeout(slot);
        break;
    }
  }
  // The data is handled (or dropped with a stale completion).
  ring_.ReturnBuffer(done);
}

void Shard::OnRecv(uint32_t slot, const reactor::Completion& done) {
  Connection& c = conns_.at(slot);
  const int res = done.result;
  c.reading_since = 0;
  if (res == -EINTR || res == -EAGAIN || res == -ENOBUFS) {
    // ENOBUFS: every ring buffer held by a completion not yet handled; they
    // are given back as this batch is handled, before the next submit.
    ArmRecv(slot);
    return;
  }
  if (res == 0 && c.timed_out) {
    // ExpireIdle shut the read side: say why, then close.
    output_.Clear();
    c.session.Timeout(&output_);
    Absorb(c);
    Pump(slot);
    return;
  }
  if (res <= 0) {  // EOF or a connection error: nothing more to say
    CloseConnection(slot);
    return;
  }
  const std::string_view input = done.has_buffer()
                                     ? ring_.Received(done)
                                     : std::string_view(c.buffer.get(), static_cast<size_t>(res));
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
void Shard::OnTlsRecv(uint32_t slot, std::string_view ciphertext) {
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
    counters_.tls_sessions.Add(1);
    if (c.tls->resumed()) counters_.tls_resumed.Add(1);
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
    // Short of the maximum: all that can be decrypted now has been.
    if (*got < options_.recv_buffer_size) break;
  }
  if (c.tls->peer_closed()) c.close = true;
}

void Shard::OnSend(uint32_t slot, int res) {
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

void Shard::OnTimeout(uint32_t slot) {
  // -ETIME is the timer firing; anything else (a cancel at shutdown) ends the
  // wait as well.
  conns_.at(slot).waited = true;
  Pump(slot);
}

// CloseConnection - close and free a connection. Invariant: it has no operation in
// flight (each connection has at most one, and it is this completion's).
void Shard::CloseConnection(uint32_t slot) {
  Connection& c = conns_.at(slot);
  if (!c.session.quit_received()) counters_.sessions_without_quit.Add(1);
  close(c.fd);
  common_.addresses[c.listener]->connections.Down();
  common_.connections.Down();
  if (!c.client_ip.empty()) {
    std::lock_guard<std::mutex> lock(common_.per_ip_mu);
    auto it = common_.per_ip.find(c.client_ip);
    if (it != common_.per_ip.end() && --it->second == 0) common_.per_ip.erase(it);
  }
  conns_.Release(slot);
  // A descriptor came free: a listener paused for lack of them may go on.
  if (paused_ > 0) Unpause();
}

void Shard::Unpause() {
  if (stop_) return;
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    if (listeners_[i].paused) {
      listeners_[i].paused = false;
      if (!listeners_[i].armed) ArmAccept(i);
    }
  }
  paused_ = 0;
}

absl::Status Shard::FlushRecord() {
  if (common_.record_fd < 0 || record_buffer_.empty()) return absl::OkStatus();
  // O_APPEND and whole lines per write: shards' lines never interleave.
  absl::Status st = base::WriteAll(common_.record_fd, record_buffer_, options_.record_path);
  record_buffer_.clear();
  return st;
}

// ExpireIdle - a connection waiting for input longer than idle_timeout gets its
// read side shut: its one operation in flight, the recv, then ends with EOF and
// OnRecv sends the session's 421 4.4.2 (the write side still works). No cancel
// and no timer per connection: one pass over the table per tick.
void Shard::ExpireIdle() {
  const int64_t limit = absl::ToInt64Nanoseconds(options_.idle_timeout);
  const int64_t now = MonotonicNanos();
  conns_.ForEach([&](uint32_t, Connection& c) {
    if (c.reading_since == 0 || c.timed_out || now - c.reading_since < limit) return;
    c.timed_out = true;
    shutdown(c.fd, SHUT_RD);
  });
}

// Tick - the once-a-second work: record lines, paused listeners, idle connections.
absl::Status Shard::Tick() {
  RETURN_IF_ERROR(record_status_);
  RETURN_IF_ERROR(FlushRecord());
  if (paused_ > 0) Unpause();
  if (options_.idle_timeout > absl::ZeroDuration()) ExpireIdle();
  return absl::OkStatus();
}

absl::Status Shard::Run() {
  if (absl::Status st = ring_.Enable(); !st.ok()) return absl::InternalError(st.message());
  for (uint32_t i = 0; i < listeners_.size(); ++i) ArmAccept(i);
  ArmWake();

  const int64_t interval =
      std::max<int64_t>(absl::ToInt64Nanoseconds(options_.flush_interval), 1000000);
  int64_t next_tick = MonotonicNanos() + interval;
  while (!stop_) {
    const int64_t wait = std::max<int64_t>(next_tick - MonotonicNanos(), 1000000);
    if (absl::Status st = ring_.SubmitAndDispatch(absl::Nanoseconds(wait)); !st.ok()) {
      return absl::InternalError(st.message());
    }
    if (MonotonicNanos() >= next_tick) {
      RETURN_IF_ERROR(Tick());
      next_tick = MonotonicNanos() + interval;
    }
  }
  return Tick();
}

// ---------------------------------------------------------------------------
// Binding

// ResolveThreads - options.threads, with 0 as the CPUs this process may use.
size_t ResolveThreads(size_t threads) {
  if (threads > 0) return threads;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    return static_cast<size_t>(CPU_COUNT(&set));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// ListenSocket - a listening socket on ss; with reuseport, one of a group that
// the kernel spreads connections over.
absl::StatusOr<int> ListenSocket(const std::string& where, const sockaddr_storage& ss,
                                 socklen_t len, bool reuseport) {
  const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(where, ": socket: ", ErrnoText(errno)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) < 0 ||
      listen(fd, SOMAXCONN) < 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat(where, ": ", ErrnoText(err)));
  }
  return fd;
}

// BindCopies - `copies` listening sockets on one address (SO_REUSEPORT when more
// than one); ss gets the bound port when it asked for 0.
absl::StatusOr<std::vector<int>> BindCopies(const std::string& where, sockaddr_storage* ss,
                                            socklen_t len, size_t copies) {
  const bool reuseport = copies > 1;
  const bool any_port = reinterpret_cast<const sockaddr_in*>(ss)->sin_port == 0;
  if (reuseport && !any_port) {
    // SO_REUSEPORT would let the first socket join another process's group on
    // the same port (same user) and share its connections; a plain bind first
    // makes a port in use an error, as it is with one thread. (Port 0: the
    // kernel never picks a port in use.)
    ASSIGN_OR_RETURN(const int probe, ListenSocket(where, *ss, len, false));
    close(probe);
  }
  std::vector<int> fds;
  for (size_t i = 0; i < copies; ++i) {
    auto fd = ListenSocket(where, *ss, len, reuseport);
    if (!fd.ok()) {
      for (int f : fds) close(f);
      return fd.status();
    }
    fds.push_back(*fd);
    if (i == 0) {
      socklen_t got = sizeof(*ss);
      getsockname(*fd, reinterpret_cast<sockaddr*>(ss), &got);
    }
  }
  return fds;
}

}  // namespace

// ---------------------------------------------------------------------------
// The server

class Server::Impl {
 public:
  explicit Impl(ServerOptions options) { common_.options = std::move(options); }
  ~Impl();

  absl::Status Init();
  absl::Status Start();
  absl::Status Stop();
  int stopped_fd() const { return done_fd_; }
  Stats stats() const;
  std::vector<std::string> listening() const;
  size_t threads() const { return shards_.size(); }

 private:
  absl::Status BindAll(std::vector<std::vector<int>>* per_shard);
  absl::Status LoadCertificate();

  Common common_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<absl::Status> shard_status_;  // each written by its thread before it ends
  std::mutex threads_mu_;                   // Start() and Stop() from any thread
  std::vector<std::thread> threads_;        // guarded by threads_mu_
  bool started_ = false;                    // guarded by threads_mu_
  int done_fd_ = -1;  // eventfd: a shard's Run() returned
};

Server::Impl::~Impl() {
  (void)Stop();
  shards_.clear();
  if (done_fd_ >= 0) close(done_fd_);
  if (common_.record_fd >= 0) close(common_.record_fd);
}

// LoadCertificate - the STARTTLS certificate: the configured PEM files, or one
// generated for the host name. Checked here by building a context, so that a
// bad file stops Create() with its name rather than a shard later.
absl::Status Server::Impl::LoadCertificate() {
  ServerOptions& options = common_.options;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert_file and tls_key_file: set both or neither");
  }
  // The shards' common ticket key (80 bytes: tls::ServerContextOptions::ticket_key),
  // made whether or not STARTTLS will be offered: it costs nothing unused.
  common_.ticket_key.resize(80);
  if (getrandom(common_.ticket_key.data(), common_.ticket_key.size(), 0) !=
      static_cast<ssize_t>(common_.ticket_key.size())) {
    return absl::InternalError(absl::StrCat("STARTTLS ticket key: getrandom: ", ErrnoText(errno)));
  }
  if (!options.tls_cert_file.empty()) {
    for (const auto& [path, pem] : {std::pair{&options.tls_cert_file, &common_.cert_pem},
                                    std::pair{&options.tls_key_file, &common_.key_pem}}) {
      auto text = ReadPemFile(*path);
      if (!text.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("STARTTLS: ", *path, ": ", text.status().message()));
      }
      *pem = *std::move(text);
    }
    tls::ServerContextOptions tls_options;
    tls_options.cert_pem = common_.cert_pem;
    tls_options.key_pem = common_.key_pem;
    if (auto ctx = tls::Context::Server(tls_options); !ctx.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("STARTTLS: ", options.tls_cert_file, " and ",
                                                     options.tls_key_file, ": ",
                                                     ctx.status().message()));
    }
    return absl::OkStatus();
  }
  if (options.profiles.uses_starttls() || !options.tls_cert_out.empty()) {
    auto pem = tls::GenerateSelfSigned({options.session.hostname});
    if (!pem.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "STARTTLS certificate for --hostname ", options.session.hostname, ": ",
          pem.status().message()));
    }
    common_.cert_pem = pem->cert_pem;
    common_.key_pem = pem->key_pem;
  }
  if (!options.tls_cert_out.empty() && !common_.cert_pem.empty()) {
    RETURN_IF_ERROR(base::WriteFileAtomically(options.tls_cert_out, common_.cert_pem, 0644));
  }
  return absl::OkStatus();
}

// BindAll - every address's sockets, one per shard; fills common_.addresses.
absl::Status Server::Impl::BindAll(std::vector<std::vector<int>>* per_shard) {
  ServerOptions& options = common_.options;
  std::vector<ListenGroup> groups;
  size_t total = 0;
  for (const std::string& arg : options.listen) {
    ASSIGN_OR_RETURN(ListenGroup g, ExpandListen(arg));
    total += g.addresses.size();
    if (total > kMaxListenAddresses) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--listen '", arg, "': more than ", kMaxListenAddresses, " addresses in all"));
    }
    groups.push_back(std::move(g));
  }

  // Every address needs a socket per shard: check the descriptors are there
  // before binding hundreds of them.
  const size_t threads = per_shard->size();
  const uint64_t sockets = uint64_t{total} * threads;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      sockets + kSpareDescriptors + 2 * threads > rl.rlim_cur) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--listen: ", total, " addresses x ", threads, " threads need ", sockets,
        " listening sockets, but RLIMIT_NOFILE allows ", rl.rlim_cur,
        " descriptors (", kSpareDescriptors,
        " kept for the rest); raise the limit (ulimit -n) or listen on fewer"));
  }

  std::vector<std::string> given;  // per address, the text a profile key may name
  std::vector<const std::string*> arg_of;
  for (const ListenGroup& g : groups) {
    uint16_t range_port = 0;  // a range's addresses share the port the first got
    for (const std::string& text : g.addresses) {
      sockaddr_storage ss;
      socklen_t len = 0;
      RETURN_IF_ERROR(ParseListenAddress(text, &ss, &len));
      if (g.range && g.port == 0 && range_port != 0) {
        reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(range_port);
      }
      const std::string where = g.range ? absl::StrCat("--listen '", g.arg, "' (", text, ")")
                                        : absl::StrCat("--listen '", text, "'");
      ASSIGN_OR_RETURN(std::vector<int> fds, BindCopies(where, &ss, len, threads));
      for (size_t s = 0; s < threads; ++s) (*per_shard)[s].push_back(fds[s]);
      if (g.range && range_port == 0) {
        range_port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      }
      auto address = std::make_unique<Address>();
      address->name = FormatAddress(ss);
      common_.addresses.push_back(std::move(address));
      given.push_back(text);
      arg_of.push_back(&g.arg);
    }
  }

  // Profiles: an entry for the address as given or bound, else for the whole
  // range as given, else the default.
  const ProfileSet& profiles = options.profiles;
  const std::vector<std::string> keys = profiles.listener_keys();
  const absl::flat_hash_set<std::string> key_set(keys.begin(), keys.end());
  for (size_t i = 0; i < common_.addresses.size(); ++i) {
    Address& a = *common_.addresses[i];
    if (key_set.contains(given[i]) || key_set.contains(a.name)) {
      a.profile = &profiles.ForListener(given[i], a.name);
    } else {
      a.profile = &profiles.ForListener(*arg_of[i], *arg_of[i]);
    }
  }
  // A [listener] entry that matches nothing is a typo, not a profile to ignore.
  if (!keys.empty()) {
    absl::flat_hash_set<std::string> names(options.listen.begin(), options.listen.end());
    names.insert(given.begin(), given.end());
    for (const auto& a : common_.addresses) names.insert(a->name);
    for (const std::string& key : keys) {
      if (!names.contains(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat("profiles: [listener.\"", key, "\"] matches no --listen address"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Server::Impl::Init() {
  ServerOptions& options = common_.options;
  if (options.listen.empty()) options.listen.push_back("127.0.0.1:2525");
  if (options.session.hostname.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') {
      options.session.hostname = name;
    } else {
      options.session.hostname = "localhost";
    }
  }
  options.session.keep_addresses = !options.record_path.empty();
  if (options.session.handler != nullptr && options.session.max_message_size == 0) {
    return absl::InvalidArgumentError("a message handler needs a max_message_size above 0");
  }
  if (options.recv_buffer_size == 0 || options.recv_buffer_size > (1u << 24)) {
    return absl::InvalidArgumentError("recv_buffer_size must be 1..16777216");
  }
  if (options.threads > kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads ", options.threads, ": at most ", kMaxThreads));
  }
  const size_t threads = std::min(ResolveThreads(options.threads), kMaxThreads);

  common_.greylist = std::make_unique<Greylist>(options.greylist_max_entries);
  options.session.greylist = common_.greylist.get();
  options.session.profiles = &options.profiles;

  RETURN_IF_ERROR(LoadCertificate());

  std::vector<std::vector<int>> per_shard(threads);
  absl::Status bound = BindAll(&per_shard);
  if (!bound.ok()) {
    for (const auto& fds : per_shard) {
      for (int fd : fds) close(fd);
    }
    return bound;
  }
  for (size_t s = 0; s < threads; ++s) {
    shards_.push_back(std::make_unique<Shard>(common_));
    RETURN_IF_ERROR(shards_.back()->Init(std::move(per_shard[s])));
  }
  shard_status_.resize(threads);

  if (!options.record_path.empty()) {
    common_.record_fd = open(options.record_path.c_str(),
                             O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (common_.record_fd < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--record ", options.record_path, ": ", ErrnoText(errno)));
    }
  }

  done_fd_ = eventfd(0, EFD_CLOEXEC);
  if (done_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", ErrnoText(errno)));
  return absl::OkStatus();
}

std::vector<std::string> Server::Impl::listening() const {
  std::vector<std::string> out;
  out.reserve(common_.addresses.size());
  for (const auto& a : common_.addresses) out.push_back(a->name);
  return out;
}

Stats Server::Impl::stats() const {
  Stats s;
  for (const auto& shard : shards_) {
    const ShardCounters& c = shard->counters();
    s.sessions += c.sessions.Get();
    s.messages += c.messages.Get();
    s.recipients += c.recipients.Get();
    s.bytes += c.bytes.Get();
    s.rejects += c.rejects.Get();
    s.tls_sessions += c.tls_sessions.Get();
    s.tls_resumed += c.tls_resumed.Get();
    s.sessions_without_quit += c.sessions_without_quit.Get();
  }
  s.connections = common_.connections.now();
  s.peak_connections = common_.connections.peak();
  s.listeners.reserve(common_.addresses.size());
  for (size_t i = 0; i < common_.addresses.size(); ++i) {
    const Address& a = *common_.addresses[i];
    ListenerStats& l = s.listeners.emplace_back();
    l.listen = a.name;
    l.connections = a.connections.now();
    l.peak_connections = a.connections.peak();
    for (const auto& shard : shards_) {
      const ListenerCounters& c = shard->listener(i);
      l.sessions += c.sessions.Get();
      l.messages += c.messages.Get();
      l.recipients += c.recipients.Get();
    }
  }
  return s;
}

absl::Status Server::Impl::Start() {
  std::lock_guard<std::mutex> lock(threads_mu_);
  if (started_) return absl::FailedPreconditionError("server already started");
  started_ = true;
  // The shards take no signal: whoever embeds the server owns them (volley-sink
  // reads SIGTERM and SIGINT from a signalfd; volleyd has its own handling).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  absl::Status status;
  for (size_t i = 0; i < shards_.size(); ++i) {
    try {
      threads_.emplace_back([this, i] {
        shard_status_[i] = shards_[i]->Run();
        const uint64_t one = 1;
        while (write(done_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
        }
      });
    } catch (const std::system_error& e) {
      status = absl::InternalError(absl::StrCat("starting shard thread ", i, ": ", e.what()));
      break;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (!status.ok()) {
    for (auto& shard : shards_) shard->Wake();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }
  return status;
}

absl::Status Server::Impl::Stop() {
  std::lock_guard<std::mutex> lock(threads_mu_);
  if (threads_.empty()) return absl::OkStatus();
  for (auto& shard : shards_) shard->Wake();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  for (const absl::Status& st : shard_status_) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status Server::Start() { return impl_->Start(); }
absl::Status Server::Stop() { return impl_->Stop(); }
int Server::stopped_fd() const { return impl_->stopped_fd(); }
std::vector<std::string> Server::listening() const { return impl_->listening(); }
size_t Server::threads() const { return impl_->threads(); }
Stats Server::stats() const { return impl_->stats(); }

}  // namespace volley::smtpd
