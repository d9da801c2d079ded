// crypto.cc - keys, digests and signatures with OpenSSL 3 (see crypto.h and dkim.h)
#include "engine/dkim/crypto.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/dkim/canon.h"

namespace volley::dkim {
namespace {

using base::BioPtr;
using base::Sv;
using internal::KeyState;
using internal::MdCtxPtr;
using internal::PkeyPtr;

// RFC 8301 section 3.2: signers MUST use at least 1024 bits and SHOULD use at least
// 2048; verifiers MUST handle 1024 to 4096, so a larger key may not verify everywhere.
constexpr int kMinRsaBits = 1024;
constexpr int kGoodRsaBits = 2048;
constexpr int kMaxVerifiableRsaBits = 4096;
// Generate's ceiling: an 8192-bit signature costs some 30 times a 2048-bit one.
constexpr int kMaxGenerateRsaBits = 8192;
// The biggest PEM file read: an 8192-bit RSA key in PEM is under 7 KiB, so anything
// near this is not a key (a log, a core file) and is not worth reading into memory.
constexpr size_t kMaxKeyFile = 64 * 1024;

// ErrorScope - the thread's OpenSSL error queue is empty on entry, so what we drain is
// ours, and on exit, so that we leave nothing for the next caller on this thread.
class ErrorScope {
 public:
  ErrorScope() { ERR_clear_error(); }
  ~ErrorScope() { ERR_clear_error(); }
  ErrorScope(const ErrorScope&) = delete;
  ErrorScope& operator=(const ErrorScope&) = delete;
};

// OpensslReason - the first (root-cause) reason in the error queue, or `fallback`.
std::string OpensslReason(std::string_view fallback) {
  const unsigned long e = ERR_peek_error();
  const char* reason = e == 0 ? nullptr : ERR_reason_error_string(e);
  return reason != nullptr ? std::string(reason) : std::string(fallback);
}

absl::Status Internal(std::string_view what) {
  return absl::InternalError(absl::StrCat(Sv(what), ": ", OpensslReason("no reason given")));
}

const EVP_MD* Sha256() {
  // Fetched once: EVP_sha256() makes every EVP_DigestInit_ex look the provider's
  // implementation up again. A fetched EVP_MD is immutable and shared by all threads.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  VOLLEY_CHECK(md != nullptr, "OpenSSL has no SHA256");
  return md;
}

// DigestSink - CanonBody into a SHA-256 context. A view adjacent in memory to the one
// before it extends it (a well-formed body is a few long runs of the message); short
// pieces that are not (one SP for a run of white space, a CRLF for a bare LF) are
// gathered in a small buffer, so the digest is not called once per word. At most one
// of the two is pending at any time, which keeps the order.
class DigestSink {
 public:
  explicit DigestSink(EVP_MD_CTX* ctx) : ctx_(ctx) {}
  void Add(std::string_view s) {
    if (s.empty()) return;
    if (run_size_ > 0 && run_ + run_size_ == s.data()) {
      run_size_ += s.size();
      return;
    }
    if (s.size() < kSmall) {
      FlushRun();
      if (buf_size_ + s.size() > sizeof buf_) FlushBuffer();
      std::memcpy(buf_ + buf_size_, s.data(), s.size());
      buf_size_ += s.size();
      return;
    }
    FlushRun();
    FlushBuffer();
    run_ = s.data();
    run_size_ = s.size();
  }
  void Finish() {
    FlushRun();
    FlushBuffer();
  }

 private:
  static constexpr size_t kSmall = 64;
  void Update(const void* p, size_t n) {
    VOLLEY_CHECK(EVP_DigestUpdate(ctx_, p, n) == 1, "SHA-256 update failed");
  }
  void FlushRun() {
    if (run_size_ > 0) Update(run_, run_size_);
    run_size_ = 0;
  }
  void FlushBuffer() {
    if (buf_size_ > 0) Update(buf_, buf_size_);
    buf_size_ = 0;
  }
  EVP_MD_CTX* ctx_;
  const char* run_ = nullptr;
  size_t run_size_ = 0;
  char buf_[1024];
  size_t buf_size_ = 0;
};

// NoPassphrase - PEM's passphrase callback: never prompt on a terminal (OpenSSL's
// default would), just remember that a passphrase was wanted.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

std::string OctalMode(mode_t mode) {
  std::string s = "0000";
  for (int i = 3; i >= 0; --i) {
    s[static_cast<size_t>(i)] = static_cast<char>('0' + (mode & 7));
    mode >>= 3;
  }
  return s;
}

}  // namespace

namespace internal {

SignContext::SignContext() : sha_(EVP_MD_CTX_new()) {
  VOLLEY_CHECK(sha_ != nullptr, "out of memory");
}

absl::Status SignContext::Init(const KeyState& key) {
  ErrorScope scope;
  algorithm_ = key.algorithm;
  MdCtxPtr tmpl(EVP_MD_CTX_new());
  MdCtxPtr work(EVP_MD_CTX_new());
  if (tmpl == nullptr || work == nullptr) return Internal("signing context");
  // Ed25519 is PureEdDSA: no digest of OpenSSL's own (RFC 8463 hashes first, below).
  const char* md = key.algorithm == Algorithm::kRsaSha256 ? "SHA256" : nullptr;
  if (EVP_DigestSignInit_ex(tmpl.get(), nullptr, md, nullptr, nullptr, key.pkey.get(), nullptr) !=
      1) {
    return Internal("signing context");
  }
  template_ = std::move(tmpl);
  work_ = std::move(work);
  return absl::OkStatus();
}

std::string SignContext::BodyHash(Canon c, std::string_view body) {
  VOLLEY_CHECK(EVP_DigestInit_ex(sha_.get(), Sha256(), nullptr) == 1, "SHA-256 init failed");
  DigestSink sink(sha_.get());
  CanonBody(c, body, sink);
  sink.Finish();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  VOLLEY_CHECK(EVP_DigestFinal_ex(sha_.get(), digest, &len) == 1, "SHA-256 final failed");
  return absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(digest), len));
}

absl::StatusOr<std::string> SignContext::Sign(std::string_view input) {
  VOLLEY_CHECK(template_ != nullptr, "SignContext::Sign before Init");
  ErrorScope scope;
  if (EVP_MD_CTX_copy_ex(work_.get(), template_.get()) != 1) return Internal("sign: copy context");
  auto data = reinterpret_cast<const unsigned char*>(input.data());
  size_t data_len = input.size();
  unsigned char digest[EVP_MAX_MD_SIZE];
  if (algorithm_ == Algorithm::kEd25519Sha256) {
    unsigned int len = 0;
    if (EVP_DigestInit_ex(sha_.get(), Sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(sha_.get(), input.data(), input.size()) != 1 ||
        EVP_DigestFinal_ex(sha_.get(), digest, &len) != 1) {
      return Internal("sign: SHA-256");
    }
    data = digest;
    data_len = len;
  }
  unsigned char sig[1024];  // RSA-8192 is 1024 octets; Ed25519 64
  size_t sig_len = sizeof sig;
  if (EVP_DigestSign(work_.get(), sig, &sig_len, data, data_len) != 1) return Internal("sign");
  return absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(sig), sig_len));
}

}  // namespace internal

// ---- PrivateKey

PrivateKey::PrivateKey(std::shared_ptr<const internal::KeyState> impl) : impl_(std::move(impl)) {}
PrivateKey::PrivateKey(const PrivateKey&) = default;
PrivateKey& PrivateKey::operator=(const PrivateKey&) = default;
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;
PrivateKey::~PrivateKey() = default;

namespace {

// Adopt - a PrivateKey for `pkey`, or why it cannot sign DKIM.
absl::StatusOr<std::shared_ptr<const KeyState>> Adopt(PkeyPtr pkey) {
  auto impl = std::make_shared<KeyState>();
  const int id = EVP_PKEY_get_base_id(pkey.get());
  if (id == EVP_PKEY_RSA) {
    impl->algorithm = Algorithm::kRsaSha256;
    impl->bits = EVP_PKEY_get_bits(pkey.get());
    if (impl->bits < kMinRsaBits) {
      return absl::InvalidArgumentError(absl::StrCat(
          "RSA key of ", impl->bits, " bits: RFC 8301 forbids signing with keys under ",
          kMinRsaBits, " bits (use ", kGoodRsaBits, ")"));
    }
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(pkey.get(), &der);
    if (len <= 0) return Internal("public key");
    impl->public_base64 = absl::Base64Escape(
        absl::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)));
    OPENSSL_free(der);
  } else if (id == EVP_PKEY_ED25519) {
    impl->algorithm = Algorithm::kEd25519Sha256;
    impl->bits = 256;
    unsigned char raw[32];
    size_t len = sizeof raw;
    if (EVP_PKEY_get_raw_public_key(pkey.get(), raw, &len) != 1 || len != sizeof raw) {
      return Internal("public key");
    }
    impl->public_base64 = absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(raw), len));
  } else if (id == EVP_PKEY_RSA_PSS) {
    return absl::InvalidArgumentError(
        "key type RSA-PSS is not supported: rsa-sha256 needs a plain RSA key "
        "(PKCS#1 v1.5 signatures)");
  } else {
    const char* name = EVP_PKEY_get0_type_name(pkey.get());
    return absl::InvalidArgumentError(
        absl::StrCat("key type ", name != nullptr ? name : "unknown",
                     " is not supported: DKIM signs with RSA (rsa-sha256) or Ed25519 "
                     "(ed25519-sha256)"));
  }
  impl->pkey = std::move(pkey);
  return std::shared_ptr<const KeyState>(std::move(impl));
}

}  // namespace

absl::StatusOr<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  ErrorScope scope;
  if (pem.find("-----BEGIN ") == std::string_view::npos) {
    return absl::InvalidArgumentError(
        "not a PEM private key: no \"-----BEGIN\" line (expected BEGIN PRIVATE KEY or "
        "BEGIN RSA PRIVATE KEY)");
  }
  if (pem.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("not a PEM private key: too large");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return Internal("PEM");
  bool asked = false;
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, &asked));
  if (pkey == nullptr) {
    if (asked) {
      return absl::InvalidArgumentError(
          "the private key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN) "
          "and keep the plain copy mode 0600");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("not a PEM private key: ", OpensslReason("no private key found"),
                     " (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"));
  }
  ASSIGN_OR_RETURN(auto impl, Adopt(std::move(pkey)));
  return PrivateKey(std::move(impl));
}

absl::StatusOr<PrivateKey> PrivateKey::LoadFile(const std::string& path,
                                                std::vector<std::string>* warnings) {
  // Errors and warnings start with the path, as Volley's file errors do
  // ("<where>: <what>: <reason>").
  const std::string& where = path;
  // O_NONBLOCK: opening a FIFO by mistake must not hang start-up; it fails below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return base::ErrnoError(where, "open");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return base::ErrnoError(where, "stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxKeyFile) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", st.st_size,
                                                   " bytes, more than a PEM key can be (",
                                                   kMaxKeyFile / 1024, " KiB)"));
  }
  // One more than fstat said, to notice a file that grows while we read it.
  std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(where, "read");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == text.size()) {
    return absl::UnavailableError(absl::StrCat(where, ": changed while being read"));
  }
  text.resize(got);
  absl::StatusOr<PrivateKey> key = FromPem(text);
  // The PEM text holds the secret: do not leave it in freed heap memory.
  OPENSSL_cleanse(text.data(), text.size());
  if (!key.ok()) {
    return absl::Status(key.status().code(), absl::StrCat(where, ": ", key.status().message()));
  }
  if (warnings != nullptr) {
    const int bits = key->bits();
    if (key->algorithm() == Algorithm::kRsaSha256 && bits < kGoodRsaBits) {
      warnings->push_back(absl::StrCat(where, ": RSA key of ", bits, " bits: RFC 8301 asks for ",
                                       kGoodRsaBits, " or more"));
    }
    if (key->algorithm() == Algorithm::kRsaSha256 && bits > kMaxVerifiableRsaBits) {
      warnings->push_back(absl::StrCat(where, ": RSA key of ", bits,
                                       " bits: RFC 8301 requires verifiers to handle only up to ",
                                       kMaxVerifiableRsaBits, ", so some may fail it"));
    }
    const mode_t perm = st.st_mode & 07777;
    if ((perm & S_IROTH) != 0) {
      warnings->push_back(absl::StrCat("key file ", where, " is readable by other users (mode ",
                                       OctalMode(perm), "); chmod 600 it"));
    } else if ((perm & S_IRGRP) != 0) {
      warnings->push_back(absl::StrCat("key file ", where, " is readable by its group (mode ",
                                       OctalMode(perm),
                                       "); chmod 600 it unless only the mailer is in that group"));
    }
  }
  return key;
}

absl::StatusOr<PrivateKey> PrivateKey::Generate(Algorithm a, int rsa_bits) {
  ErrorScope scope;
  PkeyPtr pkey;
  if (a == Algorithm::kRsaSha256) {
    if (rsa_bits < kMinRsaBits || rsa_bits > kMaxGenerateRsaBits) {
      return absl::InvalidArgumentError(absl::StrCat("RSA key size ", rsa_bits, " is not in ",
                                                     kMinRsaBits, "..", kMaxGenerateRsaBits));
    }
    pkey.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits)));
  } else {
    pkey.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  }
  if (pkey == nullptr) return Internal("generate key");
  ASSIGN_OR_RETURN(auto impl, Adopt(std::move(pkey)));
  return PrivateKey(std::move(impl));
}

Algorithm PrivateKey::algorithm() const {
  VOLLEY_CHECK(impl_ != nullptr, "use of a moved-from PrivateKey");
  return impl_->algorithm;
}

int PrivateKey::bits() const {
  VOLLEY_CHECK(impl_ != nullptr, "use of a moved-from PrivateKey");
  return impl_->bits;
}

std::string PrivateKey::ToPem() const {
  VOLLEY_CHECK(impl_ != nullptr, "use of a moved-from PrivateKey");
  ErrorScope scope;
  BioPtr bio(BIO_new(BIO_s_mem()));
  VOLLEY_CHECK(bio != nullptr, "out of memory");
  VOLLEY_CHECK(PEM_write_bio_PrivateKey(bio.get(), impl_->pkey.get(), nullptr, nullptr, 0, nullptr,
                                        nullptr) == 1,
               "PEM_write_bio_PrivateKey failed");
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<size_t>(len));
  OPENSSL_cleanse(data, static_cast<size_t>(len));
  return pem;
}

std::string PrivateKey::PublicKeyBase64() const {
  VOLLEY_CHECK(impl_ != nullptr, "use of a moved-from PrivateKey");
  return impl_->public_base64;
}

std::string PrivateKey::DnsRecord() const {
  VOLLEY_CHECK(impl_ != nullptr, "use of a moved-from PrivateKey");
  return absl::StrCat("v=DKIM1; k=", impl_->algorithm == Algorithm::kRsaSha256 ? "rsa" : "ed25519",
                      "; p=", impl_->public_base64);
}

}  // namespace volley::dkim
