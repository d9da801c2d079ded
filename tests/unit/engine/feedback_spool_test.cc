// feedback_spool_test.cc - the inbound listener's message files (engine/feedback_spool.h):
// written whole, listed oldest first, read back exactly; malformed files named.
#include "engine/feedback_spool.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

class FeedbackSpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "feedback_spool_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }

  std::string dir_;
};

smtpd::Envelope SampleEnvelope() {
  smtpd::Envelope e;
  e.helo = "mx.receiver.test";
  e.mail_from = "";
  e.rcpt_to = {"b-1@bounces.sender.test", "b-\"2\"@bounces.sender.test"};
  e.peer = "127.0.0.1:40000";
  e.tls = true;
  return e;
}

TEST(PeerAddressTest, TheAddressWithoutThePort) {
  EXPECT_EQ(PeerAddress("192.0.2.7:4711"), "192.0.2.7");
  EXPECT_EQ(PeerAddress("[2001:db8::1]:25"), "2001:db8::1");
  EXPECT_EQ(PeerAddress("not a peer"), "not a peer");
  EXPECT_EQ(PeerAddress(""), "");
}

TEST_F(FeedbackSpoolTest, WriteListReadRoundTrip) {
  auto spool = FeedbackSpool::Open(dir_, 10);
  ASSERT_TRUE(spool.ok()) << spool.status();
  const std::string content = "Subject: bounce\r\n\r\n8-bit \xc3\xa9 and \xff raw\r\n";
  const absl::Time t1 = absl::FromUnixMillis(1733500000123);
  auto first = spool->Write(SampleEnvelope(), content, t1);
  ASSERT_TRUE(first.ok()) << first.status();
  smtpd::Envelope other = SampleEnvelope();
  other.mail_from = "postmaster@receiver.test";
  other.tls = false;
  // Written later but received earlier: listed first.
  auto second = spool->Write(other, "x\r\n", t1 - absl::Seconds(1));
  ASSERT_TRUE(second.ok()) << second.status();

  auto listed = ListFeedback(dir_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0], dir_ + "/feedback/new/" + *second);
  EXPECT_EQ((*listed)[1], dir_ + "/feedback/new/" + *first);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/feedback/tmp"));

  auto m = ReadFeedback((*listed)[1], 1024);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->content, content);
  EXPECT_EQ(m->envelope.received_at_ms, 1733500000123);
  EXPECT_EQ(m->envelope.helo, "mx.receiver.test");
  EXPECT_EQ(m->envelope.mail_from, "");
  EXPECT_EQ(m->envelope.rcpt_to, SampleEnvelope().rcpt_to);
  EXPECT_EQ(m->envelope.peer, "127.0.0.1:40000");
  EXPECT_TRUE(m->envelope.tls);
  auto m2 = ReadFeedback((*listed)[0], 1024);
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_EQ(m2->envelope.mail_from, "postmaster@receiver.test");
  EXPECT_FALSE(m2->envelope.tls);
}

TEST_F(FeedbackSpoolTest, EnvelopeLineFormat) {
  EXPECT_EQ(EnvelopeJson(SampleEnvelope(), absl::FromUnixMillis(5)),
            "{\"received_at\":5,\"peer\":\"127.0.0.1:40000\",\"helo\":\"mx.receiver.test\","
            "\"mail_from\":\"\",\"rcpt_to\":[\"b-1@bounces.sender.test\","
            "\"b-\\\"2\\\"@bounces.sender.test\"],\"tls\":true}");
}

TEST_F(FeedbackSpoolTest, OverPending) {
  auto spool = FeedbackSpool::Open(dir_, 2);
  ASSERT_TRUE(spool.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(spool->OverPending()) << i;
    ASSERT_TRUE(spool->Write(SampleEnvelope(), "x\r\n", absl::Now()).ok());
  }
  EXPECT_TRUE(spool->OverPending());
}

TEST_F(FeedbackSpoolTest, OpenRemovesStrayTmpFiles) {
  ASSERT_TRUE(FeedbackSpool::Open(dir_, 10).ok());
  WriteFile(dir_ + "/feedback/tmp/half-written", "{\"recei");
  ASSERT_TRUE(FeedbackSpool::Open(dir_, 10).ok());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/feedback/tmp"));
}

TEST_F(FeedbackSpoolTest, MalformedFilesAreNamed) {
  ASSERT_TRUE(FeedbackSpool::Open(dir_, 10).ok());
  const std::string base = dir_ + "/feedback/new/";
  const struct {
    std::string name, text, says;
  } cases[] = {
      {"no-newline", "{\"received_at\":1}", "no envelope line"},
      {"not-json", "hello\nbody", "envelope"},
      {"not-object", "[1]\nbody", "not an object"},
      {"no-rcpt", "{\"received_at\":1,\"peer\":\"p\",\"helo\":\"h\",\"mail_from\":\"\",\"tls\":false}\n",
       "rcpt_to"},
      {"bad-tls", "{\"received_at\":1,\"peer\":\"p\",\"helo\":\"h\",\"mail_from\":\"\",\"rcpt_to\":[],"
                  "\"tls\":1}\n", "tls"},
      {"too-big", "{\"received_at\":1,\"peer\":\"p\",\"helo\":\"h\",\"mail_from\":\"\",\"rcpt_to\":[],"
                  "\"tls\":false}\n" + std::string(11, 'x'), "over 10 octets"},
  };
  for (const auto& c : cases) {
    WriteFile(base + c.name, c.text);
    auto m = ReadFeedback(base + c.name, 10);
    ASSERT_FALSE(m.ok()) << c.name;
    EXPECT_NE(m.status().message().find(base + c.name), absl::string_view::npos) << m.status();
    EXPECT_NE(m.status().message().find(c.says), absl::string_view::npos) << m.status();
  }
  EXPECT_FALSE(ReadFeedback(base + "missing", 10).ok());
}

}  // namespace
}  // namespace volley::engine
