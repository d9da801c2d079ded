// resolver.cc - c-ares on the owner's loop; see resolver.h
#include "dns/resolver.h"

#include <ares.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "dns/wire.h"

namespace volley::dns {

struct Resolver::Query {
  Resolver* resolver = nullptr;
  // Resolver::no_descriptor_ when it was sent: more by its failure means c-ares
  // could not open a socket for it, a failure of ours, not the server's.
  uint64_t no_descriptor_at_send = 0;
  RrType type = RrType::kA;
  std::string name;                // asked now: the question's, or a CNAME target
  std::vector<std::string> chain;  // every name asked for this question, in order
  Callback done;
};

namespace {

ares_channel Channel(void* channel) { return static_cast<ares_channel>(channel); }

absl::Status LibraryInit() {
  static std::once_flag once;
  static int status = ARES_SUCCESS;
  std::call_once(once, [] { status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (status != ARES_SUCCESS) {
    return absl::InternalError(absl::StrCat("c-ares: ", ares_strerror(status)));
  }
  return absl::OkStatus();
}

DnsAnswer ServFail() {
  DnsAnswer answer;
  answer.kind = AnswerKind::kServFail;
  return answer;
}

// QueueFull - the refusal past max_queued: no server was asked, so no server's
// word to keep (the cache stores none) or count as an attempt.
DnsAnswer QueueFull() {
  DnsAnswer answer = ServFail();
  answer.local = true;
  answer.local_why = "resolver queue full";
  return answer;
}

// NoDescriptor - c-ares could not open a socket to ask: like QueueFull, our
// own limit, so the engine waits instead of counting the domain as failing.
DnsAnswer NoDescriptor() {
  DnsAnswer answer = ServFail();
  answer.local = true;
  answer.local_why = "no file descriptor for a DNS socket";
  return answer;
}

// Bound on ResolverOptions::max_pending and max_queued: far past what one shard
// can use, near enough to catch a unit mistake.
constexpr size_t kMaxResolverBound = 10'000'000;

}  // namespace

// c-ares's socket calls, plain except that socket() failing for want of
// descriptors is counted (Resolver::no_descriptor_): c-ares itself reports it
// as an unreachable server, which would be the domain's failure. c-ares leaves
// sockets made this way as they come ("user-managed"): no O_NONBLOCK, no
// SO_RCVBUF. So Open sets them, or a read would block the shard's loop.
struct ResolverSocketCalls {
  static ares_socket_t Open(int domain, int type, int protocol, void* data) {
    auto* self = static_cast<Resolver*>(data);
    const int fd = ::socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0) {
      const int err = errno;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        ++self->no_descriptor_;
      }
      errno = err;
      return ARES_SOCKET_BAD;
    }
    if (self->options_.receive_buffer > 0) {
      const int size =
          static_cast<int>(std::min<uint64_t>(self->options_.receive_buffer, INT32_MAX));
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    if (type == SOCK_STREAM) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
  }
  static int Close(ares_socket_t fd, void*) { return ::close(fd); }
  static int Connect(ares_socket_t fd, const sockaddr* to, ares_socklen_t len, void*) {
    return ::connect(fd, to, len);
  }
  static ares_ssize_t RecvFrom(ares_socket_t fd, void* buf, size_t len, int flags, sockaddr* from,
                               ares_socklen_t* from_len, void*) {
    return ::recvfrom(fd, buf, len, flags, from, from_len);
  }
  static ares_ssize_t SendV(ares_socket_t fd, const iovec* vec, int count, void*) {
    return ::writev(fd, vec, count);
  }
};

const ares_socket_functions kResolverSocketCalls = {&ResolverSocketCalls::Open, &ResolverSocketCalls::Close,
                                                &ResolverSocketCalls::Connect, &ResolverSocketCalls::RecvFrom,
                                                &ResolverSocketCalls::SendV};

Resolver::Resolver(const ResolverOptions& options, Watch watch)
    : options_(options), watch_(std::move(watch)) {}

absl::StatusOr<std::unique_ptr<Resolver>> Resolver::Create(const ResolverOptions& options,
                                                           Watch watch) {
  if (options.tries < 1) return absl::InvalidArgumentError("dns tries: must be at least 1");
  // No place in flight would leave every question queued for ever.
  if (options.max_pending < 1 || options.max_pending > kMaxResolverBound) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns max_pending: must be 1..", kMaxResolverBound));
  }
  if (options.max_queued > kMaxResolverBound) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns max_queued: must be at most ", kMaxResolverBound));
  }
  if (options.timeout < absl::Milliseconds(1)) {
    return absl::InvalidArgumentError("dns timeout: must be at least 1ms");
  }
  std::vector<std::string> servers;
  for (const std::string& s : options.servers) {
    ASSIGN_OR_RETURN(Endpoint where, ParseHostPort(s));
    // c-ares's own notation: brackets around an IPv6 address, always with the port.
    servers.push_back(where.addr.ss_family == AF_INET6
                          ? absl::StrCat("[", where.host, "]:", where.port)
                          : absl::StrCat(where.host, ":", where.port));
  }
  RETURN_IF_ERROR(LibraryInit());
  std::unique_ptr<Resolver> r(new Resolver(options, std::move(watch)));
  ares_options ao{};
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  // Names are asked as given: no search list, no HOSTALIASES.
  ao.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  ao.timeout = static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(options.timeout), 1,
                                                    int64_t{3600} * 1000));
  ao.tries = options.tries;
  ao.sock_state_cb = [](void* data, ares_socket_t fd, int readable, int writable) {
    OnSocketState(data, fd, readable, writable);
  };
  ao.sock_state_cb_data = r.get();
  ares_channel channel = nullptr;
  if (int st = ares_init_options(&channel, &ao, mask); st != ARES_SUCCESS) {
    return absl::InternalError(absl::StrCat("c-ares init: ", ares_strerror(st)));
  }
  r->channel_ = channel;
  ares_set_socket_functions(channel, &kResolverSocketCalls, r.get());
  if (!servers.empty()) {
    const std::string csv = absl::StrJoin(servers, ",");
    if (int st = ares_set_servers_ports_csv(channel, csv.c_str()); st != ARES_SUCCESS) {
      return absl::InvalidArgumentError(
          absl::StrCat("dns servers \"", csv, "\": ", ares_strerror(st)));
    }
  }
  return r;
}

Resolver::~Resolver() {
  // ares_destroy closes c-ares's sockets and says so through the socket-state
  // callback: the owner's Watch must not hear it, the owner is going away too
  // (a Watch from here made volleyd spin at 100% CPU on shutdown, issue 16).
  destroying_ = true;
  watch_ = nullptr;
  // Never sent: dropped without callbacks, like the answers not yet delivered.
  queued_.clear();
  ready_.clear();
  if (channel_ == nullptr) return;
  // ares_destroy ends every open question with ARES_EDESTRUCTION: their queries
  // are freed there, without callbacks (OnAresResponse checks destroying_).
  ares_destroy(Channel(channel_));
}

void Resolver::OnSocketState(void* data, int fd, int readable, int writable) {
  auto* self = static_cast<Resolver*>(data);
  if (self->destroying_ || !self->watch_) return;
  self->watch_(fd, readable != 0, writable != 0);
}

void Resolver::Ask(std::string_view name, RrType type, Callback done) {
  auto q = std::make_unique<Query>();
  q->resolver = this;
  q->type = type;
  q->name = std::string(name);
  q->chain.push_back(q->name);
  q->done = std::move(done);
  // Behind those already waiting, even when a place is free: first come, first
  // sent (SendQueued fills free places before anyone can ask again).
  if (pending_ < options_.max_pending && queued_.empty()) {
    ++pending_;
    Send(std::move(q));
    return;
  }
  if (queued_.size() >= options_.max_queued) {
    last_error_ = "resolver queue full";
    ++refused_;
    ready_.emplace_back(std::move(q->done), QueueFull());
    return;
  }
  queued_.push_back(std::move(q));
  peak_queued_ = std::max(peak_queued_, queued_.size());
}

void Resolver::SendQueued() {
  // Send can end a question at once (Finish), which calls back here: the outer
  // loop goes on instead, so the stack stays flat however long the queue.
  if (in_send_queued_) return;
  in_send_queued_ = true;
  while (pending_ < options_.max_pending && !queued_.empty() && !destroying_) {
    std::unique_ptr<Query> q = std::move(queued_.front());
    queued_.pop_front();
    ++pending_;
    Send(std::move(q));
  }
  in_send_queued_ = false;
}

Resolver::Stats Resolver::stats() const {
  Stats s;
  s.sent = sent_;
  s.refused = refused_;
  s.in_flight = pending_;
  s.queued = queued_.size();
  s.peak_queued = peak_queued_;
  s.no_descriptor = no_descriptor_;
  return s;
}

void Resolver::Send(std::unique_ptr<Query> q) {
  absl::StatusOr<std::string> packet = EncodeQuery(q->name, q->type, next_id_++);
  if (!packet.ok()) {
    // A name no server could be asked about (the planner normalises names, so
    // only a CNAME target could get here): nothing will ever answer it.
    Finish(std::move(q), ServFail(), absl::StrCat("cannot ask: ", packet.status().message()));
    return;
  }
  // c-ares may answer at once (no server reachable): the callback is queued
  // then, see Finish, so Ask's caller is never called back from inside Ask.
  // Sends nest (an answer at once frees a place, SendQueued fills it): restore.
  const bool outer = in_send_;
  ++sent_;
  q->no_descriptor_at_send = no_descriptor_;
  in_send_ = true;
  ares_send(Channel(channel_), reinterpret_cast<const unsigned char*>(packet->data()),
            static_cast<int>(packet->size()), &Resolver::OnAresResponse, q.release());
  in_send_ = outer;
}

void Resolver::OnAresResponse(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                              int alen) {
  std::unique_ptr<Query> q(static_cast<Query*>(arg));
  if (q->resolver->destroying_) return;
  q->resolver->OnResponse(std::move(q), status, abuf, alen);
}

void Resolver::OnResponse(std::unique_ptr<Query> q, int status, const unsigned char* abuf,
                          int alen) {
  if (status != ARES_SUCCESS && no_descriptor_ > q->no_descriptor_at_send) {
    Finish(std::move(q), NoDescriptor(), "no file descriptor for a DNS socket");
    return;
  }
  if (status != ARES_SUCCESS) {
    std::string why = status == ARES_ETIMEOUT ? "no answer (timeout)"
                      : status == ARES_ESERVFAIL ? "SERVFAIL from the server"
                      : status == ARES_EREFUSED  ? "REFUSED by the server"
                                                 : ares_strerror(status);
    Finish(std::move(q), ServFail(), std::move(why));
    return;
  }
  absl::StatusOr<ParsedResponse> parsed = ParseResponse(
      std::span<const uint8_t>(abuf, static_cast<size_t>(std::max(alen, 0))), q->name, q->type);
  if (!parsed.ok()) {
    Finish(std::move(q), ServFail(),
           absl::StrCat("malformed response for ", q->name, ": ", parsed.status().message()));
    return;
  }
  if (!parsed->cname_target.empty()) {
    if (q->chain.size() > kMaxCnameChain) {
      Finish(std::move(q), ServFail(),
             absl::StrCat("CNAME chain longer than ", kMaxCnameChain, " at ", q->chain.front()));
      return;
    }
    if (std::find(q->chain.begin(), q->chain.end(), parsed->cname_target) != q->chain.end()) {
      Finish(std::move(q), ServFail(), absl::StrCat("CNAME loop at ", parsed->cname_target));
      return;
    }
    q->name = parsed->cname_target;
    q->chain.push_back(q->name);
    Send(std::move(q));
    return;
  }
  std::string why;
  if (parsed->referral) {
    why = absl::StrCat("referral instead of an answer for ", q->name,
                       " (the server does not recurse)");
  } else if (parsed->answer.kind == AnswerKind::kServFail) {
    why = absl::StrCat("rcode ", parsed->rcode, " for ", q->name);
  }
  Finish(std::move(q), std::move(parsed->answer), std::move(why));
}

void Resolver::Finish(std::unique_ptr<Query> q, DnsAnswer answer, std::string error) {
  --pending_;
  if (!error.empty()) last_error_ = std::move(error);
  // The freed place goes to the oldest waiting question before this callback
  // can ask anew.
  SendQueued();
  if (in_send_) {
    ready_.emplace_back(std::move(q->done), std::move(answer));
    return;
  }
  q->done(std::move(answer));
}

void Resolver::OnSocketReady(int fd, bool readable, bool writable) {
  ares_process_fd(Channel(channel_), readable ? fd : ARES_SOCKET_BAD,
                  writable ? fd : ARES_SOCKET_BAD);
}

void Resolver::OnTimer() {
  if (pending_ > 0) ares_process_fd(Channel(channel_), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  SendQueued();  // Finish fills free places; this only if something slipped by
  // Callbacks may ask again (and queue more): take this turn's batch only.
  std::vector<std::pair<Callback, DnsAnswer>> ready = std::exchange(ready_, {});
  for (auto& [done, answer] : ready) done(std::move(answer));
}

std::optional<absl::Duration> Resolver::NextTimeout() const {
  if (!ready_.empty()) return absl::ZeroDuration();
  if (!queued_.empty() && pending_ < options_.max_pending) return absl::ZeroDuration();
  if (pending_ == 0) return std::nullopt;
  timeval tv{};
  const timeval* next = ares_timeout(Channel(channel_), nullptr, &tv);
  if (next == nullptr) return std::nullopt;
  return absl::DurationFromTimeval(*next);
}

}  // namespace volley::dns
