#include "engine/smtp/client.h"

#include <string>
#include <variant>
#include <vector>

#include "gtest/gtest.h"
#include "transcript.h"

namespace volley::smtp {
namespace {

// ExpectTranscript - the transcript holds with the server's bytes whole, one byte at a
// time, and split at every offset of every block.
void ExpectTranscript(const std::string& t) {
  EXPECT_EQ(ReplayTranscript(t, FeedMode::Whole()), "") << "fed whole";
  EXPECT_EQ(ReplayTranscript(t, FeedMode::Byte()), "") << "fed a byte at a time";
  for (size_t at = 0; at <= LongestServerBlock(t); ++at) {
    std::string err = ReplayTranscript(t, FeedMode::Split(at));
    if (!err.empty()) {
      ADD_FAILURE() << "split at " << at << ": " << err;
      return;
    }
  }
}

const std::string kPipelined =
    "S: 220 mx.dst.test ESMTP\n"
    "C: EHLO localhost\n"
    "S: 250-mx.dst.test\n"
    "S: 250 PIPELINING\n"
    "E: ready esmtp pipelining\n";

const std::string kPlain =
    "S: 220 mx.dst.test ESMTP\n"
    "C: EHLO localhost\n"
    "S: 250 mx.dst.test\n"
    "E: ready esmtp\n";

// A client driven directly, for checks the transcript format does not express.
struct Session {
  explicit Session(ClientOptions opts = {}) : c(std::move(opts)) {}

  void Server(std::string_view bytes) {
    c.Feed(bytes);
    Drain();
  }
  void Drain() {
    for (Event ev = c.Next(); !std::holds_alternative<NeedData>(ev); ev = c.Next()) {
      events.push_back(std::move(ev));
    }
  }
  std::string Out() {
    std::string s(c.PendingOutput());
    c.ConsumeOutput(s.size());
    return s;
  }
  // Handshake - greeting and EHLO with these extension lines; leaves the client idle.
  void Handshake(const std::vector<std::string>& extensions) {
    Server("220 mx ESMTP\r\n");
    EXPECT_EQ(Out(), "EHLO localhost\r\n");
    std::string reply = "250";
    reply += extensions.empty() ? " mx\r\n" : "-mx\r\n";
    for (size_t i = 0; i < extensions.size(); ++i) {
      reply += (i + 1 == extensions.size() ? "250 " : "250-") + extensions[i] + "\r\n";
    }
    Server(reply);
    EXPECT_TRUE(c.idle());
    ASSERT_EQ(events.size(), 1u);
    caps = std::get<SessionReady>(events[0]).caps;
    events.clear();
  }
  const TransactionDone& Done(size_t i = 0) {
    return std::get<TransactionDone>(events.at(i));
  }
  const SessionClosed& Closed(size_t i) { return std::get<SessionClosed>(events.at(i)); }

  Client c;
  Capabilities caps;
  std::vector<Event> events;
};

Envelope Env(uint64_t id, std::vector<std::string> rcpts, std::string content = "hi\n",
             std::string from = "s@src.test") {
  Envelope e;
  e.id = id;
  e.mail_from = std::move(from);
  e.rcpts = std::move(rcpts);
  e.content = std::move(content);
  return e;
}

// --- The harness itself: a transcript that is wrong must fail. ----------------------

TEST(Transcript, DetectsWrongOutputAndEvents) {
  EXPECT_NE(ReplayTranscript("S: 220 mx\nC: HELO localhost\n", FeedMode::Whole()), "");
  EXPECT_NE(ReplayTranscript("S: 220 mx\n", FeedMode::Whole()), "")
      << "EHLO left unchecked";
  EXPECT_NE(ReplayTranscript(kPipelined + "E: ready\n", FeedMode::Whole()), "");
  EXPECT_NE(
      ReplayTranscript("S: 220 mx\nC: EHLO localhost\nS: 250 mx\n", FeedMode::Whole()),
      "")
      << "SessionReady left unchecked";
  EXPECT_EQ(ReplayTranscript(kPipelined, FeedMode::Byte()), "");
}

// --- Greeting and EHLO. -------------------------------------------------------------

TEST(Client, WaitsForTheWholeGreeting) {
  ExpectTranscript(
      "! wait greeting\n"
      "S: 220-mx.dst.test ESMTP\n"
      "S: 220-no spam\n"
      "S: 220 please\n"
      "C: EHLO localhost\n"
      "! wait ehlo\n"
      "S: 250 mx\n"
      "E: ready esmtp\n"
      "! wait none\n");
  Session s;
  s.Server("220-mx\r\n220");
  EXPECT_EQ(s.c.PendingOutput(), "");
  EXPECT_EQ(s.c.waiting_for(), Wait::kGreeting);
  s.Server(" ok\r\n");
  EXPECT_EQ(s.Out(), "EHLO localhost\r\n");
}

TEST(Client, Non2xxGreetingQuitsAndReportsIt) {
  ExpectTranscript(
      "S: 554 5.7.1 go away\n"
      "C: QUIT\n"
      "! wait quit\n"
      "S: 221 bye\n"
      "E: closed permanent:554:5.7.1:greeting\n");
  ExpectTranscript(
      "S: 450-busy\n"
      "S: 450 try later\n"
      "C: QUIT\n"
      "! eof\n"
      "E: closed transient:450:4.0.0:greeting\n");
  // 421: the server is closing; QUIT would be pointless.
  ExpectTranscript(
      "S: 421 4.3.2 shutting down\n"
      "E: closed transient:421:4.3.2:greeting\n"
      "! wait none\n");
  // A 3xx greeting is no greeting at all.
  ExpectTranscript(
      "S: 354 what\n"
      "E: closed transient:451:4.4.2:greeting\n");
  Session s;
  s.Server("554 5.7.1 go away\r\n");
  EXPECT_EQ(s.Out(), "QUIT\r\n");
  s.Server("221 bye\r\n");
  EXPECT_EQ(s.Closed(0).reason.text, "go away");
}

TEST(Client, CountsRepliesByClassUntilTaken) {
  Session s;
  s.Server("220-mx\r\n220 ok\r\n");  // one reply, two lines
  s.Out();
  s.Server("250 mx\r\n");
  EXPECT_EQ(s.c.TakeReplyCounts(), (std::array<uint32_t, 4>{2, 0, 0, 0}));
  EXPECT_EQ(s.c.TakeReplyCounts(), (std::array<uint32_t, 4>{0, 0, 0, 0}));  // taken
  Session refused;
  refused.Server("554 5.7.1 go away\r\n");
  refused.Out();
  refused.Server("221 bye\r\n");
  EXPECT_EQ(refused.c.TakeReplyCounts(), (std::array<uint32_t, 4>{1, 0, 0, 1}));
}

TEST(Client, EhloRefusalsAndHeloFallback) {
  ExpectTranscript(
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 500 what\n"
      "C: HELO localhost\n"
      "S: 250 mx\n"
      "E: ready\n");
  ExpectTranscript(  // 4xx to EHLO is not "EHLO unknown": give up for now
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 451 4.3.0 local problem\n"
      "C: QUIT\n"
      "S: 221 bye\n"
      "E: closed transient:451:4.3.0:ehlo\n");
  ExpectTranscript(
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 502 no\n"
      "C: HELO localhost\n"
      "S: 550 5.7.1 not you\n"
      "C: QUIT\n"
      "S: 221 bye\n"
      "E: closed permanent:550:5.7.1:helo\n");
  ExpectTranscript(
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 421 4.7.0 too busy\n"
      "E: closed transient:421:4.7.0:ehlo\n");
  ExpectTranscript(  // lines of one reply with different codes
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 250-mx\n"
      "S: 251 PIPELINING\n"
      "E: closed transient:451:4.4.2:ehlo\n");
}

TEST(Client, ParsesCapabilitiesCaseInsensitively) {
  struct Case {
    std::vector<std::string> ext;
    std::string want;
  };
  const Case cases[] = {
      {{}, "ready esmtp"},
      {{"pipelining", "8bitmime", "SmtpUtf8", "ENHANCEDSTATUSCODES", "chunking",
        "STARTTLS"},
       "ready esmtp pipelining 8bitmime smtputf8 enhancedstatuscodes chunking starttls"},
      {{"SIZE 1000"}, "ready esmtp size=1000"},
      {{"size   52428800"}, "ready esmtp size=52428800"},
      {{"SIZE"}, "ready esmtp size"},
      {{"SIZE 0"}, "ready esmtp size"},
      {{"SIZE 10x"}, "ready esmtp size"},
      {{"SIZE -1"}, "ready esmtp size"},
      {{"SIZE 99999999999999999999999"}, "ready esmtp size"},
      {{"PIPELININGX", "X-PIPELINING", "AUTH PLAIN LOGIN"}, "ready esmtp"},
  };
  for (const auto& c : cases) {
    Session s;
    s.Handshake(c.ext);
    EXPECT_EQ(DescribeEvent(SessionReady{s.caps}), c.want) << c.ext.size();
  }
}

// --- Transactions. ------------------------------------------------------------------

TEST(Client, PipelinedGroupRespectsTheWindow) {
  // MAIL is 22 octets and each RCPT 20: a 60-octet window holds MAIL + 1 RCPT, then
  // grows by what each reply acknowledges. DATA still goes last.
  ExpectTranscript("! options pipeline=60\n" + kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test,b@x.test,c@x.test,d@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "S: 250 ok\n"
                   "C: RCPT TO:<b@x.test>\n"
                   "C: RCPT TO:<c@x.test>\n"
                   "S: 250 ok\n"
                   "C: RCPT TO:<d@x.test>\n"
                   "S: 250 ok\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 354 go\n"
                   "C: .\n"
                   "S: 250 ok\n"
                   "E: done 1 accepted:250:2.0.0:data-done accepted:250:2.0.0:data-done "
                   "accepted:250:2.0.0:data-done accepted:250:2.0.0:data-done\n");
  // A window smaller than one command still lets it out, alone.
  ExpectTranscript("! options pipeline=5\n" + kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "S: 250 ok\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "S: 250 ok\n"
                   "C: DATA\n"
                   "S: 354 go\n"
                   "C: .\n"
                   "S: 250 ok\n"
                   "E: done 1 accepted:250:2.0.0:data-done\n");
}

TEST(Client, WithoutPipeliningSendsOneCommandAtATime) {
  Session s;
  s.Handshake({"8BITMIME"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test", "b@d.test"})).ok());
  EXPECT_FALSE(s.c.idle());
  EXPECT_EQ(s.Out(), "MAIL FROM:<s@src.test>\r\n");
  EXPECT_EQ(s.c.waiting_for(), Wait::kMail);
  s.Server("250 ok\r\n");
  EXPECT_EQ(s.Out(), "RCPT TO:<a@d.test>\r\n");
  EXPECT_EQ(s.c.waiting_for(), Wait::kRcpt);
  s.Server("250 ok\r\n");
  EXPECT_EQ(s.Out(), "RCPT TO:<b@d.test>\r\n");
  s.Server("250 ok\r\n");
  EXPECT_EQ(s.Out(), "DATA\r\n");
  EXPECT_EQ(s.c.waiting_for(), Wait::kDataInit);
  s.Server("354 go\r\n");
  EXPECT_EQ(s.Out(), "hi\r\n.\r\n");
  EXPECT_EQ(s.c.waiting_for(), Wait::kDataDone);
  s.Server("250 2.0.0 queued as X\r\n");
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.Done().id, 1u);
  ASSERT_EQ(s.Done().rcpt_outcomes.size(), 2u);
  EXPECT_EQ(s.Done().rcpt_outcomes[1].text, "queued as X");
  EXPECT_TRUE(s.c.idle());
  EXPECT_EQ(s.c.waiting_for(), Wait::kNone);
}

TEST(Client, MailParameters) {
  struct Case {
    std::vector<std::string> ext;
    Envelope env;
    std::string want;
  };
  const Case cases[] = {
      // 8-bit body, no 8BITMIME: converted to quoted-printable, so no BODY= (below).
      {{}, Env(1, {"a@d.test"}, "Subject: x\n\ncaf\xc3\xa9\n"), "MAIL FROM:<s@src.test>\r\n"},
      {{"8BITMIME"}, Env(1, {"a@d.test"}), "MAIL FROM:<s@src.test>\r\n"},
      {{"8BITMIME"},
       Env(1, {"a@d.test"}, "caf\xc3\xa9\n"),
       "MAIL FROM:<s@src.test> BODY=8BITMIME\r\n"},
      {{"SIZE 100"},
       Env(1, {"a@d.test"}, "0123456789"),
       "MAIL FROM:<s@src.test> SIZE=12\r\n"},
      {{"SIZE"}, Env(1, {"a@d.test"}, ""), "MAIL FROM:<s@src.test> SIZE=0\r\n"},
      {{"SMTPUTF8"}, Env(1, {"a@d.test"}), "MAIL FROM:<s@src.test>\r\n"},
      {{"SMTPUTF8", "8BITMIME", "SIZE 1000"},
       Env(1, {"\xc3\xa9@d.test"}, "x\xff"),
       "MAIL FROM:<s@src.test> BODY=8BITMIME SIZE=4 SMTPUTF8\r\n"},
      {{"SMTPUTF8"},
       Env(1, {"a@d.test"}, "", "\xc3\xa9@src.test"),
       "MAIL FROM:<\xc3\xa9@src.test> SMTPUTF8\r\n"},
      {{}, Env(1, {"a@d.test"}, "", ""), "MAIL FROM:<>\r\n"},
  };
  for (const auto& c : cases) {
    Session s;
    s.Handshake(c.ext);
    ASSERT_TRUE(s.c.StartTransaction(c.env).ok());
    EXPECT_EQ(s.Out(), c.want);
  }
}

TEST(Client, NonAsciiAddressWithoutSmtputf8FailsWithoutSending) {
  ExpectTranscript(kPipelined +
                   "! start id=4 from=s@x.test to=a@x.test,\xc3\xa9@x.test,b@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: RCPT TO:<b@x.test>\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 550 5.1.1 no\n"
                   "S: 354 go\n"
                   "C: .\n"
                   "S: 250 ok\n"
                   "E: done 4 accepted:250:2.0.0:data-done permanent:550:5.6.7:mail "
                   "permanent:550:5.1.1:rcpt\n");
  // Nothing left to send: done at once, nothing written, still idle, no RSET later.
  ExpectTranscript(kPipelined +
                   "! start id=5 from=s@x.test to=\xc3\xa9@x.test\n"
                   "E: done 5 permanent:550:5.6.7:mail\n"
                   "! wait none\n"
                   "! start id=6 from=\xc3\xa9@x.test to=a@x.test,b@x.test\n"
                   "E: done 6 permanent:550:5.6.7:mail permanent:550:5.6.7:mail\n"
                   "! start id=7 from=s@x.test to=a@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: DATA\n");
}

TEST(Client, OverSizeLimitFailsWithoutSending) {
  // "12345678" goes out as 10 octets with its CRLF: exactly the limit, so it is sent.
  ExpectTranscript(
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 250-mx\n"
      "S: 250 SIZE 10\n"
      "E: ready esmtp size=10\n"
      "M: 12345678\n"
      "! start id=1 from=s@x.test to=a@x.test\n"
      "C: MAIL FROM:<s@x.test> SIZE=10\n");
  // One octet more and nothing is sent at all.
  ExpectTranscript(
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 250-mx\n"
      "S: 250 SIZE 10\n"
      "E: ready esmtp size=10\n"
      "M: 123456789\n"
      "! start id=2 from=s@x.test to=a@x.test,b@x.test\n"
      "E: done 2 permanent:552:5.3.4:mail permanent:552:5.3.4:mail\n"
      "! wait none\n");
  Session s;
  s.Handshake({"SIZE 10"});
  ASSERT_TRUE(s.c.StartTransaction(Env(2, {"a@d.test"}, "123456789")).ok());
  EXPECT_EQ(s.c.PendingOutput(), "");
  s.Drain();
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.Done().rcpt_outcomes.at(0).text,
            "message size 11 exceeds the server's limit of 10");
  EXPECT_TRUE(s.c.idle());
}

TEST(Client, TakeOutputHandsOverEverythingPendingAsSent) {
  ClientOptions opts;
  opts.chunking = true;  // MAIL, RCPT, BDAT and the message in one output
  Session s(opts);
  s.Handshake({"PIPELINING", "CHUNKING"});
  const std::string body(100000, 'x');
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"}, body)).ok());
  const std::string want(s.c.PendingOutput());
  // A part consumed first: what is taken is the rest, whatever the buffer held before.
  s.c.ConsumeOutput(5);
  std::string taken = "stale bytes";
  s.c.TakeOutput(&taken);
  EXPECT_EQ(taken, want.substr(5));
  EXPECT_EQ(s.c.PendingOutput(), "");
  // Taken counts as written: the replies are the commands', not early data.
  s.Server("250 ok\r\n250 ok\r\n");
  s.Server("250 queued\r\n");
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.Done().rcpt_outcomes.at(0).code, 250);
  // Taken whole (nothing consumed before): the same bytes, and the client goes on.
  ASSERT_TRUE(s.c.StartTransaction(Env(2, {"b@d.test"}, "hi\n")).ok());
  const std::string second(s.c.PendingOutput());
  s.c.TakeOutput(&taken);
  EXPECT_EQ(taken, second);
  EXPECT_EQ(s.c.PendingOutput(), "");
}

TEST(Client, RcptRefusalsAndUnknownCodes) {
  ExpectTranscript(
      kPipelined +
      "! start id=1 from=s@x.test to=a@x.test,b@x.test,c@x.test,d@x.test,e@x.test\n"
      "C: MAIL FROM:<s@x.test>\n"
      "C: RCPT TO:<a@x.test>\n"
      "C: RCPT TO:<b@x.test>\n"
      "C: RCPT TO:<c@x.test>\n"
      "C: RCPT TO:<d@x.test>\n"
      "C: RCPT TO:<e@x.test>\n"
      "C: DATA\n"
      "S: 250 ok\n"
      "S: 251 2.1.5 will forward\n"
      "S: 471 mailbox busy\n"
      "S: 559 odd failure\n"
      "S: 552 5.5.3 too many recipients\n"
      "S: 452 too many recipients\n"
      "S: 354 go\n"
      "C: .\n"
      "S: 299 fine\n"
      "E: done 1 accepted:299:2.0.0:data-done transient:471:4.0.0:rcpt "
      "permanent:559:5.0.0:rcpt transient:452:4.5.3:rcpt transient:452:4.0.0:rcpt\n"
      // A clean transaction: the next one needs no RSET.
      "! start id=2 from=s@x.test to=a@x.test\n"
      "C: MAIL FROM:<s@x.test>\n"
      "C: RCPT TO:<a@x.test>\n"
      "C: DATA\n");
}

TEST(Client, NoRecipientAcceptedSendsNoBodyAndRsetsBeforeTheNextMail) {
  // Without pipelining, DATA is never sent.
  ExpectTranscript(kPlain +
                   "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "S: 250 ok\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "S: 550 5.1.1 no\n"
                   "C: RCPT TO:<b@x.test>\n"
                   "S: 450 4.2.1 later\n"
                   "E: done 1 permanent:550:5.1.1:rcpt transient:450:4.2.1:rcpt\n"
                   "! wait none\n"
                   "! start id=2 from=s@x.test to=c@x.test\n"
                   "C: RSET\n"
                   "! wait rset\n"
                   "S: 250 ok\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "S: 250 ok\n"
                   "C: RCPT TO:<c@x.test>\n");
  // With pipelining, a 354 that arrives anyway gets a lone dot, whose reply is ignored.
  ExpectTranscript(kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 550 5.1.1 no\n"
                   "S: 354 go ahead anyway\n"
                   "C: .\n"
                   "! wait data-done\n"
                   "S: 554 5.5.1 no valid recipients\n"
                   "E: done 1 permanent:550:5.1.1:rcpt\n"
                   "! start id=2 from=s@x.test to=c@x.test\n"
                   "C: RSET\n"
                   "S: 250 ok\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<c@x.test>\n"
                   "C: DATA\n");
}

TEST(Client, MailRefused) {
  ExpectTranscript(kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: RCPT TO:<b@x.test>\n"
                   "C: DATA\n"
                   "S: 553 5.1.8 bad sender\n"
                   "S: 503 5.5.1 need MAIL\n"
                   "S: 250 ok\n"  // even an acceptance here cannot revive b
                   "S: 354 go\n"
                   "C: .\n"
                   "S: 250 ok\n"
                   "E: done 1 permanent:553:5.1.8:mail permanent:553:5.1.8:mail\n"
                   "! start id=2 from=s@x.test to=a@x.test\n"
                   "C: RSET\n");
  ExpectTranscript(kPlain +
                   "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "S: 451 4.3.0 try later\n"
                   "E: done 1 transient:451:4.3.0:mail transient:451:4.3.0:mail\n"
                   "! start id=2 from=s@x.test to=a@x.test\n"
                   "C: RSET\n"
                   "S: 250 ok\n"
                   "C: MAIL FROM:<s@x.test>\n");
  // With a small window the refused MAIL's reply arrives before the rest is sent:
  // nothing more goes out.
  ExpectTranscript("! options pipeline=45\n" + kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "S: 550 no\n"
                   "S: 503 need MAIL\n"
                   "E: done 1 permanent:550:5.0.0:mail permanent:550:5.0.0:mail\n");
}

TEST(Client, DataRefusedAndDataDoneFailures) {
  ExpectTranscript(kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: RCPT TO:<b@x.test>\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 550 5.1.1 no\n"
                   "S: 451 4.3.0 DATA not now\n"
                   "E: done 1 transient:451:4.3.0:data permanent:550:5.1.1:rcpt\n"
                   "M: hi\n"
                   "! start id=2 from=s@x.test to=a@x.test\n"
                   "C: RSET\n"
                   "S: 250 ok\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 354 go\n"
                   "C: hi\n"
                   "C: .\n"
                   "S: 554 5.7.1 spam\n"
                   "E: done 2 permanent:554:5.7.1:data-done\n"
                   // The end-of-data reply ends the transaction either way: no RSET.
                   "M: hi\n"
                   "! start id=3 from=s@x.test to=a@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 354 go\n"
                   "C: hi\n"
                   "C: .\n"
                   "S: 452 4.3.1 disk full\n"
                   "E: done 3 transient:452:4.3.1:data-done\n");
}

TEST(Client, RsetRefusedEndsTheSession) {
  ExpectTranscript(kPlain +
                   "! start id=1 from=s@x.test to=a@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "S: 550 no\n"
                   "E: done 1 permanent:550:5.0.0:mail\n"
                   "! start id=2 from=s@x.test to=a@x.test,b@x.test\n"
                   "C: RSET\n"
                   "S: 502 5.5.2 RSET? never heard of it\n"
                   "E: done 2 transient:451:4.3.0:rset transient:451:4.3.0:rset\n"
                   "C: QUIT\n"
                   "S: 221 bye\n"
                   "E: closed transient:451:4.3.0:rset\n");
}

// --- The session ends mid-transaction. ----------------------------------------------

TEST(Client, ConnectionLossFailsUndecidedRecipientsTransiently) {
  const std::string start = kPipelined +
                            "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                            "C: MAIL FROM:<s@x.test>\n"
                            "C: RCPT TO:<a@x.test>\n"
                            "C: RCPT TO:<b@x.test>\n"
                            "C: DATA\n";
  ExpectTranscript(start +
                   "S: 250 ok\n"
                   "S: 550 5.1.1 no\n"
                   "! eof\n"
                   "E: done 1 permanent:550:5.1.1:rcpt transient:451:4.4.2:rcpt\n"
                   "E: closed transient:451:4.4.2:rcpt\n");
  ExpectTranscript(start +
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "! timeout\n"
                   "E: done 1 transient:451:4.4.2:data transient:451:4.4.2:data\n"
                   "E: closed transient:451:4.4.2:data\n");
  ExpectTranscript(
      start +
      "S: 250 ok\n"
      "S: 250 ok\n"
      "S: 250 ok\n"
      "S: 354 go\n"
      "C: .\n"
      "! ioerror ECONNRESET\n"
      "E: done 1 transient:451:4.4.2:data-done transient:451:4.4.2:data-done\n"
      "E: closed transient:451:4.4.2:data-done\n");
  // 421 after the message: the server says it did not take it.
  ExpectTranscript(
      start +
      "S: 250 ok\n"
      "S: 250 ok\n"
      "S: 250 ok\n"
      "S: 354 go\n"
      "C: .\n"
      "S: 421 4.4.1 timeout\n"
      "E: done 1 transient:421:4.4.1:data-done transient:421:4.4.1:data-done\n"
      "E: closed transient:421:4.4.1:data-done\n");
  // Replies already received are handled before the EOF that followed them.
  ExpectTranscript(start +
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 354 go\n"
                   "C: .\n"
                   "R: 250 queued\\r\\n\n"
                   "! eof\n"
                   "E: done 1 accepted:250:2.0.0:data-done accepted:250:2.0.0:data-done\n"
                   "E: closed transient:451:4.4.2:connect\n");
}

TEST(Client, LossTextsNameTheStageAndTheDuplicateRisk) {
  auto run = [](bool written, auto feed) {
    Session s;
    s.Handshake({"PIPELINING"});
    EXPECT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"})).ok());
    s.Out();
    s.Server("250 ok\r\n250 ok\r\n354 go\r\n");
    EXPECT_EQ(s.c.PendingOutput(), "hi\r\n.\r\n");
    if (written) s.Out();
    feed(s.c);
    s.Drain();
    EXPECT_EQ(s.events.size(), 2u);
    EXPECT_EQ(s.c.PendingOutput(), "");
    EXPECT_TRUE(s.c.closed());
    return s.Done().rcpt_outcomes.at(0).text + " | " + s.Closed(1).reason.text;
  };
  EXPECT_EQ(run(true, [](Client& c) { c.FeedEof(); }),
            "connection lost while awaiting data-done reply (message may have been "
            "delivered) | connection lost while awaiting data-done reply (message may "
            "have been delivered)");
  EXPECT_EQ(run(false, [](Client& c) { c.FeedIoError("write: Broken pipe"); }),
            "I/O error (write: Broken pipe) while awaiting data-done reply | I/O error "
            "(write: Broken pipe) while awaiting data-done reply");
  EXPECT_EQ(
      run(true, [](Client& c) { c.FeedTimeout(); }),
      "timed out while awaiting data-done reply (message may have been delivered) | "
      "timed out while awaiting data-done reply (message may have been delivered)");
}

TEST(Client, ProtocolErrorsCloseWithoutQuit) {
  const std::string start = kPipelined +
                            "! start id=1 from=s@x.test to=a@x.test,b@x.test\n"
                            "C: MAIL FROM:<s@x.test>\n"
                            "C: RCPT TO:<a@x.test>\n"
                            "C: RCPT TO:<b@x.test>\n"
                            "C: DATA\n";
  const char* garbage[] = {
      "S: 25O ok\n",  // letter O
      "S: 250ok\n",
      "S: 250-ok\nS: 550 no\n",                        // code changes within a reply
      "S: 354 go\n",                                   // 354 to MAIL
      "S: 250 ok\nS: 250 ok\nS: 250 ok\nS: 250 ok\n",  // 2xx to DATA
      "S: 150 ok\n",
  };
  for (const char* g : garbage) {
    std::string t = start + g;
    // Where the bad reply lands decides the stage; every undecided recipient is
    // transient, and nothing (no QUIT) is written afterwards.
    Session s;
    s.Handshake({"PIPELINING"});
    ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@x.test", "b@x.test"})).ok());
    s.Out();
    std::string bytes;
    for (std::string_view rest = g; !rest.empty();) {
      size_t nl = rest.find('\n');
      bytes += std::string(rest.substr(3, nl - 3)) + "\r\n";
      rest.remove_prefix(nl + 1);
    }
    s.Server(bytes);
    ASSERT_EQ(s.events.size(), 2u) << g;
    for (const Outcome& o : s.Done().rcpt_outcomes) {
      EXPECT_EQ(o.kind, Outcome::Kind::kTransient) << g;
      EXPECT_EQ(o.code, 451) << g;
      EXPECT_EQ(o.enhanced, "4.4.2") << g;
      EXPECT_EQ(o.text.rfind("protocol error (", 0), 0u) << o.text;
    }
    EXPECT_EQ(s.Closed(1).reason.kind, Outcome::Kind::kTransient);
    EXPECT_EQ(s.c.PendingOutput(), "") << g;
    EXPECT_TRUE(s.c.closed());
    // A closed client stays closed.
    s.Server("250 ok\r\n");
    s.c.FeedEof();
    s.Drain();
    EXPECT_EQ(s.events.size(), 2u);
    EXPECT_FALSE(s.c.StartTransaction(Env(2, {"a@x.test"})).ok());
    EXPECT_EQ(s.c.waiting_for(), Wait::kNone);
  }
  ExpectTranscript(start +
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "R: 250 a\\nbare LF\\r\\n\n"
                   "S: 2500 ok\n"
                   "E: done 1 transient:451:4.4.2:data transient:451:4.4.2:data\n"
                   "E: closed transient:451:4.4.2:data\n");
  ExpectTranscript("! options max_line=30\n" + kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: DATA\n"
                   "R: 250 ok ok ok ok ok ok ok ok ok ok ok ok\n"
                   "E: done 1 transient:451:4.4.2:mail\n"
                   "E: closed transient:451:4.4.2:mail\n");
}

TEST(Client, ServerTalkingWhileIdle) {
  ExpectTranscript(kPipelined +
                   "S: 421 4.4.2 idle timeout\n"
                   "E: closed transient:421:4.4.2:connect\n");
  ExpectTranscript(kPipelined +
                   "S: 250 surprise\n"
                   "E: closed transient:451:4.4.2:connect\n");
  ExpectTranscript(kPipelined +
                   "! eof\n"
                   "E: closed transient:451:4.4.2:connect\n");
  // Bytes that arrive while idle and are not yet a whole reply would be taken for
  // MAIL's reply: StartTransaction refuses and the session closes.
  Session s;
  s.Handshake({"PIPELINING"});
  s.Server("250 o");
  EXPECT_TRUE(s.events.empty());
  absl::Status st = s.c.StartTransaction(Env(1, {"a@d.test"}));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_EQ(s.c.PendingOutput(), "");
  s.Drain();
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.Closed(0).reason.stage, Stage::kConnect);
  EXPECT_EQ(
      s.Closed(0).reason.text,
      "protocol error (server sent data while no command was outstanding) while idle");
  // A whole 421 fed but not yet drained: handled as a 421.
  Session t;
  t.Handshake({});
  t.c.Feed("421 bye\r\n");
  EXPECT_FALSE(t.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  t.Drain();
  ASSERT_EQ(t.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(t.events[0]), "closed transient:421:4.0.0:connect");
  // A stale timer while idle is not a failure.
  Session u;
  u.Handshake({});
  u.c.FeedTimeout();
  u.Drain();
  EXPECT_TRUE(u.events.empty());
  EXPECT_TRUE(u.c.idle());
}

TEST(Client, DataSentBeforeItsCommandEndsTheSession) {
  // A fake EHLO reply riding behind the greeting: it would pass for EHLO's answer.
  Session s;
  s.Server("220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
  EXPECT_EQ(s.c.PendingOutput(), "") << "EHLO must not be written";
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(s.events[0]), "closed transient:451:4.4.2:ehlo");

  // "250" right behind 354 would pass for the end-of-data reply: the body is not sent
  // and the recipient stays undelivered (transient) rather than falsely delivered.
  Session t;
  t.Handshake({});
  ASSERT_TRUE(t.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  t.Out();
  t.Server("250 ok\r\n");
  t.Out();
  t.Server("250 ok\r\n");
  EXPECT_EQ(t.Out(), "DATA\r\n");
  t.Server("354 go\r\n250 2.0.0 queued\r\n");
  EXPECT_EQ(t.c.PendingOutput(), "");
  ASSERT_EQ(t.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(t.events[0]), "done 1 transient:451:4.4.2:data-done");
  EXPECT_EQ(t.Done().rcpt_outcomes[0].text,
            "protocol error (server sent data before the command it answers) while "
            "awaiting data-done reply");

  // The same without PIPELINING, between MAIL and RCPT.
  Session u;
  u.Handshake({});
  ASSERT_TRUE(u.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  u.Out();
  u.Server("250 ok\r\n250 ok\r\n");
  EXPECT_EQ(u.c.PendingOutput(), "");
  EXPECT_TRUE(u.c.closed());
}

TEST(Client, ConnectFailure) {
  Session s;
  EXPECT_EQ(s.c.waiting_for(), Wait::kGreeting);
  s.c.FeedIoError("connect: Connection refused");
  s.Drain();
  ASSERT_EQ(s.events.size(), 1u);
  const Outcome& r = s.Closed(0).reason;
  EXPECT_EQ(DescribeOutcome(r), "transient:451:4.4.2:connect");
  EXPECT_EQ(r.text, "I/O error (connect: Connection refused) while connecting");
  ExpectTranscript("! timeout\nE: closed transient:451:4.4.2:greeting\n");
  ExpectTranscript("R: 220 mx\n! eof\nE: closed transient:451:4.4.2:greeting\n");
}

// --- Quit. --------------------------------------------------------------------------

TEST(Client, Quit) {
  ExpectTranscript(kPipelined +
                   "! quit\n"
                   "C: QUIT\n"
                   "! wait quit\n"
                   "S: 221 2.0.0 bye\n"
                   "E: closed accepted:221:2.0.0:quit\n"
                   "! wait none\n");
  ExpectTranscript(kPipelined +
                   "! quit\nC: QUIT\n! eof\nE: closed accepted:221:2.0.0:quit\n");
  ExpectTranscript(kPipelined +
                   "! quit\nC: QUIT\n! timeout\nE: closed accepted:221:2.0.0:quit\n");
  ExpectTranscript(kPipelined +
                   "! quit\nC: QUIT\nS: 500 what\nE: closed accepted:221:2.0.0:quit\n");
  // Quit() during a transaction waits for it to finish; during the handshake, for
  // SessionReady.
  ExpectTranscript(kPipelined +
                   "! start id=1 from=s@x.test to=a@x.test\n"
                   "! quit\n"
                   "C: MAIL FROM:<s@x.test>\n"
                   "C: RCPT TO:<a@x.test>\n"
                   "C: DATA\n"
                   "S: 250 ok\n"
                   "S: 250 ok\n"
                   "S: 354 go\n"
                   "C: .\n"
                   "S: 250 ok\n"
                   "E: done 1 accepted:250:2.0.0:data-done\n"
                   "C: QUIT\n"
                   "S: 221 bye\n"
                   "E: closed accepted:221:2.0.0:quit\n");
  ExpectTranscript(
      "! quit\n"
      "S: 220 mx\n"
      "C: EHLO localhost\n"
      "S: 250 mx\n"
      "E: ready esmtp\n"
      "C: QUIT\n"
      "S: 221 bye\n"
      "E: closed accepted:221:2.0.0:quit\n");
  Session s;
  s.Handshake({});
  s.c.Quit();
  EXPECT_FALSE(s.c.idle());
  EXPECT_EQ(s.c.StartTransaction(Env(1, {"a@d.test"})).code(),
            absl::StatusCode::kFailedPrecondition);
  s.c.Quit();  // once is enough
  EXPECT_EQ(s.Out(), "QUIT\r\n");
}

// --- Caller errors. -----------------------------------------------------------------

TEST(Client, StartTransactionChecksItsArguments) {
  Session s;
  EXPECT_EQ(s.c.StartTransaction(Env(1, {"a@d.test"})).code(),
            absl::StatusCode::kFailedPrecondition)
      << "before the greeting";
  s.Handshake({"PIPELINING"});
  const Envelope bad[] = {
      Env(1, {}),
      Env(1, {""}),
      Env(1, {"a@d.test\r\nRCPT TO:<evil@x.test>"}),
      Env(1, {"a@d.test>"}),
      Env(1, {"a@d.test"}, "x", "s@x.test\n"),
      Env(1, {"a@d.test"}, "x", "<s@x.test>"),
      Env(1, {std::string("a\0b@d.test", 10)}),
  };
  for (const auto& e : bad) {
    EXPECT_EQ(s.c.StartTransaction(e).code(), absl::StatusCode::kInvalidArgument)
        << (e.rcpts.empty() ? "" : e.rcpts[0]);
    EXPECT_EQ(s.c.PendingOutput(), "");
  }
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  EXPECT_EQ(s.c.StartTransaction(Env(2, {"a@d.test"})).code(),
            absl::StatusCode::kFailedPrecondition)
      << "one transaction at a time";
}

TEST(Client, PartialWritesAndOutputOrder) {
  Session s;
  s.Handshake({"PIPELINING"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  const std::string want = "MAIL FROM:<s@src.test>\r\nRCPT TO:<a@d.test>\r\nDATA\r\n";
  std::string got;
  while (!s.c.PendingOutput().empty()) {
    got += s.c.PendingOutput().substr(0, 5);
    s.c.ConsumeOutput(std::min<size_t>(5, s.c.PendingOutput().size()));
  }
  EXPECT_EQ(got, want);
  // Replies may arrive before the whole command group has been written.
  s.Server("250 ok\r\n250 ok\r\n354 go\r\n");
  s.c.ConsumeOutput(1);
  EXPECT_EQ(s.c.PendingOutput(), "i\r\n.\r\n");
}

TEST(Client, ByteAtATimeLargeEhloIsLinear) {
  // 100 lines of 4000 octets, fed one byte at a time.
  Session s;
  s.Server("220 mx\r\n");
  s.Out();
  std::string reply = "250-mx\r\n";
  for (int i = 0; i < 98; ++i) reply += "250-X" + std::string(3995, 'a') + "\r\n";
  reply += "250 PIPELINING\r\n";
  for (char c : reply) {
    s.c.Feed(std::string_view(&c, 1));
    s.Drain();
  }
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_TRUE(std::get<SessionReady>(s.events[0]).caps.pipelining);
}

TEST(Client, ValidateEhloName) {
  EXPECT_TRUE(ValidateEhloName("mx.src.test").ok());
  EXPECT_TRUE(ValidateEhloName("[192.0.2.1]").ok());
  for (std::string bad : {std::string(), std::string("a b"), std::string("a\r\nQUIT"),
                          std::string("<x>"), std::string(256, 'a')}) {
    EXPECT_EQ(ValidateEhloName(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(Client, StageNames) {
  EXPECT_EQ(StageName(Stage::kConnect), "connect");
  EXPECT_EQ(StageName(Stage::kGreeting), "greeting");
  EXPECT_EQ(StageName(Stage::kEhlo), "ehlo");
  EXPECT_EQ(StageName(Stage::kHelo), "helo");
  EXPECT_EQ(StageName(Stage::kMail), "mail");
  EXPECT_EQ(StageName(Stage::kRcpt), "rcpt");
  EXPECT_EQ(StageName(Stage::kData), "data");
  EXPECT_EQ(StageName(Stage::kDataDone), "data-done");
  EXPECT_EQ(StageName(Stage::kRset), "rset");
  EXPECT_EQ(StageName(Stage::kQuit), "quit");
}

// --- Later additions: 421 behind a reply, STARTTLS, CHUNKING, 8-bit downgrade. ------

TEST(Client, A421RightBehindAnotherReplyIsA421) {
  // RFC 5321 section 3.8: a server may say 421 at any time, even in the same write
  // as a reply. It must end the session as a 421, not as a protocol error.
  Session s;
  s.Server("220 mx\r\n421 4.3.2 shutting down\r\n");
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(s.events[0]), "closed transient:421:4.3.2:ehlo");

  Session t;
  t.Handshake({});
  ASSERT_TRUE(t.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  EXPECT_EQ(t.Out(), "MAIL FROM:<s@src.test>\r\n");
  t.Server("250 ok\r\n421 4.4.2 idle too long\r\n");
  ASSERT_EQ(t.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(t.events[0]), "done 1 transient:421:4.4.2:rcpt");
  EXPECT_TRUE(t.c.closed());

  // Split: the 421 arrives in pieces after the 354; the body already went out, and
  // the recipient is deferred with the 421, never reported delivered.
  Session u;
  u.Handshake({"PIPELINING"});
  ASSERT_TRUE(u.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  u.Out();
  u.Server("250 ok\r\n250 ok\r\n354 go\r\n42");
  EXPECT_EQ(u.Out(), "hi\r\n.\r\n");
  u.Server("1 4.3.0 bye\r\n");
  ASSERT_EQ(u.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(u.events[0]), "done 1 transient:421:4.3.0:data-done");

  // Anything other than 421 in the same place is still a protocol error.
  Session v;
  v.Server("220 mx\r\n2");
  EXPECT_EQ(v.Out(), "EHLO localhost\r\n");
  v.Server("50 mx\r\n");
  ASSERT_EQ(v.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(v.events[0]), "closed transient:451:4.4.2:ehlo");
}

ClientOptions Tls(TlsPolicy policy) {
  ClientOptions o;
  o.tls = policy;
  return o;
}

TEST(Client, StartTlsInjectionClosesUnread) {
  // CVE-2011-0411: bytes behind the 220 were sent in plaintext and must never be read
  // as a reply once TLS is up. Whole: caught at the 220.
  Session s(Tls(TlsPolicy::kOpportunistic));
  s.Server("220 mx\r\n");
  EXPECT_EQ(s.Out(), "EHLO localhost\r\n");
  s.Server("250-mx\r\n250 STARTTLS\r\n");
  EXPECT_EQ(s.Out(), "STARTTLS\r\n");
  s.Server("220 go ahead\r\n250-mx\r\n250 PIPELINING\r\n");
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(s.events[0]), "closed transient:451:4.4.2:starttls");
  EXPECT_EQ(std::get<SessionClosed>(s.events[0]).reason.text,
            "protocol error (server sent data after its 220 reply to STARTTLS, before "
            "the TLS handshake) while awaiting starttls reply");
  EXPECT_EQ(s.c.PendingOutput(), "");

  // In a later read, during the handshake: the reactor gives those bytes to TLS, and
  // if plaintext reaches the client anyway the session ends.
  Session t(Tls(TlsPolicy::kOpportunistic));
  t.Server("220 mx\r\n");
  t.Out();
  t.Server("250-mx\r\n250 STARTTLS\r\n");
  t.Out();
  t.Server("220 go ahead\r\n");
  ASSERT_EQ(t.events.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<StartTls>(t.events[0]));
  EXPECT_EQ(t.c.waiting_for(), Wait::kTlsHandshake);
  t.Server("250 mx\r\n");
  ASSERT_EQ(t.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(t.events[1]), "closed transient:451:4.7.5:starttls");
}

TEST(Client, TlsHandshakeFailureAndTimeout) {
  for (int timeout = 0; timeout < 2; ++timeout) {
    Session s(Tls(TlsPolicy::kRequired));
    s.Server("220 mx\r\n");
    s.Out();
    s.Server("250-mx\r\n250 STARTTLS\r\n");
    s.Out();
    s.Server("220 go ahead\r\n");
    s.c.Quit();  // takes effect when idle, which never comes
    if (timeout) {
      s.c.FeedTimeout();
    } else {
      s.c.FeedIoError("TLS handshake: certificate verify failed");
    }
    s.Drain();
    ASSERT_EQ(s.events.size(), 2u);
    EXPECT_EQ(DescribeEvent(s.events[1]), timeout ? "closed transient:451:4.4.2:starttls"
                                                   : "closed transient:451:4.7.5:starttls");
    EXPECT_EQ(std::get<SessionClosed>(s.events[1]).reason.text,
              timeout ? "timed out during the TLS handshake"
                      : "I/O error (TLS handshake: certificate verify failed) during the "
                        "TLS handshake");
    EXPECT_EQ(s.c.PendingOutput(), "");
  }
}

TEST(Client, TlsOffNeverSendsStartTls) {
  Session s;  // TlsPolicy::kOff is the default
  s.Handshake({"STARTTLS", "PIPELINING"});
  EXPECT_TRUE(s.caps.starttls);
  EXPECT_TRUE(s.c.idle());
}

TEST(Client, ChunkingOnlyWhenEnabledAndAdvertised) {
  ClientOptions on;
  on.chunking = true;
  Session s(on);
  s.Handshake({"PIPELINING"});  // not advertised: DATA
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  EXPECT_EQ(s.Out(), "MAIL FROM:<s@src.test>\r\nRCPT TO:<a@d.test>\r\nDATA\r\n");

  Session t;  // advertised, not enabled: DATA
  t.Handshake({"PIPELINING", "CHUNKING"});
  ASSERT_TRUE(t.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  EXPECT_EQ(t.Out(), "MAIL FROM:<s@src.test>\r\nRCPT TO:<a@d.test>\r\nDATA\r\n");

  // Without PIPELINING, BDAT waits for the RCPT replies like any command, and is not
  // sent when every recipient was refused.
  Session u(on);
  u.Handshake({"CHUNKING"});
  ASSERT_TRUE(u.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  EXPECT_EQ(u.Out(), "MAIL FROM:<s@src.test>\r\n");
  u.Server("250 ok\r\n");
  EXPECT_EQ(u.Out(), "RCPT TO:<a@d.test>\r\n");
  u.Server("250 ok\r\n");
  EXPECT_EQ(u.Out(), "BDAT 3 LAST\r\nx\r\n");
  EXPECT_EQ(u.c.waiting_for(), Wait::kDataDone);
  u.Server("250 ok\r\n");
  ASSERT_EQ(u.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(u.events[0]), "done 1 accepted:250:2.0.0:data-done");
  ASSERT_TRUE(u.c.StartTransaction(Env(2, {"b@d.test"}, "x")).ok());
  u.Out();
  u.Server("250 ok\r\n");
  u.Out();
  u.Server("550 5.1.1 no\r\n");
  EXPECT_EQ(u.Out(), "");
  ASSERT_EQ(u.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(u.events[1]), "done 2 permanent:550:5.1.1:rcpt");
}

TEST(Client, PipeliningSwitchedOffForTheDestination) {
  ClientOptions off;
  off.pipelining = false;
  Session s(off);
  s.Handshake({"PIPELINING"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test", "b@d.test"})).ok());
  EXPECT_EQ(s.Out(), "MAIL FROM:<s@src.test>\r\n");
  s.Server("250 ok\r\n");
  EXPECT_EQ(s.Out(), "RCPT TO:<a@d.test>\r\n");
}

TEST(Client, EightBitBodyToA7BitServerIsConvertedOrBounced) {
  Session s;
  s.Handshake({"PIPELINING", "SIZE"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"}, "Subject: x\n\ncaf\xc3\xa9 =\n"))
                  .ok());
  EXPECT_EQ(s.Out(), "MAIL FROM:<s@src.test> SIZE=93\r\nRCPT TO:<a@d.test>\r\nDATA\r\n");
  s.Server("250 ok\r\n250 ok\r\n354 go\r\n");
  EXPECT_EQ(s.Out(),
            "Subject: x\r\nMIME-Version: 1.0\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3D\r\n.\r\n");

  // What cannot be converted faithfully is bounced, 5.6.3, and never sent.
  Session t;
  t.Handshake({"PIPELINING"});
  ASSERT_TRUE(
      t.c.StartTransaction(Env(1, {"a@d.test"}, "Subject: caf\xc3\xa9\n\nbody\n")).ok());
  t.Drain();
  EXPECT_EQ(t.Out(), "");
  ASSERT_EQ(t.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(t.events[0]), "done 1 permanent:554:5.6.3:mail");
  EXPECT_EQ(t.Done().rcpt_outcomes[0].text,
            "cannot convert the message to 7 bits: 8-bit octets in header line 1; the "
            "server offers neither 8BITMIME nor SMTPUTF8");
}

// Envelope in a prepared form (content.h ContentForm), as engine/compose.h makes it.
Envelope Prepared(Envelope e, ContentForm form) {
  uint64_t size = 0;
  e.eight_bit = HasEightBit(e.content);
  e.content = form == ContentForm::kBdat ? PrepareBdat(e.content, &size)
                                         : PrepareData(e.content, &size);
  e.form = form;
  e.message_size = size;
  return e;
}

TEST(Client, PreparedContentGoesOutAsTheMessageWould) {
  // Each session gets the same message three ways: as a message, prepared in the
  // session's own form, and prepared in the other form (turned back, then sent);
  // what goes out is the same every time.
  const std::string message = "Subject: x\n\n.lead\r\ncaf\xc3\xa9\n..\n";
  struct Case {
    std::vector<std::string> extensions;
    bool chunking;
    ContentForm form;  // the session's
  };
  const Case cases[] = {
      {{"PIPELINING", "SIZE", "8BITMIME"}, false, ContentForm::kData},
      {{"PIPELINING", "SIZE", "8BITMIME", "CHUNKING"}, true, ContentForm::kBdat},
      {{"PIPELINING", "SIZE"}, false, ContentForm::kData},  // no 8BITMIME: converted
      {{"PIPELINING", "SIZE", "CHUNKING"}, true, ContentForm::kBdat},
  };
  for (const Case& c : cases) {
    std::vector<std::string> sent;
    for (ContentForm form : {ContentForm::kMessage, ContentForm::kData, ContentForm::kBdat}) {
      ClientOptions opts;
      opts.chunking = c.chunking;
      Session s(opts);
      s.Handshake(c.extensions);
      EXPECT_EQ(s.c.content_form(), c.form);
      Envelope e = Env(1, {"a@d.test"}, message);
      if (form != ContentForm::kMessage) e = Prepared(std::move(e), form);
      ASSERT_TRUE(s.c.StartTransaction(std::move(e)).ok());
      std::string out = s.Out();
      if (c.form == ContentForm::kData) {
        s.Server("250 ok\r\n250 ok\r\n354 go\r\n");
        out += s.Out();
      }
      sent.push_back(out);
    }
    EXPECT_EQ(sent[1], sent[0]) << c.extensions.size();
    EXPECT_EQ(sent[2], sent[0]) << c.extensions.size();
    EXPECT_NE(sent[0].find(c.form == ContentForm::kBdat ? "BDAT" : "\r\n..lead\r\n"),
              std::string::npos)
        << sent[0];
  }
}

TEST(Client, PreparedContentIsTakenAsVouchedFor) {
  // The client trusts eight_bit and message_size: that is what spares it the scan.
  Session s;
  s.Handshake({"PIPELINING", "SIZE", "8BITMIME"});
  Envelope e = Env(1, {"a@d.test"}, "x\r\n.\r\n");
  e.form = ContentForm::kData;
  e.eight_bit = true;
  e.message_size = 77;
  ASSERT_TRUE(s.c.StartTransaction(std::move(e)).ok());
  EXPECT_EQ(s.Out(),
            "MAIL FROM:<s@src.test> BODY=8BITMIME SIZE=77\r\nRCPT TO:<a@d.test>\r\nDATA\r\n");
  s.Server("250 ok\r\n250 ok\r\n354 go\r\n");
  EXPECT_EQ(s.Out(), "x\r\n.\r\n");
}

TEST(Client, RsetStillOwedAfterATransactionDecidedWithoutSending) {
  // Found by fuzz_smtp_client: a failed transaction, then one refused before a byte
  // went out (over SIZE), then a third: the third must still start with RSET.
  Session s;
  s.Handshake({"PIPELINING", "SIZE 100"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  s.Out();
  s.Server("250 ok\r\n550 no\r\n554 no valid\r\n");
  ASSERT_TRUE(s.c.StartTransaction(Env(2, {"b@d.test"}, std::string(200, 'x'))).ok());
  s.Drain();
  EXPECT_EQ(s.Out(), "");
  ASSERT_EQ(s.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(s.events[1]), "done 2 permanent:552:5.3.4:mail");
  ASSERT_TRUE(s.c.StartTransaction(Env(3, {"c@d.test"})).ok());
  EXPECT_EQ(s.Out(), "RSET\r\n");
}

TEST(Client, AReplyToACommandNotYetWrittenIsAProtocolError) {
  // Found by fuzz_smtp_client: DATA is still in PendingOutput() (the caller has not
  // taken it) when "354" arrives in a later read. The server cannot have seen DATA,
  // so the 354 is not its reply and the body must not follow.
  Session s;
  s.Handshake({});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  EXPECT_EQ(s.Out(), "MAIL FROM:<s@src.test>\r\n");
  s.Server("250 ok\r\n");
  EXPECT_EQ(s.Out(), "RCPT TO:<a@d.test>\r\n");
  s.Server("250 ok\r\n");
  EXPECT_EQ(s.c.PendingOutput(), "DATA\r\n");  // not taken by the caller
  s.Server("354 go\r\n");
  EXPECT_EQ(s.c.PendingOutput(), "");
  ASSERT_EQ(s.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(s.events[0]), "done 1 transient:451:4.4.2:data");
  EXPECT_TRUE(s.c.closed());

  // A 421 there is still a 421.
  Session t;
  t.Handshake({});
  ASSERT_TRUE(t.c.StartTransaction(Env(1, {"a@d.test"})).ok());
  t.Server("421 4.3.2 bye\r\n");
  ASSERT_EQ(t.events.size(), 2u);
  EXPECT_EQ(DescribeEvent(t.events[0]), "done 1 transient:421:4.3.2:mail");
}

// --- Transactions in flight (max_transactions_in_flight). ---------------------------

ClientOptions InFlight(size_t transactions) {
  ClientOptions o;
  o.chunking = true;
  o.max_transactions_in_flight = transactions;
  return o;
}

TEST(Client, TakesTheNextTransactionOnlyBehindAWholeBdat) {
  // The default: one transaction at a time.
  Session one(InFlight(1));
  one.Handshake({"PIPELINING", "CHUNKING"});
  EXPECT_EQ(one.c.max_in_flight(), 1u);
  ASSERT_TRUE(one.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  EXPECT_FALSE(one.c.accepts_transaction());
  EXPECT_EQ(one.c.StartTransaction(Env(2, {"b@d.test"}, "x")).code(),
            absl::StatusCode::kFailedPrecondition);

  // Two: the second goes in the same output, the third waits for a reply.
  Session two(InFlight(2));
  two.Handshake({"PIPELINING", "CHUNKING"});
  EXPECT_EQ(two.c.max_in_flight(), 2u);
  EXPECT_TRUE(two.c.accepts_transaction());
  ASSERT_TRUE(two.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  EXPECT_TRUE(two.c.accepts_transaction());
  ASSERT_TRUE(two.c.StartTransaction(Env(2, {"b@d.test"}, "y")).ok());
  EXPECT_EQ(two.c.transactions(), 2u);
  EXPECT_FALSE(two.c.accepts_transaction());
  EXPECT_EQ(two.Out(),
            "MAIL FROM:<s@src.test>\r\nRCPT TO:<a@d.test>\r\nBDAT 3 LAST\r\nx\r\n"
            "MAIL FROM:<s@src.test>\r\nRCPT TO:<b@d.test>\r\nBDAT 3 LAST\r\ny\r\n");
  EXPECT_EQ(two.c.waiting_for(), Wait::kMail);
  two.Server("250 ok\r\n250 ok\r\n250 ok\r\n");
  ASSERT_EQ(two.events.size(), 1u);
  EXPECT_EQ(DescribeEvent(two.events[0]), "done 1 accepted:250:2.0.0:data-done");
  EXPECT_EQ(two.c.transactions(), 1u);
  EXPECT_TRUE(two.c.accepts_transaction());
  EXPECT_FALSE(two.c.idle());

  // A refused recipient is no failure of the transaction; all refused is.
  two.Server("250 ok\r\n550 5.1.1 no\r\n");
  EXPECT_FALSE(two.c.accepts_transaction()) << "behind a transaction nobody will receive";
  two.Server("554 5.5.1 no valid recipients\r\n");
  EXPECT_EQ(DescribeEvent(two.events.at(1)), "done 2 permanent:550:5.1.1:rcpt");
  EXPECT_TRUE(two.c.idle());
  ASSERT_TRUE(two.c.StartTransaction(Env(3, {"c@d.test"}, "x")).ok());
  EXPECT_FALSE(two.c.accepts_transaction()) << "RSET goes alone, before MAIL";
  EXPECT_EQ(two.Out(), "RSET\r\n");

  // DATA waits for its 354: nothing is pipelined behind it.
  ClientOptions data = InFlight(4);
  data.chunking = false;
  Session d(data);
  d.Handshake({"PIPELINING", "CHUNKING"});
  EXPECT_EQ(d.c.max_in_flight(), 1u);
  ASSERT_TRUE(d.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  EXPECT_FALSE(d.c.accepts_transaction());

  // Without PIPELINING, or while the window holds a command back, neither.
  Session p(InFlight(4));
  p.Handshake({"CHUNKING"});
  EXPECT_EQ(p.c.max_in_flight(), 1u);
  ASSERT_TRUE(p.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  EXPECT_FALSE(p.c.accepts_transaction());
  ClientOptions narrow = InFlight(4);
  narrow.max_pipeline_bytes = 30;
  Session w(narrow);
  w.Handshake({"PIPELINING", "CHUNKING"});
  ASSERT_TRUE(w.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  EXPECT_EQ(w.Out(), "MAIL FROM:<s@src.test>\r\n");
  EXPECT_FALSE(w.c.accepts_transaction());

  // Nor once Quit() was asked for.
  Session q(InFlight(2));
  q.Handshake({"PIPELINING", "CHUNKING"});
  ASSERT_TRUE(q.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  q.c.Quit();
  EXPECT_FALSE(q.c.accepts_transaction());
}

TEST(Client, ALossEndsEveryTransactionInFlightNamingItsOwnWait) {
  Session s(InFlight(3));
  s.Handshake({"PIPELINING", "CHUNKING"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  ASSERT_TRUE(s.c.StartTransaction(Env(2, {"b@d.test"}, "y")).ok());
  s.Out();  // both written whole
  ASSERT_TRUE(s.c.StartTransaction(Env(3, {"c@d.test"}, "z")).ok());
  const size_t third = s.c.PendingOutput().size();
  s.c.ConsumeOutput(third - 3);  // all but the end of the third message
  s.Server("250 ok\r\n250 ok\r\n");
  s.c.FeedEof();
  s.Drain();
  ASSERT_EQ(s.events.size(), 4u);
  const TransactionDone& first = s.Done(0);
  EXPECT_EQ(first.id, 1u);
  EXPECT_EQ(first.rcpt_outcomes[0].stage, Stage::kDataDone);
  EXPECT_EQ(first.rcpt_outcomes[0].text,
            "connection lost while awaiting data-done reply (message may have been delivered)");
  const TransactionDone& second = s.Done(1);
  EXPECT_EQ(second.rcpt_outcomes[0].stage, Stage::kMail);
  EXPECT_EQ(second.rcpt_outcomes[0].text, "connection lost while awaiting mail reply");
  const TransactionDone& last = s.Done(2);
  EXPECT_EQ(last.id, 3u);
  EXPECT_EQ(DescribeOutcome(last.rcpt_outcomes[0]), "transient:451:4.4.2:mail");
  EXPECT_EQ(s.Closed(3).reason.stage, Stage::kDataDone);

  // A 421 ends them all with the server's reply.
  Session t(InFlight(2));
  t.Handshake({"PIPELINING", "CHUNKING"});
  ASSERT_TRUE(t.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  ASSERT_TRUE(t.c.StartTransaction(Env(2, {"b@d.test"}, "y")).ok());
  t.Out();
  t.Server("250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
  ASSERT_EQ(t.events.size(), 3u);
  EXPECT_EQ(DescribeEvent(t.events[0]), "done 1 accepted:250:2.0.0:data-done");
  EXPECT_EQ(DescribeEvent(t.events[1]), "done 2 transient:421:4.3.2:rcpt");
  EXPECT_TRUE(std::holds_alternative<SessionClosed>(t.events[2]));
}

TEST(Client, ALossBehindAWholeMessageSaysItMayHaveBeenDelivered) {
  // The second message was written whole: its outcome must warn of a duplicate.
  Session s(InFlight(2));
  s.Handshake({"PIPELINING", "CHUNKING"});
  ASSERT_TRUE(s.c.StartTransaction(Env(1, {"a@d.test"}, "x")).ok());
  ASSERT_TRUE(s.c.StartTransaction(Env(2, {"b@d.test"}, "y")).ok());
  s.Out();
  s.Server("250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n");
  s.c.FeedEof();
  s.Drain();
  ASSERT_EQ(s.events.size(), 3u);
  EXPECT_EQ(DescribeEvent(s.events[0]), "done 1 accepted:250:2.0.0:data-done");
  EXPECT_EQ(s.Done(1).rcpt_outcomes[0].text,
            "connection lost while awaiting data-done reply (message may have been delivered)");
}

}  // namespace
}  // namespace volley::smtp
