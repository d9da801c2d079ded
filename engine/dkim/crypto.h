// crypto.h - private to engine/dkim: the OpenSSL side of keys, digests and signatures
//
// DESCRIPTION
//   The only header of the folder that includes OpenSSL's (and base/openssl_ptr.h,
//   whose owners it uses). KeyState owns a
//   key's EVP_PKEY; SignContext is what one Signer reuses for every message: a SHA-256
//   context, and a signing context initialised once with the key and copied for each
//   signature. Copying costs a fraction of a microsecond; EVP_DigestSignInit costs a
//   few (it looks up the provider's algorithms each time), which is a tenth of an
//   Ed25519 signature.
#ifndef VOLLEY_ENGINE_DKIM_CRYPTO_H_
#define VOLLEY_ENGINE_DKIM_CRYPTO_H_

#include <openssl/evp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/openssl_ptr.h"
#include "engine/dkim/dkim.h"

namespace volley::dkim {

namespace internal {

using base::MdCtxPtr;
using base::PkeyPtr;

// KeyState - what a PrivateKey shares among its copies; immutable once made.
struct KeyState {
  PkeyPtr pkey;
  Algorithm algorithm = Algorithm::kRsaSha256;
  int bits = 0;
  std::string public_base64;  // computed once: DnsRecord is cheap to ask for again
};

struct KeyAccess {
  // Get - the key's state, or null for a moved-from key.
  static const KeyState* Get(const PrivateKey& key) { return key.impl_.get(); }
};

// SignContext - one signer's reusable OpenSSL state. One thread at a time.
class SignContext {
 public:
  SignContext();
  SignContext(SignContext&&) noexcept = default;
  SignContext& operator=(SignContext&&) noexcept = default;

  // Init - ready Sign for `key`; Internal if OpenSSL refuses it.
  absl::Status Init(const KeyState& key);

  // BodyHash - base64 SHA-256 of `body` canonicalised, streamed without a copy.
  std::string BodyHash(Canon c, std::string_view body);
  // Sign - the b= value (base64) for the header hash input: RSASSA-PKCS1-v1_5 over
  // its SHA-256, or Ed25519 over its SHA-256 digest (RFC 8463 section 3). After Init.
  absl::StatusOr<std::string> Sign(std::string_view input);

 private:
  Algorithm algorithm_ = Algorithm::kRsaSha256;
  MdCtxPtr sha_;
  MdCtxPtr template_;  // initialised with the key once; copied into work_ per signature
  MdCtxPtr work_;
};

}  // namespace internal
}  // namespace volley::dkim

#endif  // VOLLEY_ENGINE_DKIM_CRYPTO_H_
