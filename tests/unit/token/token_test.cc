// token_test.cc - engine/token: round trips, tampering, purposes, rotation, key files
#include "engine/token/token.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::token {
namespace {

using ::testing::HasSubstr;

// 32 octets: the shortest secret accepted.
constexpr char kSecret1[] = "0123456789abcdef0123456789abcdef";
constexpr char kSecret2[] = "another secret, long enough for HMAC-SHA256 ok";

Keyring MustKeys(std::vector<std::pair<std::string, std::string>> keys) {
  auto k = Keyring::FromSecrets(std::move(keys));
  EXPECT_TRUE(k.ok()) << k.status();
  return k.ok() ? *std::move(k) : Keyring();
}

// The test's own base32 (RFC 4648, lower case, no padding), to reach the octets
// under a token without going through the library.
std::string Encode(const std::vector<uint8_t>& bytes) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : bytes) {
    acc = acc << 8 | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += kAlphabet[acc >> bits & 31];
    }
  }
  if (bits > 0) out += kAlphabet[acc << (5 - bits) & 31];
  return out;
}

std::vector<uint8_t> Decode(const std::string& text) {
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = c >= 'a' && c <= 'z' ? c - 'a' : c - '2' + 26;
    acc = acc << 5 | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return out;
}

TEST(TokenTest, KnownAnswer) {
  // Computed independently (Python's hmac and base64): the layout is a promise to
  // every token already out in mail, so it must not change by accident.
  Keyring keys = MustKeys({{"k1", kSecret1}});
  EXPECT_EQ(Issue(keys, Purpose::kUnsubscribe, 7, 42), "cjvtcaaaaadqaaaafjiqtz7uzdpgeujhawtfo");
  EXPECT_EQ(Issue(keys, Purpose::kVerp, 7, 42), "cjvtcaaaaadqaaaafld23r6tesqcwjlmxit7y");
  Keyring long_id = MustKeys({{"abcdefgh", kSecret1}});
  EXPECT_EQ(Issue(long_id, Purpose::kVerp, UINT32_MAX, UINT32_MAX),
            "dbqwey3emvtgo2h777777777777vsyhvw6mnbhgmz5ump2q");
}

TEST(TokenTest, RoundTrip) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  EXPECT_FALSE(keys.empty());
  EXPECT_EQ(keys.signing_key_id(), "k1");
  const std::pair<uint32_t, uint32_t> cases[] = {
      {0, 0}, {1, 2}, {7, 42}, {UINT32_MAX, 2}, {3, UINT32_MAX}, {UINT32_MAX, UINT32_MAX}};
  for (Purpose purpose : {Purpose::kVerp, Purpose::kUnsubscribe}) {
    for (auto [job_no, line] : cases) {
      const std::string t = Issue(keys, purpose, job_no, line);
      EXPECT_EQ(t.size(), 37u) << t;
      EXPECT_EQ(t.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567"), std::string::npos) << t;
      auto c = Check(keys, purpose, t);
      ASSERT_TRUE(c.ok()) << t << ": " << c.status();
      EXPECT_EQ(c->job_no, job_no);
      EXPECT_EQ(c->line, line);
      EXPECT_EQ(c->key_id, "k1");
    }
  }
}

TEST(TokenTest, CaseInsensitive) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  std::string t = Issue(keys, Purpose::kVerp, 12, 34);
  for (char& c : t) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto c = Check(keys, Purpose::kVerp, t);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->line, 34u);
  for (size_t i = 0; i < t.size(); i += 2) {
    t[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(t[i])));
  }
  EXPECT_TRUE(Check(keys, Purpose::kVerp, t).ok()) << t;
}

TEST(TokenTest, EveryCharacterChangeFails) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  const std::string t = Issue(keys, Purpose::kUnsubscribe, 5, 1000);
  int checked = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    for (char c : std::string("abcdefghijklmnopqrstuvwxyz234567")) {
      if (c == t[i]) continue;
      std::string bad = t;
      bad[i] = c;
      auto got = Check(keys, Purpose::kUnsubscribe, bad);
      EXPECT_FALSE(got.ok()) << "char " << i << " -> " << c << " still verifies";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 37 * 31);
  // Dropping or adding a character fails too.
  EXPECT_FALSE(Check(keys, Purpose::kUnsubscribe, t.substr(0, t.size() - 1)).ok());
  EXPECT_FALSE(Check(keys, Purpose::kUnsubscribe, t + "a").ok());
  EXPECT_FALSE(Check(keys, Purpose::kUnsubscribe, t.substr(1)).ok());
}

TEST(TokenTest, EveryBitFlipFails) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  const std::string t = Issue(keys, Purpose::kVerp, 77, 5);
  const std::vector<uint8_t> bytes = Decode(t);
  ASSERT_EQ(Encode(bytes), t);
  for (size_t i = 0; i < bytes.size() * 8; ++i) {
    std::vector<uint8_t> bad = bytes;
    bad[i / 8] ^= static_cast<uint8_t>(0x80 >> (i % 8));
    auto got = Check(keys, Purpose::kVerp, Encode(bad));
    EXPECT_FALSE(got.ok()) << "bit " << i << " flipped still verifies";
  }
}

TEST(TokenTest, LineFiveCannotBecomeLineSix) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  std::vector<uint8_t> bytes = Decode(Issue(keys, Purpose::kUnsubscribe, 9, 5));
  // version|len, "k1", job_no (4), line (4): the line's last octet is at 10.
  ASSERT_EQ(bytes[10], 5);
  bytes[10] = 6;
  auto got = Check(keys, Purpose::kUnsubscribe, Encode(bytes));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kPermissionDenied) << got.status();
  EXPECT_EQ(got.status().message(), "MAC does not verify");
  bytes[10] = 5;
  bytes[6] ^= 1;  // job_no 9 -> 8
  EXPECT_EQ(Check(keys, Purpose::kUnsubscribe, Encode(bytes)).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(TokenTest, PurposesAreSeparate) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  const std::string verp = Issue(keys, Purpose::kVerp, 3, 4);
  const std::string unsub = Issue(keys, Purpose::kUnsubscribe, 3, 4);
  EXPECT_NE(verp, unsub);
  EXPECT_EQ(Check(keys, Purpose::kUnsubscribe, verp).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Check(keys, Purpose::kVerp, unsub).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(TokenTest, KeyRotation) {
  Keyring old_keys = MustKeys({{"k1", kSecret1}});
  const std::string old_token = Issue(old_keys, Purpose::kUnsubscribe, 1, 2);

  // k2 is added in front: it signs; k1 still verifies what it made.
  Keyring rotated = MustKeys({{"k2", kSecret2}, {"k1", kSecret1}});
  EXPECT_EQ(rotated.signing_key_id(), "k2");
  EXPECT_EQ(rotated.key_ids(), (std::vector<std::string>{"k2", "k1"}));
  auto c = Check(rotated, Purpose::kUnsubscribe, old_token);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->key_id, "k1");
  const std::string new_token = Issue(rotated, Purpose::kUnsubscribe, 1, 2);
  auto c2 = Check(rotated, Purpose::kUnsubscribe, new_token);
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ(c2->key_id, "k2");

  // k1 removed: its tokens name a key nobody has.
  Keyring k2_only = MustKeys({{"k2", kSecret2}});
  auto gone = Check(k2_only, Purpose::kUnsubscribe, old_token);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(gone.status().message(), "unknown key id \"k1\"");
  EXPECT_TRUE(Check(k2_only, Purpose::kUnsubscribe, new_token).ok());

  // Same id, another secret: a forgery as far as the check can tell.
  Keyring impostor = MustKeys({{"k1", kSecret2}});
  EXPECT_EQ(Check(impostor, Purpose::kUnsubscribe, old_token).status().code(),
            absl::StatusCode::kPermissionDenied);

  // Copies share the keys.
  Keyring copy = rotated;
  EXPECT_TRUE(Check(copy, Purpose::kUnsubscribe, old_token).ok());
}

TEST(TokenTest, EmptyKeyring) {
  Keyring none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.signing_key_id(), "");
  Keyring keys = MustKeys({{"k1", kSecret1}});
  auto got = Check(none, Purpose::kVerp, Issue(keys, Purpose::kVerp, 1, 2));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  auto loaded = Keyring::Load({}, nullptr);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->empty());
}

TEST(TokenDeathTest, IssueWithoutKeyAborts) {
  EXPECT_DEATH(Issue(Keyring(), Purpose::kVerp, 1, 2), "Keyring::empty");
}

TEST(TokenTest, SecretsAndIds) {
  struct Case {
    std::string id;
    std::string secret;
    std::string want;  // "" = accepted
  };
  const Case cases[] = {
      {"k1", std::string(32, 'x'), ""},
      {"k1", std::string(31, 'x'), "token_key \"k1\": secret is 31 octets, at least 32 needed"},
      {"k1", "", "token_key \"k1\": secret is 0 octets, at least 32 needed"},
      {"", std::string(32, 'x'), "token_key \"\": id must match [A-Za-z0-9]{1,8}"},
      {"k-1", std::string(32, 'x'), "token_key \"k-1\": id must match [A-Za-z0-9]{1,8}"},
      {"abcdefgh", std::string(32, 'x'), ""},
      {"abcdefghi", std::string(32, 'x'), "id must match"},
      {"k\n1", std::string(32, 'x'), "token_key \"k?1\": id must match"},
  };
  for (const Case& c : cases) {
    auto k = Keyring::FromSecrets({{c.id, c.secret}});
    if (c.want.empty()) {
      EXPECT_TRUE(k.ok()) << c.id << ": " << k.status();
    } else {
      EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument) << c.id;
      EXPECT_THAT(std::string(k.status().message()), HasSubstr(c.want));
    }
  }
  auto twice = Keyring::FromSecrets({{"k1", kSecret1}, {"k1", kSecret2}});
  EXPECT_EQ(twice.status().message(), "token_key \"k1\": id given twice");
}

TEST(TokenTest, Malformed) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  const std::string good = Issue(keys, Purpose::kVerp, 1, 2);
  struct Case {
    std::string token;
    std::string want;
  };
  std::vector<uint8_t> v2 = Decode(good);
  v2[0] = 0x22;  // version 2
  std::vector<uint8_t> no_id = Decode(good);
  no_id[0] = 0x10;
  std::vector<uint8_t> long_id = Decode(good);
  long_id[0] = 0x19;
  std::vector<uint8_t> short_id = Decode(good);
  short_id[0] = 0x11;  // one-character id: one octet too many
  std::vector<uint8_t> bad_id = Decode(good);
  bad_id[2] = '-';
  const Case cases[] = {
      {"", "malformed token: empty"},
      {std::string(48, 'a'), "malformed token: 48 characters, at most 47"},
      {"a", "not a whole number of octets"},
      {"aaa", "not a whole number of octets"},
      {"aaaaaa", "not a whole number of octets"},
      {good.substr(0, 36) + "!", "malformed token: character 37 (\"!\") is not base32"},
      {good.substr(0, 10) + "\x01" + good.substr(11), "character 11 (\"?\") is not base32"},
      {good.substr(0, 10) + "0" + good.substr(11), "character 11 (\"0\") is not base32"},
      // 37 characters carry 185 bits for 184: the last one's low bit must be 0.
      {good.substr(0, 36) + "b", "the last character's unused bits are not zero"},
      {Encode(v2), "malformed token: version 2 (this Volley knows 1)"},
      {Encode(no_id), "key id length 0"},
      {Encode(long_id), "key id length 9"},
      {Encode(short_id), "23 octets; a token with a 1-character key id has 22"},
      {Encode(bad_id), "key id is not [A-Za-z0-9]"},
  };
  for (const Case& c : cases) {
    auto got = Check(keys, Purpose::kVerp, c.token);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.token;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.token;
  }
}

TEST(TokenTest, VerpAddressBound) {
  // The longest: an 8-character key id, the largest job number and line.
  Keyring keys = MustKeys({{"abcdefgh", kSecret1}});
  const std::string a = VerpAddress(keys, "bounces.sender.test", UINT32_MAX, UINT32_MAX);
  const std::string local = a.substr(0, a.find('@'));
  EXPECT_LE(local.size(), 64u);
  EXPECT_EQ(local.size(), 2 + kMaxTokenChars);
  EXPECT_EQ(local.substr(0, 2), "b-");
  EXPECT_EQ(a.substr(a.find('@')), "@bounces.sender.test");
  auto c = CheckVerpAddress(keys, a);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->job_no, UINT32_MAX);
  EXPECT_EQ(c->line, UINT32_MAX);
  EXPECT_EQ(c->key_id, "abcdefgh");
}

TEST(TokenTest, CheckVerpAddress) {
  Keyring keys = MustKeys({{"k1", kSecret1}});
  const std::string a = VerpAddress(keys, "bounces.sender.test", 31, 7);
  std::string upper = a;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  for (const std::string& form : {a, upper, "<" + a + ">", "  " + a + "\n"}) {
    auto c = CheckVerpAddress(keys, form);
    ASSERT_TRUE(c.ok()) << form << ": " << c.status();
    EXPECT_EQ(c->job_no, 31u);
    EXPECT_EQ(c->line, 7u);
  }
  const std::string token = a.substr(2, a.find('@') - 2);
  // An unsubscribe token in a VERP address is not a VERP token.
  const std::string unsub = "b-" + Issue(keys, Purpose::kUnsubscribe, 31, 7) + "@x.test";
  EXPECT_EQ(CheckVerpAddress(keys, unsub).status().code(), absl::StatusCode::kPermissionDenied);
  struct Case {
    std::string address;
    std::string want;
  };
  const Case cases[] = {
      {token, "malformed VERP address: no '@'"},
      {"b-" + token + "@", "malformed VERP address: no domain after '@'"},
      {"x-" + token + "@b.test", "malformed VERP address: local part \"x-"},
      {"b@b.test", "does not start with \"b-\""},
      {"b-@b.test", "malformed token: empty"},
      {"b-" + token + "x@b.test", "malformed token"},
  };
  for (const Case& c : cases) {
    auto got = CheckVerpAddress(keys, c.address);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.address;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.address;
  }
}

// Files for Load, in a folder of the test's own.
class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "token_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  std::string Write(const std::string& name, const std::string& content, mode_t mode = 0600) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    ::chmod(path.c_str(), mode);
    return path;
  }

  std::string dir_;
};

TEST_F(KeyFileTest, LoadsAndStripsTrailingWhitespace) {
  const std::string k1 = Write("k1.key", std::string(kSecret1) + " \t\r\n\n");
  const std::string k2 = Write("k2.key", kSecret2);
  std::vector<std::string> warnings;
  auto keys = Keyring::Load({{"k2", k2}, {"k1", k1}}, &warnings);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  EXPECT_EQ(keys->signing_key_id(), "k2");
  // The stripped file holds exactly kSecret1: its tokens are those of FromSecrets.
  Keyring in_hand = MustKeys({{"k1", kSecret1}});
  auto c = Check(*keys, Purpose::kVerp, Issue(in_hand, Purpose::kVerp, 4, 5));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->key_id, "k1");
}

TEST_F(KeyFileTest, Errors) {
  const std::string short_file = Write("short.key", std::string(31, 's') + "\n");
  const std::string padded = Write("padded.key", std::string(20, 's') + std::string(20, ' '));
  const std::string big = Write("big.key", std::string(kMaxSecretFile + 1, 'b'));
  const std::string exact = Write("exact.key", std::string(kMaxSecretFile, 'b'));
  const std::string good = Write("good.key", kSecret1);
  struct Case {
    std::vector<KeySpec> specs;
    std::string want;  // "" = loads
  };
  const Case cases[] = {
      {{{"k1", dir_ + "/missing.key"}},
       "token_key \"k1\": " + dir_ + "/missing.key: cannot open: No such file or directory"},
      {{{"k1", short_file}},
       "token_key \"k1\": " + short_file + ": secret is 31 octets, at least 32 needed"},
      {{{"k1", padded}}, padded + ": secret is 20 octets"},
      {{{"k1", big}}, big + ": longer than 4096 octets: not a secret file"},
      {{{"k1", exact}}, ""},
      {{{"k1", dir_}}, dir_ + ": not a regular file"},
      {{{"k1", ""}}, "token_key \"k1\": secret_file missing"},
      {{{"k1", good}, {"k1", good}}, "token_key \"k1\": id given twice"},
      {{{"k_1", good}}, "token_key \"k_1\": id must match"},
  };
  for (const Case& c : cases) {
    auto keys = Keyring::Load(c.specs, nullptr);
    if (c.want.empty()) {
      EXPECT_TRUE(keys.ok()) << keys.status();
    } else {
      EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument) << c.want;
      EXPECT_THAT(std::string(keys.status().message()), HasSubstr(c.want));
    }
  }
}

TEST_F(KeyFileTest, WarnsWhenOthersCanRead) {
  const std::string open_file = Write("open.key", kSecret1, 0644);
  const std::string group_file = Write("group.key", kSecret2, 0640);
  std::vector<std::string> warnings;
  auto keys = Keyring::Load({{"k1", open_file}, {"k2", group_file}}, &warnings);
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0], "token_key \"k1\": " + open_file +
                             ": readable by group or others (mode 0644): chmod 600 it");
  EXPECT_THAT(warnings[1], HasSubstr("(mode 0640)"));
  // No warnings vector: loads all the same.
  EXPECT_TRUE(Keyring::Load({{"k1", open_file}}, nullptr).ok());
}

TEST(TokenTest, ManyThreads) {
  Keyring a = MustKeys({{"a", kSecret1}});
  Keyring b = MustKeys({{"b", kSecret2}, {"a", kSecret1}});
  std::vector<std::string> want_a, want_b;
  for (uint32_t i = 0; i < 200; ++i) {
    want_a.push_back(Issue(a, Purpose::kVerp, i, i + 1));
    want_b.push_back(Issue(b, Purpose::kUnsubscribe, i, i + 1));
  }
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (uint32_t i = 0; i < 200; ++i) {
          if (Issue(a, Purpose::kVerp, i, i + 1) != want_a[i]) ++failures[t];
          if (Issue(b, Purpose::kUnsubscribe, i, i + 1) != want_b[i]) ++failures[t];
          auto c = Check(b, Purpose::kVerp, want_a[i]);  // made by "a", verified by b's second key
          if (!c.ok() || c->line != i + 1) ++failures[t];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST(TokenTest, ANewKeyringNeverUsesAnOldOnesKey) {
  // Each thread keeps its contexts per key; a keyring made after another is freed
  // (likely at the same address) must not pick up the freed one's secret.
  std::string first;
  {
    Keyring k = MustKeys({{"k1", kSecret1}});
    first = Issue(k, Purpose::kVerp, 1, 2);
  }
  for (int i = 0; i < 10; ++i) {
    Keyring k = MustKeys({{"k1", i % 2 == 0 ? kSecret2 : kSecret1}});
    const std::string t = Issue(k, Purpose::kVerp, 1, 2);
    if (i % 2 == 0) {
      EXPECT_NE(t, first) << i;
    } else {
      EXPECT_EQ(t, first) << i;
    }
  }
}

}  // namespace
}  // namespace volley::token
