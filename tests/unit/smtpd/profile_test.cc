// profile_test.cc - volley-sink's fault profiles file: what it accepts, and the
// "file:line: key: reason" it gives for what it does not.
#include "engine/smtpd/profile.h"

#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace volley::smtpd {
namespace {

constexpr char kFull[] = R"(# every key
[profile.default]
greeting_delay = "10ms"

[profile.flaky]
ehlo = "no-esmtp"
pipelining = false
chunking = false
starttls = true
smtputf8 = false
eight_bit_mime = false
size_limit = 2000
greeting = "220-one\n220 two"
greeting_delay = "1s"
tarpit = "50ms"
greylist = "2s"
max_connections = 5
inject_after_starttls = "250 x\r\n"

[[profile.flaky.reply]]
command = "rcpt"
match = "Busy"
nth = 2
rate = 0.5
reply = "450 4.2.1 mailbox busy"
delay = "1m"

[[profile.flaky.reply]]
command = "DOT"
delay = "3s"

[[profile.flaky.disconnect]]
after = "CONNECT"
rate = 0.1

[listener."127.0.0.2:2525"]
profile = "flaky"

[domain."Reject.TEST"]
profile = "flaky"
)";

TEST(ProfileSet, BuiltInDefault) {
  const ProfileSet set;
  ASSERT_EQ(set.profiles().size(), 1u);
  const Profile& p = set.default_profile();
  EXPECT_EQ(p.name, "default");
  EXPECT_TRUE(p.esmtp && p.pipelining && p.chunking && p.smtputf8 && p.eight_bit_mime);
  EXPECT_FALSE(p.starttls);
  EXPECT_FALSE(p.size_limit.has_value());
  EXPECT_TRUE(p.replies.empty() && p.disconnects.empty());
  EXPECT_EQ(&set.ForListener("127.0.0.1:1", "127.0.0.1:1"), &p);
  EXPECT_EQ(set.ForDomain("x.test"), nullptr);
  EXPECT_FALSE(set.uses_starttls());
}

TEST(ProfileSet, ParsesEveryKey) {
  auto parsed = ParseProfiles(kFull, "full.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ProfileSet& set = *parsed;
  ASSERT_EQ(set.profiles().size(), 2u);
  EXPECT_EQ(set.default_profile().greeting_delay, absl::Milliseconds(10));
  const Profile& f = set.profiles()[1];
  EXPECT_EQ(f.name, "flaky");
  EXPECT_FALSE(f.esmtp);
  EXPECT_FALSE(f.pipelining);
  EXPECT_FALSE(f.chunking);
  EXPECT_TRUE(f.starttls);
  EXPECT_FALSE(f.smtputf8);
  EXPECT_FALSE(f.eight_bit_mime);
  EXPECT_EQ(f.size_limit, 2000u);
  EXPECT_EQ(f.greeting.bytes, "220-one\r\n220 two\r\n");
  EXPECT_EQ(f.greeting.code, 220);
  EXPECT_EQ(f.greeting_delay, absl::Seconds(1));
  EXPECT_EQ(f.tarpit, absl::Milliseconds(50));
  EXPECT_EQ(f.greylist, absl::Seconds(2));
  EXPECT_EQ(f.max_connections, 5u);
  EXPECT_EQ(f.inject_after_starttls, "250 x\r\n");
  ASSERT_EQ(f.replies.size(), 2u);
  EXPECT_EQ(f.replies[0].command, Command::kRcpt);
  EXPECT_EQ(f.replies[0].match, "busy");  // lower case
  EXPECT_EQ(f.replies[0].nth, 2u);
  EXPECT_EQ(f.replies[0].rate, 0.5);
  EXPECT_EQ(f.replies[0].reply.bytes, "450 4.2.1 mailbox busy\r\n");
  EXPECT_EQ(f.replies[0].reply.code, 450);
  EXPECT_EQ(f.replies[0].delay, absl::Minutes(1));
  EXPECT_EQ(f.replies[1].command, Command::kDot);
  EXPECT_TRUE(f.replies[1].reply.bytes.empty());
  ASSERT_EQ(f.disconnects.size(), 1u);
  EXPECT_EQ(f.disconnects[0].after, Command::kConnect);
  EXPECT_EQ(f.disconnects[0].rate, 0.1);
  // Rule ids are distinct over the set.
  EXPECT_EQ(set.rule_count(), 3u);
  EXPECT_NE(f.replies[0].id, f.replies[1].id);
  EXPECT_NE(f.replies[1].id, f.disconnects[0].id);
  // Mappings.
  EXPECT_EQ(&set.ForListener("127.0.0.2:2525", "127.0.0.2:2525"), &f);
  EXPECT_EQ(&set.ForListener("127.0.0.2:0", "127.0.0.2:2525"), &f);  // by bound address
  EXPECT_EQ(&set.ForListener("127.0.0.1:2525", "127.0.0.1:2525"), &set.default_profile());
  EXPECT_EQ(set.ForDomain("reject.test"), &f);
  EXPECT_EQ(set.ForDomain("REJECT.Test"), &f);
  EXPECT_EQ(set.ForDomain("sub.reject.test"), nullptr);  // exact names only
  EXPECT_EQ(set.listener_keys(), std::vector<std::string>{"127.0.0.2:2525"});
  EXPECT_TRUE(set.uses_starttls());
}

TEST(ProfileSet, Errors) {
  struct Case {
    std::string toml;
    std::string error;  // the whole message
  };
  const Case cases[] = {
      {"[profile.a]\nehlo = \"x\"\n", "t.toml:2: profile.a.ehlo: must be \"esmtp\" or \"no-esmtp\""},
      {"[profile.a]\nbogus = 1\n", "t.toml:2: profile.a.bogus: unknown key"},
      {"[profiles.a]\n", "t.toml:1: profiles: unknown section (want profile, listener or domain)"},
      {"[profile.a]\npipelining = 1\n", "t.toml:2: profile.a.pipelining: must be true or false"},
      {"[profile.a]\nsize_limit = -1\n",
       "t.toml:2: profile.a.size_limit: must be 0..1125899906842624"},
      {"[profile.a]\ntarpit = \"5\"\n",
       "t.toml:2: profile.a.tarpit: \"5\" is not a duration (a number and ms, s, m or h)"},
      {"[profile.a]\ntarpit = \"2h\"\n", "t.toml:2: profile.a.tarpit: \"2h\" is longer than 1h"},
      {"[profile.a]\ngreeting = \"hello\"\n",
       "t.toml:2: profile.a.greeting: must start with a reply code 2xx..5xx, such as \"450 "
       "4.2.1 busy\""},
      {"[profile.a]\ngreeting = \"354 x\"\n",
       "t.toml:2: profile.a.greeting: a greeting is 2xx, 4xx or 5xx"},
      {"[profile.a]\ngreeting = \"220 a\\n220 b\"\n",
       "t.toml:2: profile.a.greeting: line 1: all lines but the last have \"-\" after the code"},
      {"[profile.a]\ngreeting = \"220-a\\n250 b\"\n",
       "t.toml:2: profile.a.greeting: line 2: every line of a reply has the same code"},
      {"[profile.a]\ngreeting = \"220 a\\u0001\"\n",
       "t.toml:2: profile.a.greeting: control characters are not allowed (use raw = true)"},
      {"[profile.a]\ninject_after_starttls = \"x\"\n",
       "t.toml:2: profile.a.inject_after_starttls: needs starttls = true"},
      {"[profile.\"a b\"]\n", "t.toml:1: profile.a b: a profile name is letters, digits, - and _"},
      {"[[profile.a.reply]]\nreply = \"450 x\"\n", "t.toml:1: profile.a.reply[1]: needs command = \"...\""},
      {"[[profile.a.reply]]\ncommand = \"VRFY\"\n",
       "t.toml:2: profile.a.reply[1].command: must be one of EHLO HELO MAIL RCPT DATA DOT BDAT "
       "RSET NOOP QUIT STARTTLS"},
      {"[[profile.a.reply]]\ncommand = \"CONNECT\"\n",
       "t.toml:2: profile.a.reply[1].command: must be one of EHLO HELO MAIL RCPT DATA DOT BDAT "
       "RSET NOOP QUIT STARTTLS"},
      {"[[profile.a.reply]]\ncommand = \"RCPT\"\n",
       "t.toml:1: profile.a.reply[1]: needs a reply or a delay"},
      {"[[profile.a.reply]]\ncommand = \"RCPT\"\nreply = \"450 x\"\n[[profile.a.reply]]\n"
       "command = \"RCPT\"\nreply = \"450 x\"\nrate = 1.5\n",
       "t.toml:7: profile.a.reply[2].rate: must be 0..1"},
      {"[[profile.a.reply]]\ncommand = \"RCPT\"\nreply = \"450 x\"\nrate = \"half\"\n",
       "t.toml:4: profile.a.reply[1].rate: must be a number 0..1"},
      {"[[profile.a.reply]]\ncommand = \"RCPT\"\nreply = \"450 x\"\nnth = 0\n",
       "t.toml:4: profile.a.reply[1].nth: must be 1..1000000000"},
      {"[[profile.a.reply]]\ncommand = \"DOT\"\nreply = \"450 x\"\nmatch = \"x\"\n",
       "t.toml:4: profile.a.reply[1].match: does not apply to DOT"},
      {"[[profile.a.reply]]\ncommand = \"RCPT\"\nraw = true\n",
       "t.toml:1: profile.a.reply[1]: raw = true needs a reply"},
      {"[profile.a]\nreply = 1\n",
       "t.toml:2: profile.a.reply: must be an array of tables: write each rule as [[profile.a.reply]]"},
      {"[[profile.a.disconnect]]\nrate = 1\n",
       "t.toml:1: profile.a.disconnect[1]: needs after = \"...\""},
      {"[[profile.a.disconnect]]\nafter = \"CONNECT\"\nmatch = \"x\"\n",
       "t.toml:3: profile.a.disconnect[1].match: does not apply to CONNECT"},
      {"[listener.\"127.0.0.1:25\"]\nprofile = \"nope\"\n",
       "t.toml:2: listener.\"127.0.0.1:25\".profile: no [profile.nope]"},
      {"[listener.\"127.0.0.1:25\"]\n", "t.toml:1: listener.\"127.0.0.1:25\": needs profile = \"NAME\""},
      {"[domain.\"a.test\"]\nprofile = \"default\"\nfoo = 1\n",
       "t.toml:3: domain.\"a.test\".foo: unknown key"},
      {"[domain.\"a.test\"]\nprofile = \"default\"\n[domain.\"A.test\"]\nprofile = \"default\"\n",
       // toml++ keeps keys sorted: "A.test" comes first.
       "t.toml:1: domain.\"a.test\": named twice (domains are matched in any case)"},
      {"[domain.\"a@test\"]\nprofile = \"default\"\n", "t.toml:1: domain.\"a@test\": must be a domain name"},
      {"[profile.a\n", "t.toml:1: "},  // a TOML syntax error: toml++ says what
  };
  for (const Case& c : cases) {
    auto r = ParseProfiles(c.toml, "t.toml");
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string got(r.status().message());
    if (c.error.back() == ' ') {
      EXPECT_EQ(got.substr(0, c.error.size()), c.error) << c.toml;
    } else {
      EXPECT_EQ(got, c.error) << c.toml;
    }
  }
}

TEST(ProfileSet, Bounds) {
  std::string many;
  for (size_t i = 0; i <= kMaxRules; ++i) {
    many += "[[profile.a.reply]]\ncommand = \"RCPT\"\nreply = \"450 x\"\n";
  }
  auto r = ParseProfiles(many, "t.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("65 rules; at most 64"), std::string::npos)
      << r.status();
  std::string profiles;
  for (size_t i = 0; i <= kMaxProfiles; ++i) profiles += "[profile.p" + std::to_string(i) + "]\n";
  r = ParseProfiles(profiles, "t.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("more than 64 profiles"), std::string::npos);
  const std::string long_reply = "[[profile.a.reply]]\ncommand = \"RCPT\"\nreply = \"450 " +
                                 std::string(kMaxReplyLength, 'x') + "\"\n";
  r = ParseProfiles(long_reply, "t.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("longer than"), std::string::npos);
}

TEST(ProfileSet, RawReplies) {
  auto r = ParseProfiles(
      "[[profile.default.reply]]\ncommand = \"MAIL\"\nraw = true\nreply = \"garbage\"\n"
      "[[profile.default.reply]]\ncommand = \"RCPT\"\nraw = true\nreply = \"250-x\\r\\n\"\n",
      "t.toml");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->default_profile().replies[0].reply.bytes, "garbage");  // as written
  EXPECT_EQ(r->default_profile().replies[0].reply.code, 0);
  EXPECT_EQ(r->default_profile().replies[1].reply.code, 250);
}

TEST(ProfileSet, ParseDelay) {
  EXPECT_EQ(*ParseDelay("0"), absl::ZeroDuration());
  EXPECT_EQ(*ParseDelay("0ms"), absl::ZeroDuration());
  EXPECT_EQ(*ParseDelay("250ms"), absl::Milliseconds(250));
  EXPECT_EQ(*ParseDelay("2s"), absl::Seconds(2));
  EXPECT_EQ(*ParseDelay("3m"), absl::Minutes(3));
  EXPECT_EQ(*ParseDelay("1h"), absl::Hours(1));
  for (const char* bad : {"", "s", "1", "1d", "-1s", "1.5s", " 1s", "1 s", "61m"}) {
    EXPECT_FALSE(ParseDelay(bad).ok()) << bad;
  }
}

TEST(ProfileSet, LoadMissingFile) {
  auto r = LoadProfiles("/nonexistent/profiles.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "/nonexistent/profiles.toml: cannot read profiles file");
}

}  // namespace
}  // namespace volley::smtpd
