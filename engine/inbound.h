// NAME
//   inbound.h - volleyd's inbound SMTP listener: takes bounces and feedback
//   reports for the configured domains and stores them in <spool>/feedback/
//
// SYNOPSIS
//   #include "engine/inbound.h"
//
//   if (!config.inbound.listen.empty()) {
//     ASSIGN_OR_RETURN(auto inbound, InboundListener::Create(config.inbound,
//                                                            config.spool_dir, "mx.example"));
//     RETURN_IF_ERROR(inbound->Start());
//     ... inbound->listening() ...
//     RETURN_IF_ERROR(inbound->Stop());
//   }
//
// DESCRIPTION
//   The [inbound] table (engine/config.h InboundConfig, docs/config.md,
//   docs/feedback.md) configures a receiving SMTP server on the engine/smtpd
//   library, volley-sink's server: the same session state machine and io_uring
//   server, here with a message handler. It accepts mail only for
//   [inbound] domains (other recipients: 550 5.7.1, nothing is relayed) and
//   stores each accepted message durably (feedback_spool.h) before answering
//   250 2.0.0 with the file's name; a write that fails gets 451 4.3.0 and keeps
//   nothing, and more than max_pending files waiting gets 452 4.3.1. STARTTLS
//   is offered with tls_cert_file and tls_key_file. The listener runs one
//   shard thread of its own; the handler's writes and fsyncs run there.
//
// CONTRACT
//   Create() reads the certificate files and binds the listening addresses;
//   Start() and Stop() from any thread (Stop() also runs in the destructor).
//   The listener owns no signal.
//
// DIAGNOSTICS
//   Create(): InvalidArgument for an [inbound] with listen but no domains, or a
//   certificate or key file that can't be read or used (naming the files);
//   Unavailable when an address can't be bound; the errors of
//   smtpd::Server::Create() and FeedbackSpool::Open() otherwise, prefixed
//   "inbound: ". A message that can't be stored is logged (warning) with the
//   reason and answered 451 4.3.0.
//
// BOUNDS
//   max_connections connections (max_connections_per_ip from one address),
//   each holding at most max_message_size octets of content,
//   max_recipients recipients and kInboundMaxMessagesPerConnection messages;
//   a connection silent for timeout gets 421 4.4.2. max_pending files in
//   feedback/new/.
#ifndef VOLLEY_ENGINE_INBOUND_H_
#define VOLLEY_ENGINE_INBOUND_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/feedback_spool.h"
#include "engine/smtpd/server.h"
#include "engine/smtpd/session.h"
#include "engine/unsubscribe.h"  // ClientRate

namespace volley::engine {

// Messages one connection may send before it is told 421 4.7.0 (like Postfix's
// smtpd_client_message_rate_limit, per connection): a bounce source sends few.
inline constexpr uint64_t kInboundMaxMessagesPerConnection = 1000;
// Client addresses whose message rate is remembered ([inbound]
// max_messages_per_minute); the least recently seen is forgotten first.
inline constexpr size_t kInboundMaxClients = 10000;

class InboundListener {
 public:
  // hostname: the name in the greeting and EHLO reply ([smtp] ehlo_name);
  // empty: the machine's host name.
  static absl::StatusOr<std::unique_ptr<InboundListener>> Create(const InboundConfig& config,
                                                                 const std::string& spool_dir,
                                                                 const std::string& hostname);
  ~InboundListener();

  InboundListener(const InboundListener&) = delete;
  InboundListener& operator=(const InboundListener&) = delete;

  absl::Status Start();
  // Stop - stop accepting and close every connection; a message not yet
  // answered 250 is not kept.
  absl::Status Stop();

  // Bound addresses, "127.0.0.1:2526", in [inbound] listen order.
  std::vector<std::string> listening() const;

  // The counters of the server (messages, rejects, TLS sessions...).
  smtpd::Stats stats() const;

 private:
  InboundListener() = default;
  // Store - the handler: write the message, and the reply that says how it went.
  std::string Store(const smtpd::Envelope& envelope, std::string_view content);

  std::unique_ptr<FeedbackSpool> spool_;
  std::unique_ptr<ClientRate> rate_;  // messages per client address
  // Declared before server_, so that it outlives the shard threads using it.
  smtpd::MessageHandler handler_;
  std::unique_ptr<smtpd::Server> server_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_INBOUND_H_
