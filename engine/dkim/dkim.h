// dkim.h - DKIM signatures (RFC 6376) for outgoing mail: rsa-sha256 and ed25519-sha256
//
// SYNOPSIS
//   std::vector<std::string> warnings;
//   ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::LoadFile("/etc/volley/dkim/s1.pem", &warnings));
//   SignerOptions opts;
//   opts.domain = "news.example";  opts.selector = "s1";
//   Signer signer(opts, key);                       // one per shard, at start
//   std::string bh = signer.BodyHash(message);      // optional: once per distinct body
//   ASSIGN_OR_RETURN(std::string field, signer.Sign(message, absl::Now(), bh));
//   send(field + message);                          // the field goes first
//
//   key.DnsRecord();                  // "v=DKIM1; k=rsa; p=MIIBIjANBg..."
//   DnsTxtStrings(key.DnsRecord());   // "\"v=DKIM1; k=rsa; p=MIIB...\" \"...\"" for a zone file
//
// DESCRIPTION
//   Sign returns one DKIM-Signature field to put in front of the message. The message is
//   the text that goes on the wire, before dot-stuffing. Line ends are read the way
//   engine/smtp's PrepareData and PrepareBdat write them (CRLF, a bare CR or a bare LF
//   each end a line; a last line without an ending gets one). So the signature covers
//   what the receiver gets, whatever line ends the renderer produced.
//
//   h= names each configured field once for every instance in the message. A verifier
//   pairs a repeated name with instances from the bottom up (RFC 6376 section 5.4.2),
//   and Sign hashes them in that order. Each over_sign name then gets one more entry,
//   which matches no field. A verifier counts a field added later under that name
//   in the hash, so adding one (a second Subject, say) breaks the signature; RFC 6376
//   section 8.15 explains the attack. From is always signed, even when `headers` leaves
//   it out, because section 5.4 requires it. t= is the `now` given; x= is t plus
//   expire_after. l= is never written: a length limit lets anyone append to a signed
//   body. i= and q= are left to their defaults.
//
//   The field is folded at tag boundaries into lines of at most 78 octets. A continuation
//   line starts with a tab. h= breaks after a colon, and b= at any point, because RFC
//   6376 allows folding white space there. A d= or s= longer than a line stays on one
//   line.
//
//   rsa-sha256 is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017). ed25519-sha256 signs the
//   SHA-256 digest of the header hash input with PureEdDSA (RFC 8463 section 3), so the
//   two algorithms hash the same bytes. The body hash is SHA-256 for both, so one
//   BodyHash value serves every signer of a message whose body canonicalisation
//   matches. Dual signing is two Signers and two prepended fields.
//
//   BodyHash is the expensive part for a large body, and it depends only on the body
//   and on body_canon. A caller that sends one body to many recipients computes it
//   once and passes it to every Sign. The header hash and the signature are per
//   message. RSA-2048 costs about 0.3 ms a signature and Ed25519 under a tenth of that;
//   everything else Sign does costs a few microseconds.
//
//   SignFieldTemplate signs a DKIM-Signature field that someone else wrote, taking the
//   header list and header canonicalisation from its h= and c= tags. It reproduces
//   published examples byte for byte (RFC 8463 Appendix A, whose tags Sign does not
//   write the same way) and checks another signer's output against our canonicalisation.
//
// CONTRACT
//   A PrivateKey is immutable. Its copies share one OpenSSL key, and any thread may
//   use them. A Signer belongs to one thread at a time: Sign and BodyHash reuse its
//   scratch buffers and OpenSSL contexts, which keeps allocation and OpenSSL set-up off
//   the hot path. Each shard builds its own. Copying a Signer gives the copy fresh
//   scratch and shares the key. A moved-from PrivateKey or Signer may only be assigned
//   to or destroyed.
//
//   The library never reads a clock, the network or DNS. Only LoadFile reads a file.
//
// DIAGNOSTICS
//   PrivateKey::FromPem / LoadFile: InvalidArgument for text that is not a PEM private
//   key, an encrypted key ("decrypt it first"), a key type other than RSA or Ed25519
//   (EC and RSA-PSS included), or an RSA key under 1024 bits ("RSA key of 512 bits:
//   RFC 8301 forbids signing with keys under 1024 bits"). LoadFile's errors start with
//   the path ("/etc/volley/dkim/s1.pem: not a PEM private key: ..."). A file that
//   cannot be opened or read gets base::ErrnoError's code and text ("<path>: open: No
//   such file or directory"), and one that is not a regular file, or is over 64 KiB,
//   is InvalidArgument. Warnings are appended to *warnings and are never fatal: an RSA
//   key of 1024 to 2047 bits ("<path>: RSA key of 1024 bits: RFC 8301 asks for 2048 or
//   more"), an RSA key over 4096 bits (RFC 8301 requires verifiers to handle only up
//   to 4096), and a file its group or other users can read ("key file <path> is
//   readable by other users (mode 0644); chmod 600 it").
//   Generate: InvalidArgument for rsa_bits outside 1024..8192.
//   Sign: InvalidArgument for a message without a From field, for a body_hash that is
//   not 44 characters of base64 (it must be BodyHash's output, not a raw digest), or
//   for options no verifier could use (an empty or malformed domain or selector, a
//   header name with a colon, space or control character). The options error names
//   the option, and Sign returns it on every call. Internal if OpenSSL fails to sign.
//   ParseCanonicalization: InvalidArgument naming the text.
//
// BOUNDS
//   LoadFile reads at most 64 KiB. The message is read in place and never copied
//   whole: BodyHash streams the canonical body into SHA-256 a run at a time (only
//   pieces that canonicalisation changes pass through a 1 KiB buffer), and Sign keeps
//   only the canonical signed header fields (normally under 2 KiB) in its scratch
//   string. Work is linear in the message size, plus the number of header fields times
//   the number of configured names for picking h=.
//
// BUGS
//   XXX(scope) No verification (a receiver's job), no l=, no i= or z=. No ARC.
//   A message changed after signing fails to verify. Volley's own 8-bit downgrade
//   (smtp::DowngradeTo7Bit) is one such change, so sign the text that will be sent,
//   downgraded or not.
//
// SEE ALSO
//   RFC 6376 (DKIM; sections 3.4 canonicalisation, 3.5 tags, 3.7 hashes, 5.4 signed
//   fields, 8.15 added fields), RFC 8463 (Ed25519), RFC 8301 (key sizes, no rsa-sha1),
//   engine/smtp/content.h (the line ends this library assumes), EVP_DigestSignInit(3).
#ifndef VOLLEY_ENGINE_DKIM_DKIM_H_
#define VOLLEY_ENGINE_DKIM_DKIM_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::dkim {

namespace internal {
struct KeyAccess;
struct KeyState;
}  // namespace internal

enum class Algorithm { kRsaSha256, kEd25519Sha256 };

// AlgorithmName - the a= value: "rsa-sha256" or "ed25519-sha256".
std::string_view AlgorithmName(Algorithm a);

enum class Canon { kSimple, kRelaxed };

// ParseCanonicalization - a c= value: "relaxed/simple" (header/body), or one word, which
// sets the header canonicalisation and leaves the body at simple (RFC 6376 section
// 3.5, c=). ASCII case is ignored, since this also reads config files.
absl::Status ParseCanonicalization(std::string_view text, Canon* header, Canon* body);

// PrivateKey - an RSA or Ed25519 signing key. Copies share it (see CONTRACT).
class PrivateKey {
 public:
  // FromPem - PKCS#8 ("BEGIN PRIVATE KEY", RSA or Ed25519) or PKCS#1 ("BEGIN RSA
  // PRIVATE KEY"), unencrypted; other PEM blocks before the key are skipped.
  static absl::StatusOr<PrivateKey> FromPem(std::string_view pem);
  // LoadFile - FromPem on the file's contents, plus warnings (DIAGNOSTICS). `warnings`
  // may be null.
  static absl::StatusOr<PrivateKey> LoadFile(const std::string& path,
                                             std::vector<std::string>* warnings);
  // Generate - a new key. rsa_bits applies to RSA only, 1024..8192 (below 2048 is for
  // tests; RFC 8301 asks for 2048 or more).
  static absl::StatusOr<PrivateKey> Generate(Algorithm a, int rsa_bits = 2048);

  PrivateKey(const PrivateKey&);
  PrivateKey& operator=(const PrivateKey&);
  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  ~PrivateKey();

  Algorithm algorithm() const;
  int bits() const;           // RSA modulus bits; 256 for Ed25519
  std::string ToPem() const;  // PKCS#8, unencrypted
  // PublicKeyBase64 - the p= value. RSA: SubjectPublicKeyInfo DER (what RFC 6376's
  // k=rsa verifiers parse); Ed25519: the raw 32-octet public key (RFC 8463 section 4).
  std::string PublicKeyBase64() const;
  // DnsRecord - the TXT record for <selector>._domainkey.<domain>:
  // "v=DKIM1; k=rsa; p=..." or "v=DKIM1; k=ed25519; p=...".
  std::string DnsRecord() const;

 private:
  friend struct internal::KeyAccess;
  explicit PrivateKey(std::shared_ptr<const internal::KeyState> impl);
  std::shared_ptr<const internal::KeyState> impl_;
};

// DnsTxtStrings - `record` as TXT rdata in zone-file syntax: quoted strings of at most
// 255 octets each (RFC 1035 section 3.3.14), separated by single spaces, with '"' and
// '\' escaped. A verifier joins the strings with nothing between them (RFC 6376
// section 3.6.2.2), so the split may fall anywhere. "" gives "\"\"".
std::string DnsTxtStrings(std::string_view record);

// RFC 6376 section 5.4.1's list, plus Message-ID, MIME-Version, Content-Type,
// Content-Transfer-Encoding, List-Id, List-Unsubscribe, List-Unsubscribe-Post and
// Feedback-ID, which bulk mail relies on (RFC 8058 requires List-Unsubscribe and
// List-Unsubscribe-Post signed for one-click unsubscribe).
std::vector<std::string> DefaultSignedHeaders();
// From, To, Subject, Date, List-Unsubscribe, List-Unsubscribe-Post: the fields a
// replayer would most like to add a second copy of.
std::vector<std::string> DefaultOverSignedHeaders();

struct SignerOptions {
  // d= and s=: the key is published at <selector>._domainkey.<domain>. Letters, digits,
  // '-', '_' and '.', no empty label. Required.
  std::string domain;
  std::string selector;
  // c=. Relaxed survives what relays commonly do to mail (refolded headers, trailing
  // spaces stripped). Default: relaxed/relaxed.
  Canon header_canon = Canon::kRelaxed;
  Canon body_canon = Canon::kRelaxed;
  // Fields signed when present, every instance; names compare case-insensitively.
  // From is signed even when left out. Default: DefaultSignedHeaders().
  std::vector<std::string> headers = DefaultSignedHeaders();
  // Fields given one more h= entry than they have instances, so that none can be added
  // in transit (present or not; signed like `headers` when present).
  // Default: DefaultOverSignedHeaders().
  std::vector<std::string> over_sign = DefaultOverSignedHeaders();
  // x= is t= plus this, rounded up to whole seconds, when it is positive. A verifier
  // refuses the signature after that (a replayed campaign stops verifying), so it must
  // cover the longest retry. Default: none.
  absl::Duration expire_after = absl::ZeroDuration();
};

// Signer - signs messages for one domain, selector and key. One thread at a time (see
// CONTRACT). Copyable and movable.
class Signer {
 public:
  Signer(SignerOptions options, PrivateKey key);
  Signer(const Signer& other);
  Signer& operator=(const Signer& other);
  Signer(Signer&&) noexcept;
  Signer& operator=(Signer&&) noexcept;
  ~Signer();

  const SignerOptions& options() const;
  Algorithm algorithm() const;

  // BodyHash - the bh= value: base64 SHA-256 of the canonical body (everything after
  // the first empty line; none means an empty body).
  std::string BodyHash(std::string_view message) const;

  // Sign - the whole field, "DKIM-Signature: v=1; ...\r\n", to put before `message`.
  // `body_hash`: BodyHash(message)'s value to reuse, or empty to compute it here.
  absl::StatusOr<std::string> Sign(std::string_view message, absl::Time now,
                                   std::string_view body_hash = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// SignFieldTemplate - the b= value for `field`, a DKIM-Signature field written
// elsewhere ("DKIM-Signature: v=1; ...", folded as it will be sent, with or without a
// final CRLF). Its b= tag must be present with an empty value. Its a= must name `key`'s
// algorithm, and its h= and c= tags say which fields of `message` to sign and how. The
// field is hashed exactly as given, so a bh= in it is not checked. InvalidArgument
// names the tag that is missing or wrong.
absl::StatusOr<std::string> SignFieldTemplate(const PrivateKey& key, std::string_view field,
                                              std::string_view message);

// CanonicalizeHeader - one whole field ("Name: value\r\n" with its continuation lines),
// canonicalised; the result ends with CRLF. Simple only normalises line ends to CRLF
// (see DESCRIPTION). Relaxed lowercases the name, unfolds, turns runs of SP and HTAB
// into one SP, and drops them at the end of the value and around the colon.
std::string CanonicalizeHeader(Canon c, std::string_view field);

// CanonicalizeBody - `body` (the text after the empty line) canonicalised into *out,
// replacing its contents. Simple: trailing empty lines dropped; an empty body becomes
// one CRLF. Relaxed: SP and HTAB dropped at line ends, runs of them made one SP,
// trailing empty lines dropped; an empty body stays empty. Both end a non-empty result
// with CRLF, even when `body` lacks one (as the wire will).
void CanonicalizeBody(Canon c, std::string_view body, std::string* out);

// FromDomain - the domain of the first address in the first From field, lowercased:
// display names, quoted strings, comments, angle brackets and folding are handled.
// Empty when there is no From field or no address with an '@' (a group with no
// members, say).
std::string FromDomain(std::string_view message);

}  // namespace volley::dkim

#endif  // VOLLEY_ENGINE_DKIM_DKIM_H_
