#include "engine/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::engine {

Connections::Connections(const Config& config, reactor::Ring* ring,
                         metrics::ShardMetrics* metrics)
    : config_(config), ring_(ring), metrics_(metrics) {
  for (const EgressSource& e : config_.sources) {
    // The config checked the literal already.
    SourceAddress a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
    if (::inet_pton(AF_INET, e.address.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      a.len = sizeof *v4;
    } else if (::inet_pton(AF_INET6, e.address.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      a.len = sizeof *v6;
    }
    source_addresses_.push_back(a);
  }
}

absl::Status Connections::Init() {
  tls::ClientContextOptions tls_opts;
  tls_opts.ca_file = config_.smtp.tls_ca_file;
  tls_opts.session_cache_size = static_cast<size_t>(config_.smtp.tls_session_cache);
  ASSIGN_OR_RETURN(tls::Context tls_context, tls::Context::Client(tls_opts));
  tls_context_.emplace(std::move(tls_context));
  return absl::OkStatus();
}

absl::StatusOr<Conn*> Connections::Open(const OpenRequest& request, absl::Time now) {
  const dns::Endpoint& where = request.route->hosts[request.host];
  const int fd = ::socket(where.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      return absl::ResourceExhaustedError(std::strerror(err));
    }
    return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(err)));
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (request.source >= 0) {
    // The port is chosen at connect, per destination address, not at bind: many
    // connections from one source would run out of ports otherwise.
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    const SourceAddress& from = source_addresses_[static_cast<size_t>(request.source)];
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&from.addr), from.len) != 0) {
      const int err = errno;
      ::close(fd);
      const EgressSource& e = config_.sources[static_cast<size_t>(request.source)];
      return absl::UnavailableError(absl::StrCat("bind to source ", e.name, " (", e.address,
                                                 "): ", std::strerror(err)));
    }
  }
  const uint32_t slot = conns_.Acquire();
  Conn* c = &conns_.at(slot);
  c->slot = slot;
  c->fd = fd;
  c->dest = request.dest;
  c->policy = request.policy;
  c->route = request.route;
  c->host = request.host;
  c->source = request.source;
  const DestinationPolicy& p = *request.policy;
  smtp::ClientOptions opts;
  opts.ehlo_name = config_.smtp.ehlo_name;
  if (request.source >= 0 &&
      !config_.sources[static_cast<size_t>(request.source)].ehlo_name.empty()) {
    opts.ehlo_name = config_.sources[static_cast<size_t>(request.source)].ehlo_name;
  }
  opts.reply.max_line = static_cast<size_t>(config_.smtp.max_reply_line);
  opts.pipelining = p.pipelining;
  opts.chunking = p.chunking;
  opts.max_transactions_in_flight = static_cast<size_t>(p.max_transactions_in_flight);
  switch (p.tls) {
    case TlsMode::kOff: opts.tls = smtp::TlsPolicy::kOff; break;
    case TlsMode::kOpportunistic:
      opts.tls = request.plaintext_only ? smtp::TlsPolicy::kOff : smtp::TlsPolicy::kOpportunistic;
      break;
    case TlsMode::kRequired:
    case TlsMode::kVerify: opts.tls = smtp::TlsPolicy::kRequired; break;
  }
  c->client = std::make_unique<smtp::Client>(opts);
  SetConnDeadline(c, now + p.connect_timeout);
  ring_->PrepConnect(fd, reinterpret_cast<const sockaddr*>(&where.addr), where.addr_len,
                     conns_.Tag(slot, kOpConnect));
  ++c->pending_ops;
  return c;
}

void Connections::PostRecv(Conn* c, bool own_buffer) {
  if (ring_->has_buffer_ring() && !own_buffer) {
    ring_->PrepRecvFromRing(c->fd, conns_.Tag(c->slot, kOpRecv));
  } else {
    if (!c->recv_buffer) c->recv_buffer.reset(new char[kRecvBufferSize]);
    ring_->PrepRecv(c->fd, c->recv_buffer.get(), kRecvBufferSize, conns_.Tag(c->slot, kOpRecv));
  }
  ++c->pending_ops;
}

void Connections::OnIo(Conn* c, const reactor::Completion& done, absl::Time now) {
  --c->pending_ops;
  const int result = done.result;
  switch (static_cast<Op>(reactor::OpOf(done.tag))) {
    case kOpConnect:
      if (result < 0) {
        c->connect_errno = -result;
        c->client->FeedIoError(
            absl::StrCat("connect to ", c->Host().name, ": ", std::strerror(-result)));
        break;
      }
      SetConnDeadline(c, now + c->policy->greeting_timeout);
      PostRecv(c);
      break;
    case kOpRecv: {
      // Whatever happens, the ring buffer goes back once its bytes are fed
      // (the client and the TLS session copy what they keep).
      const struct GiveBack {
        reactor::Ring* ring;
        const reactor::Completion& done;
        ~GiveBack() { ring->ReturnBuffer(done); }
      } give_back{ring_, done};
      if (c->closing) break;
      if (result == -ENOBUFS) {
        // Every ring buffer is out with other connections' replies: this one
        // receive goes to a buffer of the connection's own.
        PostRecv(c, /*own_buffer=*/true);
        break;
      }
      if (result <= 0) {
        if (result == 0) {
          c->client->FeedEof();
        } else {
          c->client->FeedIoError(absl::StrCat("recv: ", std::strerror(-result)));
        }
        break;
      }
      OnReceived(c, done.has_buffer()
                        ? ring_->Received(done)
                        : std::string_view(c->recv_buffer.get(), static_cast<size_t>(result)));
      PostRecv(c);
      break;
    }
    case kOpSend:
      c->send_in_flight = false;
      if (c->closing) break;
      if (result < 0) {
        c->client->FeedIoError(absl::StrCat("send: ", std::strerror(-result)));
        break;
      }
      c->send_offset += static_cast<size_t>(result);
      if (c->send_offset >= c->send_buffer.size() &&
          c->send_buffer.capacity() > kKeptSendBufferSize) {
        // A message's buffer goes back as soon as it is sent: an idle
        // connection, or one waiting for its reply, holds none.
        std::string().swap(c->send_buffer);
        c->send_offset = 0;
      }
      break;
    default:
      break;
  }
}

void Connections::OnReceived(Conn* c, std::string_view bytes) {
  if (!c->tls) {
    c->client->Feed(bytes);
    return;
  }
  c->tls->FeedCiphertext(bytes);
  if (!c->tls->established()) {
    ContinueHandshake(c);
    if (!c->tls->established()) return;
  }
  // Decrypt in receive-buffer-sized pieces: the client buffers only what it needs.
  for (;;) {
    c->plaintext.clear();
    absl::StatusOr<size_t> n = c->tls->ReadPlaintext(&c->plaintext, kRecvBufferSize);
    if (!n.ok()) {
      c->client->FeedIoError(absl::StrCat("TLS: ", n.status().message()));
      return;
    }
    if (*n == 0) break;
    c->client->Feed(c->plaintext);
    // Short of the maximum: everything decryptable now has been read.
    if (*n < kRecvBufferSize) break;
  }
  if (c->tls->peer_closed()) c->client->FeedEof();
}

void Connections::StartTls(Conn* c) {
  const DestinationPolicy& p = *c->policy;
  tls::SessionOptions opts;
  // SNI names the host (none for an IP literal, which is all static routes have);
  // tls_match, when set, names what the certificate must carry instead.
  opts.server_name = p.tls_match.empty() ? c->Host().host : p.tls_match.front();
  if (p.tls_match.size() > 1) {
    opts.also_match.assign(p.tls_match.begin() + 1, p.tls_match.end());
  }
  if (p.tls == TlsMode::kVerify) opts.verify = tls::Verify::kChainAndHost;
  // Resumption is keyed by the address as well as the names: another host behind the
  // same name (another MX, a moved one) gets a full handshake of its own.
  const dns::Endpoint& host = c->Host();
  opts.peer_address = host.host.find(':') == std::string::npos
                          ? absl::StrCat(host.host, ":", host.port)
                          : absl::StrCat("[", host.host, "]:", host.port);
  absl::StatusOr<tls::Session> session =
      tls::Session::Create(*tls_context_, tls::Role::kClient, std::move(opts));
  if (!session.ok()) {
    c->client->FeedIoError(absl::StrCat("TLS: ", session.status().message()));
    return;
  }
  c->tls = std::make_unique<tls::Session>(*std::move(session));
  ContinueHandshake(c);
}

void Connections::ContinueHandshake(Conn* c) {
  absl::StatusOr<tls::Session::Progress> progress = c->tls->Handshake();
  if (!progress.ok()) {
    const DestinationPolicy& p = *c->policy;
    std::string what = "TLS handshake";
    if (p.tls == TlsMode::kVerify) {
      absl::StrAppend(&what, " (the certificate must name ",
                      p.tls_match.empty() ? c->Host().host : absl::StrJoin(p.tls_match, " or "),
                      ")");
    }
    c->client->FeedIoError(absl::StrCat(what, ": ", progress.status().message()));
    return;
  }
  if (*progress == tls::Session::Progress::kDone) {
    c->tls_version = c->tls->version();
    metrics_->tls_sessions[metrics::TlsVersionIndex(c->tls_version)].Add();
    metrics_->tls_handshakes[c->tls->resumed() ? 1 : 0].Add();
    c->tls_cipher = c->tls->cipher();
    c->client->TlsEstablished();
  }
}

void Connections::FlushOutput(Conn* c) {
  if (c->send_in_flight || c->closing) return;
  if (c->send_offset >= c->send_buffer.size()) {
    c->send_buffer.clear();
    c->send_offset = 0;
    if (c->tls) {
      if (!c->client->PendingOutput().empty() && c->tls->established()) {
        // Taken rather than consumed: a message's plaintext goes once the
        // session has encrypted it, instead of staying as the client's buffer.
        std::string out;
        c->client->TakeOutput(&out);
        if (absl::Status st = c->tls->WritePlaintext(out); !st.ok()) {
          c->client->FeedIoError(absl::StrCat("TLS: ", st.message()));
          return;
        }
      }
      if (c->tls->PendingCiphertext().empty()) return;
      // The records become the send buffer, as the plaintext path's message does.
      c->tls->TakeCiphertext(&c->send_buffer);
    } else {
      if (c->client->PendingOutput().empty()) return;
      // The client's buffer becomes the send buffer: a message is moved, not
      // copied, and the client appends to the (small) buffer it gets instead.
      c->client->TakeOutput(&c->send_buffer);
    }
  }
  ring_->PrepSend(c->fd, c->send_buffer.data() + c->send_offset,
                  c->send_buffer.size() - c->send_offset, conns_.Tag(c->slot, kOpSend));
  c->send_in_flight = true;
  ++c->pending_ops;
}

void Connections::SetDeadline(Conn* c, absl::Time now) {
  if (c->send_in_flight) {
    // The server is not taking what we write: a bound on each write, however long
    // the message (RFC 5321 section 4.5.3.2.5's data block timeout).
    SetConnDeadline(c, now + c->policy->data_block_timeout);
    return;
  }
  const smtp::Wait wait = c->client->waiting_for();
  if (wait == smtp::Wait::kNone && !c->transactions.empty()) {
    // Between the client's steps of a transaction: nothing to time.
    SetConnDeadline(c, absl::InfiniteFuture());
    return;
  }
  SetConnDeadline(c, now + c->policy->TimeoutFor(wait));
}

void Connections::Close(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  // Shut down, it only waits for its operations' completions: no deadline.
  deadlines_.Remove(c->slot);
  // Pending operations complete (with an error or EOF) once the socket is shut
  // down; the descriptor is closed when the last of them is reaped (Free, at
  // the end of that completion's handling).
  ::shutdown(c->fd, SHUT_RDWR);
}

void Connections::Free(Conn* c) {
  VOLLEY_CHECK(c->transactions.empty(), "a connection freed with a transaction under way");
  ::close(c->fd);
  conns_.Release(c->slot);  // c is gone from here on
}

std::vector<Conn*> Connections::DueNow(absl::Time now) {
  std::vector<uint32_t> late_slots;
  deadlines_.Due(now, &late_slots);
  std::vector<Conn*> late;
  late.reserve(late_slots.size());
  for (uint32_t slot : late_slots) late.push_back(&conns_.at(slot));
  return late;
}

}  // namespace volley::engine
