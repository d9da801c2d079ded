#include "engine/tls/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "base/openssl_ptr.h"
#include "base/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#if defined(__SANITIZE_ADDRESS__)
// From libasan (sanitizer/allocator_interface.h, which Debian ships with clang only).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace volley::tls {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr size_t kWhole = SIZE_MAX;

std::string Msg(const absl::Status& s) { return std::string(base::StdSv(s.message())); }

// Must - the value, or abort: for setup that no test expects to fail.
template <typename T>
T Must(absl::StatusOr<T> v) {
  if (!v.ok()) {
    ADD_FAILURE() << v.status();
    std::abort();
  }
  return *std::move(v);
}

const CertificatePem& MxCert() {
  static const CertificatePem pem = Must(GenerateSelfSigned({"mx.dst.test", "*.wild.test"}));
  return pem;
}

// A second, unrelated self-signed certificate: trusting it trusts nothing else.
const CertificatePem& OtherCert() {
  static const CertificatePem pem = Must(GenerateSelfSigned({"other.test"}));
  return pem;
}

Context ServerContext(ServerContextOptions opts = {}) {
  if (opts.cert_pem.empty()) {
    opts.cert_pem = MxCert().cert_pem;
    opts.key_pem = MxCert().key_pem;
  }
  return Must(Context::Server(opts));
}

// A client that trusts MxCert() (and nothing else) unless told otherwise.
Context TrustingClientContext(ClientContextOptions opts = {}) {
  if (opts.ca_pem.empty() && opts.ca_file.empty()) opts.ca_pem = MxCert().cert_pem;
  return Must(Context::Client(opts));
}

bool ErrorQueueEmpty() { return ERR_peek_error() == 0; }

struct Result {
  absl::Status client;
  absl::Status server;
};

// Step - one Handshake() call, keeping the first error.
void Step(Session& s, absl::Status& st) {
  if (!st.ok() || s.established()) return;
  absl::StatusOr<Session::Progress> p = s.Handshake();
  if (!p.ok()) st = p.status();
}

// Move - carry `from`'s ciphertext to `to`, `chunk` bytes per feed, calling `after`
// after each feed; true when any byte moved.
template <typename F>
bool Move(Session& from, Session& to, size_t chunk, F after) {
  bool moved = false;
  while (!from.PendingCiphertext().empty()) {
    std::string_view p = from.PendingCiphertext();
    const size_t n = std::min(chunk, p.size());
    to.FeedCiphertext(p.substr(0, n));
    from.ConsumeCiphertext(n);
    moved = true;
    after();
  }
  return moved;
}

// Handshake - pump both sides against each other until both are done or the bytes stop.
Result Handshake(Session& client, Session& server, size_t chunk = kWhole) {
  Result r;
  for (int round = 0; round < 100; ++round) {
    Step(client, r.client);
    Step(server, r.server);
    bool moved = Move(client, server, chunk, [&] { Step(server, r.server); });
    moved |= Move(server, client, chunk, [&] { Step(client, r.client); });
    if ((client.established() && server.established()) || !moved) break;
  }
  return r;
}

// Deliver - carry ciphertext from `from` to `to` and return all the plaintext `to` can
// read, reading after every feed with at most `max` bytes per call.
std::string Deliver(Session& from, Session& to, size_t chunk = kWhole, size_t max = 1 << 16) {
  std::string got;
  auto read = [&] {
    for (;;) {
      absl::StatusOr<size_t> n = to.ReadPlaintext(&got, max);
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok() || *n < max) break;
    }
  };
  Move(from, to, chunk, read);
  read();
  return got;
}

struct Pair {
  Session client;
  Session server;
};

Pair MakePair(Context& client_ctx, Context& server_ctx, SessionOptions opts) {
  return Pair{Must(Session::Create(client_ctx, Role::kClient, opts)),
              Must(Session::Create(server_ctx, Role::kServer))};
}

// (Options are built by assignment: GCC 12 warns about designated initializers that
// leave members out, and warnings are errors here.)
SessionOptions Verified(std::string name = "mx.dst.test") {
  SessionOptions o;
  o.verify = Verify::kChainAndHost;
  o.server_name = std::move(name);
  return o;
}

SessionOptions Unverified(std::string name) {
  SessionOptions o;
  o.server_name = std::move(name);
  return o;
}

// With - default options but for one string field.
template <typename Options>
Options With(std::string Options::*field, std::string value) {
  Options o;
  o.*field = std::move(value);
  return o;
}

// --- handshake and data ------------------------------------------------------------

TEST(TlsSession, HandshakeVerifiesAndDataFlowsBothWays) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  EXPECT_FALSE(p.client.established());
  Result r = Handshake(p.client, p.server);
  ASSERT_TRUE(r.client.ok()) << r.client;
  ASSERT_TRUE(r.server.ok()) << r.server;
  EXPECT_TRUE(p.client.established());
  EXPECT_TRUE(p.server.established());
  EXPECT_TRUE(p.client.peer_verified());
  EXPECT_EQ(p.client.verify_error(), "");
  EXPECT_EQ(p.client.peer_subject(), "CN=mx.dst.test");
  EXPECT_EQ(p.server.peer_subject(), "");            // no client certificates
  EXPECT_EQ(p.server.server_name(), "mx.dst.test");  // SNI arrived
  EXPECT_EQ(p.client.version(), "TLSv1.3");
  EXPECT_EQ(p.server.version(), "TLSv1.3");
  EXPECT_THAT(p.client.cipher(), StartsWith("TLS_AES_"));
  EXPECT_EQ(p.client.cipher(), p.server.cipher());

  ASSERT_TRUE(p.client.WritePlaintext("EHLO client.test\r\n").ok());
  EXPECT_EQ(Deliver(p.client, p.server), "EHLO client.test\r\n");
  ASSERT_TRUE(p.server.WritePlaintext("250-mx.dst.test\r\n250 PIPELINING\r\n").ok());
  EXPECT_EQ(Deliver(p.server, p.client), "250-mx.dst.test\r\n250 PIPELINING\r\n");
  // Nothing more to read; nothing left over to send.
  std::string more;
  EXPECT_EQ(p.client.ReadPlaintext(&more, 100).value(), 0u);
  EXPECT_TRUE(p.client.PendingCiphertext().empty());
  EXPECT_TRUE(p.server.PendingCiphertext().empty());
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST(TlsSession, OneByteFeedsAllTheWay) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  Result r = Handshake(p.client, p.server, 1);
  ASSERT_TRUE(r.client.ok()) << r.client;
  ASSERT_TRUE(r.server.ok()) << r.server;
  ASSERT_TRUE(p.client.established() && p.server.established());
  EXPECT_TRUE(p.client.peer_verified());

  const std::string mail = "MAIL FROM:<a@src.test>\r\nRCPT TO:<b@dst.test>\r\nDATA\r\n";
  ASSERT_TRUE(p.client.WritePlaintext(mail).ok());
  EXPECT_EQ(Deliver(p.client, p.server, 1), mail);
  ASSERT_TRUE(p.server.WritePlaintext("250 ok\r\n250 ok\r\n354 go\r\n").ok());
  EXPECT_EQ(Deliver(p.server, p.client, 1), "250 ok\r\n250 ok\r\n354 go\r\n");
}

TEST(TlsSession, DataInTheSameFeedAsTheFinishedIsNotLost) {
  // TLS 1.3: the client is done as soon as it has sent Finished, and an SMTP client
  // speaks first, so Finished and EHLO can reach the server in one read.
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Session client = Must(Session::Create(cctx, Role::kClient, Verified()));
  Session server = Must(Session::Create(sctx, Role::kServer));
  ASSERT_EQ(client.Handshake().value(), Session::Progress::kWantIo);
  server.FeedCiphertext(client.PendingCiphertext());
  client.ConsumeCiphertext(client.PendingCiphertext().size());
  ASSERT_EQ(server.Handshake().value(), Session::Progress::kWantIo);
  client.FeedCiphertext(server.PendingCiphertext());
  server.ConsumeCiphertext(server.PendingCiphertext().size());
  ASSERT_EQ(client.Handshake().value(), Session::Progress::kDone);
  ASSERT_TRUE(client.WritePlaintext("EHLO client.test\r\n").ok());

  server.FeedCiphertext(client.PendingCiphertext());  // Finished + EHLO
  client.ConsumeCiphertext(client.PendingCiphertext().size());
  ASSERT_EQ(server.Handshake().value(), Session::Progress::kDone);
  std::string got;
  EXPECT_EQ(server.ReadPlaintext(&got, 1000).value(), 18u);
  EXPECT_EQ(got, "EHLO client.test\r\n");
}

TEST(TlsSession, ReadPlaintextStopsAtMaxAndKeepsTheRest) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  const std::string text(100, 'x');
  ASSERT_TRUE(p.client.WritePlaintext(text).ok());
  p.server.FeedCiphertext(p.client.PendingCiphertext());
  p.client.ConsumeCiphertext(p.client.PendingCiphertext().size());

  std::string got = "prefix:";
  size_t total = 0;
  for (int i = 0; i < 10; ++i) {  // no feed in between: the rest is already inside
    EXPECT_EQ(p.server.ReadPlaintext(&got, 10).value(), 10u) << "call " << i;
    total += 10;
  }
  EXPECT_EQ(p.server.ReadPlaintext(&got, 10).value(), 0u);
  EXPECT_EQ(got, "prefix:" + text);  // appended, never overwritten
  EXPECT_EQ(p.server.ReadPlaintext(&got, 0).value(), 0u);
}

TEST(TlsSession, OneMebibyteRoundTripWithBoundedCiphertext) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).server.ok());
  std::string big(1 << 20, '\0');
  uint32_t x = 12345;
  for (char& c : big) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  ASSERT_TRUE(p.client.WritePlaintext(big).ok());
  // tls.h BOUNDS: n bytes become ceil(n / 16 KiB) records of under 100 bytes' overhead.
  const size_t records = big.size() / (16 * 1024);
  EXPECT_GT(p.client.PendingCiphertext().size(), big.size());
  EXPECT_LT(p.client.PendingCiphertext().size(), big.size() + records * 100);

  // Socket-sized feeds, and a reader that takes less than a record at a time.
  const std::string got = Deliver(p.client, p.server, 65536, 5000);
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big) << "plaintext differs";
  EXPECT_EQ(p.server.buffered_ciphertext(), 0u);

  // And back, whole.
  ASSERT_TRUE(p.server.WritePlaintext(big).ok());
  EXPECT_TRUE(Deliver(p.server, p.client) == big);
}

// Heap bytes in use now, from whichever allocator the build has.
size_t HeapInUse() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#else
  return mallinfo2().uordblks;
#endif
}

// A message's records leave the session whole (TakeCiphertext) and nothing of
// their size stays behind: a write buffer kept at its largest size, as a memory
// BIO's is, cost every open connection a message's worth of memory.
TEST(TlsSession, TakenCiphertextLeavesNoMessageSizedBufferBehind) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).server.ok());
  const std::string message(1 << 20, 'm');
  const size_t before = HeapInUse();
  {
    ASSERT_TRUE(p.client.WritePlaintext(message).ok());
    std::string records = "left over from an earlier send";
    p.client.TakeCiphertext(&records);
    EXPECT_TRUE(p.client.PendingCiphertext().empty());
    EXPECT_GT(records.size(), message.size());
    // Fed as a socket's reads come (4 KiB), each read at once.
    std::string got;
    for (size_t at = 0; at < records.size(); at += 4096) {
      p.server.FeedCiphertext(std::string_view(records).substr(at, 4096));
      ASSERT_TRUE(p.server.ReadPlaintext(&got, message.size()).ok());
    }
    EXPECT_TRUE(got == message) << "plaintext differs";
  }
  const size_t after = HeapInUse();
  EXPECT_LT(after, before + 64 * 1024) << "before " << before << ", after " << after;
}

TEST(TlsSession, BufferedCiphertextCountsWhatOpenSslHasNotTaken) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).server.ok());
  ASSERT_TRUE(p.client.WritePlaintext(std::string(40000, 'a')).ok());  // 3 records
  const size_t n = p.client.PendingCiphertext().size();
  p.server.FeedCiphertext(p.client.PendingCiphertext());
  p.client.ConsumeCiphertext(n);
  EXPECT_EQ(p.server.buffered_ciphertext(), n);
  std::string got;
  ASSERT_EQ(p.server.ReadPlaintext(&got, 100).value(), 100u);
  // One record taken, two still waiting as ciphertext.
  EXPECT_GT(p.server.buffered_ciphertext(), 16384u);
  EXPECT_LT(p.server.buffered_ciphertext(), n - 16384);
}

// --- versions and ciphers ----------------------------------------------------------

TEST(TlsSession, Tls12ServerNegotiatesTls12) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext(With(&ServerContextOptions::max_version, "TLSv1.2"));
  Pair p = MakePair(cctx, sctx, Verified());
  Result r = Handshake(p.client, p.server, 7);
  ASSERT_TRUE(r.client.ok()) << r.client;
  EXPECT_EQ(p.client.version(), "TLSv1.2");
  EXPECT_THAT(p.client.cipher(), StartsWith("ECDHE-ECDSA-"));  // an EC P-256 certificate
  EXPECT_TRUE(p.client.peer_verified());
  ASSERT_TRUE(p.client.WritePlaintext("NOOP\r\n").ok());
  EXPECT_EQ(Deliver(p.client, p.server, 3), "NOOP\r\n");
}

TEST(TlsSession, ClientCipherListIsHonouredForTls12) {
  Context cctx =
      TrustingClientContext(With(&ClientContextOptions::ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256"));
  Context sctx = ServerContext(With(&ServerContextOptions::max_version, "TLSv1.2"));
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  EXPECT_EQ(p.client.cipher(), "ECDHE-ECDSA-AES128-GCM-SHA256");
}

TEST(TlsSession, Tls13MinimumRefusesATls12OnlyServer) {
  Context cctx = TrustingClientContext(With(&ClientContextOptions::min_version, "TLSv1.3"));
  Context sctx = ServerContext(With(&ServerContextOptions::max_version, "TLSv1.2"));
  Pair p = MakePair(cctx, sctx, Verified());
  Result r = Handshake(p.client, p.server);
  ASSERT_FALSE(r.client.ok());
  EXPECT_EQ(r.client.code(), absl::StatusCode::kUnavailable) << r.client;
  EXPECT_THAT(Msg(r.client), StartsWith("handshake: "));
  EXPECT_THAT(Msg(r.client), HasSubstr("protocol version"));
  ASSERT_FALSE(r.server.ok());
  EXPECT_THAT(Msg(r.server), HasSubstr("unsupported protocol"));
  EXPECT_FALSE(p.client.established());
  EXPECT_EQ(p.client.version(), "");
  EXPECT_TRUE(ErrorQueueEmpty());
}

// --- verification ------------------------------------------------------------------

TEST(TlsVerify, WrongHostNameFailsWithAClearMessage) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified("mx.elsewhere.test"));
  Result r = Handshake(p.client, p.server);
  ASSERT_FALSE(r.client.ok());
  EXPECT_EQ(r.client.code(), absl::StatusCode::kUnauthenticated) << r.client;
  EXPECT_THAT(Msg(r.client), StartsWith("handshake: certificate verify failed: hostname mismatch"));
  EXPECT_THAT(Msg(r.client), HasSubstr("[error:"));  // the OpenSSL queue, for the record
  // The client told the server why, in an alert.
  ASSERT_FALSE(r.server.ok());
  EXPECT_EQ(r.server.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(r.server), HasSubstr("alert"));
  EXPECT_FALSE(p.client.peer_verified());
  EXPECT_FALSE(p.client.established());
  EXPECT_TRUE(ErrorQueueEmpty());
  // The error is final.
  absl::StatusOr<Session::Progress> again = p.client.Handshake();
  EXPECT_EQ(again.status(), r.client);
  std::string out;
  EXPECT_EQ(p.client.ReadPlaintext(&out, 10).status(), r.client);
}

TEST(TlsVerify, AnyOfSeveralNamesWillDo) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  SessionOptions opts = Verified("mx.elsewhere.test");
  opts.also_match = {"mx2.elsewhere.test", "mx.dst.test"};
  Pair p = MakePair(cctx, sctx, opts);
  Result r = Handshake(p.client, p.server);
  ASSERT_TRUE(r.client.ok()) << r.client;
  EXPECT_TRUE(p.client.peer_verified());

  SessionOptions none = Verified("mx.elsewhere.test");
  none.also_match = {"mx2.elsewhere.test"};
  Pair q = MakePair(cctx, sctx, none);
  EXPECT_FALSE(Handshake(q.client, q.server).client.ok());

  SessionOptions bad = Verified();
  bad.also_match = {"a b.test"};
  EXPECT_EQ(Session::Create(cctx, Role::kClient, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TlsVerify, WildcardMatchesOneLabelOnly) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair ok = MakePair(cctx, sctx, Verified("mx1.wild.test"));
  ASSERT_TRUE(Handshake(ok.client, ok.server).client.ok());
  EXPECT_TRUE(ok.client.peer_verified());
  Pair deep = MakePair(cctx, sctx, Verified("a.mx1.wild.test"));
  EXPECT_THAT(Msg(Handshake(deep.client, deep.server).client), HasSubstr("hostname mismatch"));
}

TEST(TlsVerify, UntrustedCaFails) {
  Context cctx = TrustingClientContext(With(&ClientContextOptions::ca_pem, OtherCert().cert_pem));
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  Result r = Handshake(p.client, p.server);
  ASSERT_FALSE(r.client.ok());
  EXPECT_EQ(r.client.code(), absl::StatusCode::kUnauthenticated) << r.client;
  EXPECT_THAT(Msg(r.client),
              StartsWith("handshake: certificate verify failed: self-signed certificate"));
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST(TlsVerify, SystemStoreDoesNotTrustASelfSignedCertificate) {
  Context cctx = Must(Context::Client({}));  // OpenSSL's default paths
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  Result r = Handshake(p.client, p.server);
  ASSERT_FALSE(r.client.ok());
  EXPECT_EQ(r.client.code(), absl::StatusCode::kUnauthenticated) << r.client;
}

// ScopedEnv - an environment variable set for one test, put back after it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A fresh directory under the temporary one, removed with everything in it.
struct ScratchDir {
  ScratchDir()
      : path(std::filesystem::temp_directory_path() /
             ("volley-tls-test-" + std::to_string(::getpid()) + "-" +
              std::to_string(counter++))) {
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() { std::filesystem::remove_all(path); }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
  }
  static inline int counter = 0;
  std::filesystem::path path;
};

// HashName - the name c_rehash gives a CA's file: its subject's hash, ".0".
std::string HashName(const std::string& cert_pem) {
  BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return "";
  char name[16];
  std::snprintf(name, sizeof name, "%08lx.0", X509_subject_name_hash(cert));
  X509_free(cert);
  return name;
}

bool DefaultStoreVerifiesMx() {
  Context cctx = Must(Context::Client({}));  // the default paths, read now
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  return Handshake(p.client, p.server).client.ok() && p.client.peer_verified();
}

TEST(TlsVerify, DefaultStoreIsTheBundleOfSslCertFile) {
  ScratchDir dir;
  dir.Write("bundle.pem", OtherCert().cert_pem + MxCert().cert_pem);
  dir.Write("other.pem", OtherCert().cert_pem);
  ScopedEnv no_dir("SSL_CERT_DIR", (dir.path / "none").string());
  {
    ScopedEnv file("SSL_CERT_FILE", (dir.path / "bundle.pem").string());
    EXPECT_TRUE(DefaultStoreVerifiesMx());
  }
  ScopedEnv file("SSL_CERT_FILE", (dir.path / "other.pem").string());
  EXPECT_FALSE(DefaultStoreVerifiesMx());
}

TEST(TlsVerify, DefaultStoreFindsACaInSslCertDirByItsHashNameOnly) {
  ScratchDir dir;
  ScopedEnv no_file("SSL_CERT_FILE", (dir.path / "none.pem").string());
  ScopedEnv cert_dir("SSL_CERT_DIR", dir.path.string());
  // Under another name, the CA is not looked at: the directory is searched by
  // hash, as c_rehash lays it out (OpenSSL's default store does the same, but
  // by reading the whole directory for each lookup: tls.cc leaves it out).
  dir.Write("mx.pem", MxCert().cert_pem);
  EXPECT_FALSE(DefaultStoreVerifiesMx());
  const std::string hashed = HashName(MxCert().cert_pem);
  ASSERT_FALSE(hashed.empty());
  dir.Write(hashed, MxCert().cert_pem);
  EXPECT_TRUE(DefaultStoreVerifiesMx());
}

TEST(TlsVerify, CaFileIsReadFromDisk) {
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("volley-tls-test-ca-" + std::to_string(::getpid()) + ".pem");
  {
    std::ofstream f(path);
    f << OtherCert().cert_pem << MxCert().cert_pem;  // a bundle; ours second
  }
  Context cctx = Must(Context::Client(With(&ClientContextOptions::ca_file, path.string())));
  std::filesystem::remove(path);
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  EXPECT_TRUE(p.client.peer_verified());
}

TEST(TlsVerify, NoneAcceptsAnUntrustedCertificateButSaysWhy) {
  Context cctx = Must(Context::Client({}));  // trusts no test certificate
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Unverified("mx.dst.test"));
  Result r = Handshake(p.client, p.server);
  ASSERT_TRUE(r.client.ok()) << r.client;
  ASSERT_TRUE(r.server.ok()) << r.server;
  EXPECT_FALSE(p.client.peer_verified());
  EXPECT_THAT(p.client.verify_error(), HasSubstr("self-signed certificate"));
  EXPECT_EQ(p.client.peer_subject(), "CN=mx.dst.test");
  ASSERT_TRUE(p.client.WritePlaintext("EHLO x\r\n").ok());
  EXPECT_EQ(Deliver(p.client, p.server), "EHLO x\r\n");
}

TEST(TlsVerify, NoneWithATrustedChainReportsAHostMismatch) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Unverified("mx.elsewhere.test"));
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  EXPECT_FALSE(p.client.peer_verified());  // kNone never claims verification
  EXPECT_EQ(p.client.verify_error(), "hostname mismatch");
  Pair right = MakePair(cctx, sctx, Unverified("mx.dst.test"));
  ASSERT_TRUE(Handshake(right.client, right.server).client.ok());
  EXPECT_FALSE(right.client.peer_verified());
  EXPECT_EQ(right.client.verify_error(), "");
}

TEST(TlsVerify, IpLiteralSendsNoSniAndIsCheckedAsAnAddress) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair none = MakePair(cctx, sctx, Unverified("127.0.0.1"));
  ASSERT_TRUE(Handshake(none.client, none.server).client.ok());
  EXPECT_EQ(none.server.server_name(), "");  // RFC 6066: no literals in SNI
  Pair checked = MakePair(cctx, sctx, Verified("127.0.0.1"));
  Result r = Handshake(checked.client, checked.server);
  // The certificate names no address, so an address cannot match it.
  EXPECT_THAT(Msg(r.client), HasSubstr("certificate verify failed: IP address mismatch"));
}

// --- closing and garbage -----------------------------------------------------------

TEST(TlsSession, CloseNotifySetsPeerClosedAfterTheLastData) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  ASSERT_TRUE(p.client.WritePlaintext("QUIT\r\n").ok());
  p.client.Shutdown();
  EXPECT_EQ(p.client.WritePlaintext("more").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(p.server.peer_closed());
  EXPECT_EQ(Deliver(p.client, p.server), "QUIT\r\n");
  EXPECT_TRUE(p.server.peer_closed());
  std::string out;
  EXPECT_EQ(p.server.ReadPlaintext(&out, 10).value(), 0u);

  // The server may still answer, then close; the client reads both.
  ASSERT_TRUE(p.server.WritePlaintext("221 bye\r\n").ok());
  p.server.Shutdown();
  EXPECT_FALSE(p.client.peer_closed());
  EXPECT_EQ(Deliver(p.server, p.client), "221 bye\r\n");
  EXPECT_TRUE(p.client.peer_closed());
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST(TlsSession, PlaintextGreetingMidHandshakeIsAnErrorNotACrash) {
  Context cctx = TrustingClientContext();
  Session client = Must(Session::Create(cctx, Role::kClient, Verified()));
  ASSERT_EQ(client.Handshake().value(), Session::Progress::kWantIo);
  EXPECT_FALSE(client.PendingCiphertext().empty());  // the ClientHello
  client.ConsumeCiphertext(client.PendingCiphertext().size());
  client.FeedCiphertext("220 hello\r\n");
  absl::StatusOr<Session::Progress> p = client.Handshake();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(p.status()), StartsWith("handshake: wrong version number ["));
  EXPECT_TRUE(ErrorQueueEmpty());
  client.FeedCiphertext("more garbage");  // ignored, not a crash
  EXPECT_EQ(client.Handshake().status(), p.status());
}

TEST(TlsSession, CorruptRecordAfterTheHandshakeIsAReadError) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  ASSERT_TRUE(p.client.WritePlaintext("first\r\n").ok());
  EXPECT_EQ(Deliver(p.client, p.server), "first\r\n");
  ASSERT_TRUE(p.client.WritePlaintext("second\r\n").ok());
  std::string record(p.client.PendingCiphertext());
  p.client.ConsumeCiphertext(record.size());
  record.back() = static_cast<char>(record.back() ^ 1);  // break the AEAD tag
  p.server.FeedCiphertext(record);
  std::string out;
  absl::StatusOr<size_t> n = p.server.ReadPlaintext(&out, 100);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(n.status()), StartsWith("read: "));
  EXPECT_EQ(out, "");
  EXPECT_FALSE(p.server.PendingCiphertext().empty());  // the alert for the client
  EXPECT_EQ(p.server.WritePlaintext("x").code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST(TlsSession, GoodPlaintextBeforeACorruptRecordIsDeliveredFirst) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ASSERT_TRUE(Handshake(p.client, p.server).client.ok());
  ASSERT_TRUE(p.client.WritePlaintext("good\r\n").ok());
  std::string bytes(p.client.PendingCiphertext());
  p.client.ConsumeCiphertext(bytes.size());
  ASSERT_TRUE(p.client.WritePlaintext("bad\r\n").ok());
  std::string bad(p.client.PendingCiphertext());
  p.client.ConsumeCiphertext(bad.size());
  bad.back() = static_cast<char>(bad.back() ^ 1);
  p.server.FeedCiphertext(bytes + bad);
  std::string out;
  EXPECT_EQ(p.server.ReadPlaintext(&out, 100).value(), 6u);
  EXPECT_EQ(out, "good\r\n");
  EXPECT_FALSE(p.server.ReadPlaintext(&out, 100).ok());  // then the error
}

TEST(TlsSession, AStaleErrorOnTheThreadDoesNotBreakASession) {
  // Another library on this thread left an error behind: SSL_get_error would take it
  // for this session's (SSL_read does not clear the queue) unless it is cleared first.
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Pair p = MakePair(cctx, sctx, Verified());
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  Result r = Handshake(p.client, p.server);
  ASSERT_TRUE(r.client.ok()) << r.client;
  ASSERT_TRUE(r.server.ok()) << r.server;
  std::string out;
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  absl::StatusOr<size_t> n = p.server.ReadPlaintext(&out, 100);  // nothing yet: WANT_READ
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  ASSERT_TRUE(p.client.WritePlaintext("RSET\r\n").ok());
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
  EXPECT_EQ(Deliver(p.client, p.server), "RSET\r\n");
  EXPECT_TRUE(ErrorQueueEmpty());
}

// --- misuse and options ------------------------------------------------------------

TEST(TlsSession, CallsOutOfOrderAreRefused) {
  Context cctx = TrustingClientContext();
  Context sctx = ServerContext();
  Session client = Must(Session::Create(cctx, Role::kClient, Verified()));
  std::string out;
  EXPECT_EQ(client.ReadPlaintext(&out, 10).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(client.WritePlaintext("x").code(), absl::StatusCode::kFailedPrecondition);
  client.Shutdown();  // before the handshake: nothing
  EXPECT_TRUE(client.PendingCiphertext().empty());
  EXPECT_EQ(client.version(), "");
  EXPECT_TRUE(ErrorQueueEmpty());

  EXPECT_EQ(Session::Create(sctx, Role::kClient).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Session::Create(sctx, Role::kServer, Verified()).status().code(),
            absl::StatusCode::kInvalidArgument);
  SessionOptions no_name;
  no_name.verify = Verify::kChainAndHost;
  EXPECT_EQ(Session::Create(cctx, Role::kClient, no_name).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Session::Create(cctx, Role::kClient, Verified(std::string("mx.dst.test\0.evil", 17)))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TlsSession, SessionOutlivesItsContextAndMoves) {
  std::vector<Session> sessions;
  {
    Context cctx = TrustingClientContext();
    sessions.push_back(Must(Session::Create(cctx, Role::kClient, Verified())));
  }
  Context sctx = ServerContext();
  Session server = Must(Session::Create(sctx, Role::kServer));
  Session client = std::move(sessions.back());
  sessions.clear();
  ASSERT_TRUE(Handshake(client, server).client.ok());
  EXPECT_TRUE(client.peer_verified());
}

TEST(TlsContext, BadOptionsAreInvalidArguments) {
  auto client_code = [](ClientContextOptions o) { return Context::Client(o).status().code(); };
  EXPECT_EQ(client_code(With(&ClientContextOptions::min_version, "TLSv1.1")),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_code(With(&ClientContextOptions::ciphers, "NO-SUCH-CIPHER")),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_code(With(&ClientContextOptions::ca_pem, "not pem")),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_code(With(&ClientContextOptions::ca_path, "/nonexistent/volley")),
            absl::StatusCode::kInvalidArgument);
  absl::Status missing =
      Context::Client(With(&ClientContextOptions::ca_file, "/nonexistent/volley-ca.pem")).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(missing), StartsWith("ca_file /nonexistent/volley-ca.pem: "));

  auto server = [](std::string cert, std::string key, std::string max_version = "") {
    ServerContextOptions o;
    o.cert_pem = std::move(cert);
    o.key_pem = std::move(key);
    o.max_version = std::move(max_version);
    return Context::Server(o).status();
  };
  EXPECT_EQ(server("", "").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server(MxCert().cert_pem, "junk").code(), absl::StatusCode::kInvalidArgument);
  absl::Status mismatch = server(MxCert().cert_pem, OtherCert().key_pem);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(mismatch), StartsWith("key_pem: "));
  EXPECT_EQ(server(MxCert().cert_pem, MxCert().key_pem, "SSLv3").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(server(MxCert().cert_pem, MxCert().key_pem, "TLSv1.3").ok());
  EXPECT_TRUE(ErrorQueueEmpty());
}

// --- GenerateSelfSigned ------------------------------------------------------------

TEST(GenerateSelfSigned, CertificateHasTheNamesAndTheValidityAsked) {
  CertificatePem pem = Must(GenerateSelfSigned({"sink.test", "*.sink.test"}, 10));
  EXPECT_THAT(pem.cert_pem, StartsWith("-----BEGIN CERTIFICATE-----\n"));
  EXPECT_THAT(pem.key_pem, StartsWith("-----BEGIN PRIVATE KEY-----\n"));

  const base::BioPtr bio(
      BIO_new_mem_buf(pem.cert_pem.data(), static_cast<int>(pem.cert_pem.size())));
  const base::X509Ptr owned(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  X509* cert = owned.get();
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(X509_check_host(cert, "sink.test", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert, "mx.sink.test", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert, "other.test", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ca(cert), 1);
  EXPECT_EQ(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256);

  const time_t now = std::time(nullptr);
  time_t t = now - 3500;  // notBefore is an hour back, for clock skew
  EXPECT_LT(X509_cmp_time(X509_get0_notBefore(cert), &t), 0);
  t = now - 3700;
  EXPECT_GT(X509_cmp_time(X509_get0_notBefore(cert), &t), 0);
  t = now + 10 * 86400 - 100;
  EXPECT_GT(X509_cmp_time(X509_get0_notAfter(cert), &t), 0);
  t = now + 10 * 86400 + 100;
  EXPECT_LT(X509_cmp_time(X509_get0_notAfter(cert), &t), 0);

  // Two calls, two keys.
  EXPECT_NE(Must(GenerateSelfSigned({"sink.test"})).key_pem, pem.key_pem);
}

TEST(GenerateSelfSigned, RefusesNamesThatAreNotHostNames) {
  for (const char* bad : {"", "a,DNS:evil.test", "two words.test", "-lead.test", "a..b",
                          "tail-.test", "*", "*.", "a.*.test"}) {
    EXPECT_EQ(GenerateSelfSigned({bad}).status().code(), absl::StatusCode::kInvalidArgument)
        << "\"" << bad << "\"";
  }
  EXPECT_EQ(GenerateSelfSigned({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GenerateSelfSigned({"ok.test"}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string long_label(64, 'a');
  EXPECT_EQ(GenerateSelfSigned({long_label + ".test"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A first name too long for CN is still a fine subjectAltName.
  const std::string long_name = std::string(40, 'a') + "." + std::string(40, 'b') + ".test";
  EXPECT_TRUE(GenerateSelfSigned({long_name}).ok());
}

// --- session resumption --------------------------------------------------------------

ClientContextOptions Caching(size_t sessions) {
  ClientContextOptions o;
  o.session_cache_size = sessions;
  return o;
}

ServerContextOptions Ticketing(int tickets = 1, std::string key = "") {
  ServerContextOptions o;
  o.session_tickets = tickets;
  o.ticket_key = std::move(key);
  return o;
}

SessionOptions At(SessionOptions o, std::string peer) {
  o.peer_address = std::move(peer);
  return o;
}

struct Connected {
  absl::Status client;
  bool resumed = false;
  bool verified = false;
  std::string subject;
  std::string echoed;  // what the server read of the client's "EHLO"
};

// Connect - one connection: handshake, then a reply each way, as an SMTP session
// begins (the client's first read takes a TLS 1.3 server's tickets).
Connected Connect(Context& cctx, Context& sctx, SessionOptions opts) {
  Pair p = MakePair(cctx, sctx, std::move(opts));
  Result r = Handshake(p.client, p.server);
  Connected c;
  c.client = r.client;
  if (!r.client.ok() || !r.server.ok()) return c;
  EXPECT_TRUE(p.server.WritePlaintext("250 ok\r\n").ok());
  EXPECT_EQ(Deliver(p.server, p.client), "250 ok\r\n");
  EXPECT_TRUE(p.client.WritePlaintext("EHLO c.test\r\n").ok());
  c.echoed = Deliver(p.client, p.server);
  c.resumed = p.client.resumed();
  EXPECT_EQ(p.server.established() && p.client.resumed(), c.resumed);
  c.verified = p.client.peer_verified();
  c.subject = p.client.peer_subject();
  return c;
}

TEST(TlsResumption, SecondConnectionToTheSamePeerResumesAndStaysVerified) {
  for (const char* version : {"TLSv1.3", "TLSv1.2"}) {
    SCOPED_TRACE(version);
    Context cctx = TrustingClientContext(Caching(16));
    ServerContextOptions so = Ticketing();
    so.max_version = version;
    Context sctx = ServerContext(so);
    Connected first = Connect(cctx, sctx, At(Verified(), "127.0.0.1:25"));
    ASSERT_TRUE(first.client.ok()) << first.client;
    EXPECT_FALSE(first.resumed);
    EXPECT_TRUE(first.verified);
    for (int i = 0; i < 3; ++i) {
      Connected again = Connect(cctx, sctx, At(Verified(), "127.0.0.1:25"));
      ASSERT_TRUE(again.client.ok()) << again.client;
      EXPECT_TRUE(again.resumed) << "connection " << i + 2;
      EXPECT_TRUE(again.verified);
      EXPECT_EQ(again.subject, "CN=mx.dst.test");
      EXPECT_EQ(again.echoed, "EHLO c.test\r\n");
    }
    EXPECT_TRUE(ErrorQueueEmpty());
  }
}

TEST(TlsResumption, NoResumptionUnlessCacheTicketsAndPeerAllSayYes) {
  struct Case {
    const char* what;
    size_t cache;
    int tickets;
    const char* peer;
  };
  for (const Case& c : {Case{"no client cache", 0, 1, "127.0.0.1:25"},
                        Case{"no server tickets", 16, 0, "127.0.0.1:25"},
                        Case{"no peer_address", 16, 1, ""}}) {
    SCOPED_TRACE(c.what);
    Context cctx = TrustingClientContext(Caching(c.cache));
    Context sctx = ServerContext(Ticketing(c.tickets));
    for (int i = 0; i < 2; ++i) {
      Connected got = Connect(cctx, sctx, At(Verified(), c.peer));
      ASSERT_TRUE(got.client.ok()) << got.client;
      EXPECT_FALSE(got.resumed) << "connection " << i + 1;
      EXPECT_TRUE(got.verified);
    }
  }
}

TEST(TlsResumption, ASessionIsNeverOfferedForAnotherNameOrAStricterCheck) {
  Context cctx = TrustingClientContext(Caching(16));
  Context sctx = ServerContext(Ticketing());
  const std::string peer = "127.0.0.1:25";
  // Made without verification: not good enough for a connection that must verify.
  ASSERT_TRUE(Connect(cctx, sctx, At(Unverified("mx.dst.test"), peer)).client.ok());
  Connected verified = Connect(cctx, sctx, At(Verified(), peer));
  ASSERT_TRUE(verified.client.ok()) << verified.client;
  EXPECT_FALSE(verified.resumed);
  EXPECT_TRUE(verified.verified);
  // Verified for mx.dst.test: a connection that must find another name on the same
  // peer gets a full handshake, and the certificate's failure to name it.
  Connected other = Connect(cctx, sctx, At(Verified("nomatch.test"), peer));
  EXPECT_FALSE(other.resumed);
  EXPECT_EQ(other.client.code(), absl::StatusCode::kUnauthenticated) << other.client;
  EXPECT_THAT(Msg(other.client), HasSubstr("hostname mismatch"));
  // Another name the certificate does carry: verified in full, not resumed.
  Connected wild = Connect(cctx, sctx, At(Verified("a.wild.test"), peer));
  ASSERT_TRUE(wild.client.ok()) << wild.client;
  EXPECT_FALSE(wild.resumed);
  EXPECT_TRUE(wild.verified);
  // Another peer: its own session.
  Connected elsewhere = Connect(cctx, sctx, At(Verified(), "127.0.0.2:25"));
  ASSERT_TRUE(elsewhere.client.ok());
  EXPECT_FALSE(elsewhere.resumed);
  // And the first verified one still resumes.
  EXPECT_TRUE(Connect(cctx, sctx, At(Verified(), peer)).resumed);
  EXPECT_TRUE(ErrorQueueEmpty());
}

TEST(TlsResumption, TheCacheKeepsTheMostRecentlyUsedPeers) {
  Context cctx = TrustingClientContext(Caching(2));
  Context sctx = ServerContext(Ticketing());
  for (const char* peer : {"127.0.0.1:25", "127.0.0.2:25", "127.0.0.1:25", "127.0.0.3:25"}) {
    ASSERT_TRUE(Connect(cctx, sctx, At(Verified(), peer)).client.ok()) << peer;
  }
  // .2 was the least recently used when .3 came: gone; .1 and .3 stay.
  EXPECT_FALSE(Connect(cctx, sctx, At(Verified(), "127.0.0.2:25")).resumed);
  EXPECT_TRUE(Connect(cctx, sctx, At(Verified(), "127.0.0.3:25")).resumed);
}

TEST(TlsResumption, ServersSharingATicketKeyTakeEachOthersTickets) {
  const std::string key(80, 'k');
  Context cctx = TrustingClientContext(Caching(16));
  Context one = ServerContext(Ticketing(1, key));
  Context two = ServerContext(Ticketing(1, key));
  Context own = ServerContext(Ticketing(1));
  ASSERT_TRUE(Connect(cctx, one, At(Verified(), "127.0.0.1:25")).client.ok());
  EXPECT_TRUE(Connect(cctx, two, At(Verified(), "127.0.0.1:25")).resumed);
  // A random key of its own: the ticket is refused, a full handshake follows.
  Connected refused = Connect(cctx, own, At(Verified(), "127.0.0.1:25"));
  ASSERT_TRUE(refused.client.ok()) << refused.client;
  EXPECT_FALSE(refused.resumed);
  EXPECT_TRUE(refused.verified);

  ServerContextOptions bad = Ticketing(1, "short");
  bad.cert_pem = MxCert().cert_pem;
  bad.key_pem = MxCert().key_pem;
  absl::StatusOr<Context> refused_key = Context::Server(bad);
  EXPECT_EQ(refused_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(refused_key.status()), StartsWith("ticket_key: 5 bytes"));
}

}  // namespace
}  // namespace volley::tls
