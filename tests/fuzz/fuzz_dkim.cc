// fuzz_dkim - libFuzzer target for DKIM canonicalisation and signing (engine/dkim/dkim.h)
//
// INPUT
//   the whole input is a message: header fields, an empty line, the body. Any line
//   ends: CRLF, a bare CR and a bare LF each end a line, as dkim.h reads them.
//
// DESCRIPTION
//   The harness splits the message itself, by a plain reading of dkim.h (lines; the
//   first empty one ends the header; a line starting with SP or HTAB continues the
//   field before it, and is dropped when there is none), and holds the library to:
//   - CanonicalizeBody, simple and relaxed, equals a plain line-by-line reference of
//     RFC 6376 sections 3.4.3 and 3.4.4, replaces what *out held, and is idempotent;
//   - Signer::BodyHash (the streaming path) equals base64 SHA-256 of the
//     reference's canonical body, computed here with OpenSSL, for both
//     canonicalisations;
//   - CanonicalizeHeader of every field whose first line has a colon equals a plain
//     reference of sections 3.4.1 and 3.4.2; relaxed output has a lower-case name,
//     no WSP before the colon, no CR or LF but the final CRLF, and is idempotent. Any
//     text at all (the whole input as one "field") gives a result ending in CRLF;
//   - FromDomain is empty without a From field, and never holds A-Z, SP, HTAB, CR,
//     LF or '@';
//   - Sign, with a fixed Ed25519 key and three signers (relaxed/relaxed with x=,
//     simple/simple, relaxed/simple with a short header list that leaves From out),
//     fails with InvalidArgument exactly when there is no From field, and otherwise
//     returns "DKIM-Signature: ...CRLF": lines of at most 78 octets (the options'
//     d= and s= are short), continuation lines starting with HTAB, no bare CR or LF;
//     the tags the options call for; h= naming each configured field once per
//     instance plus once more for each over-signed name, From first; bh= equal to
//     BodyHash; the same field when BodyHash's value is passed in (Ed25519 is
//     deterministic). And the signature verifies: this harness is the verifier
//     (RFC 6376 section 6.1.3, with its own canonicalisation, bottom-up field
//     selection and OpenSSL's Ed25519), so a signature a receiver would refuse is
//     caught, not only one that differs from the library's idea of itself.
//   A broken rule aborts with a message naming it and the line.
//
//   The key is fixed (below), so that a run with a fixed seed is the same everywhere.
//   Ed25519 keeps a run fast: RSA signing would cost ten times as much.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/time/time.h"
#include "base/openssl_ptr.h"
#include "base/strings.h"
#include "engine/dkim/dkim.h"

namespace {

using volley::base::Sv;
using volley::dkim::Canon;
using volley::dkim::PrivateKey;
using volley::dkim::Signer;
using volley::dkim::SignerOptions;

[[noreturn]] void Broken(int line, const char* rule) {
  std::fprintf(stderr, "fuzz_dkim: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}
#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) Broken(__LINE__, #cond); \
  } while (0)

// A test key, made for this harness with `openssl genpkey -algorithm ed25519`.
constexpr char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIGzWs0uIG/VAri9GO8T0XOcOSUgpJwIS284BOupliHeQ\n"
    "-----END PRIVATE KEY-----\n";
constexpr int64_t kNow = 1700000000;
constexpr int64_t kExpireAfter = 7 * 86400;
constexpr std::string_view kDomain = "news.example";
constexpr std::string_view kSelector = "s2026";

bool IsWsp(char c) { return c == ' ' || c == '\t'; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view TrimWspRight(std::string_view s) {
  while (!s.empty() && IsWsp(s.back())) s.remove_suffix(1);
  return s;
}

// ---- The reference reading of a message

// Line - one line: its content and its whole text, ending (CRLF, CR, LF or none)
// included.
struct Line {
  std::string_view content;
  std::string_view whole;
};

std::vector<Line> Lines(std::string_view s) {
  std::vector<Line> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find_first_of("\r\n", pos);
    size_t next;
    if (end == std::string_view::npos) {
      end = next = s.size();
    } else if (s[end] == '\r' && end + 1 < s.size() && s[end + 1] == '\n') {
      next = end + 2;
    } else {
      next = end + 1;
    }
    out.push_back({s.substr(pos, end - pos), s.substr(pos, next - pos)});
    pos = next;
  }
  return out;
}

struct RefField {
  std::string_view text;                // the whole field, line ends included
  std::vector<std::string_view> lines;  // line contents
  bool has_colon = false;               // in its first line
  std::string name;                     // before that colon, trailing WSP gone, lower case
};

struct RefMessage {
  std::vector<RefField> fields;
  std::string_view body;
};

RefMessage Split(std::string_view m) {
  RefMessage r;
  for (const Line& line : Lines(m)) {
    const size_t at = static_cast<size_t>(line.whole.data() - m.data());
    if (line.content.empty()) {
      r.body = m.substr(at + line.whole.size());
      break;
    }
    if (IsWsp(line.content[0])) {
      if (r.fields.empty()) continue;
      RefField& f = r.fields.back();
      f.text = m.substr(static_cast<size_t>(f.text.data() - m.data()),
                        at + line.whole.size() - static_cast<size_t>(f.text.data() - m.data()));
      f.lines.push_back(line.content);
      continue;
    }
    RefField f;
    f.text = line.whole;
    f.lines.push_back(line.content);
    const size_t colon = line.content.find(':');
    if (colon != std::string_view::npos) {
      f.has_colon = true;
      f.name = Lower(TrimWspRight(line.content.substr(0, colon)));
    }
    r.fields.push_back(std::move(f));
  }
  return r;
}

size_t Instances(const RefMessage& m, std::string_view lower_name) {
  size_t n = 0;
  for (const RefField& f : m.fields) n += f.has_colon && f.name == lower_name;
  return n;
}

// CollapseWsp - each run of SP and HTAB as one SP.
std::string CollapseWsp(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!IsWsp(s[i])) {
      out.push_back(s[i]);
      continue;
    }
    out.push_back(' ');
    while (i + 1 < s.size() && IsWsp(s[i + 1])) ++i;
  }
  return out;
}

// RefBody - RFC 6376 3.4.3 (simple) and 3.4.4 (relaxed), line by line.
std::string RefBody(Canon c, std::string_view body) {
  std::vector<std::string> lines;
  for (const Line& line : Lines(body)) {
    if (c == Canon::kSimple) {
      lines.emplace_back(line.content);
    } else {
      std::string l = CollapseWsp(line.content);
      if (!l.empty() && l.back() == ' ') l.pop_back();
      lines.push_back(std::move(l));
    }
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::string out;
  for (const std::string& l : lines) out += l + "\r\n";
  if (c == Canon::kSimple && out.empty()) out = "\r\n";
  return out;
}

// RefHeader - RFC 6376 3.4.1 (simple: line ends as CRLF) and 3.4.2 (relaxed). A field
// whose first line has a colon.
std::string RefHeader(Canon c, const RefField& f) {
  std::string out;
  if (c == Canon::kSimple) {
    for (std::string_view l : f.lines) out += std::string(l) + "\r\n";
    return out;
  }
  std::string unfolded;
  for (std::string_view l : f.lines) unfolded += l;
  const size_t colon = unfolded.find(':');
  std::string value = CollapseWsp(std::string_view(unfolded).substr(colon + 1));
  if (!value.empty() && value.front() == ' ') value.erase(0, 1);
  if (!value.empty() && value.back() == ' ') value.pop_back();
  return Lower(TrimWspRight(std::string_view(unfolded).substr(0, colon))) + ":" + value + "\r\n";
}

std::string Sha256(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1);
  return std::string(reinterpret_cast<const char*>(md), len);
}

// Base64 - with OpenSSL's encoder, not the one the library uses.
std::string Base64(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(raw.data()),
                                static_cast<int>(raw.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// ---- Signers

struct Case {
  SignerOptions options;
  Signer signer;
};

SignerOptions Options(Canon hc, Canon bc) {
  SignerOptions o;
  o.domain = std::string(kDomain);
  o.selector = std::string(kSelector);
  o.header_canon = hc;
  o.body_canon = bc;
  return o;
}

const PrivateKey& Key() {
  static const PrivateKey key = [] {
    absl::StatusOr<PrivateKey> k = PrivateKey::FromPem(kKeyPem);
    EXPECT(k.ok());
    return *k;
  }();
  return key;
}

// PublicKey - the key's public half, read by OpenSSL from the PEM: the verifier
// does not take the library's word (p=) for it, but checks that too, once.
EVP_PKEY* PublicKey() {
  static EVP_PKEY* const pkey = [] {
    const volley::base::BioPtr bio(BIO_new_mem_buf(kKeyPem, -1));
    EVP_PKEY* k = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    EXPECT(k != nullptr);
    unsigned char raw[32];
    size_t len = sizeof raw;
    EXPECT(EVP_PKEY_get_raw_public_key(k, raw, &len) == 1 && len == sizeof raw);
    EXPECT(Key().PublicKeyBase64() == Base64(std::string_view(reinterpret_cast<char*>(raw), len)));
    return k;
  }();
  return pkey;
}

std::vector<Case>& Cases() {
  static std::vector<Case> cases = [] {
    std::vector<Case> v;
    SignerOptions a = Options(Canon::kRelaxed, Canon::kRelaxed);
    a.expire_after = absl::Seconds(kExpireAfter);
    SignerOptions b = Options(Canon::kSimple, Canon::kSimple);
    SignerOptions c = Options(Canon::kRelaxed, Canon::kSimple);
    c.headers = {"Subject", "x-Fuzz", "TO"};  // From is signed all the same
    c.over_sign = {"Subject", "Reply-To"};
    for (SignerOptions* o : {&a, &b, &c}) v.push_back({*o, Signer(*o, Key())});
    return v;
  }();
  return cases;
}

// ---- Checks

void CheckBody(std::string_view body) {
  for (Canon c : {Canon::kSimple, Canon::kRelaxed}) {
    const std::string want = RefBody(c, body);
    std::string got = "left over";
    volley::dkim::CanonicalizeBody(c, body, &got);
    EXPECT(got == want);
    std::string again = "left over";
    volley::dkim::CanonicalizeBody(c, got, &again);
    EXPECT(again == got);
  }
}

void CheckHeaders(std::string_view message, const RefMessage& m) {
  for (const RefField& f : m.fields) {
    const std::string simple = volley::dkim::CanonicalizeHeader(Canon::kSimple, f.text);
    const std::string relaxed = volley::dkim::CanonicalizeHeader(Canon::kRelaxed, f.text);
    EXPECT(simple.ends_with("\r\n"));
    EXPECT(relaxed.ends_with("\r\n"));
    if (!f.has_colon) continue;  // not a field: only the above is promised
    EXPECT(simple == RefHeader(Canon::kSimple, f));
    EXPECT(relaxed == RefHeader(Canon::kRelaxed, f));
    const size_t colon = relaxed.find(':');
    EXPECT(colon != std::string::npos);
    for (size_t i = 0; i < colon; ++i) EXPECT(!(relaxed[i] >= 'A' && relaxed[i] <= 'Z'));
    EXPECT(colon == 0 || !IsWsp(relaxed[colon - 1]));
    EXPECT(relaxed.find_first_of("\r\n") == relaxed.size() - 2);
    EXPECT(volley::dkim::CanonicalizeHeader(Canon::kRelaxed, relaxed) == relaxed);
  }
  // Anything at all, as one field: no crash, and a CRLF at the end.
  EXPECT(volley::dkim::CanonicalizeHeader(Canon::kSimple, message).ends_with("\r\n"));
  EXPECT(volley::dkim::CanonicalizeHeader(Canon::kRelaxed, message).ends_with("\r\n"));
}

void CheckFromDomain(std::string_view message, const RefMessage& m) {
  const std::string d = volley::dkim::FromDomain(message);
  if (Instances(m, "from") == 0) EXPECT(d.empty());
  for (char c : d) {
    EXPECT(!(c >= 'A' && c <= 'Z'));
    EXPECT(c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '@');
  }
}

struct Tag {
  std::string name;
  std::string value;  // without FWS
  size_t value_at;    // where the value starts in the field, after '='
  size_t end;         // the ';' after it, or the field's end
};

std::vector<Tag> Tags(std::string_view field) {
  std::vector<Tag> tags;
  const auto fws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  size_t pos = field.find(':') + 1;
  while (pos < field.size()) {
    size_t end = field.find(';', pos);
    if (end == std::string_view::npos) end = field.size();
    const size_t eq = field.find('=', pos);
    if (eq < end) {
      Tag t;
      for (size_t i = pos; i < eq; ++i) {
        if (!fws(field[i])) t.name.push_back(field[i]);
      }
      for (size_t i = eq + 1; i < end; ++i) {
        if (!fws(field[i])) t.value.push_back(field[i]);
      }
      t.value_at = eq + 1;
      t.end = end;
      tags.push_back(std::move(t));
    }
    pos = end + 1;
  }
  return tags;
}

const Tag* Find(const std::vector<Tag>& tags, std::string_view name) {
  for (const Tag& t : tags) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::vector<std::string> SplitColons(std::string_view s) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    const size_t c = s.find(':', pos);
    out.emplace_back(s.substr(pos, c == std::string_view::npos ? std::string_view::npos : c - pos));
    if (c == std::string_view::npos) return out;
    pos = c + 1;
  }
}

// Verify - RFC 6376 section 6.1.3 for `field` over the message `m`, with the
// reference canonicalisation; the body hash is checked by the caller.
bool Verify(const std::string& field, const std::vector<Tag>& tags, const RefMessage& m,
            Canon hc) {
  const Tag* h = Find(tags, "h");
  const Tag* b = Find(tags, "b");
  EXPECT(h != nullptr && b != nullptr);
  // Fields bottom-up per name: each h= entry takes the next one not taken yet.
  std::map<std::string, std::vector<const RefField*>> by_name;
  for (auto it = m.fields.rbegin(); it != m.fields.rend(); ++it) {
    if (it->has_colon) by_name[it->name].push_back(&*it);
  }
  std::map<std::string, size_t> used;
  std::string input;
  for (const std::string& name : SplitColons(h->value)) {
    const std::string lower = Lower(name);
    const std::vector<const RefField*>& list = by_name[lower];
    size_t& u = used[lower];
    if (u < list.size()) input += RefHeader(hc, *list[u++]);
  }
  // The field itself, b= emptied, canonicalised, without its final CRLF.
  const std::string_view text = std::string_view(field).substr(0, field.size() - 2);
  const std::string unsigned_field =
      std::string(text.substr(0, b->value_at)) + std::string(text.substr(b->end));
  RefMessage sig = Split(unsigned_field);
  EXPECT(sig.fields.size() == 1 && sig.fields[0].has_colon);
  std::string canon = RefHeader(hc, sig.fields[0]);
  canon.resize(canon.size() - 2);
  input += canon;

  std::string raw_sig;
  EXPECT(absl::Base64Unescape(Sv(b->value), &raw_sig));
  const std::string digest = Sha256(input);
  const volley::base::MdCtxPtr ctx(EVP_MD_CTX_new());
  const bool ok =
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, PublicKey()) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(raw_sig.data()),
                       raw_sig.size(), reinterpret_cast<const unsigned char*>(digest.data()),
                       digest.size()) == 1;
  return ok;
}

void CheckSign(std::string_view message, const RefMessage& m, const Case& c) {
  const SignerOptions& o = c.options;
  const std::string bh = c.signer.BodyHash(message);
  EXPECT(bh == Base64(Sha256(RefBody(o.body_canon, m.body))));

  const absl::Time now = absl::FromUnixSeconds(kNow);
  const absl::StatusOr<std::string> signed_ = c.signer.Sign(message, now);
  const size_t froms = Instances(m, "from");
  if (froms == 0) {
    EXPECT(!signed_.ok());
    EXPECT(signed_.status().code() == absl::StatusCode::kInvalidArgument);
    EXPECT(!c.signer.Sign(message, now, bh).ok());
    return;
  }
  EXPECT(signed_.ok());
  const std::string& field = *signed_;
  // Ed25519 signatures are deterministic: reusing BodyHash's value changes nothing.
  const absl::StatusOr<std::string> again = c.signer.Sign(message, now, bh);
  EXPECT(again.ok() && *again == field);

  // Shape: folded lines, CRLF only at line ends, continuations start with HTAB.
  EXPECT(field.starts_with("DKIM-Signature: "));
  EXPECT(field.ends_with("\r\n"));
  size_t pos = 0;
  bool first = true;
  while (pos < field.size()) {
    const size_t eol = field.find("\r\n", pos);
    EXPECT(eol != std::string::npos);
    const std::string_view line = std::string_view(field).substr(pos, eol - pos);
    EXPECT(line.size() <= 78);  // RFC 5322's 998 a fortiori
    EXPECT(line.find_first_of("\r\n") == std::string_view::npos);
    EXPECT(!line.empty() && (first || line[0] == '\t'));
    first = false;
    pos = eol + 2;
  }

  // Tags (of the field without its final CRLF).
  const std::vector<Tag> tags = Tags(std::string_view(field).substr(0, field.size() - 2));
  const auto value = [&](std::string_view name) {
    const Tag* t = Find(tags, name);
    EXPECT(t != nullptr);
    return t->value;
  };
  EXPECT(value("v") == "1");
  EXPECT(value("a") == "ed25519-sha256");
  EXPECT(value("c") == std::string(o.header_canon == Canon::kSimple ? "simple" : "relaxed") + "/" +
                           (o.body_canon == Canon::kSimple ? "simple" : "relaxed"));
  EXPECT(value("d") == kDomain);
  EXPECT(value("s") == kSelector);
  EXPECT(value("t") == std::to_string(kNow));
  if (o.expire_after > absl::ZeroDuration()) {
    EXPECT(value("x") == std::to_string(kNow + kExpireAfter));
  } else {
    EXPECT(Find(tags, "x") == nullptr);
  }
  EXPECT(Find(tags, "l") == nullptr);
  EXPECT(value("bh") == bh);

  // h=: From first; each configured name once per instance, each over-signed name
  // once more; nothing else.
  const std::vector<std::string> h = SplitColons(value("h"));
  EXPECT(h.front() == "from");
  std::vector<std::string> names = {"from"};
  std::vector<std::string> over;
  const auto add = [](std::vector<std::string>* v, const std::string& n) {
    for (const std::string& x : *v) {
      if (x == n) return;
    }
    v->push_back(n);
  };
  for (const std::string& n : o.headers) add(&names, Lower(n));
  for (const std::string& n : o.over_sign) {
    add(&names, Lower(n));
    add(&over, Lower(n));
  }
  size_t total = 0;
  for (const std::string& n : names) {
    size_t want = Instances(m, n);
    for (const std::string& x : over) want += x == n;
    size_t got = 0;
    for (const std::string& x : h) got += Lower(x) == n;
    EXPECT(got == want);
    total += want;
  }
  EXPECT(h.size() == total);

  EXPECT(Verify(field, tags, m, o.header_canon));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view message(reinterpret_cast<const char*>(bytes), size);
  const RefMessage m = Split(message);
  CheckBody(m.body);
  CheckHeaders(message, m);
  CheckFromDomain(message, m);
  for (const Case& c : Cases()) CheckSign(message, m, c);
  return 0;
}
