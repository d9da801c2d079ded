// dkim.cc - the DKIM-Signature field: options, h= selection, folding (see dkim.h)
#include "engine/dkim/dkim.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/dkim/canon.h"
#include "engine/dkim/crypto.h"

namespace volley::dkim {
namespace {

using base::EqualsIgnoreCase;
using base::Sv;
using internal::Field;
using internal::KeyAccess;
using internal::KeyState;

constexpr std::string_view kFieldName = "DKIM-Signature";
// RFC 5322 section 2.1.1: lines SHOULD be at most 78 octets without the CRLF.
constexpr size_t kMaxLine = 78;
// bh= is base64 of a SHA-256 digest: 32 octets, 44 characters with one '='.
constexpr size_t kBodyHashSize = 44;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) {
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  }
  return out;
}

std::string_view CanonName(Canon c) { return c == Canon::kSimple ? "simple" : "relaxed"; }

// CheckDomainName - d= and s= are dot-separated labels (RFC 6376 section 3.5); what
// else they held would end up inside the field, or name a DNS record nobody publishes.
absl::Status CheckDomainName(std::string_view option, std::string_view v) {
  if (v.empty())
    return absl::InvalidArgumentError(absl::StrCat("signer options: ", Sv(option), " is empty"));
  bool ok = v.size() <= 253;
  size_t label = 0;
  for (char ch : v) {
    if (ch == '.') {
      ok = ok && label > 0;
      label = 0;
      continue;
    }
    ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                ch == '-' || ch == '_');
    ++label;
    ok = ok && label <= 63;
  }
  ok = ok && label > 0;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("signer options: ", Sv(option), " \"", Sv(v),
                   "\" is not a domain name (labels of letters, digits, '-' and '_', "
                   "joined by single dots)"));
}

// CheckHeaderName - RFC 5322 ftext: printable ASCII except ':'.
absl::Status CheckHeaderName(std::string_view option, std::string_view v) {
  bool ok = !v.empty();
  for (char ch : v) ok = ok && ch >= 33 && ch <= 126 && ch != ':';
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("signer options: ", Sv(option), ": \"", Sv(v), "\" is not a header field name"));
}

// AddUnique - append the lowercase `name` to *names unless it is there already.
void AddUnique(std::vector<std::string>* names, std::string_view name) {
  for (const std::string& n : *names) {
    if (EqualsIgnoreCase(n, name)) return;
  }
  names->push_back(Lower(name));
}

bool IsBase64(std::string_view s) {
  for (char ch : s) {
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '+' || ch == '/' || ch == '=';
    if (!ok) return false;
  }
  return true;
}

// FieldWriter - the field, folded: lines of at most kMaxLine octets where the pieces
// allow, continuation lines starting with a tab. A fold is only ever put where RFC
// 6376's grammar has FWS: between tags, after a colon in h=, inside base64.
class FieldWriter {
 public:
  explicit FieldWriter(std::string* out) : out_(out) {
    out_->assign(kFieldName);
    out_->push_back(':');
    col_ = out_->size();
  }
  // Tag - an unbreakable piece ("d=example.com;"): after a space on this line, or first
  // on the next.
  void Tag(std::string_view piece) {
    Room(piece.size());
    Append(piece);
  }
  // List - "h=a:b:c;", starting like Tag and folding after any colon.
  void List(std::string_view tag, const std::vector<std::string_view>& items) {
    for (size_t i = 0; i < items.size(); ++i) {
      std::string piece = i == 0 ? absl::StrCat(Sv(tag), "=") : std::string();
      absl::StrAppend(&piece, Sv(items[i]), i + 1 < items.size() ? ":" : ";");
      if (i == 0) {
        Room(piece.size());
      } else if (col_ + piece.size() > kMaxLine) {
        Fold();
      }
      Append(piece);
    }
  }
  // Open - the start of the last tag ("b="), leaving room for some of its value.
  void Open(std::string_view start, size_t want) {
    Room(start.size() + want);
    Append(start);
  }
  // Wrap - text that may break anywhere (base64), filling each line.
  void Wrap(std::string_view text) {
    while (!text.empty()) {
      if (col_ >= kMaxLine) Fold();
      const size_t n = std::min(text.size(), kMaxLine - col_);
      Append(text.substr(0, n));
      text.remove_prefix(n);
    }
  }

 private:
  void Room(size_t n) {
    if (col_ + 1 + n > kMaxLine) {
      Fold();
    } else {
      out_->push_back(' ');
      ++col_;
    }
  }
  void Fold() {
    out_->append("\r\n\t");
    col_ = 1;
  }
  void Append(std::string_view s) {
    out_->append(s);
    col_ += s.size();
  }
  std::string* out_;
  size_t col_ = 0;
};

// TrimFws - without SP, HTAB, CR and LF at either end.
std::string_view TrimFws(std::string_view s) {
  const auto fws = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; };
  while (!s.empty() && fws(s.front())) s.remove_prefix(1);
  while (!s.empty() && fws(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view AlgorithmName(Algorithm a) {
  return a == Algorithm::kRsaSha256 ? "rsa-sha256" : "ed25519-sha256";
}

absl::Status ParseCanonicalization(std::string_view text, Canon* header, Canon* body) {
  const auto word = [](std::string_view w, Canon* c) {
    if (EqualsIgnoreCase(w, "simple")) {
      *c = Canon::kSimple;
    } else if (EqualsIgnoreCase(w, "relaxed")) {
      *c = Canon::kRelaxed;
    } else {
      return false;
    }
    return true;
  };
  const size_t slash = text.find('/');
  Canon h = Canon::kSimple;
  Canon b = Canon::kSimple;
  const bool ok = word(text.substr(0, slash), &h) &&
                  (slash == std::string_view::npos || word(text.substr(slash + 1), &b));
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("canonicalization \"", Sv(text),
                     "\": expected simple or relaxed, or header/body such as relaxed/simple"));
  }
  *header = h;
  *body = b;
  return absl::OkStatus();
}

std::string DnsTxtStrings(std::string_view record) {
  // RFC 1035 section 3.3.14: a TXT record is one or more <character-string>s, each a
  // length octet and at most 255 octets. The limit counts octets, not their escapes.
  constexpr size_t kMaxString = 255;
  std::string out;
  size_t pos = 0;
  do {
    const std::string_view chunk = record.substr(pos, kMaxString);
    if (!out.empty()) out.push_back(' ');
    out.push_back('"');
    for (char ch : chunk) {
      const auto u = static_cast<unsigned char>(ch);
      if (ch == '"' || ch == '\\') {
        out.push_back('\\');
        out.push_back(ch);
      } else if (u < 0x20 || u >= 0x7f) {
        // Zone-file syntax (RFC 1035 section 5.1): \DDD, three decimal digits.
        out.push_back('\\');
        out.push_back(static_cast<char>('0' + u / 100));
        out.push_back(static_cast<char>('0' + u / 10 % 10));
        out.push_back(static_cast<char>('0' + u % 10));
      } else {
        out.push_back(ch);
      }
    }
    out.push_back('"');
    pos += chunk.size();
  } while (pos < record.size());
  return out;
}

std::vector<std::string> DefaultSignedHeaders() {
  return {// RFC 6376 section 5.4.1
          "From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From",
          "Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help",
          "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
          // what bulk mail adds
          "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
          "List-Unsubscribe-Post", "Feedback-ID"};
}

std::vector<std::string> DefaultOverSignedHeaders() {
  return {"From", "To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post"};
}

// ---- Signer

struct Signer::Impl {
  Impl(SignerOptions o, PrivateKey k) : options(std::move(o)), key(std::move(k)) {
    config = Check();
    if (!config.ok()) return;
    const KeyState* pk = KeyAccess::Get(key);
    config = crypto.Init(*pk);
    if (!config.ok()) return;
    // RFC 6376 section 5.4: From MUST be signed, whatever the options say.
    AddUnique(&names, "from");
    for (const std::string& n : options.headers) AddUnique(&names, n);
    for (const std::string& n : options.over_sign) {
      AddUnique(&names, n);
      AddUnique(&extra, n);
    }
    fixed_tags = {
        "v=1;",
        absl::StrCat("a=", Sv(AlgorithmName(pk->algorithm)), ";"),
        absl::StrCat("c=", Sv(CanonName(options.header_canon)), "/",
                     Sv(CanonName(options.body_canon)), ";"),
        absl::StrCat("d=", options.domain, ";"),
        absl::StrCat("s=", options.selector, ";"),
    };
  }

  absl::Status Check() const {
    if (KeyAccess::Get(key) == nullptr) {
      return absl::FailedPreconditionError("signer: no key (the PrivateKey was moved from)");
    }
    RETURN_IF_ERROR(CheckDomainName("domain", options.domain));
    RETURN_IF_ERROR(CheckDomainName("selector", options.selector));
    for (const std::string& n : options.headers) RETURN_IF_ERROR(CheckHeaderName("headers", n));
    for (const std::string& n : options.over_sign) {
      RETURN_IF_ERROR(CheckHeaderName("over_sign", n));
    }
    return absl::OkStatus();
  }

  SignerOptions options;
  PrivateKey key;
  // Why the options cannot be used; every Sign returns it. A constructor cannot fail,
  // and a Signer that signs nothing must not look like one that works.
  absl::Status config;
  std::vector<std::string> names;  // every name to look for, lower case, From first
  std::vector<std::string> extra;  // the over-signed ones, lower case
  std::vector<std::string> fixed_tags;
  internal::SignContext crypto;
  // Scratch, kept for its capacity: a shard signs message after message.
  std::vector<Field> fields;
  std::vector<std::string_view> h;
  std::string input;
};

Signer::Signer(SignerOptions options, PrivateKey key)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(key))) {}

Signer::Signer(const Signer& other)
    : impl_(other.impl_ == nullptr
                ? nullptr
                : std::make_unique<Impl>(other.impl_->options, other.impl_->key)) {}

Signer& Signer::operator=(const Signer& other) {
  if (this != &other) *this = Signer(other);
  return *this;
}

Signer::Signer(Signer&&) noexcept = default;
Signer& Signer::operator=(Signer&&) noexcept = default;
Signer::~Signer() = default;

const SignerOptions& Signer::options() const { return impl_->options; }

Algorithm Signer::algorithm() const { return impl_->key.algorithm(); }

std::string Signer::BodyHash(std::string_view message) const {
  return impl_->crypto.BodyHash(impl_->options.body_canon, internal::BodyOf(message));
}

absl::StatusOr<std::string> Signer::Sign(std::string_view message, absl::Time now,
                                         std::string_view body_hash) const {
  Impl& s = *impl_;
  RETURN_IF_ERROR(s.config);
  const int64_t t = absl::ToUnixSeconds(now);
  if (t < 0) return absl::InvalidArgumentError("sign: the time is before 1970");
  const size_t body_at = internal::ParseHeader(message, &s.fields);

  // h=: every instance of each name present, then the over-signed extras. A
  // verifier takes instances bottom-up per name, so an extra must follow all real
  // entries of its name; at the end it does, and it matches nothing.
  s.h.clear();
  for (const std::string& name : s.names) {
    for (const Field& f : s.fields) {
      if (EqualsIgnoreCase(f.name, name)) s.h.push_back(name);
    }
  }
  if (s.h.empty() || s.h.front() != "from") {
    return absl::InvalidArgumentError(
        "sign: the message has no From field (RFC 6376 section 5.4 requires it signed)");
  }
  for (const std::string& name : s.extra) s.h.push_back(name);

  std::string computed;
  if (body_hash.empty()) {
    computed = s.crypto.BodyHash(s.options.body_canon, message.substr(body_at));
    body_hash = computed;
  } else if (body_hash.size() != kBodyHashSize || !IsBase64(body_hash)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sign: body hash \"", Sv(body_hash.substr(0, 60)),
                     "\" is not a base64 SHA-256 digest (pass BodyHash's result)"));
  }

  std::string field;
  field.reserve(512 + 16 * s.h.size());
  FieldWriter w(&field);
  for (const std::string& tag : s.fixed_tags) w.Tag(tag);
  w.Tag(absl::StrCat("t=", t, ";"));
  if (s.options.expire_after > absl::ZeroDuration()) {
    const int64_t secs = absl::ToInt64Seconds(absl::Ceil(s.options.expire_after, absl::Seconds(1)));
    w.Tag(absl::StrCat("x=", t + secs, ";"));
  }
  w.List("h", s.h);
  w.Tag(absl::StrCat("bh=", Sv(body_hash), ";"));
  w.Open("b=", 8);

  // The header hash input (RFC 6376 section 3.7): the signed fields, then this field
  // with b= empty and no CRLF. The field is complete up to "b=" here and the value is
  // appended after it, so the folding hashed is the folding sent.
  s.input.clear();
  internal::AppendSignedFields(s.options.header_canon, s.fields, s.h, &s.input);
  if (s.options.header_canon == Canon::kRelaxed) {
    internal::AppendCanonicalHeader(Canon::kRelaxed, field, &s.input);
    s.input.resize(s.input.size() - internal::kCrlf.size());
  } else {
    s.input.append(field);
  }
  ASSIGN_OR_RETURN(std::string b, s.crypto.Sign(s.input));
  w.Wrap(b);
  field.append(internal::kCrlf);
  return field;
}

absl::StatusOr<std::string> SignFieldTemplate(const PrivateKey& key, std::string_view field,
                                              std::string_view message) {
  const KeyState* pk = KeyAccess::Get(key);
  if (pk == nullptr) return absl::FailedPreconditionError("field template: no key");
  while (!field.empty() && (field.back() == '\n' || field.back() == '\r')) field.remove_suffix(1);
  const size_t colon = field.find(':');
  if (colon == std::string_view::npos ||
      !EqualsIgnoreCase(TrimFws(field.substr(0, colon)), kFieldName)) {
    return absl::InvalidArgumentError("field template: not a DKIM-Signature field");
  }
  std::string_view a;
  std::string_view c = "simple/simple";  // RFC 6376 section 3.5: c= defaults to simple
  std::string_view h;
  bool have_a = false;
  bool have_h = false;
  bool have_b = false;
  std::string_view rest = field.substr(colon + 1);
  while (!rest.empty()) {
    const size_t semi = rest.find(';');
    const std::string_view spec = TrimFws(rest.substr(0, semi));
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    if (spec.empty()) continue;
    const size_t eq = spec.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("field template: \"", Sv(spec), "\" is not tag=value"));
    }
    const std::string_view tag = TrimFws(spec.substr(0, eq));
    const std::string_view value = TrimFws(spec.substr(eq + 1));
    if (tag == "a") {
      a = value;
      have_a = true;
    } else if (tag == "c") {
      c = value;
    } else if (tag == "h") {
      h = value;
      have_h = true;
    } else if (tag == "b") {
      if (!value.empty()) {
        return absl::InvalidArgumentError("field template: b= must be empty");
      }
      have_b = true;
    }
  }
  if (!have_b) return absl::InvalidArgumentError("field template: no b= tag");
  if (!have_a || a != AlgorithmName(pk->algorithm)) {
    return absl::InvalidArgumentError(absl::StrCat("field template: a= is \"", Sv(a),
                                                   "\", but the key signs ",
                                                   Sv(AlgorithmName(pk->algorithm))));
  }
  Canon hc = Canon::kSimple;
  Canon bc = Canon::kSimple;
  RETURN_IF_ERROR(ParseCanonicalization(c, &hc, &bc));
  if (!have_h) return absl::InvalidArgumentError("field template: no h= tag");
  std::vector<std::string_view> names;
  while (true) {
    const size_t sep = h.find(':');
    const std::string_view name = TrimFws(h.substr(0, sep));
    if (name.empty()) return absl::InvalidArgumentError("field template: empty name in h=");
    names.push_back(name);
    if (sep == std::string_view::npos) break;
    h.remove_prefix(sep + 1);
  }

  std::vector<Field> fields;
  internal::ParseHeader(message, &fields);
  std::string input;
  internal::AppendSignedFields(hc, fields, names, &input);
  internal::AppendCanonicalHeader(hc, field, &input);
  input.resize(input.size() - internal::kCrlf.size());
  internal::SignContext crypto;
  RETURN_IF_ERROR(crypto.Init(*pk));
  return crypto.Sign(input);
}

}  // namespace volley::dkim
