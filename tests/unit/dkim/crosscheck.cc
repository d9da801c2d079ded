// crosscheck.cc - sign a set of messages with volley_dkim and have an independent
// verifier (python3-dkim, through verify.py) check every signature and refuse tampered
// copies.
//
// SYNOPSIS
//   dkim_crosscheck --verifier tests/unit/dkim/verify.py [--keep]
//
// DESCRIPTION
//   Each case is written as <case>.data: the SMTP DATA stream PrepareData makes of the
//   signed message (dot-stuffed, terminated by ".\r\n"). verify.py reads it back the
//   way a receiving server does, so the check covers what a receiver gets, line-end
//   normalisation and dot-stuffing included. manifest.txt lists "<case> <signatures>".
//   dns/<selector>._domainkey.<domain> holds each key's record as DnsTxtStrings writes
//   it. Exit status: the verifier's, or 2 for a setup failure. --keep leaves the
//   directory behind and prints its path.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/dkim/dkim.h"
#include "engine/smtp/content.h"

namespace {

using volley::dkim::Algorithm;
using volley::dkim::Canon;
using volley::dkim::PrivateKey;
using volley::dkim::Signer;
using volley::dkim::SignerOptions;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "dkim_crosscheck: %s\n", why.c_str());
  std::exit(2);
}

template <typename T>
T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(what + ": " + v.status().ToString());
  return *std::move(v);
}

void WriteFile(const std::filesystem::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  if (!out) Die("cannot write " + path.string());
}

struct Key {
  PrivateKey key;
  std::string selector;
};

struct Case {
  std::string name;
  std::string message;
  std::vector<const Key*> keys;  // one signature each, the first on top
  Canon header = Canon::kRelaxed;
  Canon body = Canon::kRelaxed;
  absl::Duration expire_after = absl::ZeroDuration();
};

const char kDomain[] = "news.example.test";

const char kPlain[] =
    "From: Volley News <news@news.example.test>\r\n"
    "To: Reader One <reader@dst.test>,\r\n"
    "\tReader Two <two@dst.test>,   Reader Three\r\n"
    "  <three@dst.test>\r\n"
    "Subject: A subject long enough to be folded by the renderer across more than\r\n"
    " one line, with  double  spaces\t and a tab\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "Message-ID: <plain.1@news.example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "List-Unsubscribe: <https://news.example.test/u/1>,\r\n"
    " <mailto:unsub@news.example.test?subject=1>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "Feedback-ID: 1:campaign:volley\r\n"
    "X-Not-Signed: anything\r\n"
    "\r\n"
    "Hello reader,   this line has runs of  spaces and a tab\there.\r\n"
    "Trailing white space follows   \t\r\n"
    "\r\n"
    "  Indented line.\r\n"
    "\r\n"
    "\r\n";

const char kEightBit[] =
    "From: =?utf-8?q?Caf=C3=A9?= <cafe@news.example.test>\r\n"
    "To: reader@dst.test\r\n"
    "Subject: Caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9"
    "e\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "Message-ID: <8bit@news.example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Cr\xc3\xa8me br\xc3\xbbl\xc3\xa9"
    "e \xe2\x82\xac 5, na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\r\n"
    "\xf0\x9f\x93\xa8  emoji\t\r\n";

const char kDots[] =
    "From: news@news.example.test\r\n"
    "To: reader@dst.test\r\n"
    "Subject: dots\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "\r\n"
    ".leading dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "a line after a lone dot\r\n"
    " .space then dot\r\n"
    ".\r\n";

const char kEmptyBody[] =
    "From: news@news.example.test\r\n"
    "To: reader@dst.test\r\n"
    "Subject: nothing to say\r\n"
    "\r\n";

const char kHeadersOnly[] =
    "From: news@news.example.test\r\n"
    "To: reader@dst.test\r\n"
    "Subject: no empty line at all\r\n";

const char kMultipart[] =
    "From: Volley <news@news.example.test>\r\n"
    "To: reader@dst.test\r\n"
    "Subject: multipart\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative;\r\n"
    "\tboundary=\"=_volley_b1\"\r\n"
    "\r\n"
    "This is a multi-part message in MIME format.\r\n"
    "\r\n"
    "--=_volley_b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Hello =E2=82=AC reader, a soft break follows=\r\n"
    " here. Trailing space=20\r\n"
    "\r\n"
    "--=_volley_b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "PGh0bWw+PGJvZHk+PHA+SGVsbG8gcmVhZGVyPC9wPjwvYm9keT48L2h0bWw+DQo=\r\n"
    "\r\n"
    "--=_volley_b1--\r\n"
    "\r\n";

// Bare LF and no final line end: the renderer's text, not yet the wire's.
const char kBareLf[] =
    "From: news@news.example.test\n"
    "To: reader@dst.test\n"
    "Subject: bare LF\n"
    "\tcontinued\n"
    "\n"
    "line one\n"
    "line two  \n"
    "\n"
    "last line, no ending";

}  // namespace

int main(int argc, char** argv) {
  std::string verifier;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--verifier" && i + 1 < argc) {
      verifier = argv[++i];
    } else if (arg == "--keep") {
      keep = true;
    } else {
      Die("usage: dkim_crosscheck --verifier verify.py [--keep]");
    }
  }
  if (verifier.empty()) Die("usage: dkim_crosscheck --verifier verify.py [--keep]");

  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/dkim_crosscheck.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) Die("mkdtemp " + pattern + " failed");
  const std::filesystem::path dir = pattern;
  std::filesystem::create_directory(dir / "dns");

  const Key rsa{Must(PrivateKey::Generate(Algorithm::kRsaSha256, 2048), "RSA key"), "rsa2048"};
  const Key ed{Must(PrivateKey::Generate(Algorithm::kEd25519Sha256), "Ed25519 key"), "ed25519"};
  for (const Key* k : {&rsa, &ed}) {
    WriteFile(dir / "dns" / (k->selector + "._domainkey." + kDomain),
              volley::dkim::DnsTxtStrings(k->key.DnsRecord()) + "\n");
  }

  const std::vector<Case> cases = {
      {"rsa_relaxed", kPlain, {&rsa}, Canon::kRelaxed, Canon::kRelaxed},
      {"rsa_simple", kPlain, {&rsa}, Canon::kSimple, Canon::kSimple},
      {"ed_relaxed", kPlain, {&ed}, Canon::kRelaxed, Canon::kRelaxed},
      {"ed_simple_relaxed", kPlain, {&ed}, Canon::kSimple, Canon::kRelaxed},
      {"dual_relaxed_simple", kPlain, {&ed, &rsa}, Canon::kRelaxed, Canon::kSimple},
      {"eightbit_rsa", kEightBit, {&rsa}, Canon::kRelaxed, Canon::kRelaxed},
      {"eightbit_ed_simple", kEightBit, {&ed}, Canon::kSimple, Canon::kSimple},
      {"dots_simple", kDots, {&ed}, Canon::kSimple, Canon::kSimple},
      {"dots_relaxed", kDots, {&rsa}, Canon::kRelaxed, Canon::kRelaxed},
      {"empty_body_simple", kEmptyBody, {&rsa}, Canon::kSimple, Canon::kSimple},
      {"empty_body_relaxed", kEmptyBody, {&ed}, Canon::kRelaxed, Canon::kRelaxed},
      {"headers_only", kHeadersOnly, {&ed, &rsa}, Canon::kRelaxed, Canon::kSimple},
      {"multipart", kMultipart, {&rsa, &ed}, Canon::kRelaxed, Canon::kRelaxed},
      {"multipart_simple", kMultipart, {&rsa}, Canon::kSimple, Canon::kSimple},
      {"bare_lf_relaxed", kBareLf, {&ed}, Canon::kRelaxed, Canon::kRelaxed},
      {"bare_lf_simple", kBareLf, {&rsa}, Canon::kSimple, Canon::kSimple},
      {"expiring", kPlain, {&ed}, Canon::kRelaxed, Canon::kRelaxed, absl::Hours(1)},
  };

  std::string manifest;
  const absl::Time now = absl::Now();
  for (const Case& c : cases) {
    std::string fields;
    std::string body_hash;  // shared by the case's signers: same body canonicalisation
    for (const Key* k : c.keys) {
      SignerOptions o;
      o.domain = kDomain;
      o.selector = k->selector;
      o.header_canon = c.header;
      o.body_canon = c.body;
      o.expire_after = c.expire_after;
      Signer signer(o, k->key);
      if (body_hash.empty()) body_hash = signer.BodyHash(c.message);
      fields += Must(signer.Sign(c.message, now, body_hash), c.name);
    }
    WriteFile(dir / (c.name + ".data"), volley::smtp::PrepareData(fields + c.message));
    manifest += c.name + " " + std::to_string(c.keys.size()) + "\n";
  }
  WriteFile(dir / "manifest.txt", manifest);

  const pid_t pid = ::fork();
  if (pid < 0) Die("fork failed");
  if (pid == 0) {
    ::execl("/usr/bin/python3", "python3", verifier.c_str(), dir.c_str(),
            static_cast<char*>(nullptr));
    std::perror("dkim_crosscheck: exec /usr/bin/python3");
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) Die("waitpid failed");
  }
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 2;
  if (keep) {
    std::printf("dkim_crosscheck: messages kept in %s\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
  return rc;
}
