// receiving_test.cc - the session as a receiving server (engine/smtpd/session.h):
// accepted domains, content capture and its size cap, the handler's reply, the
// recipient and message bounds, the idle timeout's reply, connection refusals.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/smtpd/session.h"
#include "gtest/gtest.h"

namespace volley::smtpd {
namespace {

// A handler that keeps what it was given and answers `reply`.
struct Recorder {
  std::vector<Envelope> envelopes;
  std::vector<std::string> contents;
  std::string reply = "250 2.0.0 Ok: queued as X1";
  MessageHandler handler = [this](const Envelope& e, std::string_view content) {
    envelopes.push_back(e);
    contents.emplace_back(content);
    return reply;
  };
};

SessionOptions Receiving(Recorder* r) {
  SessionOptions o;
  o.hostname = "mx.sender.test";
  o.software = "volleyd";
  o.accepted_domains = {"bounces.sender.test"};
  o.handler = &r->handler;
  o.max_message_size = 64;
  o.max_recipients = 2;
  o.peer = "127.0.0.9:40000";
  return o;
}

// Feed input in pieces of `step` octets; every reply, concatenated.
std::string Converse(Session* s, const std::string& input, size_t step = 0) {
  Output out;
  if (step == 0) step = input.size();
  for (size_t i = 0; i < input.size(); i += step) {
    s->Feed(input.substr(i, step), absl::UnixEpoch(), &out);
  }
  return out.Bytes();
}

// The last reply line of replies (without CRLF).
std::string Last(const std::string& replies) {
  const size_t end = replies.rfind("\r\n");
  const size_t start = replies.rfind("\r\n", end - 1);
  return replies.substr(start == std::string::npos ? 0 : start + 2,
                        end - (start == std::string::npos ? 0 : start + 2));
}

TEST(Receiving, GreetingNamesTheSoftware) {
  Recorder r;
  Session s(Receiving(&r));
  Output out;
  s.Start(1, &out);
  EXPECT_EQ(out.Bytes(), "220 mx.sender.test ESMTP volleyd\r\n");
}

TEST(Receiving, RecipientOutsideTheDomainsIsRelayingDenied) {
  Recorder r;
  Session s(Receiving(&r));
  const std::string replies = Converse(&s,
                                  "EHLO client.test\r\nMAIL FROM:<>\r\n"
                                  "RCPT TO:<x@elsewhere.test>\r\n"
                                  "RCPT TO:<x@sub.bounces.sender.test>\r\n"
                                  "RCPT TO:<noatsign>\r\n"
                                  "RCPT TO:<b-1@BOUNCES.Sender.TEST>\r\n");
  const std::string want =
      "250 2.1.0 Ok\r\n"
      "550 5.7.1 Error: relay access denied\r\n"
      "550 5.7.1 Error: relay access denied\r\n"
      "550 5.7.1 Error: relay access denied\r\n"
      "250 2.1.5 Ok\r\n";
  ASSERT_GE(replies.size(), want.size());
  EXPECT_EQ(replies.substr(replies.size() - want.size()), want);
}

TEST(Receiving, HandlerGetsEnvelopeAndUnstuffedContent) {
  Recorder r;
  Session s(Receiving(&r));
  // A stuffed dot, a bare LF (content), split at every octet.
  const std::string replies = Converse(&s,
                                  "EHLO client.test\r\nMAIL FROM:<>\r\n"
                                  "RCPT TO:<b-1@bounces.sender.test>\r\n"
                                  "RCPT TO:<b-2@bounces.sender.test>\r\nDATA\r\n"
                                  "Subject: x\r\n\r\n..dot\r\nbare\nlf\r\n.\r\n",
                                  1);
  EXPECT_EQ(Last(replies), "250 2.0.0 Ok: queued as X1");
  ASSERT_EQ(r.envelopes.size(), 1u);
  EXPECT_EQ(r.contents[0], "Subject: x\r\n\r\n.dot\r\nbare\nlf\r\n");
  const Envelope& e = r.envelopes[0];
  EXPECT_EQ(e.helo, "client.test");
  EXPECT_EQ(e.mail_from, "");
  EXPECT_EQ(e.rcpt_to, (std::vector<std::string>{"b-1@bounces.sender.test",
                                                  "b-2@bounces.sender.test"}));
  EXPECT_EQ(e.peer, "127.0.0.9:40000");
  EXPECT_FALSE(e.tls);
}

TEST(Receiving, BdatChunksAreJoined) {
  Recorder r;
  Session s(Receiving(&r));
  const std::string replies = Converse(&s,
                                  "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n"
                                  "RCPT TO:<b@bounces.sender.test>\r\n"
                                  "BDAT 5\r\nab\r\ncBDAT 3 LAST\r\n.\r\n",
                                  3);
  EXPECT_EQ(Last(replies), "250 2.0.0 Ok: queued as X1");
  ASSERT_EQ(r.contents.size(), 1u);
  EXPECT_EQ(r.contents[0], "ab\r\nc.\r\n");
  EXPECT_EQ(r.envelopes[0].mail_from, "a@x.test");
}

TEST(Receiving, HandlerRefusalIsSentAndNotCountedAsAccepted) {
  Recorder r;
  r.reply = "451 4.3.0 Error: could not store the message";
  Session s(Receiving(&r));
  Output out;
  s.Feed("EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<b@bounces.sender.test>\r\nDATA\r\nhi\r\n.\r\n"
         "MAIL FROM:<>\r\n",
         absl::UnixEpoch(), &out);
  const std::string replies = out.Bytes();
  EXPECT_NE(replies.find("451 4.3.0 Error: could not store the message\r\n250 2.1.0 Ok\r\n"),
            std::string::npos)
      << replies;
  EXPECT_TRUE(out.accepted.empty());
  EXPECT_EQ(out.rejects, 1u);
}

TEST(Receiving, OversizedContentGets552AndReachesNoHandler) {
  Recorder r;
  Session s(Receiving(&r));  // max_message_size 64
  const std::string big(100, 'x');
  std::string replies = Converse(&s,
                            "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<b@bounces.sender.test>\r\n"
                            "DATA\r\n" + big + "\r\n.\r\n",
                            7);
  EXPECT_EQ(Last(replies), "552 5.3.4 Error: message size exceeds fixed limit");
  EXPECT_TRUE(r.contents.empty());
  // Exactly the limit (62 octets and CRLF) still goes through.
  replies = Converse(&s, "MAIL FROM:<>\r\nRCPT TO:<b@bounces.sender.test>\r\nDATA\r\n" +
                        std::string(62, 'y') + "\r\n.\r\n");
  EXPECT_EQ(Last(replies), "250 2.0.0 Ok: queued as X1");
  ASSERT_EQ(r.contents.size(), 1u);
  EXPECT_EQ(r.contents[0].size(), 64u);
}

TEST(Receiving, SizeParameterAndChunkOverTheLimit) {
  Recorder r;
  Session s(Receiving(&r));
  std::string replies = Converse(&s, "EHLO c.test\r\n");
  EXPECT_NE(replies.find("250-SIZE 64\r\n"), std::string::npos) << replies;
  replies = Converse(&s, "MAIL FROM:<> SIZE=65\r\n");
  EXPECT_EQ(replies, "552 5.3.4 Error: message size exceeds fixed limit\r\n");
  replies = Converse(&s, "MAIL FROM:<> SIZE=64\r\nRCPT TO:<b@bounces.sender.test>\r\n"
                    "BDAT 60\r\n" + std::string(60, 'z') + "BDAT 5 LAST\r\n12345");
  EXPECT_EQ(Last(replies), "552 5.3.4 Error: message size exceeds fixed limit");
  EXPECT_TRUE(r.contents.empty());
}

TEST(Receiving, RecipientBound) {
  Recorder r;
  Session s(Receiving(&r));  // max_recipients 2
  const std::string replies = Converse(&s,
                                  "EHLO c.test\r\nMAIL FROM:<>\r\n"
                                  "RCPT TO:<a@bounces.sender.test>\r\n"
                                  "RCPT TO:<b@bounces.sender.test>\r\n"
                                  "RCPT TO:<c@bounces.sender.test>\r\nDATA\r\nx\r\n.\r\n");
  EXPECT_NE(replies.find("452 4.5.3 Error: too many recipients\r\n"), std::string::npos);
  ASSERT_EQ(r.envelopes.size(), 1u);
  EXPECT_EQ(r.envelopes[0].rcpt_to.size(), 2u);
}

TEST(Receiving, MessagesPerConnectionBound) {
  Recorder r;
  SessionOptions o = Receiving(&r);
  o.max_messages = 2;
  Session s(o);
  const std::string one = "MAIL FROM:<>\r\nRCPT TO:<a@bounces.sender.test>\r\nDATA\r\nx\r\n.\r\n";
  Output out;
  s.Feed("EHLO c.test\r\n" + one + one + one, absl::UnixEpoch(), &out);
  EXPECT_EQ(Last(out.Bytes()),
            "421 4.7.0 Error: too many messages on this connection, try again later");
  EXPECT_TRUE(out.close);
  EXPECT_EQ(r.contents.size(), 2u);
}

TEST(Receiving, TimeoutSays421AndCloses) {
  Recorder r;
  Session s(Receiving(&r));
  Output out;
  s.Feed("EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@bounces.sender.test>\r\nDATA\r\npartial",
         absl::UnixEpoch(), &out);
  out.Clear();
  s.Timeout(&out);
  EXPECT_EQ(out.Bytes(), "421 4.4.2 mx.sender.test Error: timeout exceeded\r\n");
  EXPECT_TRUE(out.close);
  EXPECT_TRUE(s.closed());
  EXPECT_TRUE(r.contents.empty());
}

TEST(Receiving, RefusalsAtConnect) {
  Recorder r;
  for (bool per_client : {false, true}) {
    Session s(Receiving(&r));
    Output out;
    s.Refuse(per_client, &out);
    EXPECT_EQ(out.Bytes(), per_client
                               ? "421 4.7.0 Error: too many connections from your address, try "
                                 "again later\r\n"
                               : "421 4.7.0 Error: too many connections, try again later\r\n");
    EXPECT_TRUE(out.close);
  }
}

TEST(Receiving, EnvelopeAfterStartTlsSaysTls) {
  Recorder r;
  SessionOptions o = Receiving(&r);
  Profile tls_profile;
  tls_profile.starttls = true;
  o.profile = &tls_profile;
  Session s(o);
  Output out;
  s.Feed("EHLO before.test\r\nSTARTTLS\r\n", absl::UnixEpoch(), &out);
  ASSERT_TRUE(out.start_tls);
  const std::string replies = Converse(&s,
                                  "EHLO after.test\r\nMAIL FROM:<>\r\n"
                                  "RCPT TO:<a@bounces.sender.test>\r\nDATA\r\nx\r\n.\r\n");
  EXPECT_EQ(Last(replies), "250 2.0.0 Ok: queued as X1");
  ASSERT_EQ(r.envelopes.size(), 1u);
  EXPECT_TRUE(r.envelopes[0].tls);
  EXPECT_EQ(r.envelopes[0].helo, "after.test");
}

}  // namespace
}  // namespace volley::smtpd
