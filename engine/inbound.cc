// inbound.cc - volleyd's inbound SMTP listener; see inbound.h.
#include "engine/inbound.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/smtpd/profile.h"

namespace volley::engine {
namespace {

absl::Status Prefixed(const absl::Status& st) {
  return absl::Status(st.code(), absl::StrCat("inbound: ", st.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<InboundListener>> InboundListener::Create(
    const InboundConfig& config, const std::string& spool_dir, const std::string& hostname) {
  if (config.domains.empty()) {
    return absl::InvalidArgumentError("inbound: listen is set but domains is empty");
  }
  std::unique_ptr<InboundListener> inbound(new InboundListener());
  auto spool = FeedbackSpool::Open(spool_dir, static_cast<size_t>(config.max_pending));
  if (!spool.ok()) return Prefixed(spool.status());
  inbound->spool_ = std::make_unique<FeedbackSpool>(*std::move(spool));
  inbound->rate_ = std::make_unique<ClientRate>(config.max_messages_per_minute, kInboundMaxClients);
  InboundListener* const self = inbound.get();
  inbound->handler_ = [self](const smtpd::Envelope& envelope, std::string_view content) {
    return self->Store(envelope, content);
  };

  smtpd::ServerOptions options;
  options.listen = config.listen;
  // Bounces and reports are few: one shard, whatever [delivery] shards says.
  options.threads = 1;
  options.session.hostname = hostname;
  options.session.software = "volleyd";
  options.session.max_message_size = config.max_message_size;
  options.session.max_recipients = static_cast<size_t>(config.max_recipients);
  options.session.max_messages = kInboundMaxMessagesPerConnection;
  options.session.handler = &inbound->handler_;
  for (const std::string& d : config.domains) {
    options.session.accepted_domains.push_back(absl::AsciiStrToLower(d));
  }
  options.max_connections = static_cast<uint64_t>(config.max_connections);
  options.max_connections_per_ip = static_cast<uint64_t>(config.max_connections_per_ip);
  options.idle_timeout = config.timeout;
  if (!config.tls_cert_file.empty() || !config.tls_key_file.empty()) {
    options.tls_cert_file = config.tls_cert_file;
    options.tls_key_file = config.tls_key_file;
    auto profiles = smtpd::ParseProfiles("[profile.default]\nstarttls = true\n", "[inbound]");
    if (!profiles.ok()) return Prefixed(profiles.status());
    options.profiles = *std::move(profiles);
  }
  auto server = smtpd::Server::Create(std::move(options));
  if (!server.ok()) return Prefixed(server.status());
  inbound->server_ = *std::move(server);
  return inbound;
}

InboundListener::~InboundListener() {
  if (server_) (void)server_->Stop();
}

absl::Status InboundListener::Start() { return server_->Start(); }

absl::Status InboundListener::Stop() {
  absl::Status st = server_->Stop();
  return st.ok() ? st : Prefixed(st);
}

std::vector<std::string> InboundListener::listening() const { return server_->listening(); }

smtpd::Stats InboundListener::stats() const { return server_->stats(); }

std::string InboundListener::Store(const smtpd::Envelope& envelope, std::string_view content) {
  // The client's address without the port: its rate is the address's.
  const std::string client = PeerAddress(envelope.peer);
  const ClientRate::Verdict verdict = rate_->Admit(client, absl::Now());
  if (!verdict.admitted) {
    if (verdict.first_refusal) {
      base::LogWarning("inbound: %s sends more than [inbound] max_messages_per_minute; its "
                       "messages get 450 until it slows down",
                       client);
    }
    return absl::StrCat("450 4.7.1 Error: too much mail from ", client, ", try again later");
  }
  if (spool_->OverPending()) {
    return "452 4.3.1 Error: too many messages waiting to be processed, try again later";
  }
  absl::StatusOr<std::string> name = spool_->Write(envelope, content, absl::Now());
  if (name.ok()) return absl::StrCat("250 2.0.0 Ok: queued as ", *name);
  base::LogWarning("inbound: message from %s (peer %s) not stored: %s", envelope.mail_from,
                   envelope.peer, base::StdSv(name.status().message()));
  return "451 4.3.0 Error: could not store the message, try again later";
}

}  // namespace volley::engine
