// tls.cc - OpenSSL 3 behind memory BIOs (see tls.h)
#include "engine/tls/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <list>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/openssl_ptr.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::tls {
namespace {

using base::Sv;

// One TLS record's worth of plaintext: ReadPlaintext grows the caller's string by at
// most this much per SSL_read, so a huge `max` never means a huge allocation.
constexpr size_t kReadChunk = 16 * 1024;

// A TLS record's plaintext at most, and what a record adds to it at most in the
// ciphers we allow (header, explicit nonce or inner type, tag, CBC padding and MAC
// had we allowed them): WritePlaintext's reservation.
constexpr size_t kRecordPlaintext = 16 * 1024;
constexpr size_t kRecordOverhead = 5 + 16 + 256 + 48;

// PendingCiphertext's buffer is given back once drained if it grew past this, so a
// session that once sent a large message does not keep the memory while it idles.
constexpr size_t kKeepOutCapacity = 64 * 1024;

using base::BignumPtr;
using base::BioPtr;
using base::OpenSslPtr;
using base::PkeyPtr;
using base::SslCtxPtr;
using base::SslPtr;
using base::X509Ptr;
using SslSessionPtr = OpenSslPtr<SSL_SESSION, SSL_SESSION_free>;

// The length OpenSSL 3 wants for SSL_CTX_set_tlsext_ticket_keys: key name (16),
// HMAC secret (32), AES-256 key (32).
constexpr size_t kTicketKeySize = 80;

// ErrorScope - the thread's OpenSSL error queue is empty on entry (so SSL_get_error
// cannot be misled by another session's leftovers) and on exit (so we leave none).
// Errors we report are drained into the Status before the scope ends.
// Cleared only when something is queued: ERR_clear_error resets all sixteen
// slots every time (about 840 instructions), and a scope opens around every
// read, write and feed, so on a TLS connection it was about 5,000 instructions
// a message while the queue was nearly always empty already.
class ErrorScope {
 public:
  ErrorScope() { ClearIfAny(); }
  ~ErrorScope() { ClearIfAny(); }
  ErrorScope(const ErrorScope&) = delete;
  ErrorScope& operator=(const ErrorScope&) = delete;

 private:
  static void ClearIfAny() {
    if (ERR_peek_error() != 0) ERR_clear_error();
  }
};

// The error queue, oldest first: the first entry's reason (the most specific one,
// as OpenSSL pushes the root cause first) and every entry in full.
struct Drained {
  std::string headline;  // "wrong version number"
  std::string detail;    // "error:0A00010B:SSL routines::wrong version number"
  bool verify_failed = false;
};

Drained DrainErrorQueue() {
  Drained d;
  const char* data = nullptr;
  int flags = 0;
  for (unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags); e != 0;
       e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    const bool has_data = (flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0';
    if (d.headline.empty()) {
      // A system error's reason is an errno, which has no reason string of its own.
      const char* reason = ERR_reason_error_string(e);
      if (ERR_SYSTEM_ERROR(e)) {
        d.headline = std::error_code(ERR_GET_REASON(e), std::generic_category()).message();
      } else {
        d.headline = reason != nullptr ? reason : buf;
      }
      if (has_data) absl::StrAppend(&d.headline, " (", data, ")");
    }
    if (!d.detail.empty()) d.detail += "; ";
    d.detail += buf;
    if (has_data) absl::StrAppend(&d.detail, " (", data, ")");
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      d.verify_failed = true;
    }
  }
  return d;
}

// OpensslError - "<what>: <reason> [<queue>]", draining the queue; `fallback` is the
// reason when OpenSSL left none.
absl::Status OpensslError(absl::StatusCode code, std::string_view what, std::string_view fallback) {
  Drained d = DrainErrorQueue();
  std::string msg =
      absl::StrCat(Sv(what), ": ", d.headline.empty() ? Sv(fallback) : Sv(d.headline));
  if (!d.detail.empty()) absl::StrAppend(&msg, " [", d.detail, "]");
  return absl::Status(code, msg);
}

absl::StatusOr<int> ParseVersion(std::string_view field, std::string_view v, bool empty_ok) {
  if (v == "TLSv1.2") return TLS1_2_VERSION;
  if (v == "TLSv1.3") return TLS1_3_VERSION;
  if (v.empty() && empty_ok) return 0;  // OpenSSL: no limit
  return absl::InvalidArgumentError(
      absl::StrCat(Sv(field), ": \"", Sv(v), "\" is not TLSv1.2 or TLSv1.3"));
}

// The settings both roles share; `max_version` 0 = the newest OpenSSL has.
absl::Status CommonSetup(SSL_CTX* ctx, int min_version, int max_version) {
  if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, max_version) != 1) {
    return OpensslError(absl::StatusCode::kInvalidArgument, "protocol version", "refused");
  }
  // Compression leaks plaintext through lengths (CRIME); renegotiation is a TLS 1.2
  // attack surface outbound mail never needs. Tickets and the session cache stay off
  // unless the context's options turn resumption on (Client, Server below).
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // A memory BIO never refuses a write, so SSL_write finishes at once; the two write
  // modes keep WritePlaintext's loop correct should that ever change. Releasing the
  // record buffers between calls keeps an idle connection at a few hundred bytes.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  return absl::OkStatus();
}

// UseDefaultCaPaths - the system's trust store as SSL_CTX_set_default_verify_paths
// gives it (the CA bundle, SSL_CERT_FILE, read once; the c_rehash'ed directory,
// SSL_CERT_DIR, looked up by hash name), without the third lookup OpenSSL 3 adds
// there: its default "store" reads the whole directory, every file of it, on each
// issuer it does not already hold. That is every chain that does not end at a
// known root, such as the self-signed certificates many MX hosts present, and under
// tls = "opportunistic" every one is checked (for the log): measured, over 100 µs
// of directory reads per full handshake with /etc/ssl/certs's 290 entries, more
// than half of the certificate check.
absl::Status UseDefaultCaPaths(X509_STORE* store) {
  X509_LOOKUP* bundle = X509_STORE_add_lookup(store, X509_LOOKUP_file());
  X509_LOOKUP* directory = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
  if (bundle == nullptr || directory == nullptr) {
    return OpensslError(absl::StatusCode::kInternal, "default CA paths", "failed");
  }
  // As OpenSSL's defaults: a system without a bundle or directory trusts nothing
  // from it, which is not an error here (tls = "verify" then fails per handshake).
  X509_LOOKUP_load_file(bundle, nullptr, X509_FILETYPE_DEFAULT);
  X509_LOOKUP_add_dir(directory, nullptr, X509_FILETYPE_DEFAULT);
  ERR_clear_error();
  return absl::OkStatus();
}

// PEM text may be encrypted; OpenSSL's default would then prompt on the terminal,
// which a daemon must never do. Saying "no password" makes that a plain error.
int NoPassword(char*, int, int, void*) { return 0; }

absl::StatusOr<BioPtr> MemoryBioOf(std::string_view field, const std::string& text) {
  if (text.size() > INT_MAX)
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": too large"));
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (bio == nullptr) return OpensslError(absl::StatusCode::kInternal, field, "out of memory");
  return bio;
}

// ReadCertificates - every certificate in PEM text, in order; at least one.
absl::StatusOr<std::vector<X509Ptr>> ReadCertificates(std::string_view field,
                                                      const std::string& pem) {
  ASSIGN_OR_RETURN(BioPtr bio, MemoryBioOf(field, pem));
  std::vector<X509Ptr> certs;
  for (;;) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassword, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  // The loop always ends on an error; only "no start line" after a certificate is
  // the clean end of the text.
  const unsigned long last = ERR_peek_last_error();
  if (!certs.empty() && ERR_GET_LIB(last) == ERR_LIB_PEM &&
      ERR_GET_REASON(last) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return certs;
  }
  return OpensslError(absl::StatusCode::kInvalidArgument, field, "no certificate");
}

bool IsIpLiteral(const std::string& name) {
  in6_addr addr6;
  in_addr addr4;
  return inet_pton(AF_INET, name.c_str(), &addr4) == 1 ||
         inet_pton(AF_INET6, name.c_str(), &addr6) == 1;
}

// A host name as certificates carry it: LDH labels of 1 to 63 octets, at most 253
// in all, optionally "*." first. Anything else could smuggle a second name or a NUL
// into the certificate.
bool IsCertificateHostName(std::string_view name) {
  if (name.substr(0, 2) == "*.") name.remove_prefix(2);
  if (name.empty() || name.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (label == 0 || label > 63 || name[i - 1] == '-' || name[i - label] == '-') return false;
      label = 0;
      continue;
    }
    const char c = name[i];
    const bool ldh =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ldh) return false;
    ++label;
  }
  return true;
}

// The peer's server_name reaches SNI and X509_check_host as a C string: an embedded
// NUL would make OpenSSL check a shorter name than the one the caller meant.
bool IsSafeServerName(std::string_view name) {
  if (name.size() > 255) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

std::string ReadMemoryBio(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

}  // namespace

// --- SessionCache ----------------------------------------------------------------

// SessionCache - a client context's saved sessions, the newest one per key, at most
// `capacity` keys; past that the least recently used key goes. A key names the peer
// and everything its certificate was checked against (ResumptionKey), so a session
// is offered again only where it would have been verified the same way.
class SessionCache {
 public:
  explicit SessionCache(size_t capacity) : capacity_(capacity) {}
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;

  // Find - the session saved under key (borrowed: valid until the next Put or
  // Erase), or null. Marks the key as used.
  SSL_SESSION* Find(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second.get();
  }
  // Put - keep `session` (its reference is taken over) under key, replacing any.
  void Put(const std::string& key, SSL_SESSION* session) {
    SslSessionPtr owned(session);
    if (capacity_ == 0) return;
    if (auto it = index_.find(key); it != index_.end()) {
      it->second->second = std::move(owned);
      lru_.splice(lru_.begin(), lru_, it->second);
      return;
    }
    if (index_.size() >= capacity_) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    lru_.emplace_front(key, std::move(owned));
    index_.emplace(key, lru_.begin());
  }
  void Erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    lru_.erase(it->second);
    index_.erase(it);
  }
  size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<std::string, SslSessionPtr>;
  size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

// ResumptionKey - what a saved session is filed under: the peer's address, the name
// sent and checked, the other acceptable names and the verification level. A session
// verified for one name (or not verified at all, under kNone) is never offered to a
// connection that must check another: a resumed handshake carries no certificate to
// check again, so the key, not the handshake, keeps verification honest.
std::string ResumptionKey(const SessionOptions& opts) {
  std::string key = absl::StrCat(opts.peer_address, "|", opts.server_name, "|",
                                 opts.verify == Verify::kChainAndHost ? "verify" : "none");
  for (const std::string& also : opts.also_match) absl::StrAppend(&key, "|", also);
  return key;
}

// Resumption - a client session's place in its context's cache; the SSL's app data
// points at it, for OnNewSession.
struct Resumption {
  std::shared_ptr<SessionCache> sessions;
  std::string key;
  Verify verify = Verify::kNone;
};

// OnNewSession - OpenSSL's new-session callback on a client context with a cache:
// files the session under the connection's key. 1: the reference is ours now.
int OnNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* r = static_cast<Resumption*>(SSL_get_app_data(ssl));
  if (r == nullptr || r->sessions == nullptr || r->key.empty()) return 0;
  if (SSL_SESSION_is_resumable(session) != 1) return 0;
  // Under kChainAndHost the handshake fails unless the peer verified; checked again
  // so that a session that did not can never be filed where a verified one belongs.
  if (r->verify == Verify::kChainAndHost && SSL_get_verify_result(ssl) != X509_V_OK) return 0;
  r->sessions->Put(r->key, session);
  return 1;
}

// --- Context ---------------------------------------------------------------------

struct Context::Impl {
  SslCtxPtr ctx;
  Role role = Role::kClient;
  // Client, with resumption on; shared with the sessions, which may outlive this.
  std::shared_ptr<SessionCache> sessions;
};

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;
Context::~Context() = default;

Role Context::role() const { return impl_->role; }

absl::StatusOr<Context> Context::Client(const ClientContextOptions& opts) {
  ErrorScope scope;
  ASSIGN_OR_RETURN(const int min_version, ParseVersion("min_version", opts.min_version, false));
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) return OpensslError(absl::StatusCode::kInternal, "SSL_CTX_new", "failed");
  RETURN_IF_ERROR(CommonSetup(ctx.get(), min_version, 0));
  if (!opts.ciphers.empty() && SSL_CTX_set_cipher_list(ctx.get(), opts.ciphers.c_str()) != 1) {
    return OpensslError(absl::StatusCode::kInvalidArgument,
                        absl::StrCat("ciphers \"", opts.ciphers, "\""), "refused");
  }

  if (opts.ca_file.empty() && opts.ca_path.empty() && opts.ca_pem.empty()) {
    RETURN_IF_ERROR(UseDefaultCaPaths(SSL_CTX_get_cert_store(ctx.get())));
  }
  if (!opts.ca_path.empty()) {
    // OpenSSL looks in a CA directory lazily, per certificate, so a wrong path would
    // only show as verify failures much later: check it now.
    std::error_code ec;
    if (!std::filesystem::is_directory(opts.ca_path, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ca_path ", opts.ca_path, ": not a directory"));
    }
  }
  if (!opts.ca_file.empty() || !opts.ca_path.empty()) {
    const char* file = opts.ca_file.empty() ? nullptr : opts.ca_file.c_str();
    const char* path = opts.ca_path.empty() ? nullptr : opts.ca_path.c_str();
    if (SSL_CTX_load_verify_locations(ctx.get(), file, path) != 1) {
      return OpensslError(absl::StatusCode::kInvalidArgument,
                          absl::StrCat("ca_file ", opts.ca_file), "unreadable");
    }
  }
  if (!opts.ca_pem.empty()) {
    ASSIGN_OR_RETURN(std::vector<X509Ptr> cas, ReadCertificates("ca_pem", opts.ca_pem));
    X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
    for (const X509Ptr& ca : cas) {
      if (X509_STORE_add_cert(store, ca.get()) != 1) {
        return OpensslError(absl::StatusCode::kInvalidArgument, "ca_pem", "refused");
      }
    }
  }
  // Per session: Session::Create sets the mode its SessionOptions ask for.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);

  auto impl = std::make_unique<Impl>();
  if (opts.session_cache_size > 0) {
    // Sessions are filed by our own key (ResumptionKey), not OpenSSL's internal
    // client cache (which it has not): the callback hands each new session over,
    // a TLS 1.3 one when its ticket arrives after the handshake.
    SSL_CTX_clear_options(ctx.get(), SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.get(), &OnNewSession);
    impl->sessions = std::make_shared<SessionCache>(opts.session_cache_size);
  }
  impl->ctx = std::move(ctx);
  impl->role = Role::kClient;
  return Context(std::move(impl));
}

absl::StatusOr<Context> Context::Server(const ServerContextOptions& opts) {
  ErrorScope scope;
  ASSIGN_OR_RETURN(const int min_version, ParseVersion("min_version", opts.min_version, false));
  ASSIGN_OR_RETURN(const int max_version, ParseVersion("max_version", opts.max_version, true));
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (ctx == nullptr) return OpensslError(absl::StatusCode::kInternal, "SSL_CTX_new", "failed");
  RETURN_IF_ERROR(CommonSetup(ctx.get(), min_version, max_version));
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (opts.session_tickets == 0) {
    // TLS 1.3 servers send tickets unasked, after the handshake; with no resumption
    // they would be bytes on the wire for nothing.
    SSL_CTX_set_num_tickets(ctx.get(), 0);
  } else {
    // Stateless tickets: the session state travels in the ticket, sealed with the
    // context's ticket key, so the server keeps nothing per client.
    SSL_CTX_clear_options(ctx.get(), SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx.get(), opts.session_tickets);
    if (!opts.ticket_key.empty()) {
      if (opts.ticket_key.size() != kTicketKeySize) {
        return absl::InvalidArgumentError(
            absl::StrCat("ticket_key: ", opts.ticket_key.size(), " bytes, not ", kTicketKeySize));
      }
      std::string key = opts.ticket_key;  // OpenSSL's prototype is not const
      if (SSL_CTX_set_tlsext_ticket_keys(ctx.get(), key.data(), static_cast<long>(key.size())) !=
          1) {
        return OpensslError(absl::StatusCode::kInvalidArgument, "ticket_key", "refused");
      }
    }
  }

  ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, ReadCertificates("cert_pem", opts.cert_pem));
  if (SSL_CTX_use_certificate(ctx.get(), certs[0].get()) != 1) {
    return OpensslError(absl::StatusCode::kInvalidArgument, "cert_pem", "refused");
  }
  for (size_t i = 1; i < certs.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(ctx.get(), certs[i].get()) != 1) {
      return OpensslError(absl::StatusCode::kInvalidArgument, "cert_pem chain", "refused");
    }
  }
  ASSIGN_OR_RETURN(BioPtr key_bio, MemoryBioOf("key_pem", opts.key_pem));
  PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassword, nullptr));
  if (key == nullptr) {
    return OpensslError(absl::StatusCode::kInvalidArgument, "key_pem", "no private key");
  }
  if (SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    return OpensslError(absl::StatusCode::kInvalidArgument, "key_pem", "does not match cert_pem");
  }

  auto impl = std::make_unique<Impl>();
  impl->ctx = std::move(ctx);
  impl->role = Role::kServer;
  return Context(std::move(impl));
}

// --- Session ---------------------------------------------------------------------

struct Session::Impl {
  ~Impl() {
    // OpenSSL takes an SSL freed before a close_notify was sent for a broken
    // connection and marks its session not resumable (ssl_clear_bad_session),
    // which would spoil the saved session the next connection was to offer. SMTP
    // ends with QUIT and its 221, not necessarily a close_notify, so a session
    // that ended without an error is declared shut down; one that failed keeps
    // the mark (and Create drops it from the cache).
    if (ssl != nullptr && established && failed.ok()) {
      SSL_set_shutdown(ssl.get(), SSL_get_shutdown(ssl.get()) | SSL_SENT_SHUTDOWN);
    }
    // `pending` goes before `ssl` does: nothing may be written into it after.
    if (out != nullptr) BIO_set_data(out, nullptr);
  }

  SslPtr ssl;
  BIO* in = nullptr;   // owned by ssl; ciphertext from the peer
  BIO* out = nullptr;  // owned by ssl; writes straight into `pending` (CiphertextSink)
  Role role = Role::kClient;
  Verify verify = Verify::kNone;
  std::string server_name;
  // Client with resumption: the context's cache and this connection's key in it.
  Resumption resumption;
  std::string pending;  // ciphertext for the peer: pending[pending_start..]
  size_t pending_start = 0;
  bool established = false;
  bool peer_closed = false;
  bool shutdown_sent = false;
  absl::Status failed;  // sticky: once not OK, the session is dead

  // AppendCiphertext - what OpenSSL writes to `out` (CiphertextSink): records
  // go straight to the end of `pending`, where the caller sees them as one
  // contiguous view.
  void AppendCiphertext(const char* data, size_t n);
  // The BIO method of `out` (CiphertextSink below) and its write.
  static const BIO_METHOD* CiphertextSink();
  static int SinkWrite(BIO* bio, const char* data, size_t n, size_t* written);
  absl::Status Fail(absl::Status status) {
    failed = status;
    return status;
  }
  absl::Status IoError(std::string_view what, int ssl_error);
};

void Session::Impl::AppendCiphertext(const char* data, size_t n) {
  // Compact only when the consumed prefix is at least half the buffer, so moving
  // the tail costs no more than the bytes already consumed.
  if (pending_start > 0 && pending_start >= pending.size() / 2) {
    pending.erase(0, pending_start);
    pending_start = 0;
  }
  pending.append(data, n);
}

namespace {

long SinkCtrl(BIO* /*bio*/, int cmd, long /*num*/, void* /*ptr*/) {
  // Written is as good as flushed; nothing is ever held back. Every other
  // control (pending counts, kTLS, push and pop) has nothing to say: 0.
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int SinkCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

}  // namespace

int Session::Impl::SinkWrite(BIO* bio, const char* data, size_t n, size_t* written) {
  auto* session = static_cast<Impl*>(BIO_get_data(bio));
  if (session == nullptr) return 0;  // the session is going away
  session->AppendCiphertext(data, n);
  *written = n;
  return 1;
}

// CiphertextSink - the write BIO of every session: a BIO method whose write
// appends to the session's `pending` string. A memory BIO would cost a copy
// (BIO_read into `pending`) and, worse, keep its buffer at the largest size
// ever written: a session that once sent a 100 KiB message held 100 KiB for
// as long as it stayed open (measured: about 118 KiB per open connection in
// scenario 2 under STARTTLS, outside max_message_bytes_in_flight).
const BIO_METHOD* Session::Impl::CiphertextSink() {
  static const BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "volley ciphertext");
    if (m == nullptr) return static_cast<BIO_METHOD*>(nullptr);
    if (BIO_meth_set_write_ex(m, SinkWrite) != 1 || BIO_meth_set_ctrl(m, SinkCtrl) != 1 ||
        BIO_meth_set_create(m, SinkCreate) != 1) {
      BIO_meth_free(m);
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return m;
  }();
  return method;
}

absl::Status Session::Impl::IoError(std::string_view what, int ssl_error) {
  switch (ssl_error) {
    case SSL_ERROR_SSL: {
      Drained d = DrainErrorQueue();
      const long result = SSL_get_verify_result(ssl.get());
      std::string msg;
      absl::StatusCode code = absl::StatusCode::kUnavailable;
      if (d.verify_failed && result != X509_V_OK) {
        code = absl::StatusCode::kUnauthenticated;
        msg = absl::StrCat(Sv(what),
                           ": certificate verify failed: ", X509_verify_cert_error_string(result));
      } else {
        msg = absl::StrCat(Sv(what), ": ", d.headline.empty() ? "TLS protocol error" : d.headline);
      }
      if (!d.detail.empty()) absl::StrAppend(&msg, " [", d.detail, "]");
      return absl::Status(code, msg);
    }
    case SSL_ERROR_ZERO_RETURN:
      return absl::UnavailableError(absl::StrCat(Sv(what), ": peer sent close_notify"));
    case SSL_ERROR_SYSCALL:
      // The input BIO answers "retry" when empty, never EOF, and a memory BIO makes
      // no system calls: this is OpenSSL failing inside, whatever the queue says.
      return OpensslError(absl::StatusCode::kInternal, what, "SSL_ERROR_SYSCALL");
    default:
      return OpensslError(absl::StatusCode::kInternal, what,
                          absl::StrCat("unexpected SSL_get_error ", ssl_error));
  }
}

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

absl::StatusOr<Session> Session::Create(Context& ctx, Role role, SessionOptions opts) {
  ErrorScope scope;
  if (ctx.impl_ == nullptr) return absl::FailedPreconditionError("Session: moved-from Context");
  if (ctx.impl_->role != role) {
    return absl::InvalidArgumentError("Session: the Context was made for the other role");
  }
  if (role == Role::kServer && (opts.verify != Verify::kNone || !opts.server_name.empty())) {
    return absl::InvalidArgumentError("Session: verify and server_name are client options");
  }
  if (!IsSafeServerName(opts.server_name)) {
    return absl::InvalidArgumentError(
        "Session: server_name must be printable ASCII without spaces, at most 255 octets");
  }
  for (const std::string& name : opts.also_match) {
    if (role == Role::kServer || name.empty() || !IsSafeServerName(name) || IsIpLiteral(name)) {
      return absl::InvalidArgumentError(
          "Session: also_match takes client-side host names: printable ASCII without "
          "spaces, at most 255 octets");
    }
  }
  if (opts.verify == Verify::kChainAndHost && opts.server_name.empty()) {
    return absl::InvalidArgumentError("Session: kChainAndHost needs a server_name to check");
  }

  auto impl = std::make_unique<Impl>();
  impl->ssl.reset(SSL_new(ctx.impl_->ctx.get()));
  if (impl->ssl == nullptr) return OpensslError(absl::StatusCode::kInternal, "SSL_new", "failed");
  BioPtr in(BIO_new(BIO_s_mem()));
  const BIO_METHOD* sink = Impl::CiphertextSink();
  BioPtr out(sink != nullptr ? BIO_new(sink) : nullptr);
  if (in == nullptr || out == nullptr) {
    return OpensslError(absl::StatusCode::kInternal, "BIO_new", "out of memory");
  }
  BIO_set_data(out.get(), impl.get());
  // An empty input means "nothing yet", not end of stream: the socket's EOF is the
  // reactor's to report, and OpenSSL must answer WANT_READ, never fail.
  BIO_set_mem_eof_return(in.get(), -1);
  impl->in = in.get();
  impl->out = out.get();
  SSL_set_bio(impl->ssl.get(), in.release(), out.release());  // the SSL owns both from here
  impl->role = role;
  impl->verify = opts.verify;
  impl->server_name = opts.server_name;

  SSL* ssl = impl->ssl.get();
  // Impl is on the heap and never moves: OnNewSession finds its Resumption.
  SSL_set_app_data(ssl, &impl->resumption);
  if (role == Role::kServer) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    const std::string& name = opts.server_name;
    if (!name.empty()) {
      const bool ip = IsIpLiteral(name);
      if (!ip && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
        return OpensslError(absl::StatusCode::kInvalidArgument, "server_name (SNI)", "refused");
      }
      // Checked even with kNone, so that verify_error() can tell the log whether an
      // opportunistic session would also have passed verification.
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str())
                         : SSL_set1_host(ssl, name.c_str());
      if (set != 1) {
        return OpensslError(absl::StatusCode::kInvalidArgument, "server_name", "refused");
      }
      for (const std::string& also : opts.also_match) {
        if (SSL_add1_host(ssl, also.c_str()) != 1) {
          return OpensslError(absl::StatusCode::kInvalidArgument, "also_match", "refused");
        }
      }
    }
    SSL_set_verify(ssl, opts.verify == Verify::kChainAndHost ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                   nullptr);
    if (ctx.impl_->sessions != nullptr && !opts.peer_address.empty()) {
      impl->resumption.sessions = ctx.impl_->sessions;
      impl->resumption.key = ResumptionKey(opts);
      impl->resumption.verify = opts.verify;
      SSL_SESSION* saved = impl->resumption.sessions->Find(impl->resumption.key);
      if (saved != nullptr && SSL_SESSION_is_resumable(saved) != 1) {
        // OpenSSL marked it (a connection on it ended in an error): forget it.
        impl->resumption.sessions->Erase(impl->resumption.key);
        saved = nullptr;
      }
      if (saved != nullptr) {
        // Offered, not imposed: a server that no longer knows it (or no longer
        // takes tickets) makes this a full handshake, with verification as usual.
        if (SSL_set_session(ssl, saved) != 1) ERR_clear_error();
      }
    }
  }
  return Session(std::move(impl));
}

void Session::FeedCiphertext(std::string_view bytes) {
  Impl& s = *impl_;
  if (!s.failed.ok() || bytes.empty()) return;
  ErrorScope scope;
  size_t written = 0;
  if (BIO_write_ex(s.in, bytes.data(), bytes.size(), &written) != 1 || written != bytes.size()) {
    s.failed = OpensslError(absl::StatusCode::kInternal, "feed", "out of memory");
  }
}

std::string_view Session::PendingCiphertext() const {
  const Impl& s = *impl_;
  return std::string_view(s.pending).substr(s.pending_start);
}

void Session::ConsumeCiphertext(size_t n) {
  Impl& s = *impl_;
  VOLLEY_CHECK(n <= s.pending.size() - s.pending_start, "ConsumeCiphertext: more than was pending");
  s.pending_start += n;
  if (s.pending_start == s.pending.size()) {
    s.pending_start = 0;
    if (s.pending.capacity() > kKeepOutCapacity) {
      std::string().swap(s.pending);
    } else {
      s.pending.clear();
    }
  }
}

void Session::TakeCiphertext(std::string* into) {
  Impl& s = *impl_;
  if (s.pending_start == 0) {
    into->clear();
    into->swap(s.pending);  // `pending` keeps into's old (cleared) buffer
  } else {
    into->assign(s.pending, s.pending_start);
    s.pending.clear();
    s.pending_start = 0;
  }
  if (s.pending.capacity() > kKeepOutCapacity) std::string().swap(s.pending);
}

size_t Session::buffered_ciphertext() const { return BIO_ctrl_pending(impl_->in); }

absl::StatusOr<Session::Progress> Session::Handshake() {
  Impl& s = *impl_;
  if (!s.failed.ok()) return s.failed;
  if (s.established) return Progress::kDone;
  ErrorScope scope;
  const int r = SSL_do_handshake(s.ssl.get());
  const int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl.get(), r);
  // The next flight, or the alert that explains a failure, is in `pending`.
  if (err == SSL_ERROR_NONE) {
    s.established = true;
    return Progress::kDone;
  }
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Progress::kWantIo;
  // A saved session that led to a failed handshake is not offered again.
  if (s.resumption.sessions != nullptr) s.resumption.sessions->Erase(s.resumption.key);
  return s.Fail(s.IoError("handshake", err));
}

bool Session::resumed() const {
  return impl_->established && SSL_session_reused(impl_->ssl.get()) == 1;
}

bool Session::established() const { return impl_->established; }

absl::StatusOr<size_t> Session::ReadPlaintext(std::string* out, size_t max) {
  Impl& s = *impl_;
  if (!s.failed.ok()) return s.failed;
  if (!s.established) return absl::FailedPreconditionError("read: before the handshake is done");
  if (s.peer_closed || max == 0) return 0;
  // Nothing fed and nothing decrypted waiting: no record to read, so no SSL_read
  // (and its error-queue work) just to hear WANT_READ. A reactor that reads
  // until a short count would otherwise pay that on every receive.
  if (BIO_ctrl_pending(s.in) == 0 && SSL_has_pending(s.ssl.get()) == 0) return 0;
  ErrorScope scope;
  const size_t base = out->size();
  size_t total = 0;
  absl::Status error;
  while (total < max) {
    // A record's plaintext is never longer than its ciphertext: what was fed and
    // what OpenSSL holds bound what one read can give, so a 1 KiB reply does not
    // grow (and zero) the caller's string by a whole chunk.
    const size_t ready = BIO_ctrl_pending(s.in) + static_cast<size_t>(SSL_pending(s.ssl.get()));
    // After a record, nothing fed is left and nothing decrypted waits: another
    // SSL_read could only say WANT_READ, at the price of a record-layer pass.
    if (total > 0 && ready == 0) break;
    const size_t want = std::min({max - total, kReadChunk, std::max<size_t>(ready, 1)});
    out->resize(base + total + want);
    size_t got = 0;
    const int r = SSL_read_ex(s.ssl.get(), out->data() + base + total, want, &got);
    if (r == 1) {
      total += got;
      continue;
    }
    const int err = SSL_get_error(s.ssl.get(), r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) break;
    if (err == SSL_ERROR_ZERO_RETURN) {
      s.peer_closed = true;
      break;
    }
    error = s.IoError("read", err);
    break;
  }
  out->resize(base + total);
  // Key updates are answered, and alerts sent, into `pending` while reading.
  if (!error.ok()) {
    s.failed = error;
    // Plaintext that arrived before the bad record is genuine (it was
    // authenticated); hand it over now and report the error on the next call.
    if (total == 0) return error;
  }
  return total;
}

bool Session::peer_closed() const { return impl_->peer_closed; }

absl::Status Session::WritePlaintext(std::string_view bytes) {
  Impl& s = *impl_;
  if (!s.failed.ok()) return s.failed;
  if (!s.established) return absl::FailedPreconditionError("write: before the handshake is done");
  if (s.shutdown_sent) return absl::FailedPreconditionError("write: after Shutdown()");
  ErrorScope scope;
  // Room for the records at once: a 100 KiB message would otherwise move
  // `pending` through four reallocations.
  s.pending.reserve(s.pending.size() + bytes.size() +
                    (bytes.size() / kRecordPlaintext + 1) * kRecordOverhead);
  size_t done = 0;
  while (done < bytes.size()) {
    size_t n = 0;
    const int r = SSL_write_ex(s.ssl.get(), bytes.data() + done, bytes.size() - done, &n);
    if (r == 1) {
      done += n;
      continue;
    }
    const int err = SSL_get_error(s.ssl.get(), r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      // Impossible with renegotiation off and a write BIO that takes everything;
      // carrying on would need the caller to retry with these exact bytes.
      return s.Fail(OpensslError(absl::StatusCode::kInternal, "write",
                                 "OpenSSL wants I/O in the middle of a write"));
    }
    return s.Fail(s.IoError("write", err));
  }
  return absl::OkStatus();
}

void Session::Shutdown() {
  Impl& s = *impl_;
  if (!s.failed.ok() || !s.established || s.shutdown_sent) return;
  ErrorScope scope;
  // 0 (sent, the peer's not yet seen) and 1 are both fine: ours is queued either
  // way, and the peer's arrives through ReadPlaintext.
  SSL_shutdown(s.ssl.get());
  s.shutdown_sent = true;
}

std::string Session::version() const {
  if (!impl_->established) return "";
  return SSL_get_version(impl_->ssl.get());
}

std::string Session::cipher() const {
  if (!impl_->established) return "";
  const SSL_CIPHER* c = SSL_get_current_cipher(impl_->ssl.get());
  return c != nullptr ? SSL_CIPHER_get_name(c) : "";
}

bool Session::peer_verified() const {
  // With SSL_VERIFY_PEER a handshake that completed has passed chain and host checks;
  // the explicit re-check guards against a future verify callback that overrides.
  const Impl& s = *impl_;
  return s.established && s.verify == Verify::kChainAndHost &&
         SSL_get0_peer_certificate(s.ssl.get()) != nullptr &&
         SSL_get_verify_result(s.ssl.get()) == X509_V_OK;
}

std::string Session::verify_error() const {
  const Impl& s = *impl_;
  if (s.role != Role::kClient || !s.established) return "";
  if (SSL_get0_peer_certificate(s.ssl.get()) == nullptr) return "no peer certificate";
  const long result = SSL_get_verify_result(s.ssl.get());
  return result == X509_V_OK ? "" : X509_verify_cert_error_string(result);
}

std::string Session::peer_subject() const {
  X509* cert = SSL_get0_peer_certificate(impl_->ssl.get());
  if (cert == nullptr) return "";
  ErrorScope scope;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) return "";
  if (X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return "";
  }
  return ReadMemoryBio(bio.get());
}

std::string Session::server_name() const {
  const Impl& s = *impl_;
  if (s.role == Role::kClient) return s.server_name;
  const char* sni = SSL_get_servername(s.ssl.get(), TLSEXT_NAMETYPE_host_name);
  return sni != nullptr ? sni : "";
}

// --- GenerateSelfSigned ----------------------------------------------------------

namespace {

absl::Status AddExtension(X509* cert, int nid, void* value, bool critical, std::string_view what) {
  if (X509_add1_ext_i2d(cert, nid, value, critical ? 1 : 0, X509V3_ADD_DEFAULT) != 1) {
    return OpensslError(absl::StatusCode::kInternal, what, "could not add");
  }
  return absl::OkStatus();
}

absl::Status AddCaExtensions(X509* cert, const std::vector<std::string>& dns_names) {
  OpenSslPtr<BASIC_CONSTRAINTS, BASIC_CONSTRAINTS_free> bc(BASIC_CONSTRAINTS_new());
  if (bc == nullptr) return OpensslError(absl::StatusCode::kInternal, "basicConstraints", "alloc");
  bc->ca = 1;  // it is its own trust anchor
  RETURN_IF_ERROR(AddExtension(cert, NID_basic_constraints, bc.get(), true, "basicConstraints"));

  OpenSslPtr<ASN1_BIT_STRING, ASN1_BIT_STRING_free> usage(ASN1_BIT_STRING_new());
  // Bits 0 and 5 (RFC 5280 section 4.2.1.3): digitalSignature for the handshake,
  // keyCertSign because the certificate is also its own CA.
  if (usage == nullptr || ASN1_BIT_STRING_set_bit(usage.get(), 0, 1) != 1 ||
      ASN1_BIT_STRING_set_bit(usage.get(), 5, 1) != 1) {
    return OpensslError(absl::StatusCode::kInternal, "keyUsage", "alloc");
  }
  RETURN_IF_ERROR(AddExtension(cert, NID_key_usage, usage.get(), true, "keyUsage"));

  OpenSslPtr<EXTENDED_KEY_USAGE, EXTENDED_KEY_USAGE_free> eku(
      sk_ASN1_OBJECT_new_null());
  if (eku == nullptr || sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_server_auth)) <= 0) {
    return OpensslError(absl::StatusCode::kInternal, "extendedKeyUsage", "alloc");
  }
  RETURN_IF_ERROR(AddExtension(cert, NID_ext_key_usage, eku.get(), false, "extendedKeyUsage"));

  // Built as ASN.1 rather than from a "DNS:a,DNS:b" config string, so that no name
  // can be parsed as two.
  OpenSslPtr<GENERAL_NAMES, GENERAL_NAMES_free> sans(sk_GENERAL_NAME_new_null());
  if (sans == nullptr) return OpensslError(absl::StatusCode::kInternal, "subjectAltName", "alloc");
  for (const std::string& name : dns_names) {
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    GENERAL_NAME* gen = GENERAL_NAME_new();
    if (ia5 == nullptr || gen == nullptr ||
        ASN1_STRING_set(ia5, name.data(), static_cast<int>(name.size())) != 1) {
      ASN1_IA5STRING_free(ia5);
      GENERAL_NAME_free(gen);
      return OpensslError(absl::StatusCode::kInternal, "subjectAltName", "alloc");
    }
    GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);  // gen owns ia5
    if (sk_GENERAL_NAME_push(sans.get(), gen) <= 0) {
      GENERAL_NAME_free(gen);
      return OpensslError(absl::StatusCode::kInternal, "subjectAltName", "alloc");
    }
  }
  RETURN_IF_ERROR(AddExtension(cert, NID_subject_alt_name, sans.get(), false, "subjectAltName"));

  X509V3_CTX v3;
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  OpenSslPtr<X509_EXTENSION, X509_EXTENSION_free> ski(
      X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_key_identifier, "hash"));
  if (ski == nullptr || X509_add_ext(cert, ski.get(), -1) != 1) {
    return OpensslError(absl::StatusCode::kInternal, "subjectKeyIdentifier", "could not add");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CertificatePem> GenerateSelfSigned(const std::vector<std::string>& dns_names,
                                                  int days) {
  if (dns_names.empty()) return absl::InvalidArgumentError("GenerateSelfSigned: no names");
  for (const std::string& name : dns_names) {
    if (!IsCertificateHostName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GenerateSelfSigned: \"", name, "\" is not a host name"));
    }
  }
  // The upper bound keeps notAfter inside what X509_time_adj_ex can represent.
  if (days < 1 || days > 36500) {
    return absl::InvalidArgumentError("GenerateSelfSigned: days must be 1 to 36500");
  }
  ErrorScope scope;

  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (key == nullptr) return OpensslError(absl::StatusCode::kInternal, "EC key", "failed");
  X509Ptr cert(X509_new());
  if (cert == nullptr) return OpensslError(absl::StatusCode::kInternal, "X509_new", "failed");
  X509* x = cert.get();

  // A random positive 127-bit serial: RFC 5280 wants unique serials per issuer, and
  // every one of these is its own issuer, but clients cache by issuer and serial.
  unsigned char serial_bytes[16];
  if (RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) {
    return OpensslError(absl::StatusCode::kInternal, "RAND_bytes", "failed");
  }
  serial_bytes[0] = static_cast<unsigned char>((serial_bytes[0] & 0x7f) | 0x01);
  BignumPtr serial(
      BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr));
  const bool ok = serial != nullptr &&
                  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x)) != nullptr &&
                  X509_set_version(x, X509_VERSION_3) == 1 &&
                  X509_gmtime_adj(X509_getm_notBefore(x), -3600) != nullptr &&
                  X509_time_adj_ex(X509_getm_notAfter(x), days, 0, nullptr) != nullptr &&
                  X509_set_pubkey(x, key.get()) == 1;
  if (!ok) return OpensslError(absl::StatusCode::kInternal, "certificate fields", "failed");

  // CN is for people reading logs; names are matched on subjectAltName only. X.520
  // caps CN at 64 octets, so a longer first name gets a generic CN.
  X509_NAME* subject = X509_get_subject_name(x);
  const std::string cn = dns_names[0].size() <= 64 ? dns_names[0] : "volley self-signed";
  if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(x, subject) != 1) {
    return OpensslError(absl::StatusCode::kInternal, "subject", "failed");
  }
  RETURN_IF_ERROR(AddCaExtensions(x, dns_names));
  if (X509_sign(x, key.get(), EVP_sha256()) <= 0) {
    return OpensslError(absl::StatusCode::kInternal, "X509_sign", "failed");
  }

  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  BioPtr key_bio(BIO_new(BIO_s_mem()));
  if (cert_bio == nullptr || key_bio == nullptr || PEM_write_bio_X509(cert_bio.get(), x) != 1 ||
      PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
          1) {
    return OpensslError(absl::StatusCode::kInternal, "PEM", "could not write");
  }
  return CertificatePem{ReadMemoryBio(cert_bio.get()), ReadMemoryBio(key_bio.get())};
}

}  // namespace volley::tls
