// tls.h - a TLS session over memory buffers: ciphertext in and out, no sockets
//
// SYNOPSIS
//   ClientContextOptions copts;                  // all defaults: the system store
//   ASSIGN_OR_RETURN(Context ctx, Context::Client(copts));  // one per shard, at start
//   SessionOptions sopts;
//   sopts.verify = Verify::kChainAndHost;  sopts.server_name = "mx.dst.test";
//   ASSIGN_OR_RETURN(Session s, Session::Create(ctx, Role::kClient, sopts));
//   s.FeedCiphertext(bytes_from_socket);
//   ASSIGN_OR_RETURN(Session::Progress p, s.Handshake());   // kDone or kWantIo
//   Write(s.PendingCiphertext()); s.ConsumeCiphertext(n);   // after every call
//   (or s.TakeCiphertext(&send_buffer), to own the records until written)
//   ASSIGN_OR_RETURN(size_t got, s.ReadPlaintext(&in, max)); // s.peer_closed()
//   RETURN_IF_ERROR(s.WritePlaintext("EHLO ...\r\n"));
//   s.Shutdown();                                           // queues close_notify
//   ASSIGN_OR_RETURN(CertificatePem pem, GenerateSelfSigned({"sink.test"}));
//
// DESCRIPTION
//   OpenSSL 3 driven through two memory BIOs, so that the io_uring reactor keeps sole
//   ownership of the socket and OpenSSL never blocks or makes a system call on it.
//   The reactor moves bytes: what it reads from the socket goes to FeedCiphertext(),
//   and whatever PendingCiphertext() holds after any call goes to the socket. Like
//   engine/smtp's Client, the session owns every protocol decision and knows no
//   clock: handshake timeouts are the reactor's.
//
//   Context holds what every connection of a shard shares (the trust store, protocol
//   floor, certificate and key) and is built once, at start-up: Client() reads
//   ca_file then, never per connection (a ca_path directory is searched per
//   verification, by OpenSSL's design). Session is one connection.
//
//   Verify::kNone encrypts without authenticating (opportunistic STARTTLS, as
//   Postfix's "may" level): any certificate is accepted, and verify_error() still
//   says whether it would have passed, for the log. Verify::kChainAndHost refuses the
//   handshake unless the chain leads to a trusted CA and the certificate names
//   server_name (subjectAltName; a partial wildcard such as "mx*.dst.test" never
//   matches). An IP literal as server_name is checked against IP subjectAltNames and
//   sends no SNI (RFC 6066 section 3 forbids literals there).
//
//   Session resumption (RFC 8446 section 2.2, RFC 5077 tickets): a client Context
//   with session_cache_size > 0 keeps the newest session per peer, filed under the
//   peer's address (SessionOptions::peer_address), server_name, also_match and
//   verify level, so that a reconnect to the same host skips the certificate and
//   its checks: the costly part of a handshake, on both sides. A session is offered
//   only to a connection with the very same key: a resumed handshake carries no
//   certificate, so one verified for another name, or not verified at all, must
//   never stand in for a check. A server Context with session_tickets > 0 issues
//   stateless tickets (its key: ticket_key, or a random one per Context).
//
//   Only what outbound mail needs: no client certificates, no renegotiation
//   (SSL_OP_NO_RENEGOTIATION: a TLS 1.2 peer's request is refused with an alert), no
//   compression (CRIME).
//
// CONTRACT
//   Single-threaded: a Session, and the Context it came from, belong to one thread.
//   A Session holds its own reference on the context's OpenSSL state (and session
//   cache), so it may outlive its Context. A TLS 1.3 server sends its tickets after
//   the handshake: the client's session is saved by the ReadPlaintext() that meets
//   them, so a connection that never reads after its handshake saves none. Every call that can produce ciphertext (Handshake,
//   ReadPlaintext, WritePlaintext, Shutdown) appends it to PendingCiphertext(); the
//   caller writes it out before it waits for the socket again, or the peer starves.
//
//   Handshake() until kDone; then ReadPlaintext() at once, without waiting for more
//   input: the peer's first application data may have come in the same read as the
//   handshake's last flight. ReadPlaintext() and WritePlaintext() before kDone fail
//   with FailedPrecondition. ReadPlaintext() that returns `max` may have more ready
//   without another feed: call it again.
//
//   Any error Status from Handshake(), ReadPlaintext() or WritePlaintext() is final:
//   the session is dead, every later call returns the same Status, and the only
//   useful thing left is to write PendingCiphertext() (it may hold an alert telling
//   the peer why) and close the socket. A read that meets a bad record after some
//   good plaintext returns that plaintext, and the error on the next call: records
//   before it were authenticated and may carry replies the caller needs. The
//   reactor's socket EOF before peer_closed() is a truncation, for the caller to
//   judge.
//
//   The thread's OpenSSL error queue is empty when any call here returns, error or
//   not: another session on the same thread must not read this one's errors.
//
// DIAGNOSTICS
//   Messages start with the operation ("handshake: ", "read: ", "write: ") and name
//   the reason first, then the OpenSSL error queue in brackets, e.g.
//   "handshake: certificate verify failed: hostname mismatch [error:0A000086:SSL
//   routines::certificate verify failed]" or "handshake: wrong version number [...]".
//   Codes: Unauthenticated, the peer's certificate failed verification
//   (kChainAndHost); Unavailable, any other TLS failure caused by the peer or the
//   bytes on the wire (bad record, alert received, no common protocol version or
//   cipher); FailedPrecondition, a call out of order or on a moved-from Context;
//   InvalidArgument, bad options, PEM text, file or cipher list (Context factories,
//   Create, GenerateSelfSigned); Internal, OpenSSL failed inside (out of memory).
//
// BOUNDS
//   Outgoing: PendingCiphertext() holds only what the caller has not consumed yet,
//   which for a reactor that drains it after every call is one handshake flight (a
//   server's is about the size of its certificate chain) or one WritePlaintext():
//   n bytes of plaintext become ceil(n / 16 KiB) records with under 100 bytes of
//   overhead each. The caller bounds it by bounding what it writes. OpenSSL
//   writes its records straight into it (no memory BIO between), and
//   TakeCiphertext hands them over without a copy; its buffer is given back once
//   drained if it grew past 64 KiB, so a session that sent a large message keeps
//   nothing of that size.
//   Saved sessions: at most session_cache_size per client Context (one per key,
//   the least recently used dropped first), each about 1-2 KiB with the peer's
//   certificate it keeps for verify_error() and peer_subject().
//   Incoming: OpenSSL takes one record (at most 16 KiB + 2 KiB) at a time from what
//   was fed. Fed ciphertext not yet decrypted is buffered_ciphertext(); the reactor
//   bounds it by not reading the socket while it is above a limit of its own.
//   ReadPlaintext(out, max) appends at most max bytes. A peer's certificate chain is
//   capped by OpenSSL (100 KiB). Idle sessions release OpenSSL's record buffers
//   (SSL_MODE_RELEASE_BUFFERS), so thousands of open connections stay cheap.
//
// BUGS
//   XXX(scope) No DANE, MTA-STS policy or client certificates.
//   A Context reads ca_file once: a changed CA bundle needs a new Context (and its
//   saved sessions go with the old one).
//   XXX(privacy) A saved session is offered to every new connection to its peer
//   until a newer one replaces it, not once as RFC 8446 appendix C.4 suggests:
//   connections to one MX from one sender are linkable anyway, and single use would
//   leave the connections a destination opens together with full handshakes.
//
// SEE ALSO
//   engine/smtp/client.h (STARTTLS, which this serves); RFC 3207, RFC 8446, RFC 6125;
//   SSL_set_bio(3), BIO_s_mem(3), SSL_get_error(3), SSL_set1_host(3); Postfix's
//   tlsproxy(8), which also keeps TLS away from the process that owns the protocol.
#ifndef VOLLEY_ENGINE_TLS_TLS_H_
#define VOLLEY_ENGINE_TLS_TLS_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::tls {

enum class Role { kClient, kServer };

// kNone: encrypt only (opportunistic); kChainAndHost: refuse an unauthenticated peer.
enum class Verify { kNone, kChainAndHost };

struct ClientContextOptions {
  // Trust anchors. ca_file is a PEM bundle, ca_path a c_rehash'ed directory, ca_pem
  // PEM text (for tests and a private CA shipped in the config). Any of them may be
  // given; when all three are empty, OpenSSL's default paths (the system store,
  // /etc/ssl/certs on Debian): the bundle (SSL_CERT_FILE) read once, the directory
  // (SSL_CERT_DIR) looked up by hash name, never read whole per verification. A
  // missing or unreadable file is an error, not an empty store, so that a typo
  // cannot silently turn every delivery into a deferral.
  std::string ca_file;
  std::string ca_path;
  std::string ca_pem;
  // The oldest protocol offered: "TLSv1.2" or "TLSv1.3". Default: "TLSv1.2".
  std::string min_version = "TLSv1.2";
  // TLS 1.2 cipher list in OpenSSL syntax; "" = OpenSSL's default (TLS 1.3 suites are
  // always OpenSSL's default). Default: "".
  std::string ciphers;
  // Saved sessions for resumption, at most this many peers (see DESCRIPTION); 0 = no
  // resumption, every handshake in full. Default: 0.
  size_t session_cache_size = 0;
};

struct ServerContextOptions {
  // PEM text, not paths: the leaf certificate first, then any intermediates; the key
  // unencrypted (PKCS#8 or traditional).
  std::string cert_pem;
  std::string key_pem;
  // Protocol range: "TLSv1.2" or "TLSv1.3"; max_version "" = the newest OpenSSL has.
  // Default: "TLSv1.2" and "". A lower max_version exists for tests of old peers.
  std::string min_version = "TLSv1.2";
  std::string max_version;
  // Session tickets sent after each full TLS 1.3 handshake (a TLS 1.2 client that
  // asks gets one); 0 = none, and no resumption. Default: 0.
  int session_tickets = 0;
  // The 80 bytes that seal tickets (name 16, HMAC 32, AES 32), so that several
  // Contexts (one per thread) take each other's tickets; "" = a random key of this
  // Context's own. Default: "".
  std::string ticket_key;
};

// Context - the SSL_CTX a shard's sessions share. Movable, not copyable.
class Context {
 public:
  static absl::StatusOr<Context> Client(const ClientContextOptions& opts);
  static absl::StatusOr<Context> Server(const ServerContextOptions& opts);

  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  Role role() const;

 private:
  friend class Session;
  struct Impl;
  explicit Context(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct SessionOptions {
  // Client only; a server session must leave the default.
  Verify verify = Verify::kNone;
  // Client: the SNI sent (none when empty or an IP literal) and, when verify is
  // kChainAndHost, the name the certificate must carry (then it must not be empty).
  // Give the MX host name, not the mail domain: that is the name MTA-STS (RFC 8461)
  // matches, and the one a server's certificate is most likely to carry.
  std::string server_name;
  // Client: more names the certificate may carry instead of server_name (any one
  // will do; e.g. a provider's several MX names). Host names only, same rules.
  std::vector<std::string> also_match;
  // Client: where the connection goes, "192.0.2.1:25", for resumption: with a
  // session cache in the Context, a saved session with the same peer_address,
  // server_name, also_match and verify is offered, and this one's saved for the
  // next. "" = neither. Default: "".
  std::string peer_address;
};

// Session - one TLS connection. Movable, not copyable.
class Session {
 public:
  enum class Progress { kDone, kWantIo };

  // Create - a session on `ctx` (whose role must be `role`); InvalidArgument for
  // verify kChainAndHost without a server_name, or on a server.
  static absl::StatusOr<Session> Create(Context& ctx, Role role, SessionOptions opts = {});

  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // FeedCiphertext - bytes read from the socket; only buffered (ignored once dead).
  void FeedCiphertext(std::string_view bytes);
  // PendingCiphertext - the records to write to the socket, oldest first; may be
  // empty. Valid until the next non-const call.
  std::string_view PendingCiphertext() const;
  // ConsumeCiphertext - n bytes of PendingCiphertext() were written. Aborts when n is
  // more than is pending (a reactor bug).
  void ConsumeCiphertext(size_t n);
  // TakeCiphertext - all of PendingCiphertext() moved into *into (its old
  // contents dropped), without a copy when nothing was consumed before: a
  // message's records become the caller's send buffer.
  void TakeCiphertext(std::string* into);
  // buffered_ciphertext - bytes fed and not yet taken by OpenSSL.
  size_t buffered_ciphertext() const;

  // Handshake - drive the handshake with what was fed: kDone (also on every call
  // after), kWantIo (write PendingCiphertext, feed more, call again), or an error.
  absl::StatusOr<Progress> Handshake();
  bool established() const;

  // ReadPlaintext - append the plaintext available now to *out, at most max bytes;
  // returns the count, 0 when none yet or once peer_closed().
  absl::StatusOr<size_t> ReadPlaintext(std::string* out, size_t max);
  // peer_closed - the peer's close_notify arrived: no more plaintext will come.
  bool peer_closed() const;

  // WritePlaintext - encrypt all of `bytes` into PendingCiphertext(). FailedPrecondition
  // after Shutdown().
  absl::Status WritePlaintext(std::string_view bytes);
  // Shutdown - queue a close_notify (once; nothing before the handshake is done).
  // ReadPlaintext() still works until the peer's own close_notify.
  void Shutdown();

  // After the handshake, for logs: "" before it.
  std::string version() const;  // "TLSv1.3"
  std::string cipher() const;   // "TLS_AES_256_GCM_SHA384"
  // resumed - the handshake resumed a saved session (no certificate was sent: the
  // one checked when the session was first made stands); false before it is done.
  bool resumed() const;
  // peer_verified - chain and host verified; only ever true with kChainAndHost.
  bool peer_verified() const;
  // verify_error - client, after the handshake: why the peer's certificate did not
  // verify, with either Verify ("self-signed certificate", "hostname mismatch", "no
  // peer certificate"), or "" when it did (the host is checked only if server_name
  // was given). "" on a server and before the handshake.
  std::string verify_error() const;
  // peer_subject - the peer certificate's subject, RFC 2253 ("CN=mx.dst.test"), or "".
  std::string peer_subject() const;
  // server_name - client: the name given; server: the SNI the client sent, or "".
  std::string server_name() const;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// CertificatePem - a certificate (leaf first) and its unencrypted key, PEM text.
struct CertificatePem {
  std::string cert_pem;
  std::string key_pem;
};

// GenerateSelfSigned - a self-signed EC P-256 certificate, SHA-256, subject CN the
// first name, a subjectAltName DNS entry per name, valid from an hour ago (clock
// skew) for `days`; also a CA (basicConstraints CA:TRUE), so a client can trust
// cert_pem as its ca_pem. For volley-sink's STARTTLS and the tests. InvalidArgument
// for no names, a name that is not a host name or "*.<host name>", or days < 1.
absl::StatusOr<CertificatePem> GenerateSelfSigned(const std::vector<std::string>& dns_names,
                                                  int days = 30);

}  // namespace volley::tls

#endif  // VOLLEY_ENGINE_TLS_TLS_H_
