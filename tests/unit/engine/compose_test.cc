// compose_test.cc - [[dkim]], [[token_key]] and [verp] in the config; Credentials
// (keys read at start, intake's job check); Composer (added fields, signed VERP, the
// 7-bit downgrade before signing, one body hash per job). The signatures themselves
// are checked by an independent verifier in tests/integration/dkim_test.py and
// tests/unit/dkim.
#include "engine/compose.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/config.h"
#include "engine/smtp/content.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ComposeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("volley-compose-test-", ::getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text, mode_t mode = 0600) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string KeyFile(const std::string& name, dkim::Algorithm a, int bits = 2048) {
    absl::StatusOr<dkim::PrivateKey> key = dkim::PrivateKey::Generate(a, bits);
    EXPECT_TRUE(key.ok()) << key.status();
    return Write(name, key->ToPem());
  }
  // A config with two keys for sender.test (RSA and Ed25519), a token key and VERP.
  Config SigningConfig() {
    const std::string text = absl::StrCat(
        "[[dkim]]\ndomain = \"Sender.test\"\nselector = \"s1\"\nkey_file = \"",
        KeyFile("s1.pem", dkim::Algorithm::kRsaSha256),
        "\"\n[[dkim]]\ndomain = \"sender.test\"\nselector = \"e1\"\nkey_file = \"",
        KeyFile("e1.pem", dkim::Algorithm::kEd25519Sha256),
        "\"\ncanonicalization = \"simple/relaxed\"\n"
        "[[token_key]]\nid = \"k1\"\nsecret_file = \"",
        Write("k1.key", std::string(40, 'q')), "\"\n[verp]\ndomain = \"bounces.sender.test\"\n");
    absl::StatusOr<Config> c = ParseConfig(text, "t.toml");
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  }
  // Credentials::Load of SigningConfig(); empty (and the test failed) on an error.
  std::optional<Credentials> SigningCredentials() {
    std::vector<std::string> warnings;
    absl::StatusOr<Credentials> creds = Credentials::Load(SigningConfig(), &warnings);
    EXPECT_TRUE(creds.ok()) << creds.status();
    EXPECT_TRUE(warnings.empty()) << warnings.front();
    if (!creds.ok()) return std::nullopt;
    return *std::move(creds);
  }
  fs::path dir_;
};

TEST(DkimConfigTest, ReadsTheTables) {
  absl::StatusOr<Config> c = ParseConfig(R"(
[[dkim]]
domain = "Sender.TEST"
selector = "s2026r"
key_file = "/k/r.pem"
canonicalization = "relaxed/simple"
headers = ["From", "Subject"]
over_sign = []
expire_after = "7d"
[[dkim]]
domain = "sender.test"
selector = "s2026e"
key_file = "/k/e.pem"
[[token_key]]
id = "k2"
secret_file = "/k/t2"
[[token_key]]
id = "k1"
secret_file = "/k/t1"
[verp]
domain = "Bounces.Sender.test"
)",
                                         "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->dkim.size(), 2u);
  EXPECT_EQ(c->dkim[0].domain, "sender.test");
  EXPECT_EQ(c->dkim[0].canonicalization, "relaxed/simple");
  EXPECT_THAT(c->dkim[0].headers, ::testing::ElementsAre("From", "Subject"));
  ASSERT_TRUE(c->dkim[0].over_sign.has_value());
  EXPECT_TRUE(c->dkim[0].over_sign->empty());
  EXPECT_EQ(c->dkim[0].expire_after, absl::Hours(24 * 7));
  EXPECT_EQ(c->dkim[1].canonicalization, "relaxed/relaxed");
  EXPECT_FALSE(c->dkim[1].over_sign.has_value());
  ASSERT_EQ(c->token_keys.size(), 2u);
  EXPECT_EQ(c->token_keys[0].id, "k2");
  EXPECT_EQ(c->verp_domain, "bounces.sender.test");
  // Nothing by default.
  absl::StatusOr<Config> none = ParseConfig("", "t.toml");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->dkim.empty());
  EXPECT_TRUE(none->token_keys.empty());
  EXPECT_TRUE(none->verp_domain.empty());
}

TEST(DkimConfigTest, ErrorsNameTheTableAndKey) {
  const struct {
    std::string text;
    std::string want;
  } cases[] = {
      {"[dkim]\ndomain = \"a.test\"\n", "t.toml:1: dkim: must be an array of tables"},
      {"[[dkim]]\nselector = \"s\"\nkey_file = \"k\"\n", "dkim[1]: needs a domain"},
      {"[[dkim]]\ndomain = \"a.test\"\nkey_file = \"k\"\n", "dkim[1]: needs a selector"},
      {"[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\n", "dkim[1]: needs a key_file"},
      {"[[dkim]]\ndomain = \"a\"\n", "t.toml:2: dkim[1].domain: must be a domain name"},
      {"[[dkim]]\nselector = \"s 1\"\n", "t.toml:2: dkim[1].selector: must be DNS labels"},
      {"[[dkim]]\ncanonicalization = \"loose\"\n",
       "t.toml:2: dkim[1].canonicalization: must be simple or relaxed"},
      {"[[dkim]]\nheaders = [\"Subject\"]\n", "t.toml:2: dkim[1].headers: must include From"},
      {"[[dkim]]\nover_sign = [\"Bad Name\"]\n",
       "dkim[1].over_sign: \"Bad Name\" is not a header field name"},
      {"[[dkim]]\nalgorithm = \"rsa\"\n", "t.toml:2: dkim[1].algorithm: unknown key"},
      {"[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nkey_file = \"k\"\n"
       "[[dkim]]\ndomain = \"A.test\"\nselector = \"s\"\nkey_file = \"k2\"\n",
       "dkim[2]: selector \"s\" of a.test is configured twice"},
      {"[[token_key]]\nid = \"toolongid\"\n", "t.toml:2: token_key[1].id: must match [A-Za-z0-9]{1,8}"},
      {"[[token_key]]\nid = \"k-1\"\n", "token_key[1].id: must match"},
      {"[[token_key]]\nid = \"k1\"\n", "token_key[1]: needs a secret_file"},
      {"[[token_key]]\nid = \"k\"\nsecret_file = \"a\"\n[[token_key]]\nid = \"k\"\nsecret_file = \"b\"\n",
       "token_key[2]: id \"k\" used twice"},
      {"[verp]\ndomain = \"b\"\n", "t.toml:2: verp.domain: must be a domain name"},
      {"[verp]\ndomain = \"b.test\"\n", "verp.domain: signed VERP needs a [[token_key]]"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<Config> got = ParseConfig(c.text, "t.toml");
    ASSERT_FALSE(got.ok()) << c.text;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.text;
  }
}

TEST_F(ComposeTest, LoadStopsOnABadKeyAndWarnsOnAWeakOne) {
  std::vector<std::string> warnings;
  Config c;
  DkimKeyConfig key;
  key.domain = "sender.test";
  key.selector = "s1";
  key.key_file = (dir_ / "missing.pem").string();
  c.dkim.push_back(key);
  absl::StatusOr<Credentials> got = Credentials::Load(c, &warnings);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr(absl::StrCat("dkim[1] (sender.test, selector s1): ", (dir_ / "missing.pem").string())));

  c.dkim[0].key_file = KeyFile("weak.pem", dkim::Algorithm::kRsaSha256, 1024);
  ::chmod(c.dkim[0].key_file.c_str(), 0644);
  got = Credentials::Load(c, &warnings);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_THAT(warnings[0] + warnings[1], HasSubstr("1024"));
  EXPECT_THAT(warnings[0] + warnings[1], HasSubstr("other users"));

  c.token_keys.push_back({"k1", Write("short.key", "tooshort")});
  EXPECT_FALSE(Credentials::Load(c, &warnings).ok());
}

// A job of `message` with extra header members.
queue::JobHeader Job(const std::string& message, const std::string& extra = "") {
  std::string line = absl::StrCat(R"({"job": "spring", "from": "news@sender.test", "message": )");
  std::string escaped;
  for (char ch : message) {
    if (ch == '\n') {
      escaped += "\\n";
    } else if (ch == '"') {
      escaped += "\\\"";
    } else {
      escaped += ch;
    }
  }
  absl::StrAppend(&line, "\"", escaped, "\"", extra.empty() ? "" : ", ", extra, "}");
  absl::StatusOr<queue::JobHeader> h = queue::ParseJobHeader(line, queue::JobLimits{});
  EXPECT_TRUE(h.ok()) << h.status() << " " << line;
  return *h;
}

TEST_F(ComposeTest, CheckJobRefusesWhatNoKeyCanBackUp) {
  const std::optional<Credentials> creds = SigningCredentials();
  ASSERT_TRUE(creds.has_value());
  std::vector<std::string> warnings;
  Credentials no_keys = *Credentials::Load(Config{}, &warnings);
  const std::string unsub = R"("unsubscribe_url": "https://u.sender.test/{{unsubscribe_token}}")";
  const struct {
    const Credentials* creds;
    std::string message;
    std::string extra;
    std::string want;  // empty: accepted
  } cases[] = {
      {&*creds, "From: N <n@sender.test>\nSubject: s\n\nx\n", unsub, ""},
      // A subdomain is signed by its parent's keys.
      {&*creds, "From: N <n@news.Sender.test>\nSubject: s\n\nx\n", unsub, ""},
      {&*creds, "From: n@other.test\nSubject: s\n\nx\n", unsub,
       "unsubscribe_url: one-click unsubscribe (RFC 8058) needs a DKIM signature over "
       "List-Unsubscribe, but no [[dkim]] key signs for the From domain other.test"},
      {&*creds, "From: n@notsender.test\nSubject: s\n\nx\n", unsub, "From domain notsender.test"},
      {&*creds, "Subject: s\n\nx\n", unsub, "the message has no From field"},
      {&*creds, "From: N <n@{{domain}}>\nSubject: s\n\nx\n", unsub,
       "the message has no From field whose domain is written out"},
      {&*creds, "From: N <n@sender.test>\nSubject: s\n\nx\n", unsub + R"(, "dkim": false)",
       "the job turns signing off"},
      {&no_keys, "From: N <n@sender.test>\nSubject: s\n\nx\n", unsub,
       "unsubscribe_url: {{unsubscribe_token}} needs a [[token_key]]"},
      {&no_keys, "From: N <n@sender.test>\nSubject: s\n\n/u/{{unsubscribe_token}}\n", "",
       "message: {{unsubscribe_token}} needs a [[token_key]]"},
      {&no_keys, "From: N <n@sender.test>\nSubject: s\n\nx\n", "", ""},
  };
  for (const auto& c : cases) {
    const queue::JobHeader h = Job(c.message, c.extra);
    const absl::StatusOr<queue::Template> t = queue::Template::Compile(h.message);
    ASSERT_TRUE(t.ok());
    const absl::Status got = c.creds->CheckJob(h, *t);
    if (c.want.empty()) {
      EXPECT_TRUE(got.ok()) << got << " for " << c.message;
    } else {
      EXPECT_THAT(std::string(got.message()), HasSubstr(c.want)) << c.message;
    }
  }
}

// Header fields of a CRLF message: name (as written) -> values, unfolded.
std::multimap<std::string, std::string> Fields(const std::string& message) {
  std::multimap<std::string, std::string> out;
  const std::string head = message.substr(0, message.find("\r\n\r\n"));
  std::string name;
  std::string value;
  for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      value.append(line.data(), line.size());
      continue;
    }
    if (!name.empty()) out.emplace(name, value);
    const size_t colon = line.find(':');
    name = std::string(line.substr(0, colon));
    value = std::string(line.substr(colon + 1));
  }
  if (!name.empty()) out.emplace(name, value);
  return out;
}

std::string Tag(const std::string& signature, const std::string& tag) {
  std::string compact;
  for (char c : signature) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') compact += c;
  }
  for (absl::string_view part : absl::StrSplit(compact, ';')) {
    if (part.substr(0, tag.size() + 1) == tag + "=") return std::string(part.substr(tag.size() + 1));
  }
  return "";
}

TEST_F(ComposeTest, AddsFieldsSignsTwiceAndUsesSignedVerp) {
  const std::optional<Credentials> creds = SigningCredentials();
  ASSERT_TRUE(creds.has_value());
  Composer composer(*creds);
  EXPECT_EQ(composer.signer_count(), 2u);
  const queue::JobHeader h = Job(
      "From: News <news@sender.test>\nTo: {{to}}\nSubject: Hi {{first}}\n\nThe same body.\n",
      R"("unsubscribe_url": "https://u.sender.test/{{unsubscribe_token}}", "list_id": "news.sender.test")");
  const absl::StatusOr<queue::Template> t = queue::Template::Compile(h.message);
  ASSERT_TRUE(t.ok());
  std::unique_ptr<JobPlan> plan = composer.Plan(h, *t, 7);
  EXPECT_TRUE(plan->verp);
  EXPECT_TRUE(plan->uses_token);
  EXPECT_TRUE(plan->per_recipient());
  EXPECT_TRUE(plan->shared_body);
  ASSERT_EQ(plan->signers.size(), 2u);

  smtp::Capabilities caps;
  caps.eight_bit_mime = true;
  const absl::Time now = absl::FromUnixSeconds(1796543549);
  std::vector<std::string> body_hashes;
  std::vector<std::string> message_ids;
  for (uint32_t line : {2u, 3u}) {
    smtp::Envelope env;
    env.rcpts = {absl::StrCat("r", line, "@x.test")};
    composer.Compose(*plan, h, *t, {env.rcpts[0], {{"first", "Ann"}}}, line, now, caps, &env);
    // The envelope sender is a signed VERP address for this job and line.
    absl::StatusOr<token::Claim> claim = token::CheckVerpAddress(creds->tokens(), env.mail_from);
    ASSERT_TRUE(claim.ok()) << claim.status() << " " << env.mail_from;
    EXPECT_EQ(claim->job_no, 7u);
    EXPECT_EQ(claim->line, line);
    EXPECT_THAT(env.mail_from, ::testing::EndsWith("@bounces.sender.test"));

    const auto fields = Fields(env.content);
    ASSERT_EQ(fields.count("DKIM-Signature"), 2u) << env.content;
    EXPECT_EQ(fields.count("Message-ID"), 1u);
    EXPECT_EQ(fields.find("Date")->second, " Sun, 06 Dec 2026 07:52:29 +0000");
    message_ids.push_back(fields.find("Message-ID")->second);
    EXPECT_THAT(message_ids.back(), ::testing::MatchesRegex(
                                        absl::StrCat(" <spring\\.", line, "\\.[0-9a-f]{12}@sender\\.test>")));
    // The token in the link is this recipient's, under the unsubscribe purpose.
    const std::string link = fields.find("List-Unsubscribe")->second;
    const std::string token = link.substr(link.rfind('/') + 1, link.find('>') - link.rfind('/') - 1);
    absl::StatusOr<token::Claim> unsub =
        token::Check(creds->tokens(), token::Purpose::kUnsubscribe, token);
    ASSERT_TRUE(unsub.ok()) << unsub.status() << " " << link;
    EXPECT_EQ(unsub->line, line);
    EXPECT_FALSE(token::Check(creds->tokens(), token::Purpose::kVerp, token).ok());
    // Volley-Trace names this recipient too, under a purpose of its own, so that
    // a complaint returning only the headers still names them.
    ASSERT_EQ(fields.count("Volley-Trace"), 1u) << env.content;
    const std::string trace = fields.find("Volley-Trace")->second.substr(1);
    absl::StatusOr<token::Claim> traced =
        token::Check(creds->tokens(), token::Purpose::kTrace, trace);
    ASSERT_TRUE(traced.ok()) << traced.status() << " " << trace;
    EXPECT_EQ(traced->job_no, 7u);
    EXPECT_EQ(traced->line, line);
    EXPECT_FALSE(token::Check(creds->tokens(), token::Purpose::kUnsubscribe, trace).ok());

    std::vector<std::string> algorithms;
    for (auto [it, end] = fields.equal_range("DKIM-Signature"); it != end; ++it) {
      algorithms.push_back(Tag(it->second, "a"));
      EXPECT_EQ(Tag(it->second, "d"), "sender.test");
      const std::string signed_fields = Tag(it->second, "h");
      for (const char* name : {"list-unsubscribe", "list-unsubscribe-post", "from", "date"}) {
        std::vector<std::string> names = absl::StrSplit(absl::AsciiStrToLower(signed_fields), ':');
        EXPECT_EQ(std::count(names.begin(), names.end(), name), 2) << name << " in h=" << signed_fields;
      }
      EXPECT_EQ(Tag(it->second, "t"), "1796543549");
      body_hashes.push_back(Tag(it->second, "bh"));
    }
    EXPECT_THAT(algorithms, ::testing::UnorderedElementsAre("rsa-sha256", "ed25519-sha256"));
  }
  EXPECT_NE(message_ids[0], message_ids[1]);
  // The body is the same for both recipients: the cached hash is the one computed fresh.
  EXPECT_EQ(body_hashes[0], body_hashes[2]);
  EXPECT_EQ(body_hashes[1], body_hashes[3]);
}

TEST_F(ComposeTest, DowngradesBeforeSigningAndKeepsTheTemplatesOwnFields) {
  const std::optional<Credentials> creds = SigningCredentials();
  ASSERT_TRUE(creds.has_value());
  Composer composer(*creds);
  const queue::JobHeader h = Job(
      "From: news@sender.test\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <{{id}}@sender.test>\n"
      "Subject: s\nContent-Type: text/plain; charset=utf-8\n\nGr\xc3\xbc\xc3\x9f" "e\n",
      R"("return_path": "bounce-{{id}}@sender.test", "feedback_id": "")");
  const absl::StatusOr<queue::Template> t = queue::Template::Compile(h.message);
  ASSERT_TRUE(t.ok());
  std::unique_ptr<JobPlan> plan = composer.Plan(h, *t, 1);
  EXPECT_FALSE(plan->add_date);
  EXPECT_FALSE(plan->add_message_id);
  EXPECT_FALSE(plan->verp);  // the job's return_path wins

  smtp::Envelope env;
  env.rcpts = {"a@x.test"};
  smtp::Capabilities seven_bit;  // no 8BITMIME
  composer.Compose(*plan, h, *t, {"a@x.test", {{"id", "42"}}}, 2, absl::Now(), seven_bit, &env);
  EXPECT_EQ(env.mail_from, "bounce-42@sender.test");
  const auto fields = Fields(env.content);
  EXPECT_EQ(fields.count("Date"), 1u);
  EXPECT_EQ(fields.find("Message-ID")->second, " <42@sender.test>");
  EXPECT_EQ(fields.count("Feedback-ID"), 0u);
  // Not one recipient's message (no VERP, no token): no Volley-Trace to name one.
  EXPECT_FALSE(plan->per_recipient());
  EXPECT_EQ(fields.count("Volley-Trace"), 0u);
  EXPECT_FALSE(smtp::HasEightBit(env.content)) << env.content;
  EXPECT_THAT(env.content, HasSubstr("Content-Transfer-Encoding: quoted-printable"));
  // The signatures cover the converted body: their bh= is its hash (both keys use a
  // relaxed body).
  const std::string unsigned_part = env.content.substr(env.content.find("From:"));
  dkim::SignerOptions o;
  o.domain = "sender.test";
  o.selector = "x";
  o.body_canon = dkim::Canon::kRelaxed;
  const dkim::Signer check(o, *dkim::PrivateKey::Generate(dkim::Algorithm::kEd25519Sha256));
  const std::string want_bh = check.BodyHash(unsigned_part);
  ASSERT_EQ(fields.count("DKIM-Signature"), 2u);
  for (auto [it, end] = fields.equal_range("DKIM-Signature"); it != end; ++it) {
    EXPECT_EQ(Tag(it->second, "bh"), want_bh);
  }

  // With 8BITMIME the body goes as it is.
  smtp::Envelope eight;
  eight.rcpts = {"a@x.test"};
  smtp::Capabilities caps;
  caps.eight_bit_mime = true;
  composer.Compose(*plan, h, *t, {"a@x.test", {{"id", "43"}}}, 3, absl::Now(), caps, &eight);
  EXPECT_TRUE(smtp::HasEightBit(eight.content));
}

TEST_F(ComposeTest, NoKeyNoSignatureAndTheTemplateFromDecidesPerMessage) {
  const std::optional<Credentials> creds = SigningCredentials();
  ASSERT_TRUE(creds.has_value());
  Composer composer(*creds);
  const queue::JobHeader h = Job("From: {{sender}}\nSubject: s\n\nx\n");
  const absl::StatusOr<queue::Template> t = queue::Template::Compile(h.message);
  ASSERT_TRUE(t.ok());
  std::unique_ptr<JobPlan> plan = composer.Plan(h, *t, 1);
  EXPECT_FALSE(plan->from_fixed);
  // Not "{{sender}}": the envelope's domain names the Message-IDs.
  EXPECT_EQ(plan->message_id_domain, "sender.test");
  smtp::Capabilities caps;
  caps.eight_bit_mime = true;
  smtp::Envelope signed_env;
  signed_env.rcpts = {"a@x.test"};
  composer.Compose(*plan, h, *t, {"a@x.test", {{"sender", "Ann <ann@sub.sender.test>"}}}, 2,
                   absl::Now(), caps, &signed_env);
  EXPECT_EQ(Fields(signed_env.content).count("DKIM-Signature"), 2u);
  smtp::Envelope unsigned_env;
  unsigned_env.rcpts = {"a@x.test"};
  composer.Compose(*plan, h, *t, {"a@x.test", {{"sender", "bob@elsewhere.test"}}}, 3, absl::Now(),
                   caps, &unsigned_env);
  EXPECT_EQ(Fields(unsigned_env.content).count("DKIM-Signature"), 0u);
  // Signed or not, the envelope sender is the signed VERP address.
  EXPECT_THAT(unsigned_env.mail_from, ::testing::EndsWith("@bounces.sender.test"));
}

// A reload (SetCredentials) swaps the signer set under a plan made with the old
// one: the plan's next message is signed with the new keys, never with an index
// that now names another key; the message composed before keeps its signature.
// The token keys stay the running ones (ForReload).
TEST_F(ComposeTest, ReloadedKeysSignTheNextMessageOfAPlanMadeBefore) {
  const std::optional<Credentials> creds = SigningCredentials();
  ASSERT_TRUE(creds.has_value());
  Composer composer(*creds);
  const queue::JobHeader h =
      Job("From: News <news@sender.test>\nTo: {{to}}\nSubject: Hi\n\nThe same body.\n");
  const absl::StatusOr<queue::Template> t = queue::Template::Compile(h.message);
  ASSERT_TRUE(t.ok());
  std::unique_ptr<JobPlan> plan = composer.Plan(h, *t, 7);
  ASSERT_EQ(plan->signers.size(), 2u);
  const absl::Time now = absl::FromUnixSeconds(1796543549);
  smtp::Capabilities caps;
  caps.eight_bit_mime = true;
  const auto compose = [&](uint32_t line) {
    smtp::Envelope env;
    env.rcpts = {absl::StrCat("r", line, "@x.test")};
    composer.Compose(*plan, h, *t, {env.rcpts[0], {}}, line, now, caps, &env);
    return env;
  };
  const smtp::Envelope before = compose(2);

  // The new file: one key, a new selector, listed first for another domain so
  // that an old index (0, 1) would name the wrong key or none.
  const std::string text = absl::StrCat(
      "[[dkim]]\ndomain = \"other.test\"\nselector = \"o1\"\nkey_file = \"",
      KeyFile("o1.pem", dkim::Algorithm::kEd25519Sha256),
      "\"\n[[dkim]]\ndomain = \"sender.test\"\nselector = \"s2\"\nkey_file = \"",
      KeyFile("s2.pem", dkim::Algorithm::kRsaSha256), "\"\n");
  absl::StatusOr<Config> next_config = ParseConfig(text, "t.toml");
  ASSERT_TRUE(next_config.ok()) << next_config.status();
  std::vector<std::string> warnings;
  absl::StatusOr<Credentials> loaded = Credentials::Load(*next_config, &warnings);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->tokens().empty());  // the new file names no token key
  const Credentials next = Credentials::ForReload(*std::move(loaded), *creds);
  EXPECT_THAT(next.DkimSelectors(), ::testing::ElementsAre("other.test/o1", "sender.test/s2"));
  EXPECT_EQ(next.tokens().signing_key_id(), "k1");  // the running token key
  composer.SetCredentials(next);
  EXPECT_EQ(composer.signer_count(), 2u);

  const smtp::Envelope after = compose(3);
  std::vector<std::string> selectors;
  const auto fields = Fields(after.content);
  for (auto [it, end] = fields.equal_range("DKIM-Signature"); it != end; ++it) {
    selectors.push_back(absl::StrCat(Tag(it->second, "d"), "/", Tag(it->second, "s"), "/",
                                     Tag(it->second, "a")));
  }
  EXPECT_THAT(selectors, ::testing::ElementsAre("sender.test/s2/rsa-sha256"));
  EXPECT_EQ(plan->keys_generation, composer.keys_generation());
  ASSERT_EQ(plan->signers.size(), 1u);
  // Still a VERP address under the running token key.
  EXPECT_TRUE(token::CheckVerpAddress(creds->tokens(), after.mail_from).ok()) << after.mail_from;

  std::vector<std::string> old_selectors;
  const auto old_fields = Fields(before.content);
  for (auto [it, end] = old_fields.equal_range("DKIM-Signature"); it != end; ++it) {
    old_selectors.push_back(Tag(it->second, "s"));
  }
  EXPECT_THAT(old_selectors, ::testing::UnorderedElementsAre("s1", "e1"));

  // Keys taken away: the next message goes out unsigned, and says nothing wrong.
  absl::StatusOr<Credentials> none = Credentials::Load(Config{}, &warnings);
  ASSERT_TRUE(none.ok());
  const Credentials no_keys = Credentials::ForReload(*std::move(none), *creds);
  composer.SetCredentials(no_keys);
  const smtp::Envelope unsigned_env = compose(4);
  EXPECT_EQ(Fields(unsigned_env.content).count("DKIM-Signature"), 0u);
  EXPECT_FALSE(plan->sign);
  EXPECT_TRUE(plan->sign_error.empty());
}

// --- The compiled template's SMTP form against Render + PrepareData/PrepareBdat ---

// Templates with what dot-stuffing and line ends can get wrong: dot-leading lines
// in literals and after placeholders, bare LF and CRLF mixed, 8-bit literals,
// defaults (empty, 8-bit, dot-leading), no final line end.
const char* const kSmtpFormTemplates[] = {
    "Subject: x\n\n.lead\n..two\nmid.dot\n.\n",
    "Subject: {{s}}\r\n\r\n{{a}}.tail\n{{a}}\n.{{b}}\r\n",
    "Subject: x\n\n{{a}}{{b}}.after two empties\n{{a}}\n",
    "X-Dot: .{{a}}\n\nbody\r\n\r\n.\r\n..\n",
    "Subject: caf\xc3\xa9\n\n{{a|.default}}\n{{b|d\xc3\xa9" "f}}\nno line end",
    "Subject: x\n\n{{a|}}.x\n{{b|}}\n",
    "Subject: x",
    "Subject: {{a}}\n",
    "Subject: x\n\n{{a}}{{a}}{{b}}\n.{{a}}.\n",
};

// Recipients whose values are empty, dot-leading, 8-bit, or all of these.
std::vector<queue::Recipient> SmtpFormRecipients() {
  return {
      {"r@x.test", {}},
      {"r@x.test", {{"a", ".v"}, {"b", "w"}}},
      {"r@x.test", {{"a", ""}, {"b", "."}}},
      {"r@x.test", {{"a", "\xc3\xa9"}, {"b", ".."}}},
      {"r@x.test", {{"a", "x"}, {"b", ""}, {"s", ".s"}}},
      {"r@x.test", {{"a", ""}, {"b", ""}}},
  };
}

TEST(TemplateSmtpFormTest, MatchesRenderThenPrepareByteForByte) {
  for (const char* text : kSmtpFormTemplates) {
    const absl::StatusOr<queue::Template> t = queue::Template::Compile(text);
    ASSERT_TRUE(t.ok()) << t.status() << " " << text;
    for (const queue::Recipient& r : SmtpFormRecipients()) {
      const queue::Builtins builtins;
      // The fields before the template end with CRLF, as AppendAddedFields' do.
      for (const std::string& prefix : {std::string(), std::string("X-Before: .x\r\n")}) {
        std::string message = prefix;
        t->Render(r, builtins, &message);
        const std::string where = absl::StrCat(text, " / a=", r.vars.empty() ? "-" : r.vars[0].second);

        std::string as_is = prefix;
        queue::RenderFacts facts;
        t->Render(r, builtins, queue::LineStart::kAsIs, &as_is, &facts);
        uint64_t bdat_size = 0;
        EXPECT_EQ(as_is, smtp::PrepareBdat(message, &bdat_size)) << where;
        EXPECT_EQ(facts.eight_bit, smtp::HasEightBit(message.substr(prefix.size()))) << where;
        EXPECT_FALSE(facts.line_break_in_value);
        EXPECT_EQ(facts.dots_added, 0u);

        std::string stuffed = prefix;
        queue::RenderFacts stuffed_facts;
        t->Render(r, builtins, queue::LineStart::kDotStuffed, &stuffed, &stuffed_facts);
        uint64_t data_size = 0;
        const std::string want = smtp::PrepareData(message, &data_size);
        // No line of the prefix starts with '.', so PrepareData leaves it as it is.
        EXPECT_EQ(stuffed + ".\r\n", want) << where;
        EXPECT_EQ(stuffed.size() - stuffed_facts.dots_added, data_size) << where;
        EXPECT_EQ(stuffed_facts.eight_bit, facts.eight_bit);
      }
    }
  }
}

TEST(TemplateSmtpFormTest, LineBreakInAHandBuiltValueIsReported) {
  const absl::StatusOr<queue::Template> t = queue::Template::Compile("Subject: x\n\n{{a}}\n");
  ASSERT_TRUE(t.ok());
  for (const char* value : {"l1\nl2", "l1\r.l2", "\r\n"}) {
    std::string out;
    queue::RenderFacts facts;
    t->Render({"r@x.test", {{"a", value}}}, {}, queue::LineStart::kDotStuffed, &out, &facts);
    EXPECT_TRUE(facts.line_break_in_value) << value;
  }
}

// Compose in the session's form sends the bytes Compose as a message, prepared by
// the client, would have sent: signed or not, 8-bit or not, with and without 8BITMIME.
TEST_F(ComposeTest, RendersStraightIntoTheFormTheSessionSends) {
  const std::optional<Credentials> creds = SigningCredentials();
  ASSERT_TRUE(creds.has_value());
  std::vector<std::string> warnings;
  const Credentials no_keys = *Credentials::Load(Config{}, &warnings);
  const absl::Time now = absl::FromUnixSeconds(1796543549);
  // The template's own Message-ID: no random part, so two renderings compare.
  const std::string head = "From: News <news@sender.test>\nMessage-ID: <{{a}}.1@sender.test>\n";
  for (const Credentials* keys : {&*creds, &no_keys}) {
    Composer composer(*keys);
    for (const char* body : {"Hi {{a}}\n.lead\n{{b}}\n.\n", "caf\xc3\xa9 {{a}}\n{{b|.d}}.x\n"}) {
      for (const std::string& extra : {std::string(), std::string(R"("headers": {".X-Dot": "v"})")}) {
        const queue::JobHeader h = Job(head + "Subject: s\n\n" + body, extra);
        const absl::StatusOr<queue::Template> t = queue::Template::Compile(h.message);
        ASSERT_TRUE(t.ok()) << t.status();
        std::unique_ptr<JobPlan> plan = composer.Plan(h, *t, 3);
        EXPECT_EQ(plan->fields_in_smtp_form, extra.empty());
        for (bool eight_bit_mime : {true, false}) {
          smtp::Capabilities caps;
          caps.eight_bit_mime = eight_bit_mime;
          for (const queue::Recipient& r : SmtpFormRecipients()) {
            const std::string where =
                absl::StrCat(body, extra, " 8BITMIME=", eight_bit_mime, " signed=", keys == &*creds);
            smtp::Envelope message;
            message.rcpts = {r.to};
            composer.Compose(*plan, h, *t, r, 2, now, caps, &message);
            ASSERT_EQ(message.form, smtp::ContentForm::kMessage);
            for (smtp::ContentForm form : {smtp::ContentForm::kBdat, smtp::ContentForm::kData}) {
              smtp::Envelope env;
              env.rcpts = {r.to};
              composer.Compose(*plan, h, *t, r, 2, now, caps, &env, form);
              EXPECT_EQ(env.mail_from, message.mail_from);
              // What the client would send: prepared as the envelope says, or the
              // message prepared the way StartTransaction does.
              uint64_t want_size = 0;
              const std::string want = form == smtp::ContentForm::kBdat
                                           ? smtp::PrepareBdat(message.content, &want_size)
                                           : smtp::PrepareData(message.content, &want_size);
              std::string got = env.content;
              uint64_t got_size = env.message_size;
              if (env.form == smtp::ContentForm::kMessage) {
                got = form == smtp::ContentForm::kBdat ? smtp::PrepareBdat(env.content, &got_size)
                                                       : smtp::PrepareData(env.content, &got_size);
              } else {
                EXPECT_EQ(env.form, form) << where;
                EXPECT_EQ(env.eight_bit, smtp::HasEightBit(env.content)) << where;
              }
              EXPECT_EQ(got, want) << where;
              EXPECT_EQ(got_size, want_size) << where;
              // The fast path is taken whenever nothing stands in its way.
              bool eight_bit = smtp::HasEightBit(std::string(body));
              for (const auto& [name, value] : r.vars) eight_bit = eight_bit || smtp::HasEightBit(value);
              const bool converted = !eight_bit_mime && eight_bit;
              if (extra.empty() && !converted) {
                EXPECT_EQ(env.form, form) << where;
              } else {
                EXPECT_EQ(env.form, smtp::ContentForm::kMessage) << where;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace volley::engine
