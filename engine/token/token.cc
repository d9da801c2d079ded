// token.cc - signed recipient tokens (see token.h)
#include "engine/token/token.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"
#include "base/strings.h"

namespace volley::token {
namespace {

constexpr uint8_t kVersion = 1;
constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
// Octets before the MAC: version and key id length, key id, job_no, line.
constexpr size_t kMaxPrefix = 1 + kMaxKeyId + 4 + 4;
constexpr size_t kMaxTokenBytes = kMaxPrefix + kMacBytes;
static_assert(kMaxTokenChars == (kMaxTokenBytes * 8 + 4) / 5);
// RFC 5321 section 4.5.3.1.1.
static_assert(kVerpPrefix.size() + kMaxTokenChars <= 64);
// The key id length shares an octet with the version.
static_assert(kMaxKeyId < 16);


// Shown - at most 16 octets of untrusted input for an error message, control
// and non-ASCII octets as '?'.
std::string Shown(std::string_view s) {
  std::string out(s.substr(0, 16));
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) c = '?';
  }
  if (s.size() > 16) out += "...";
  return out;
}

std::string KeyWhere(std::string_view id) { return absl::StrCat("token_key \"", Shown(id), "\""); }

// One key: its id and an HMAC context keyed with its secret, never used itself,
// only copied, so that no call pays for the key schedule and the secret need not
// be kept anywhere else.
struct Key {
  std::string id;
  EVP_MAC_CTX* proto = nullptr;
  // Unique for the life of the process, so that a thread's cached copy of a
  // freed key's context can never be taken for a new key that reuses the address.
  uint64_t serial = 0;

  Key() = default;
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;
  Key(Key&& o) noexcept
      : id(std::move(o.id)), proto(std::exchange(o.proto, nullptr)), serial(o.serial) {}
  ~Key() { EVP_MAC_CTX_free(proto); }
};

std::atomic<uint64_t> next_serial{1};

// KeyedMac - a context for HMAC-SHA256 with `secret`, ready for input.
absl::StatusOr<EVP_MAC_CTX*> KeyedMac(std::string_view where, std::string_view secret) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr)
    return absl::InternalError(absl::StrCat(base::Sv(where), ": OpenSSL has no HMAC"));
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);  // the context holds its own reference
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_END};
  if (ctx == nullptr || EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(secret.data()),
                                     secret.size(), params) != 1) {
    EVP_MAC_CTX_free(ctx);
    return absl::InternalError(absl::StrCat(base::Sv(where), ": cannot set up HMAC-SHA256"));
  }
  return ctx;
}

// ThreadMacs - each thread's copies of the keys' contexts it has used lately.
// OpenSSL 3 re-initialises an HMAC context with the key it already holds
// (EVP_MAC_init with no key) for a copy of two digest states; a fresh copy of
// the prototype costs several allocations more, and Issue runs per message.
struct ThreadMacs {
  struct Slot {
    uint64_t serial = 0;
    EVP_MAC_CTX* ctx = nullptr;
  };
  // Two keys sign or verify at a time in practice (the new one and the old one
  // during a rotation); a few more slots cost nothing.
  std::array<Slot, 4> slots;
  size_t next = 0;

  ~ThreadMacs() {
    for (Slot& s : slots) EVP_MAC_CTX_free(s.ctx);
  }

  // For - a context for `key`, reset and ready for input; null only when OpenSSL
  // is out of memory.
  EVP_MAC_CTX* For(const Key& key) {
    for (Slot& s : slots) {
      if (s.serial == key.serial && s.ctx != nullptr) {
        if (EVP_MAC_init(s.ctx, nullptr, 0, nullptr) == 1) return s.ctx;
        EVP_MAC_CTX_free(s.ctx);
        s = Slot{};
        return nullptr;
      }
    }
    Slot& s = slots[next];
    next = (next + 1) % slots.size();
    EVP_MAC_CTX_free(s.ctx);
    s = Slot{};
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(key.proto);
    if (ctx == nullptr) return nullptr;
    s = Slot{key.serial, ctx};
    return ctx;
  }
};

thread_local ThreadMacs thread_macs;

// Mac - the truncated MAC of `purpose` and the token prefix `prefix`.
bool Mac(const Key& key, Purpose purpose, const uint8_t* prefix, size_t prefix_len,
         uint8_t out[kMacBytes]) {
  EVP_MAC_CTX* ctx = thread_macs.For(key);
  if (ctx == nullptr) return false;
  uint8_t input[1 + kMaxPrefix];
  input[0] = static_cast<uint8_t>(purpose);
  std::memcpy(input + 1, prefix, prefix_len);
  uint8_t full[32];
  size_t full_len = 0;
  const bool ok = EVP_MAC_update(ctx, input, 1 + prefix_len) == 1 &&
                  EVP_MAC_final(ctx, full, &full_len, sizeof full) == 1 && full_len == sizeof full;
  if (ok) std::memcpy(out, full, kMacBytes);
  OPENSSL_cleanse(full, sizeof full);
  return ok;
}

void Put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t Get32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

std::string Base32(const uint8_t* bytes, size_t n) {
  std::string out;
  out.reserve((n * 8 + 4) / 5);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | bytes[i];
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += kAlphabet[(acc >> bits) & 31];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (5 - bits)) & 31];
  return out;
}

int Base32Value(char c) {
  if (c >= 'a' && c <= 'z') return c - 'a';
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

// SecretsWiper - clears the secrets however the function holding them returns:
// they should not linger in freed memory.
struct SecretsWiper {
  std::vector<std::pair<std::string, std::string>>* secrets;
  ~SecretsWiper() {
    for (auto& p : *secrets) OPENSSL_cleanse(p.second.data(), p.second.size());
  }
};

absl::Status Malformed(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed token: ", base::Sv(why)));
}

// DecodeBase32 - the octets of `text`, which must be the one spelling (up to
// case) that Base32 gives for them.
absl::Status DecodeBase32(std::string_view text, uint8_t* out, size_t* n) {
  if (text.empty()) return Malformed("empty");
  if (text.size() > kMaxTokenChars) {
    return Malformed(absl::StrCat(text.size(), " characters, at most ", kMaxTokenChars));
  }
  // 5 bits a character: a remainder of 1, 3 or 6 characters cannot end on an
  // octet boundary without a whole spare character.
  const size_t rem = text.size() % 8;
  if (rem == 1 || rem == 3 || rem == 6) {
    return Malformed(absl::StrCat(text.size(), " characters are not a whole number of octets"));
  }
  uint32_t acc = 0;
  int bits = 0;
  *n = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const int v = Base32Value(text[i]);
    if (v < 0) {
      return Malformed(absl::StrCat("character ", i + 1, " (\"", Shown(text.substr(i, 1)),
                                    "\") is not base32 (a-z, 2-7)"));
    }
    acc = (acc << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[(*n)++] = static_cast<uint8_t>(acc >> bits);
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) {
    return Malformed("the last character's unused bits are not zero");
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidKeyId(std::string_view id) {
  return !id.empty() && id.size() <= kMaxKeyId && std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c));
  });
}

struct Keyring::Impl {
  std::vector<Key> keys;  // the signing key first
};

Keyring::Keyring() = default;
Keyring::Keyring(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

bool Keyring::empty() const { return impl_ == nullptr || impl_->keys.empty(); }

std::string_view Keyring::signing_key_id() const {
  return empty() ? std::string_view() : std::string_view(impl_->keys.front().id);
}

std::vector<std::string> Keyring::key_ids() const {
  std::vector<std::string> ids;
  if (impl_ != nullptr) {
    for (const Key& k : impl_->keys) ids.push_back(k.id);
  }
  return ids;
}

absl::StatusOr<Keyring> Keyring::FromSecrets(
    std::vector<std::pair<std::string, std::string>> id_and_secret) {
  SecretsWiper wiper{&id_and_secret};
  auto impl = std::make_shared<Impl>();
  for (const auto& [id, secret] : id_and_secret) {
    const std::string where = KeyWhere(id);
    if (!IsValidKeyId(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": id must match [A-Za-z0-9]{1,", kMaxKeyId, "}"));
    }
    for (const Key& k : impl->keys) {
      if (k.id == id) return absl::InvalidArgumentError(absl::StrCat(where, ": id given twice"));
    }
    if (secret.size() < kMinSecret) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": secret is ", secret.size(),
                                                     " octets, at least ", kMinSecret, " needed"));
    }
    Key key;
    key.id = id;
    ASSIGN_OR_RETURN(key.proto, KeyedMac(where, secret));
    key.serial = next_serial.fetch_add(1, std::memory_order_relaxed);
    impl->keys.push_back(std::move(key));
  }
  return Keyring(std::move(impl));
}

absl::StatusOr<Keyring> Keyring::Load(const std::vector<KeySpec>& specs,
                                      std::vector<std::string>* warnings) {
  std::vector<std::pair<std::string, std::string>> secrets;
  SecretsWiper wiper{&secrets};
  for (const KeySpec& spec : specs) {
    const std::string key = KeyWhere(spec.id);
    // Ids first, before any file is read: a typo in an id is the likelier mistake.
    if (!IsValidKeyId(spec.id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": id must match [A-Za-z0-9]{1,", kMaxKeyId, "}"));
    }
    for (const auto& [id, secret] : secrets) {
      if (id == spec.id) return absl::InvalidArgumentError(absl::StrCat(key, ": id given twice"));
    }
    if (spec.secret_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": secret_file missing"));
    }
    const std::string where = absl::StrCat(key, ": ", spec.secret_file);
    auto fail = [&](std::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", base::Sv(why)));
    };
    const int fd = ::open(spec.secret_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fail(absl::StrCat("cannot open: ", std::strerror(errno)));
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail(absl::StrCat("cannot stat: ", std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) return fail("not a regular file");
    std::string secret(kMaxSecretFile + 1, '\0');
    size_t got = 0;
    while (got < secret.size()) {
      const ssize_t n = ::read(fd, secret.data() + got, secret.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        OPENSSL_cleanse(secret.data(), secret.size());
        return fail(absl::StrCat("cannot read: ", std::strerror(errno)));
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    if (got > kMaxSecretFile) {
      OPENSSL_cleanse(secret.data(), secret.size());
      return fail(absl::StrCat("longer than ", kMaxSecretFile, " octets: not a secret file"));
    }
    while (got > 0 && (secret[got - 1] == ' ' || secret[got - 1] == '\t' ||
                       secret[got - 1] == '\r' || secret[got - 1] == '\n')) {
      --got;
    }
    if (got < kMinSecret) {
      OPENSSL_cleanse(secret.data(), secret.size());
      return fail(absl::StrCat("secret is ", got, " octets, at least ", kMinSecret, " needed"));
    }
    // Shrink in place (resize never reallocates downwards), then wipe the tail.
    OPENSSL_cleanse(secret.data() + got, secret.size() - got);
    secret.resize(got);
    if ((st.st_mode & (S_IRGRP | S_IROTH)) != 0 && warnings != nullptr) {
      warnings->push_back(absl::StrFormat(
          "%s: readable by group or others (mode %04o): chmod 600 it", where, st.st_mode & 07777));
    }
    secrets.emplace_back(spec.id, std::move(secret));
  }
  // FromSecrets wipes its copies; the wiper ours.
  return FromSecrets(secrets);
}

std::string Issue(const Keyring& keys, Purpose purpose, uint32_t job_no, uint32_t line) {
  VOLLEY_CHECK(!keys.empty(), "token::Issue with no key: the caller must check Keyring::empty()");
  const Key& key = keys.impl_->keys.front();
  uint8_t buf[kMaxTokenBytes];
  size_t n = 0;
  buf[n++] = static_cast<uint8_t>(kVersion << 4 | key.id.size());
  std::memcpy(buf + n, key.id.data(), key.id.size());
  n += key.id.size();
  Put32(buf + n, job_no);
  Put32(buf + n + 4, line);
  n += 8;
  VOLLEY_CHECK(Mac(key, purpose, buf, n, buf + n),
               "token::Issue: HMAC-SHA256 failed (out of memory?)");
  n += kMacBytes;
  return Base32(buf, n);
}

absl::StatusOr<Claim> Check(const Keyring& keys, Purpose purpose, std::string_view token) {
  uint8_t buf[kMaxTokenBytes];
  size_t n = 0;
  RETURN_IF_ERROR(DecodeBase32(token, buf, &n));
  if (buf[0] >> 4 != kVersion) {
    return Malformed(absl::StrCat("version ", buf[0] >> 4, " (this Volley knows ", kVersion, ")"));
  }
  const size_t id_len = buf[0] & 15;
  if (id_len == 0 || id_len > kMaxKeyId) {
    return Malformed(absl::StrCat("key id length ", id_len, " (1 to ", kMaxKeyId, ")"));
  }
  const size_t prefix_len = 1 + id_len + 8;
  if (n != prefix_len + kMacBytes) {
    return Malformed(absl::StrCat(n, " octets; a token with a ", id_len, "-character key id has ",
                                  prefix_len + kMacBytes));
  }
  const std::string_view id(reinterpret_cast<const char*>(buf + 1), id_len);
  if (!IsValidKeyId(id)) return Malformed("key id is not [A-Za-z0-9]");
  const Key* key = nullptr;
  if (keys.impl_ != nullptr) {
    for (const Key& k : keys.impl_->keys) {
      if (k.id == id) key = &k;
    }
  }
  if (key == nullptr)
    return absl::NotFoundError(absl::StrCat("unknown key id \"", base::Sv(id), "\""));
  uint8_t want[kMacBytes];
  if (!Mac(*key, purpose, buf, prefix_len, want)) {
    return absl::InternalError("HMAC-SHA256 failed (out of memory?)");
  }
  if (CRYPTO_memcmp(want, buf + prefix_len, kMacBytes) != 0) {
    return absl::PermissionDeniedError("MAC does not verify");
  }
  Claim claim;
  claim.job_no = Get32(buf + 1 + id_len);
  claim.line = Get32(buf + 1 + id_len + 4);
  claim.key_id = std::string(id);
  return claim;
}

std::string VerpAddress(const Keyring& keys, std::string_view domain, uint32_t job_no,
                        uint32_t line) {
  return absl::StrCat(base::Sv(kVerpPrefix), Issue(keys, Purpose::kVerp, job_no, line), "@",
                      base::Sv(domain));
}

absl::StatusOr<Claim> CheckVerpAddress(const Keyring& keys, std::string_view address) {
  auto malformed = [](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("malformed VERP address: ", base::Sv(why)));
  };
  std::string_view a = base::StdSv(absl::StripAsciiWhitespace(base::Sv(address)));
  if (a.size() >= 2 && a.front() == '<' && a.back() == '>') a = a.substr(1, a.size() - 2);
  const size_t at = a.rfind('@');
  if (at == std::string_view::npos) return malformed("no '@'");
  if (at + 1 == a.size()) return malformed("no domain after '@'");
  const std::string_view local = a.substr(0, at);
  if (local.size() < kVerpPrefix.size() ||
      !base::EqualsIgnoreCase(local.substr(0, kVerpPrefix.size()), kVerpPrefix)) {
    return malformed(absl::StrCat("local part \"", Shown(local), "\" does not start with \"",
                                  base::Sv(kVerpPrefix), "\""));
  }
  return Check(keys, Purpose::kVerp, local.substr(kVerpPrefix.size()));
}

}  // namespace volley::token
