// fuzz_token - libFuzzer target for signed recipient tokens (engine/token/token.h)
//
// INPUT
//   the whole input is a string to check, as a token and as a VERP address; the
//   same bytes also steer the round trip: bytes 0-3 job_no and 4-7 line (big-endian,
//   missing bytes zero), byte 8 picks the issuing key, and bytes 9 on (cycled) pick
//   the mixed case and the characters changed, dropped and added.
//
// DESCRIPTION
//   Forgery. The input goes to Check for both purposes and to CheckVerpAddress, with a
//   keyring kept for this (Checker()): none may ever verify, since that would mean a
//   MAC guessed from nothing. Its keys share their ids with the issuing keys below but
//   not their secrets, and nothing is ever issued with them, so no token the harness
//   makes (libFuzzer may learn one from a comparison) can verify against it. Every
//   error is InvalidArgument, NotFound or PermissionDenied, its message printable
//   ASCII and at most 100 octets long (it may quote 16 octets of the input, not echo
//   it). CheckVerpAddress("b-" + input + "@bounces.test") says exactly what
//   Check(kVerp, input) says.
//
//   Round trip. A token is issued for (job_no, line) with one of three keys (ids of 1,
//   2 and 8 characters), for each purpose. It is lower-case base32 of the documented
//   length; Check, with a keyring where that key is not the signing one, returns
//   job_no, line and the key's id; so does the token in upper case and in a mixed
//   case. It fails, never verifies, when checked for the other purpose
//   (PermissionDenied), against Checker() (same id, other secret: PermissionDenied),
//   with any one character changed to another (every position is tried), with one
//   character dropped and with one added. VerpAddress is "b-" + the kVerp token + "@"
//   + domain, and CheckVerpAddress takes it back, in upper case too, in angle
//   brackets, with surrounding white space.
//   A broken rule aborts with a message naming it and the line.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/strings.h"
#include "engine/token/token.h"

namespace {

using volley::base::StdSv;
using volley::token::Claim;
using volley::token::Keyring;
using volley::token::Purpose;

[[noreturn]] void Broken(int line, const char* rule) {
  std::fprintf(stderr, "fuzz_token: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}
#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) Broken(__LINE__, #cond); \
  } while (0)

constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz234567";
constexpr std::string_view kIds[] = {"a", "k1", "ABCdef78"};
constexpr std::string_view kDomain = "Bounces.Sender.test";
// The longest error message expected: the longest fixed text (some 60 octets) and 19
// of the input ("..." included).
constexpr size_t kMaxMessage = 100;

Keyring MustKeyring(std::vector<std::pair<std::string, std::string>> keys) {
  absl::StatusOr<Keyring> k = Keyring::FromSecrets(std::move(keys));
  EXPECT(k.ok());
  return *k;
}

std::string Secret(std::string_view tag) {
  return std::string(tag) + std::string(40, '#') + std::string(tag);
}

// Checker - the fuzzed strings' keyring. Never issues.
const Keyring& Checker() {
  static const Keyring k = MustKeyring({{"k1", Secret("checker-k1")},
                                        {"a", Secret("checker-a")},
                                        {"ABCdef78", Secret("checker-long")}});
  return k;
}

// Issuer(i) - one key, kIds[i], that signs.
const Keyring& Issuer(size_t i) {
  static const Keyring k[] = {MustKeyring({{"a", Secret("issuer-a")}}),
                              MustKeyring({{"k1", Secret("issuer-k1")}}),
                              MustKeyring({{"ABCdef78", Secret("issuer-long")}})};
  return k[i];
}

// Verifier - every issuing key, none of them the signing one (a rotation).
const Keyring& Verifier() {
  static const Keyring k = MustKeyring({{"new", Secret("verifier-new")},
                                        {"a", Secret("issuer-a")},
                                        {"k1", Secret("issuer-k1")},
                                        {"ABCdef78", Secret("issuer-long")}});
  return k;
}

char Upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string UpperAll(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = Upper(c);
  return out;
}

// CheckRefused - an error of the documented kinds, with a message that keeps the
// documented limits: printable ASCII, and short. (token.h says no more than 16 octets
// of the input; looking for runs of the input in the message would flag inputs that
// quote the message's own fixed text, which libFuzzer learns from that very search.
// A bound on the length catches a message that echoes its input.)
void CheckRefused(const absl::Status& s) {
  EXPECT(!s.ok());
  EXPECT(s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kNotFound ||
         s.code() == absl::StatusCode::kPermissionDenied);
  const std::string_view msg = StdSv(s.message());
  EXPECT(!msg.empty() && msg.size() <= kMaxMessage);
  for (char c : msg) EXPECT(c >= 0x20 && c <= 0x7e);
}

void CheckClaim(const absl::StatusOr<Claim>& c, uint32_t job_no, uint32_t line,
                std::string_view id) {
  EXPECT(c.ok());
  EXPECT(c->job_no == job_no);
  EXPECT(c->line == line);
  EXPECT(c->key_id == id);
}

void Forgery(std::string_view input) {
  const Keyring& k = Checker();
  const absl::StatusOr<Claim> verp = Check(k, Purpose::kVerp, input);
  CheckRefused(verp.status());
  CheckRefused(Check(k, Purpose::kUnsubscribe, input).status());
  CheckRefused(CheckVerpAddress(k, input).status());
  const std::string address = "b-" + std::string(input) + "@bounces.test";
  const absl::StatusOr<Claim> as_address = CheckVerpAddress(k, address);
  EXPECT(as_address.status() == verp.status());
}

uint32_t Get32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t i = at; i < at + 4; ++i) {
    v = v << 8 | (i < s.size() ? static_cast<uint8_t>(s[i]) : 0u);
  }
  return v;
}

void RoundTrip(std::string_view input) {
  const uint32_t job_no = Get32(input, 0);
  const uint32_t line = Get32(input, 4);
  const size_t which = input.size() > 8 ? static_cast<uint8_t>(input[8]) % 3 : 0;
  const std::string_view id = kIds[which];
  // Steering bytes, cycled; a fixed pattern when the input has none.
  size_t cursor = 0;
  const auto next = [&]() -> uint8_t {
    const size_t avail = input.size() > 9 ? input.size() - 9 : 0;
    const size_t i = cursor++;
    return avail == 0 ? static_cast<uint8_t>(i * 37 + 11) : static_cast<uint8_t>(input[9 + i % avail]);
  };
  const Keyring& issuer = Issuer(which);
  const Keyring& verifier = Verifier();

  for (Purpose p : {Purpose::kVerp, Purpose::kUnsubscribe}) {
    const Purpose other = p == Purpose::kVerp ? Purpose::kUnsubscribe : Purpose::kVerp;
    const std::string token = Issue(issuer, p, job_no, line);
    EXPECT(token.size() == ((1 + id.size() + 8 + 12) * 8 + 4) / 5);
    EXPECT(token.size() <= volley::token::kMaxTokenChars);
    for (char c : token) EXPECT(kAlphabet.find(c) != std::string_view::npos);

    CheckClaim(Check(verifier, p, token), job_no, line, id);
    CheckClaim(Check(issuer, p, token), job_no, line, id);
    CheckClaim(Check(verifier, p, UpperAll(token)), job_no, line, id);
    std::string mixed = token;
    for (char& c : mixed) {
      if (next() & 1) c = Upper(c);
    }
    CheckClaim(Check(verifier, p, mixed), job_no, line, id);

    const absl::StatusOr<Claim> wrong_purpose = Check(verifier, other, token);
    EXPECT(wrong_purpose.status().code() == absl::StatusCode::kPermissionDenied);
    const absl::StatusOr<Claim> other_secret = Check(Checker(), p, token);
    EXPECT(other_secret.status().code() == absl::StatusCode::kPermissionDenied);

    // Any one character changed: to another base32 digit in either case, or to any
    // octet that is not this one in either case.
    for (size_t i = 0; i < token.size(); ++i) {
      std::string changed = token;
      const uint8_t r = next();
      const size_t v = kAlphabet.find(token[i]);
      if (r & 0x80) {
        char c = kAlphabet[(v + 1 + (r & 0x1f) % 31) % 32];
        changed[i] = r & 0x40 ? Upper(c) : c;
      } else {
        char c = static_cast<char>(r ^ next());
        if (Lower(c) == token[i]) c = static_cast<char>(c ^ 1);
        changed[i] = c;
      }
      EXPECT(Lower(changed[i]) != token[i]);
      EXPECT(!Check(verifier, p, changed).ok());
    }
    std::string shorter = token;
    shorter.erase(next() % token.size(), 1);
    EXPECT(!Check(verifier, p, shorter).ok());
    // One more character anywhere, the end included (an 'a' there adds only zero
    // bits: the length alone must give it away).
    std::string longer = token;
    const size_t at = next() % (token.size() + 1);
    const uint8_t r = next();
    longer.insert(at, 1, r & 0x80 ? static_cast<char>(r) : kAlphabet[r % 32]);
    EXPECT(!Check(verifier, p, longer).ok());

    if (p != Purpose::kVerp) continue;
    const std::string address = VerpAddress(issuer, kDomain, job_no, line);
    EXPECT(address == "b-" + token + "@" + std::string(kDomain));
    CheckClaim(CheckVerpAddress(verifier, address), job_no, line, id);
    CheckClaim(CheckVerpAddress(verifier, UpperAll(address)), job_no, line, id);
    CheckClaim(CheckVerpAddress(verifier, " \t<" + mixed.insert(0, "B-") + "@x.test>\r\n"),
               job_no, line, id);
    EXPECT(CheckVerpAddress(Checker(), address).status().code() ==
           absl::StatusCode::kPermissionDenied);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(bytes), size);
  Forgery(input);
  RoundTrip(input);
  return 0;
}
