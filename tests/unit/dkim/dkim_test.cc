#include "engine/dkim/dkim.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "base/openssl_ptr.h"
#include "base/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::dkim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

std::string Msg(const absl::Status& s) { return std::string(base::StdSv(s.message())); }

template <typename T>
T Must(absl::StatusOr<T> v) {
  if (!v.ok()) {
    ADD_FAILURE() << v.status();
    std::abort();
  }
  return *std::move(v);
}

// ---- OpenSSL helpers: keys in the shapes the library only reads, and a verifier
// that shares no code with the signer beyond the canonicalisation functions (which the
// RFC examples below test on their own).

using Pkey = base::PkeyPtr;

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string s(data, static_cast<size_t>(len));
  BIO_free(bio);
  return s;
}

std::string Pkcs8Pem(EVP_PKEY* k) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio, k, nullptr, nullptr, 0, nullptr, nullptr), 1);
  return BioText(bio);
}

std::string Pkcs1Pem(EVP_PKEY* k) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(PEM_write_bio_PrivateKey_traditional(bio, k, nullptr, nullptr, 0, nullptr, nullptr), 1);
  return BioText(bio);
}

Pkey RsaKey(size_t bits) { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits)); }

const PrivateKey& Rsa2048() {
  static const PrivateKey key = Must(PrivateKey::Generate(Algorithm::kRsaSha256));
  return key;
}

const PrivateKey& Ed() {
  static const PrivateKey key = Must(PrivateKey::Generate(Algorithm::kEd25519Sha256));
  return key;
}

std::string Sha256Base64(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr), 1);
  return absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(md), len));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(std::string s) {
  const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && ws(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && ws(s[i])) ++i;
  return s.substr(i);
}

std::string NoSpace(std::string s) {
  std::string out;
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') out.push_back(c);
  }
  return out;
}

// The header fields (whole, with CRLFs) and body of a CRLF message.
struct Parsed {
  std::vector<std::string> fields;
  std::string body;
};
Parsed Parse(std::string_view m) {
  Parsed p;
  size_t pos = 0;
  while (pos < m.size()) {
    const size_t eol = m.find("\r\n", pos);
    const size_t next = eol == std::string_view::npos ? m.size() : eol + 2;
    if (eol == pos) {
      p.body = std::string(m.substr(next));
      return p;
    }
    if ((m[pos] == ' ' || m[pos] == '\t') && !p.fields.empty()) {
      p.fields.back() += m.substr(pos, next - pos);
    } else {
      p.fields.emplace_back(m.substr(pos, next - pos));
    }
    pos = next;
  }
  return p;
}

std::string NameOf(const std::string& field) {
  return Lower(Trim(field.substr(0, field.find(':'))));
}

// Tags - a DKIM-Signature field's tags, values without white space.
std::map<std::string, std::string> Tags(const std::string& field) {
  std::map<std::string, std::string> tags;
  std::string value = field.substr(field.find(':') + 1);
  size_t pos = 0;
  while (pos <= value.size()) {
    size_t semi = value.find(';', pos);
    if (semi == std::string::npos) semi = value.size();
    const std::string spec = value.substr(pos, semi - pos);
    const size_t eq = spec.find('=');
    if (eq != std::string::npos) tags[Trim(spec.substr(0, eq))] = NoSpace(spec.substr(eq + 1));
    pos = semi + 1;
  }
  return tags;
}

std::vector<std::string> HList(const std::string& field) {
  std::vector<std::string> out;
  std::string h = Tags(field)["h"];
  size_t pos = 0;
  while (pos <= h.size()) {
    size_t c = h.find(':', pos);
    if (c == std::string::npos) c = h.size();
    out.push_back(h.substr(pos, c - pos));
    pos = c + 1;
  }
  return out;
}

struct Verdict {
  bool body_ok = false;
  bool signature_ok = false;
  bool ok() const { return body_ok && signature_ok; }
};

// Verify - the `index`th DKIM-Signature of `m` against `record` (RFC 6376 section
// 6.1.3, without DNS, l=, or policy).
Verdict Verify(std::string_view m, std::string_view record, int index = 0) {
  Verdict v;
  const Parsed p = Parse(m);
  std::string sig;
  for (const std::string& f : p.fields) {
    if (NameOf(f) == "dkim-signature" && index-- == 0) {
      sig = f;
      break;
    }
  }
  if (sig.empty()) return v;
  auto tags = Tags(sig);
  Canon hc = Canon::kSimple;
  Canon bc = Canon::kSimple;
  if (tags.count("c") != 0 && !ParseCanonicalization(tags["c"], &hc, &bc).ok()) return v;

  std::string body;
  CanonicalizeBody(bc, p.body, &body);
  v.body_ok = Sha256Base64(body) == tags["bh"];

  std::string input;
  std::map<std::string, int> used;
  for (const std::string& name : HList(sig)) {
    int skip = used[Lower(name)]++;
    for (auto it = p.fields.rbegin(); it != p.fields.rend(); ++it) {
      if (NameOf(*it) != Lower(name) || skip-- > 0) continue;
      input += CanonicalizeHeader(hc, *it);
      break;
    }
  }
  static const std::regex kB(R"(([:;][ \t\r\n]*b[ \t\r\n]*=)[^;]*)");
  std::string unsigned_sig =
      std::regex_replace(sig, kB, "$1", std::regex_constants::format_first_only);
  std::string canon = CanonicalizeHeader(hc, unsigned_sig);
  input += canon.substr(0, canon.size() - 2);

  auto key_tags = Tags(std::string("x:") + std::string(record));
  std::string pub;
  std::string b;
  if (!absl::Base64Unescape(key_tags["p"], &pub) || !absl::Base64Unescape(tags["b"], &b)) return v;
  Pkey key;
  const EVP_MD* md = nullptr;
  std::string data = input;
  if (key_tags["k"] == "ed25519") {
    key.reset(EVP_PKEY_new_raw_public_key(
        EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(pub.data()), pub.size()));
    std::string hashed;
    absl::Base64Unescape(Sha256Base64(input), &hashed);
    data = hashed;
  } else {
    const unsigned char* p_der = reinterpret_cast<const unsigned char*>(pub.data());
    key.reset(d2i_PUBKEY(nullptr, &p_der, static_cast<long>(pub.size())));
    md = EVP_sha256();
  }
  if (key == nullptr) return v;
  const base::MdCtxPtr ctx(EVP_MD_CTX_new());
  v.signature_ok =
      EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key.get()) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(b.data()), b.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  return v;
}

SignerOptions Options(Canon hc = Canon::kRelaxed, Canon bc = Canon::kRelaxed) {
  SignerOptions o;
  o.domain = "news.example";
  o.selector = "s2026";
  o.header_canon = hc;
  o.body_canon = bc;
  return o;
}

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

const char kMessage[] =
    "Received: from a by b; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: News <news@news.example>\r\n"
    "To: reader@dst.test\r\n"
    "Subject: This week's news, with a subject long enough that it folds over\r\n"
    "\tthe next line\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "Message-ID: <1@news.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "List-Unsubscribe: <https://news.example/u/1>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "X-Mailer: Volley\r\n"
    "\r\n"
    "Hello,  reader.\r\n"
    "\r\n"
    ".a line that starts with a dot\r\n"
    "\tindented \t line with trailing space \r\n"
    "\r\n"
    "\r\n";

std::string SignWith(const Signer& s, const std::string& m, absl::Time now = kNow) {
  return Must(s.Sign(m, now)) + m;
}

// ---- names and parsing

TEST(Dkim, AlgorithmNames) {
  EXPECT_EQ(AlgorithmName(Algorithm::kRsaSha256), "rsa-sha256");
  EXPECT_EQ(AlgorithmName(Algorithm::kEd25519Sha256), "ed25519-sha256");
}

TEST(Dkim, ParseCanonicalization) {
  struct Case {
    std::string text;
    Canon header, body;
  };
  for (const Case& c : std::vector<Case>{
           {"simple", Canon::kSimple, Canon::kSimple},
           {"relaxed", Canon::kRelaxed, Canon::kSimple},  // RFC 6376 3.5: body defaults
           {"relaxed/relaxed", Canon::kRelaxed, Canon::kRelaxed},
           {"relaxed/simple", Canon::kRelaxed, Canon::kSimple},
           {"simple/relaxed", Canon::kSimple, Canon::kRelaxed},
           {"Relaxed/SIMPLE", Canon::kRelaxed, Canon::kSimple},
       }) {
    Canon h = Canon::kRelaxed == c.header ? Canon::kSimple : Canon::kRelaxed;
    Canon b = h;
    ASSERT_TRUE(ParseCanonicalization(c.text, &h, &b).ok()) << c.text;
    EXPECT_EQ(h, c.header) << c.text;
    EXPECT_EQ(b, c.body) << c.text;
  }
  for (std::string bad :
       {"", "/", "relaxed/", "/relaxed", "nofws", "relaxed/relaxed/relaxed", "relaxed /simple"}) {
    Canon h = Canon::kRelaxed;
    Canon b = Canon::kRelaxed;
    const absl::Status s = ParseCanonicalization(bad, &h, &b);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Msg(s), HasSubstr("\"" + bad + "\""));
    EXPECT_EQ(h, Canon::kRelaxed);  // untouched on error
  }
}

// ---- canonicalisation: RFC 6376 section 3.4.5, then the edges

TEST(Canon, Rfc6376Example) {
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, "A: X\r\n"), "a:X\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, "B : Y\t\r\n\tZ  \r\n"), "b:Y Z\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kSimple, "A: X\r\n"), "A: X\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kSimple, "B : Y\t\r\n\tZ  \r\n"), "B : Y\t\r\n\tZ  \r\n");
  std::string out;
  CanonicalizeBody(Canon::kRelaxed, " C \r\nD \t E\r\n\r\n\r\n", &out);
  EXPECT_EQ(out, " C\r\nD E\r\n");
  CanonicalizeBody(Canon::kSimple, " C \r\nD \t E\r\n\r\n\r\n", &out);
  EXPECT_EQ(out, " C \r\nD \t E\r\n");
}

TEST(Canon, Headers) {
  struct Case {
    std::string field, relaxed, simple;
  };
  for (const Case& c : std::vector<Case>{
           {"Subject: Hi\r\n", "subject:Hi\r\n", "Subject: Hi\r\n"},
           {"SUBJECT:\tHi  there \t\r\n", "subject:Hi there\r\n", "SUBJECT:\tHi  there \t\r\n"},
           {"Subject: a\r\n b\r\n\tc\r\n", "subject:a b c\r\n", "Subject: a\r\n b\r\n\tc\r\n"},
           {"Subject:\r\n folded at once\r\n", "subject:folded at once\r\n",
            "Subject:\r\n folded at once\r\n"},
           {"X-Empty:\r\n", "x-empty:\r\n", "X-Empty:\r\n"},
           {"X-Blank:   \t \r\n", "x-blank:\r\n", "X-Blank:   \t \r\n"},
           {"To: a,\r\n  \r\n b\r\n", "to:a, b\r\n", "To: a,\r\n  \r\n b\r\n"},
           // Line ends as PrepareData writes them: CRLF whatever came in.
           {"Subject: a\n\tb\n", "subject:a b\r\n", "Subject: a\r\n\tb\r\n"},
           {"Subject: no ending", "subject:no ending\r\n", "Subject: no ending\r\n"},
           // 8-bit octets pass through untouched.
           {"Subject: caf\xc3\xa9  ok\r\n", "subject:caf\xc3\xa9 ok\r\n",
            "Subject: caf\xc3\xa9  ok\r\n"},
       }) {
    EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, c.field), c.relaxed) << c.field;
    EXPECT_EQ(CanonicalizeHeader(Canon::kSimple, c.field), c.simple) << c.field;
  }
}

TEST(Canon, Bodies) {
  struct Case {
    std::string body, relaxed, simple;
  };
  for (const Case& c : std::vector<Case>{
           {"", "", "\r\n"},
           {"\r\n", "", "\r\n"},
           {"\r\n\r\n\r\n", "", "\r\n"},
           {" \t\r\n\r\n", "", " \t\r\n"},  // relaxed: a line of white space is empty
           {"abc", "abc\r\n", "abc\r\n"},   // no final CRLF: the wire adds one
           {"abc\r\n", "abc\r\n", "abc\r\n"},
           {"abc\r\n\r\n\r\n", "abc\r\n", "abc\r\n"},
           {"a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
           {"a \r\n \r\nb", "a\r\n\r\nb\r\n", "a \r\n \r\nb\r\n"},
           {"\t lead\r\n", " lead\r\n", "\t lead\r\n"},
           {"x\t\ty  z \t\r\n", "x y z\r\n", "x\t\ty  z \t\r\n"},
           {"a\nb\n\n", "a\r\nb\r\n", "a\r\nb\r\n"},  // bare LF
           {"a\rb\r\r", "a\r\nb\r\n", "a\r\nb\r\n"},  // bare CR
           {".\r\n..dots\r\n", ".\r\n..dots\r\n", ".\r\n..dots\r\n"},
           {"8bit \xc3\xa9\xff\r\n", "8bit \xc3\xa9\xff\r\n", "8bit \xc3\xa9\xff\r\n"},
       }) {
    std::string out = "left over";
    CanonicalizeBody(Canon::kRelaxed, c.body, &out);
    EXPECT_EQ(out, c.relaxed) << absl::CEscape(c.body);
    CanonicalizeBody(Canon::kSimple, c.body, &out);
    EXPECT_EQ(out, c.simple) << absl::CEscape(c.body);
  }
}

// BodyHash streams into SHA-256 by a different path than CanonicalizeBody fills a
// string (views of the message joined when adjacent, small pieces buffered): both must
// hash the same bytes, whatever mix of runs, white space and line ends the body has.
TEST(Canon, BodyHashStreamsTheCanonicalBody) {
  std::mt19937 rng(6376);
  const std::vector<std::string> pieces = {"a",
                                           "word",
                                           " ",
                                           "\t",
                                           "  ",
                                           "\r\n",
                                           "\n",
                                           "\r",
                                           "\r\n\r\n",
                                           ".",
                                           std::string(70, 'x'),
                                           std::string(1500, 'y'),
                                           " \t \r\n"};
  for (Canon bc : {Canon::kSimple, Canon::kRelaxed}) {
    SignerOptions o = Options(Canon::kRelaxed, bc);
    Signer signer(o, Ed());
    for (int round = 0; round < 300; ++round) {
      std::string body;
      const int n = static_cast<int>(rng() % 40);
      for (int i = 0; i < n; ++i) body += pieces[rng() % pieces.size()];
      std::string canon;
      CanonicalizeBody(bc, body, &canon);
      ASSERT_EQ(signer.BodyHash("From: a@b.test\r\n\r\n" + body), Sha256Base64(canon))
          << absl::CEscape(body);
    }
  }
}

TEST(Canon, BodyHashOfMessageWithoutBody) {
  Signer relaxed(Options(), Ed());
  Signer simple(Options(Canon::kRelaxed, Canon::kSimple), Ed());
  for (std::string m : {"From: a@b.test\r\n", "From: a@b.test\r\n\r\n", "From: a@b.test"}) {
    EXPECT_EQ(relaxed.BodyHash(m), Sha256Base64("")) << absl::CEscape(m);
    EXPECT_EQ(simple.BodyHash(m), Sha256Base64("\r\n")) << absl::CEscape(m);
  }
  // RFC 6376 section 3.4.3 and 3.4.4's well-known hashes of an empty body.
  EXPECT_EQ(relaxed.BodyHash("From: a@b.test\r\n\r\n"),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  EXPECT_EQ(simple.BodyHash("From: a@b.test\r\n\r\n"),
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
}

TEST(Dkim, FromDomain) {
  struct Case {
    std::string message, domain;
  };
  for (const Case& c : std::vector<Case>{
           {"From: a@Example.COM\r\n\r\n", "example.com"},
           {"From: Joe SixPack <joe@football.example.com>\r\n\r\nx", "football.example.com"},
           {"To: x@to.test\r\nfrom: \"Doe, John @ Work\" <jd@work.test>\r\n\r\n", "work.test"},
           {"From: jd@plain.test (John <Doe> @ comment.test)\r\n\r\n", "plain.test"},
           {"From: (c) \"q@x\" <a@angle.test>, b@second.test\r\n\r\n", "angle.test"},
           {"From: first@one.test, second@two.test\r\n\r\n", "one.test"},
           {"From: Very Long Name\r\n <folded@fold.test>\r\n\r\n", "fold.test"},
           {"From: \"odd@local\"@quoted.test\r\n\r\n", "quoted.test"},
           {"From: Team: a@group.test, b@group2.test;\r\n\r\n", "group.test"},
           {"From: Undisclosed:;\r\n\r\n", ""},
           {"From: a@[192.0.2.1]\r\n\r\n", "[192.0.2.1]"},
           {"From: <>\r\n\r\n", ""},
           {"To: a@b.test\r\n\r\nFrom: body@not.header\r\n", ""},
           {"From: a@first.test\r\nFrom: b@second.test\r\n\r\n", "first.test"},
       }) {
    EXPECT_EQ(FromDomain(c.message), c.domain) << absl::CEscape(c.message);
  }
}

TEST(Dkim, DnsTxtStrings) {
  EXPECT_EQ(DnsTxtStrings(""), "\"\"");
  EXPECT_EQ(DnsTxtStrings("v=DKIM1; k=ed25519; p=abc"), "\"v=DKIM1; k=ed25519; p=abc\"");
  EXPECT_EQ(DnsTxtStrings(std::string(255, 'a')), "\"" + std::string(255, 'a') + "\"");
  EXPECT_EQ(DnsTxtStrings(std::string(256, 'a')), "\"" + std::string(255, 'a') + "\" \"a\"");
  EXPECT_EQ(DnsTxtStrings(std::string(600, 'b')), "\"" + std::string(255, 'b') + "\" \"" +
                                                      std::string(255, 'b') + "\" \"" +
                                                      std::string(90, 'b') + "\"");
  EXPECT_EQ(DnsTxtStrings("say \"hi\" \\ \x01"), "\"say \\\"hi\\\" \\\\ \\001\"");

  // A 2048-bit key's record: split at 255 octets, joined again it is the record.
  const std::string record = Rsa2048().DnsRecord();
  ASSERT_GT(record.size(), 255u);
  const std::string txt = DnsTxtStrings(record);
  std::string joined;
  std::smatch m;
  std::string rest = txt;
  size_t strings = 0;
  while (std::regex_search(rest, m, std::regex("\"([^\"]*)\""))) {
    EXPECT_LE(m[1].length(), 255);
    joined += m[1];
    rest = m.suffix();
    ++strings;
  }
  EXPECT_EQ(joined, record);
  EXPECT_EQ(strings, (record.size() + 254) / 255);
}

TEST(Dkim, DefaultHeaderLists) {
  const auto signed_ = DefaultSignedHeaders();
  for (std::string want : {"From",
                           "Reply-To",
                           "Subject",
                           "Date",
                           "To",
                           "Cc",
                           "Resent-Date",
                           "Resent-From",
                           "Resent-To",
                           "Resent-Cc",
                           "In-Reply-To",
                           "References",
                           "List-Id",
                           "List-Help",
                           "List-Unsubscribe",
                           "List-Subscribe",
                           "List-Post",
                           "List-Owner",
                           "List-Archive",
                           "Message-ID",
                           "MIME-Version",
                           "Content-Type",
                           "Content-Transfer-Encoding",
                           "List-Unsubscribe-Post",
                           "Feedback-ID"}) {
    EXPECT_THAT(signed_, ::testing::Contains(want));
  }
  EXPECT_THAT(DefaultOverSignedHeaders(), ElementsAre("From", "To", "Subject", "Date",
                                                      "List-Unsubscribe", "List-Unsubscribe-Post"));
}

// ---- keys

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dkim_test." + std::to_string(::getpid()) + "." +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text, mode_t mode = 0600) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::filesystem::path dir_;
};

TEST(Key, GenerateAndPemRoundTrip) {
  for (const PrivateKey* key : {&Rsa2048(), &Ed()}) {
    const std::string pem = key->ToPem();
    EXPECT_THAT(pem, StartsWith("-----BEGIN PRIVATE KEY-----\n"));
    PrivateKey again = Must(PrivateKey::FromPem(pem));
    EXPECT_EQ(again.algorithm(), key->algorithm());
    EXPECT_EQ(again.bits(), key->bits());
    EXPECT_EQ(again.PublicKeyBase64(), key->PublicKeyBase64());
  }
  EXPECT_EQ(Rsa2048().algorithm(), Algorithm::kRsaSha256);
  EXPECT_EQ(Rsa2048().bits(), 2048);
  EXPECT_EQ(Ed().algorithm(), Algorithm::kEd25519Sha256);
  EXPECT_EQ(Ed().bits(), 256);
}

TEST(Key, PublicKeyAndRecord) {
  std::string raw;
  ASSERT_TRUE(absl::Base64Unescape(Ed().PublicKeyBase64(), &raw));
  EXPECT_EQ(raw.size(), 32u);  // RFC 8463 section 4: the bare key, not an SPKI
  EXPECT_EQ(Ed().DnsRecord(), "v=DKIM1; k=ed25519; p=" + Ed().PublicKeyBase64());

  ASSERT_TRUE(absl::Base64Unescape(Rsa2048().PublicKeyBase64(), &raw));
  const unsigned char* p = reinterpret_cast<const unsigned char*>(raw.data());
  Pkey spki(d2i_PUBKEY(nullptr, &p, static_cast<long>(raw.size())));
  ASSERT_NE(spki, nullptr);
  EXPECT_EQ(EVP_PKEY_get_bits(spki.get()), 2048);
  EXPECT_EQ(Rsa2048().DnsRecord(), "v=DKIM1; k=rsa; p=" + Rsa2048().PublicKeyBase64());
}

TEST(Key, Pkcs1AndPkcs8Rsa) {
  Pkey k = RsaKey(2048);
  const std::string pkcs1 = Pkcs1Pem(k.get());
  ASSERT_THAT(pkcs1, StartsWith("-----BEGIN RSA PRIVATE KEY-----"));
  PrivateKey a = Must(PrivateKey::FromPem(pkcs1));
  PrivateKey b = Must(PrivateKey::FromPem(Pkcs8Pem(k.get())));
  EXPECT_EQ(a.PublicKeyBase64(), b.PublicKeyBase64());
  EXPECT_EQ(a.bits(), 2048);
  // Another PEM block before the key (a certificate bundle, say) is skipped.
  EXPECT_TRUE(PrivateKey::FromPem("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n" + pkcs1).ok());
}

TEST(Key, Refused) {
  Pkey small = RsaKey(512);
  absl::StatusOr<PrivateKey> k = PrivateKey::FromPem(Pkcs1Pem(small.get()));
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(k.status()), HasSubstr("RSA key of 512 bits"));
  EXPECT_THAT(Msg(k.status()), HasSubstr("RFC 8301"));

  Pkey ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  k = PrivateKey::FromPem(Pkcs8Pem(ec.get()));
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(k.status()), HasSubstr("key type EC is not supported"));

  EVP_PKEY* raw_pss = nullptr;
  const base::PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA-PSS", nullptr));
  ASSERT_EQ(EVP_PKEY_keygen_init(ctx.get()), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), 1024), 1);
  ASSERT_EQ(EVP_PKEY_generate(ctx.get(), &raw_pss), 1);
  Pkey pss(raw_pss);
  k = PrivateKey::FromPem(Pkcs8Pem(pss.get()));
  EXPECT_THAT(Msg(k.status()), HasSubstr("RSA-PSS"));

  BIO* bio = BIO_new(BIO_s_mem());
  Pkey rsa = RsaKey(1024);
  ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(bio, rsa.get(), EVP_aes_256_cbc(), "secret", 6, nullptr,
                                          nullptr),
            1);
  k = PrivateKey::FromPem(BioText(bio));
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(k.status()), HasSubstr("encrypted"));

  for (std::string garbage : {"", "hello",
                              "-----BEGIN PRIVATE KEY-----\nnot base64!\n"
                              "-----END PRIVATE KEY-----\n"}) {
    k = PrivateKey::FromPem(garbage);
    EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument) << garbage;
    EXPECT_THAT(Msg(k.status()), HasSubstr("not a PEM private key")) << garbage;
  }

  EXPECT_EQ(PrivateKey::Generate(Algorithm::kRsaSha256, 512).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PrivateKey::Generate(Algorithm::kRsaSha256, 16384).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TempDir, LoadFileWarnings) {
  Pkey k1024 = RsaKey(1024);
  std::vector<std::string> warnings;
  const std::string weak = Write("weak.pem", Pkcs1Pem(k1024.get()));
  PrivateKey key = Must(PrivateKey::LoadFile(weak, &warnings));
  EXPECT_EQ(key.bits(), 1024);
  EXPECT_THAT(warnings,
              ElementsAre(weak + ": RSA key of 1024 bits: RFC 8301 asks for 2048 or more"));

  warnings.clear();
  const std::string open = Write("open.pem", Ed().ToPem(), 0644);
  Must(PrivateKey::LoadFile(open, &warnings));
  EXPECT_THAT(warnings, ElementsAre("key file " + open +
                                    " is readable by other users (mode 0644); chmod 600 it"));

  warnings.clear();
  const std::string group = Write("group.pem", Ed().ToPem(), 0640);
  Must(PrivateKey::LoadFile(group, &warnings));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("readable by its group (mode 0640)"));

  warnings.clear();
  const std::string good = Write("good.pem", Rsa2048().ToPem(), 0600);
  Must(PrivateKey::LoadFile(good, &warnings));
  EXPECT_THAT(warnings, IsEmpty());
  EXPECT_TRUE(PrivateKey::LoadFile(good, nullptr).ok());
}

TEST_F(TempDir, LoadFileErrorsNameTheFile) {
  const std::string garbage = Write("garbage.pem", "this is not a key\n");
  absl::StatusOr<PrivateKey> k = PrivateKey::LoadFile(garbage, nullptr);
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(k.status()), StartsWith(garbage + ": not a PEM private key"));

  Pkey small = RsaKey(512);
  const std::string weak = Write("512.pem", Pkcs8Pem(small.get()));
  k = PrivateKey::LoadFile(weak, nullptr);
  EXPECT_THAT(Msg(k.status()), StartsWith(weak + ": RSA key of 512 bits"));

  const std::string missing = (dir_ / "missing.pem").string();
  k = PrivateKey::LoadFile(missing, nullptr);
  EXPECT_FALSE(k.ok());
  EXPECT_THAT(Msg(k.status()), StartsWith(missing + ": open: "));

  k = PrivateKey::LoadFile(dir_.string(), nullptr);
  EXPECT_THAT(Msg(k.status()), HasSubstr("not a regular file"));

  const std::string big = Write("big.pem", std::string(70 * 1024, 'a'));
  k = PrivateKey::LoadFile(big, nullptr);
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(k.status()), HasSubstr("64 KiB"));
}

// ---- RFC 8463 Appendix A: the published example, byte for byte

const char kRfcMessage[] =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

// A.3's two fields as printed (the RFC's three-space indent is one space on the wire),
// b= values cut off.
const char kRfcEdField[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
const char kRfcEdB[] =
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus"
    "Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
const char kRfcRsaField[] =
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
const char kRfcRsaB[] =
    "F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3"
    "DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz"
    "dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=";
// A.2's records.
const char kRfcEdRecord[] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const char kRfcRsaRecord[] =
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08"
    "a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM"
    "KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
// A.1's keys: the Ed25519 secret (RFC 8032 section 7.1, test 1) and the RSA key.
const char kRfcEdSeed[] = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const char kRfcRsaPem[] =
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi\n"
    "Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM\n"
    "KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB\n"
    "AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm\n"
    "6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe\n"
    "zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy\n"
    "6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc\n"
    "uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy\n"
    "WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd\n"
    "WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a\n"
    "licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst\n"
    "o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe\n"
    "uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL\n"
    "-----END RSA PRIVATE KEY-----\n";

PrivateKey RfcEdKey() {
  std::string seed;
  EXPECT_TRUE(absl::Base64Unescape(kRfcEdSeed, &seed));
  Pkey k(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed.data()), seed.size()));
  return Must(PrivateKey::FromPem(Pkcs8Pem(k.get())));
}

TEST(Rfc8463, KeysMatchThePublishedRecords) {
  EXPECT_EQ(RfcEdKey().DnsRecord(), kRfcEdRecord);
  PrivateKey rsa = Must(PrivateKey::FromPem(kRfcRsaPem));
  EXPECT_EQ(rsa.bits(), 1024);
  EXPECT_EQ(rsa.DnsRecord(), kRfcRsaRecord);
}

TEST(Rfc8463, SignaturesReproducedExactly) {
  // Both algorithms are deterministic (Ed25519 by design, PKCS#1 v1.5 by padding), so
  // the same fields and key give the RFC's b= exactly.
  EXPECT_EQ(Must(SignFieldTemplate(RfcEdKey(), kRfcEdField, kRfcMessage)), kRfcEdB);
  PrivateKey rsa = Must(PrivateKey::FromPem(kRfcRsaPem));
  EXPECT_EQ(Must(SignFieldTemplate(rsa, kRfcRsaField, kRfcMessage)), kRfcRsaB);
  // ... also with a trailing CRLF.
  EXPECT_EQ(Must(SignFieldTemplate(RfcEdKey(), std::string(kRfcEdField) + "\r\n", kRfcMessage)),
            kRfcEdB);
}

TEST(Rfc8463, TheSignedMessageVerifies) {
  const std::string signed_msg =
      std::string(kRfcEdField) + kRfcEdB + "\r\n" + kRfcRsaField + kRfcRsaB + "\r\n" + kRfcMessage;
  EXPECT_TRUE(Verify(signed_msg, kRfcEdRecord, 0).ok());
  EXPECT_TRUE(Verify(signed_msg, kRfcRsaRecord, 1).ok());
  EXPECT_FALSE(Verify(signed_msg, kRfcRsaRecord, 0).ok());  // the wrong key
}

TEST(Rfc8463, SignerProducesTheSameHashesAndList) {
  SignerOptions o;
  o.domain = "football.example.com";
  o.selector = "brisbane";
  o.headers = {"from", "to", "subject", "date", "message-id"};
  o.over_sign = {"from", "subject", "date"};
  Signer signer(o, RfcEdKey());
  EXPECT_EQ(signer.BodyHash(kRfcMessage), "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
  const std::string field = Must(signer.Sign(kRfcMessage, absl::FromUnixSeconds(1528637909)));
  auto tags = Tags(field);
  EXPECT_EQ(tags["a"], "ed25519-sha256");
  EXPECT_EQ(tags["t"], "1528637909");
  EXPECT_EQ(tags["h"], "from:to:subject:date:message-id:from:subject:date");
  EXPECT_EQ(tags["bh"], "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
  EXPECT_TRUE(Verify(field + kRfcMessage, kRfcEdRecord).ok());
}

TEST(Rfc8463, TemplateErrors) {
  const PrivateKey key = RfcEdKey();
  EXPECT_THAT(Msg(SignFieldTemplate(key, "Subject: x", kRfcMessage).status()),
              HasSubstr("not a DKIM-Signature field"));
  EXPECT_THAT(
      Msg(SignFieldTemplate(key, "DKIM-Signature: a=ed25519-sha256; h=from", kRfcMessage).status()),
      HasSubstr("no b= tag"));
  EXPECT_THAT(
      Msg(SignFieldTemplate(key, "DKIM-Signature: a=ed25519-sha256; h=from; b=abc", kRfcMessage)
              .status()),
      HasSubstr("b= must be empty"));
  EXPECT_THAT(
      Msg(SignFieldTemplate(key, "DKIM-Signature: a=rsa-sha256; h=from; b=", kRfcMessage).status()),
      HasSubstr("a= is \"rsa-sha256\""));
  EXPECT_THAT(
      Msg(SignFieldTemplate(key, "DKIM-Signature: a=ed25519-sha256; b=", kRfcMessage).status()),
      HasSubstr("no h= tag"));
}

// ---- Sign

TEST(Sign, VerifiesWithOpenSslForEveryAlgorithmAndCanonicalization) {
  for (const PrivateKey* key : {&Rsa2048(), &Ed()}) {
    for (Canon hc : {Canon::kSimple, Canon::kRelaxed}) {
      for (Canon bc : {Canon::kSimple, Canon::kRelaxed}) {
        Signer signer(Options(hc, bc), *key);
        const std::string m = SignWith(signer, kMessage);
        SCOPED_TRACE(m);
        const Verdict v = Verify(m, key->DnsRecord());
        EXPECT_TRUE(v.body_ok);
        EXPECT_TRUE(v.signature_ok);
      }
    }
  }
}

TEST(Sign, TamperingFails) {
  for (const PrivateKey* key : {&Rsa2048(), &Ed()}) {
    Signer signer(Options(), *key);
    const std::string field = Must(signer.Sign(kMessage, kNow));
    const std::string record = key->DnsRecord();
    std::string m = kMessage;

    std::string body = m;
    body.replace(body.find("reader."), 7, "Reader.");
    Verdict v = Verify(field + body, record);
    EXPECT_FALSE(v.body_ok);

    std::string header = m;
    header.replace(header.find("reader@dst.test"), 15, "victim@dst.test");
    v = Verify(field + header, record);
    EXPECT_TRUE(v.body_ok);
    EXPECT_FALSE(v.signature_ok);

    // Over-signing: a second Subject anywhere, even on top, breaks the signature...
    v = Verify(field + "Subject: Buy now\r\n" + m, record);
    EXPECT_FALSE(v.signature_ok);
    // ...while a field nobody signed does not.
    v = Verify(field + "X-Added: by a relay\r\n" + m, record);
    EXPECT_TRUE(v.ok());
    // An extra body line after the end is a body change too.
    v = Verify(field + m + "P.S.\r\n", record);
    EXPECT_FALSE(v.body_ok);
    // The untouched message still verifies, and trailing empty lines do not matter.
    EXPECT_TRUE(Verify(field + m, record).ok());
    EXPECT_TRUE(Verify(field + m + "\r\n\r\n", record).ok());
  }
}

TEST(Sign, RelaxedSurvivesRefoldingAndSimpleDoesNot) {
  const std::string refolded = [] {
    std::string m = kMessage;
    m.replace(m.find("To: reader@dst.test"), 19, "To:\treader@dst.test  ");
    m.replace(m.find("Hello,  reader."), 15, "Hello, \treader.  ");
    return m;
  }();
  Signer relaxed(Options(Canon::kRelaxed, Canon::kRelaxed), Ed());
  EXPECT_TRUE(Verify(Must(relaxed.Sign(kMessage, kNow)) + refolded, Ed().DnsRecord()).ok());
  Signer simple(Options(Canon::kSimple, Canon::kSimple), Ed());
  const Verdict v = Verify(Must(simple.Sign(kMessage, kNow)) + refolded, Ed().DnsRecord());
  EXPECT_FALSE(v.body_ok);
  EXPECT_FALSE(v.signature_ok);
}

TEST(Sign, HeaderSelectionIsBottomUpWithOverSigning) {
  const std::string m =
      "Received: x\r\n"
      "From: a@news.example\r\n"
      "To: first@dst.test\r\n"
      "Subject: one\r\n"
      "to: second@dst.test\r\n"
      "X-Mailer: v\r\n"
      "Date: d\r\n"
      "\r\n"
      "body\r\n";
  SignerOptions o = Options();
  o.headers = {"Subject", "To", "DATE", "Cc", "to"};  // From is added; "to" twice counts once
  o.over_sign = {"Subject", "List-Unsubscribe"};
  Signer signer(o, Ed());
  const std::string field = Must(signer.Sign(m, kNow));
  EXPECT_THAT(HList(field),
              ElementsAre("from", "subject", "to", "to", "date", "subject", "list-unsubscribe"));
  EXPECT_TRUE(Verify(field + m, Ed().DnsRecord()).ok());

  // Both To fields were signed: changing the upper one breaks the signature.
  std::string swapped = m;
  swapped.replace(swapped.find("first@"), 6, "secon@");
  EXPECT_FALSE(Verify(field + swapped, Ed().DnsRecord()).signature_ok);
  // An added List-Unsubscribe is caught though the message had none.
  EXPECT_FALSE(Verify(field + "List-Unsubscribe: <mailto:x@evil.test>\r\n" + m, Ed().DnsRecord())
                   .signature_ok);
  // A third To, unlike a second Subject, is not: To was signed, not over-signed.
  EXPECT_TRUE(Verify(field + "To: third@dst.test\r\n" + m, Ed().DnsRecord()).ok());
}

TEST(Sign, ManyInstancesOfAFieldTakeLinearTime) {
  // h= lists a field once per instance, and each entry takes the next instance up from
  // the bottom. Searching the header from the bottom again for each entry made 50000 To
  // fields cost a minute under the sanitizers; one pass takes a fraction of a second
  // (dkim.h, BOUNDS: linear in the message size).
  constexpr int kCount = 50000;
  std::string m = "From: a@news.example\r\n";
  for (int i = 0; i < kCount; ++i) m += "To: r" + std::to_string(i) + "@dst.test\r\n";
  m += "\r\nbody\r\n";
  Signer signer(Options(), Ed());
  const absl::Time start = absl::Now();
  const std::string field = Must(signer.Sign(m, kNow));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  const std::vector<std::string> h = HList(field);
  EXPECT_EQ(std::count(h.begin(), h.end(), "to"), kCount + 1);  // over-signed once more

  // And every instance is still paired with its own entry (Verify, itself quadratic,
  // on a shorter header): changing the top one, or the bottom one, breaks the signature.
  std::string few = "From: a@news.example\r\n";
  for (int i = 0; i < 300; ++i) few += "To: r" + std::to_string(i) + "@dst.test\r\n";
  few += "Subject: s\r\n\r\nbody\r\n";
  const std::string few_field = Must(signer.Sign(few, kNow));
  EXPECT_TRUE(Verify(few_field + few, Ed().DnsRecord()).ok());
  for (std::string_view who : {"r0@", "r299@"}) {
    std::string changed = few;
    changed.replace(changed.find(who), 1, "R");
    EXPECT_FALSE(Verify(few_field + changed, Ed().DnsRecord()).signature_ok) << who;
  }
}

TEST(Sign, DefaultOptionsOnATypicalMessage) {
  Signer signer(Options(), Rsa2048());
  const std::string field = Must(signer.Sign(kMessage, kNow));
  EXPECT_THAT(HList(field),
              ElementsAre("from", "subject", "date", "to", "list-unsubscribe", "message-id",
                          "mime-version", "content-type", "list-unsubscribe-post", "from", "to",
                          "subject", "date", "list-unsubscribe", "list-unsubscribe-post"));
  auto tags = Tags(field);
  EXPECT_EQ(tags["v"], "1");
  EXPECT_EQ(tags["a"], "rsa-sha256");
  EXPECT_EQ(tags["c"], "relaxed/relaxed");
  EXPECT_EQ(tags["d"], "news.example");
  EXPECT_EQ(tags["s"], "s2026");
  EXPECT_EQ(tags["t"], "1700000000");
  EXPECT_EQ(tags.count("x"), 0u);
  EXPECT_EQ(tags.count("l"), 0u);
  EXPECT_EQ(tags["bh"], signer.BodyHash(kMessage));
  EXPECT_EQ(tags["b"].size(), 344u);  // 256 octets of RSA-2048, base64
}

TEST(Sign, FoldsToShortLines) {
  SignerOptions o = Options();
  o.domain = std::string(60, 'd') + ".example";  // a d= tag longer than half a line
  for (const PrivateKey* key : {&Rsa2048(), &Ed()}) {
    Signer signer(o, *key);
    const std::string field = Must(signer.Sign(kMessage, kNow));
    ASSERT_THAT(field, StartsWith("DKIM-Signature: v=1; a="));
    ASSERT_EQ(field.substr(field.size() - 2), "\r\n");
    size_t pos = 0;
    int lines = 0;
    while (pos < field.size()) {
      const size_t eol = field.find("\r\n", pos);
      ASSERT_NE(eol, std::string::npos);
      const std::string line = field.substr(pos, eol - pos);
      EXPECT_LE(line.size(), 78u) << line;
      EXPECT_EQ(line.find_first_of("\r\n"), std::string::npos);
      if (lines++ > 0) {
        EXPECT_EQ(line[0], '\t') << line;
      }
      pos = eol + 2;
    }
    EXPECT_GE(lines, 4);
    EXPECT_TRUE(Verify(field + kMessage, key->DnsRecord()).ok());
  }
}

TEST(Sign, TimestampAndExpiry) {
  SignerOptions o = Options();
  o.expire_after = absl::Hours(72);
  Signer signer(o, Ed());
  auto tags = Tags(Must(signer.Sign(kMessage, kNow + absl::Milliseconds(900))));
  EXPECT_EQ(tags["t"], "1700000000");
  EXPECT_EQ(tags["x"], "1700259200");

  o.expire_after = absl::Milliseconds(1500);  // rounded up: x= must be after t=
  tags = Tags(Must(Signer(o, Ed()).Sign(kMessage, kNow)));
  EXPECT_EQ(tags["x"], "1700000002");

  o.expire_after = -absl::Hours(1);
  tags = Tags(Must(Signer(o, Ed()).Sign(kMessage, kNow)));
  EXPECT_EQ(tags.count("x"), 0u);

  EXPECT_EQ(signer.Sign(kMessage, absl::FromUnixSeconds(-5)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Sign, ReusedBodyHashGivesTheSameSignature) {
  Signer signer(Options(), Rsa2048());
  const std::string bh = signer.BodyHash(kMessage);
  EXPECT_EQ(Must(signer.Sign(kMessage, kNow, bh)), Must(signer.Sign(kMessage, kNow)));
  // A signer for another key and the same body canonicalisation can use it too.
  Signer ed(Options(), Ed());
  EXPECT_EQ(ed.BodyHash(kMessage), bh);
  // A raw digest, or anything else, is refused rather than signed.
  const absl::StatusOr<std::string> bad = signer.Sign(kMessage, kNow, "not a hash");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(bad.status()), HasSubstr("body hash"));
}

TEST(Sign, DualSignature) {
  Signer rsa(Options(), Rsa2048());
  SignerOptions eo = Options();
  eo.selector = "ed2026";
  Signer ed(eo, Ed());
  const std::string bh = rsa.BodyHash(kMessage);
  const std::string m =
      Must(ed.Sign(kMessage, kNow, bh)) + Must(rsa.Sign(kMessage, kNow, bh)) + kMessage;
  EXPECT_TRUE(Verify(m, Ed().DnsRecord(), 0).ok());
  EXPECT_TRUE(Verify(m, Rsa2048().DnsRecord(), 1).ok());
}

TEST(Sign, CopiesSignAlike) {
  Signer a(Options(), Rsa2048());
  Signer b = a;  // its own scratch and contexts, the same key
  EXPECT_EQ(Must(a.Sign(kMessage, kNow)), Must(b.Sign(kMessage, kNow)));
  Signer c(Options(), Ed());
  c = b;
  EXPECT_EQ(c.algorithm(), Algorithm::kRsaSha256);
  Signer d = std::move(c);
  EXPECT_EQ(Must(d.Sign(kMessage, kNow)), Must(a.Sign(kMessage, kNow)));
  EXPECT_EQ(d.options().domain, "news.example");
}

// Shards share a PrivateKey and each build their own Signer (CONTRACT): signing on
// several threads at once must give what one thread gives.
TEST(Sign, SignersOnSeveralThreadsShareAKey) {
  const std::string want = Must(Signer(Options(), Ed()).Sign(kMessage, kNow));
  std::vector<std::thread> threads;
  std::vector<int> good(4, 0);
  for (size_t t = 0; t < good.size(); ++t) {
    threads.emplace_back([&, t] {
      Signer mine(Options(), Ed());
      for (int i = 0; i < 50; ++i) {
        absl::StatusOr<std::string> got = mine.Sign(kMessage, kNow);
        if (got.ok() && *got == want) ++good[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(good, ::testing::Each(50));
}

TEST(Sign, LineEndsAsTheWireWillHaveThem) {
  // The message with bare LFs and no final line end: what PrepareData sends is the
  // CRLF form, so that is what the signature must cover.
  std::string lf = kMessage;
  std::string crlf;
  for (size_t i = 0; i < lf.size(); ++i) {
    if (lf[i] == '\r') continue;
    crlf += lf[i] == '\n' ? "\r\n" : std::string(1, lf[i]);
  }
  lf.erase(std::remove(lf.begin(), lf.end(), '\r'), lf.end());
  for (Canon c : {Canon::kSimple, Canon::kRelaxed}) {
    Signer signer(Options(c, c), Ed());
    EXPECT_TRUE(Verify(Must(signer.Sign(lf, kNow)) + crlf, Ed().DnsRecord()).ok());
  }
}

TEST(Sign, Errors) {
  Signer signer(Options(), Ed());
  absl::StatusOr<std::string> s = signer.Sign("To: a@b.test\r\nSubject: x\r\n\r\nbody\r\n", kNow);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s.status()), HasSubstr("no From field"));
  // A From in the body is not a From field.
  EXPECT_FALSE(signer.Sign("To: a@b.test\r\n\r\nFrom: x@y.test\r\n", kNow).ok());
  EXPECT_FALSE(signer.Sign("", kNow).ok());

  struct Case {
    std::string option, domain, selector, header;
  };
  for (const Case& c : std::vector<Case>{
           {"domain", "", "s", "From"},
           {"domain", "news example", "s", "From"},
           {"domain", "news..example", "s", "From"},
           {"domain", "news.example;x=1", "s", "From"},
           {"selector", "news.example", "", "From"},
           {"selector", "news.example", "s 1", "From"},
           {"headers", "news.example", "s", "X:Y"},
           {"headers", "news.example", "s", ""},
           {"headers", "news.example", "s", "X Y"},
       }) {
    SignerOptions o = Options();
    o.domain = c.domain;
    o.selector = c.selector;
    o.headers = {c.header};
    Signer bad(o, Ed());
    s = bad.Sign(kMessage, kNow);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << c.domain << c.header;
    EXPECT_THAT(Msg(s.status()), HasSubstr("signer options: " + c.option)) << Msg(s.status());
  }
}

}  // namespace
}  // namespace volley::dkim
