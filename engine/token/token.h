// token.h - signed, opaque tokens naming one recipient of one job (VERP, unsubscribe)
//
// SYNOPSIS
//   std::vector<std::string> warnings;
//   ASSIGN_OR_RETURN(Keyring keys, Keyring::Load({{"k2", "/etc/volley/k2.key"},
//                                                  {"k1", "/etc/volley/k1.key"}}, &warnings));
//   std::string t = Issue(keys, Purpose::kUnsubscribe, job_no, line);   // "cjvtcaaa..."
//   ASSIGN_OR_RETURN(Claim c, Check(keys, Purpose::kUnsubscribe, t));    // c.job_no, c.line
//   std::string from = VerpAddress(keys, "bounces.sender.test", job_no, line);
//   ASSIGN_OR_RETURN(Claim b, CheckVerpAddress(keys, "B-CJVTCAAA...@bounces.sender.test"));
//
// DESCRIPTION
//   A token says "job J, line L" (the recipient's line in the job file, as the
//   queue numbers it) in a form only the holder of a key can make: whoever gets
//   one for line 5 cannot turn it into one for line 6, nor an unsubscribe token
//   into a VERP token. It is not encrypted: job number and line can be read by
//   anyone who decodes it; they are not secret, only unforgeable.
//
//   Layout, before encoding (version 1):
//
//       version << 4 | key id length (1) | key id (1..8) | job_no (4, BE) | line (4, BE)
//       | HMAC-SHA256(secret, purpose (1) | everything before the MAC), first 12 octets
//
//   encoded as RFC 4648 base32 in lower case, without padding: 37 characters with a
//   two-character key id, 47 at most. Base32, not base64, because a VERP token is
//   the local part of a bounce address, and mail systems are free to change its
//   case (RFC 5321 section 2.4 only asks them not to); the same alphabet is safe in
//   a URL path or query. Decoding accepts either case but nothing else: the length
//   must be that of a whole number of octets and the unused low bits of the last
//   character zero, so each token has one spelling (up to case) and every change of
//   a character is seen.
//
//   The purpose is part of the MAC input, not of the token: a token checked for
//   the wrong purpose fails as a forgery would.
//
//   A secret is any 32 octets or more, best random: `head -c 32 /dev/urandom |
//   base64 > k1.key` makes one (44 characters; the file's final newline is not
//   part of it).
//
//   Keys rotate by id, as DKIM keys rotate by selector: put the new key first (it
//   signs from then on) and keep the old one after it until no token made with it
//   can still come back (bounces for a few days; unsubscribe links for as long as
//   old mail is read, which is why an unsubscribe key is best never removed).
//
// CONTRACT
//   Keyring is immutable once made; copies share its state; Issue and Check may be
//   called from any number of threads at once. Issue on an empty keyring is a
//   caller's bug and aborts: callers check empty() when they read the config
//   (intake refuses a job that needs a token when no key is configured).
//   Issue allocates only the returned string (after a thread's first use of a
//   key): each thread keeps a keyed MAC context per key and resets it, where a
//   fresh copy of the keyed context per call would double the cost. Issue and
//   Check take about 0.4 microseconds each (Release build, one core).
//
// DIAGNOSTICS
//   Load: InvalidArgument naming the table, the file and the reason:
//   "token_key \"k 1\": id must match [A-Za-z0-9]{1,8}", "token_key \"k1\": id
//   given twice", "token_key \"k1\": /etc/volley/k1.key: cannot open: No such file
//   or directory", "token_key \"k1\": /etc/volley/k1.key: secret is 12 octets, at
//   least 32 needed", "... longer than 4096 octets: not a secret file". A secret
//   file that group or others may read is loaded, with a warning appended to
//   *warnings ("token_key \"k1\": /etc/volley/k1.key: readable by group or others
//   (mode 0644): chmod 600 it"). FromSecrets: the same without the file.
//   Check: InvalidArgument "malformed token: <why>"; NotFound "unknown key id
//   \"k9\"" (removed too early, or a token from elsewhere); PermissionDenied "MAC
//   does not verify" (forged, altered, made by another key with the same id, or
//   made for another purpose). CheckVerpAddress: InvalidArgument "malformed VERP
//   address: <why>", or what Check says. No error message repeats more than 16
//   octets of its input, and never a control character.
//
// BOUNDS
//   Key ids 1..kMaxKeyId characters; secrets kMinSecret octets at least, secret
//   files kMaxSecretFile octets at most; tokens at most kMaxTokenChars characters,
//   so a VERP local part ("b-" and the token) is at most 49 octets, within RFC 5321
//   section 4.5.3.1.1's 64. The MAC is 96 bits: forging a token means guessing,
//   and each guess costs the forger a message or a request that the keyholder sees.
//
// SEE ALSO
//   RFC 2104 (HMAC), RFC 4648 section 6 (base32), RFC 3834 and RFC 3464 (bounces),
//   RFC 8058 (one-click unsubscribe); docs/config.md ([[token_key]], [verp]);
//   docs/volleyctl.md (verp decode).
#ifndef VOLLEY_ENGINE_TOKEN_TOKEN_H_
#define VOLLEY_ENGINE_TOKEN_TOKEN_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::token {

// Key ids match [A-Za-z0-9]{1,kMaxKeyId}.
inline constexpr size_t kMaxKeyId = 8;
bool IsValidKeyId(std::string_view id);
// Shortest secret accepted, in octets: HMAC-SHA256's output size (RFC 2104
// section 3 advises no less).
inline constexpr size_t kMinSecret = 32;
// Largest secret file read; anything longer is not a secret file.
inline constexpr size_t kMaxSecretFile = 4096;
// Truncated MAC length in octets (96 bits).
inline constexpr size_t kMacBytes = 12;
// Longest token: an 8-character key id; ceil((1 + 8 + 4 + 4 + 12) * 8 / 5).
inline constexpr size_t kMaxTokenChars = 47;
// The VERP local part's prefix, "b-" (any case when checked).
inline constexpr std::string_view kVerpPrefix = "b-";

// KeySpec - one [[token_key]] table of volleyd's config.
struct KeySpec {
  std::string id;
  std::string secret_file;
};

// Purpose - what a token is for; part of the MAC input, so that a token made for
// one purpose does not verify for another. The values are part of every token
// issued: never renumber.
// kTrace: the Volley-Trace field of each message (engine/compose.h), which a
// feedback report returns with the message's headers.
enum class Purpose : uint8_t { kVerp = 1, kUnsubscribe = 2, kTrace = 3 };

// Claim - what a token that verified says.
struct Claim {
  uint32_t job_no = 0;
  uint32_t line = 0;
  std::string key_id;  // the key that made it
};

// Keyring - the token keys: the first signs, all verify.
class Keyring {
 public:
  // Load - read each spec's secret file: its content, trailing whitespace (space,
  // tab, CR, LF) removed, is the secret. Ids must be distinct. An empty list makes
  // an empty keyring. `warnings` may be null.
  static absl::StatusOr<Keyring> Load(const std::vector<KeySpec>& specs,
                                      std::vector<std::string>* warnings);
  // FromSecrets - the same from secrets in hand (tests, tools); the first signs.
  static absl::StatusOr<Keyring> FromSecrets(
      std::vector<std::pair<std::string, std::string>> id_and_secret);

  Keyring();  // empty
  bool empty() const;
  // The id of the key Issue uses ("" when empty).
  std::string_view signing_key_id() const;
  // Every key id, the signing key first.
  std::vector<std::string> key_ids() const;

 private:
  struct Impl;
  explicit Keyring(std::shared_ptr<const Impl> impl);
  friend std::string Issue(const Keyring& keys, Purpose purpose, uint32_t job_no, uint32_t line);
  friend absl::StatusOr<Claim> Check(const Keyring& keys, Purpose purpose, std::string_view token);
  std::shared_ptr<const Impl> impl_;
};

// Issue - the token for (job_no, line), made with the signing key.
std::string Issue(const Keyring& keys, Purpose purpose, uint32_t job_no, uint32_t line);

// Check - decode `token` (either case) and verify its MAC (in constant time)
// against the key it names. Never returns a claim whose MAC failed.
absl::StatusOr<Claim> Check(const Keyring& keys, Purpose purpose, std::string_view token);

// VerpAddress - "b-<Issue(kVerp)>@domain", for MAIL FROM.
std::string VerpAddress(const Keyring& keys, std::string_view domain, uint32_t job_no,
                        uint32_t line);

// CheckVerpAddress - the claim of a VERP address "b-<token>@domain" (prefix in
// either case; surrounding spaces and one pair of angle brackets are allowed, as in
// a copied Return-Path field). The domain is not checked: the caller knows which
// domains are its own.
absl::StatusOr<Claim> CheckVerpAddress(const Keyring& keys, std::string_view address);

}  // namespace volley::token

#endif  // VOLLEY_ENGINE_TOKEN_TOKEN_H_
