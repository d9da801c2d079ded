// report_test - ParseReport over a corpus of reports (tests/unit/feedback/corpus/),
// written from the RFCs' examples and the shapes real MTAs emit, and over hostile
// input built here.
//
// Each corpus file is parsed as written (LF line ends) and again with CRLF line ends
// (as it arrives over SMTP): both must give the same Report.
#include "engine/feedback/report.h"

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::feedback {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string ReadCorpus(const std::string& name) {
  std::ifstream in(std::string(VOLLEY_FEEDBACK_CORPUS) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open corpus file " << name;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ToCrlf(const std::string& lf) {
  std::string out;
  for (char c : lf) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

std::string Describe(const Report& r) {
  std::ostringstream o;
  o << "kind=" << ReportKindName(r.kind) << " mta=" << r.reporting_mta << " subject=" << r.subject
    << " from=" << r.from << " truncated=" << r.truncated << "\n";
  for (const DsnRecipient& d : r.recipients) {
    o << "  rcpt " << d.final_recipient << " orig=" << d.original_recipient
      << " action=" << DsnActionName(d.action) << " status=" << d.status
      << " diag=" << d.diagnostic_code << " remote=" << d.remote_mta << "\n";
  }
  const FeedbackReport& f = r.feedback;
  o << "  fb type=" << f.feedback_type << " ua=" << f.user_agent << " mf=" << f.original_mail_from
    << " date=" << f.arrival_date << " ip=" << f.source_ip << " dom=" << f.reported_domain;
  for (const std::string& t : f.original_rcpt_to) o << " rcpt=" << t;
  o << "\n  original id=" << r.original.message_id << " from=" << r.original.from
    << " to=" << r.original.to << " subject=" << r.original.subject;
  for (const std::string& t : r.original.traces) o << " trace=" << t;
  o << "\n  text=" << r.text.size() << " octets\n";
  for (const std::string& n : r.notes) o << "  note: " << n << "\n";
  return o.str();
}

// Parse - the corpus file `name`, checked to read the same with CRLF line ends.
Report Parse(const std::string& name, std::optional<std::string> envelope = std::nullopt) {
  std::string lf = ReadCorpus(name);
  auto parse = [&](const std::string& m) {
    return envelope ? ParseReport(m, *envelope) : ParseReport(m);
  };
  absl::StatusOr<Report> a = parse(lf);
  absl::StatusOr<Report> b = parse(ToCrlf(lf));
  EXPECT_TRUE(a.ok()) << name << ": " << a.status();
  EXPECT_TRUE(b.ok()) << name << " (CRLF): " << b.status();
  if (!a.ok() || !b.ok()) return Report{};
  EXPECT_EQ(Describe(*a), Describe(*b)) << name << ": LF and CRLF differ";
  EXPECT_EQ(a->text, b->text);
  return *a;
}

TEST(CorpusTest, PostfixFailed) {
  Report r = Parse("postfix_failed.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  EXPECT_EQ(r.reporting_mta, "mx.sender.test");
  EXPECT_EQ(r.subject, "Undelivered Mail Returned to Sender");
  EXPECT_EQ(r.from, "MAILER-DAEMON@mx.sender.test");
  ASSERT_EQ(r.recipients.size(), 1u);
  const DsnRecipient& d = r.recipients[0];
  EXPECT_EQ(d.final_recipient, "nouser@example.test");
  EXPECT_EQ(d.original_recipient, "nouser@example.test");
  EXPECT_EQ(d.action, DsnAction::kFailed);
  EXPECT_EQ(d.status, "5.1.1");
  EXPECT_EQ(d.diagnostic_code,
            "smtp; 550 5.1.1 <nouser@example.test>: Recipient address rejected: User unknown in "
            "local recipient table");
  EXPECT_EQ(d.remote_mta, "mx.example.test");
  EXPECT_EQ(r.original.message_id, "job7.1.1733479200@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.cjvtcaaaaeaaaaabaaaaaaqgi6m3hk4q3yltm"));
  EXPECT_EQ(r.original.from, "news@sender.test");
  EXPECT_EQ(r.original.to, "nouser@example.test");
  EXPECT_EQ(r.original.subject, "December news");
  EXPECT_THAT(r.text, HasSubstr("This is the mail system at host mx.sender.test."));
  EXPECT_THAT(r.text, ::testing::Not(HasSubstr("\r")));
  EXPECT_FALSE(r.truncated);
}

TEST(CorpusTest, PostfixDelayed) {
  Report r = Parse("postfix_delayed.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "slow@example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kDelayed);
  EXPECT_EQ(r.recipients[0].status, "4.7.1");
  EXPECT_EQ(r.recipients[0].diagnostic_code, "smtp; 451 4.7.1 Please try again later");
  // text/rfc822-headers
  EXPECT_EQ(r.original.message_id, "job7.2.1733580000@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.slowtrace"));
  EXPECT_EQ(r.original.to, "slow@example.test");
}

TEST(CorpusTest, EximWithDsn) {
  Report r = Parse("exim_dsn.eml");
  SCOPED_TRACE(Describe(r));
  // Auto-Submitted: auto-replied and X-Failed-Recipients, but a DSN part: a DSN.
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  EXPECT_EQ(r.reporting_mta, "mx.sender.test");
  EXPECT_EQ(r.from, "Mailer-Daemon@mx.sender.test");
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "nouser@example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kFailed);
  EXPECT_EQ(r.recipients[0].status, "5.0.0");
  EXPECT_EQ(r.recipients[0].remote_mta, "mx.example.test");
  EXPECT_EQ(r.recipients[0].diagnostic_code,
            "smtp; 550 5.1.1 <nouser@example.test>: Recipient address rejected: User unknown");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.eximtrace"));
  EXPECT_EQ(r.original.message_id, "job7.1.1733479200@sender.test");
}

TEST(CorpusTest, EximPlainText) {
  Report r = Parse("exim_text.eml", "");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kBounceText);
  EXPECT_EQ(r.reporting_mta, "mx.sender.test");  // the Mailer-Daemon's domain
  ASSERT_EQ(r.recipients.size(), 2u);
  EXPECT_EQ(r.recipients[0].final_recipient, "nouser@example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kFailed);
  EXPECT_EQ(r.recipients[0].status, "5.1.1");
  EXPECT_THAT(
      r.recipients[0].diagnostic_code,
      HasSubstr("550 5.1.1 <nouser@example.test>: Recipient address rejected: User unknown"));
  EXPECT_EQ(r.recipients[1].final_recipient, "gone@example.test");
  EXPECT_EQ(r.recipients[1].status, "5.0.0");  // "550 No such user here": the reply's class
  EXPECT_THAT(r.recipients[1].diagnostic_code, HasSubstr("550 No such user here"));
  // The copy quoted in the text.
  EXPECT_EQ(r.original.message_id, "job7.3.1733479200@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.eximtexttrace"));
  EXPECT_EQ(r.original.to, "nouser@example.test, gone@example.test");
}

TEST(CorpusTest, EximDelayedText) {
  Report r = Parse("exim_delayed_text.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kBounceText);
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "slow@example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kDelayed);
  EXPECT_EQ(r.recipients[0].status, "4.7.1");
  EXPECT_THAT(r.recipients[0].diagnostic_code, HasSubstr("451 4.7.1 Greylisted"));
}

TEST(CorpusTest, SendmailDsn) {
  Report r = Parse("sendmail_dsn.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  EXPECT_EQ(r.reporting_mta, "mx.sender.test");
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "nouser@example.test");  // "RFC822;" any case
  EXPECT_EQ(r.recipients[0].status, "5.1.1");
  EXPECT_EQ(r.recipients[0].remote_mta, "mx.example.test");
  EXPECT_EQ(r.recipients[0].diagnostic_code,
            "SMTP; 550 5.1.1 <nouser@example.test>... User unknown");
  EXPECT_EQ(r.original.subject,
            "D\xC3\xA9"
            "cembre news");  // RFC 2047 decoded
  EXPECT_EQ(r.original.from, "news@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.sendmailtrace"));
  // The first part has no Content-Type: text/plain by default.
  EXPECT_THAT(r.text, HasSubstr("permanent fatal errors"));
}

TEST(CorpusTest, SendmailPlainText) {
  Report r = Parse("sendmail_text.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kBounceText);
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "olduser@old.example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kFailed);
  EXPECT_EQ(r.recipients[0].status, "5.0.0");
  EXPECT_THAT(r.recipients[0].diagnostic_code,
              HasSubstr("550 <olduser@old.example.test>... User unknown"));
  EXPECT_EQ(r.original.message_id, "job7.14@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.oldsendmailtrace"));
}

TEST(CorpusTest, ExchangeOffice365) {
  Report r = Parse("exchange_o365.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  EXPECT_EQ(r.reporting_mta, "AM0PR01MB1234.eurprd01.prod.exchangelabs.com");
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "nouser@example.test");
  EXPECT_EQ(r.recipients[0].status, "5.1.10");
  EXPECT_EQ(r.recipients[0].diagnostic_code,
            "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address "
            "lookup");
  EXPECT_EQ(r.original.message_id, "job7.5.1733479200@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.o365trace"));
  // text/plain, not the HTML alternative; quoted-printable undone.
  EXPECT_THAT(r.text,
              HasSubstr("Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
                        "Recipient not found by SMTP address lookup'"));
}

TEST(CorpusTest, ExchangePlainText) {
  Report r = Parse("exchange_text.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kBounceText);
  EXPECT_EQ(r.from, "postmaster@example.test");
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient, "nouser@example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kFailed);
  EXPECT_EQ(r.recipients[0].status, "5.1.1");  // "<ex01.example.test #5.1.1>"
  EXPECT_THAT(r.recipients[0].diagnostic_code, HasSubstr("does not exist at the organization"));
  // The original, attached as message/rfc822.
  EXPECT_EQ(r.original.message_id, "job7.6.1733479200@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.exchangetrace"));
}

TEST(CorpusTest, Gmail) {
  Report r = Parse("gmail_dsn.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  EXPECT_EQ(r.reporting_mta, "googlemail.com");
  ASSERT_EQ(r.recipients.size(), 1u);
  const DsnRecipient& d = r.recipients[0];
  EXPECT_EQ(d.final_recipient, "nouser@example.test");
  EXPECT_EQ(d.status, "5.1.1");
  EXPECT_EQ(d.remote_mta, "mx.example.test");  // trailing dot and comment gone
  EXPECT_EQ(d.diagnostic_code,
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try "
            "550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 "
            "unnecessary spaces. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser abc123 - "
            "gsmtp");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.gmailtrace"));
  EXPECT_THAT(r.text, HasSubstr("Address not found"));
}

TEST(CorpusTest, Qmail) {
  Report r = Parse("qmail.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kBounceText);
  EXPECT_EQ(r.reporting_mta, "mx.sender.test");
  ASSERT_EQ(r.recipients.size(), 2u);
  EXPECT_EQ(r.recipients[0].final_recipient, "nouser@example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kFailed);
  EXPECT_EQ(r.recipients[0].status, "5.1.1");
  EXPECT_THAT(r.recipients[0].diagnostic_code,
              HasSubstr("Remote host said: 550 5.1.1 <nouser@example.test>: Recipient address "
                        "rejected: User unknown"));
  EXPECT_EQ(r.recipients[1].final_recipient, "full@example.test");
  EXPECT_EQ(r.recipients[1].status, "5.0.0");
  EXPECT_THAT(r.recipients[1].diagnostic_code, HasSubstr("552 Mailbox full"));
  EXPECT_EQ(r.original.message_id, "job7.8.1733479200@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.qmailtrace"));
  EXPECT_EQ(r.original.subject, "December news");
}

TEST(CorpusTest, SeveralRecipients) {
  Report r = Parse("dsn_several.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  EXPECT_EQ(r.reporting_mta, "relay.example.test");  // comment and "DNS;" gone
  ASSERT_EQ(r.recipients.size(), 6u);
  EXPECT_EQ(r.recipients[0].final_recipient, "Ann@Example.test");
  EXPECT_EQ(r.recipients[0].action, DsnAction::kFailed);                       // "ACTION: Failed"
  EXPECT_EQ(r.recipients[0].status, "5.2.2");                                  // comment gone
  EXPECT_EQ(r.recipients[0].diagnostic_code, "smtp; 552 5.2.2 Mailbox full");  // unfolded
  EXPECT_EQ(r.recipients[0].remote_mta, "mx.example.test");
  EXPECT_EQ(r.recipients[1].final_recipient, "bob@example.test");
  EXPECT_EQ(r.recipients[1].action, DsnAction::kDelayed);
  EXPECT_EQ(r.recipients[1].status, "4.4.7");
  EXPECT_EQ(r.recipients[2].action, DsnAction::kDelivered);
  // Original-Recipient only; no Status: taken from the Diagnostic-Code.
  EXPECT_EQ(r.recipients[3].final_recipient, "dave@example.test");
  EXPECT_EQ(r.recipients[3].original_recipient, "dave@example.test");
  EXPECT_EQ(r.recipients[3].status, "5.7.1");
  // Two recipients in one group, the blank line forgotten.
  EXPECT_EQ(r.recipients[4].final_recipient, "eve@example.test");
  EXPECT_EQ(r.recipients[4].action, DsnAction::kRelayed);
  EXPECT_EQ(r.recipients[5].final_recipient, "frank@example.test");
  EXPECT_EQ(r.recipients[5].action, DsnAction::kExpanded);
  EXPECT_THAT(r.original.traces, ElementsAre("v1.first", "v1.second"));
  EXPECT_EQ(r.original.message_id, "job7.9@sender.test");
}

TEST(CorpusTest, GlobalDsn) {
  Report r = Parse("global_dsn.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kDeliveryStatus);
  ASSERT_EQ(r.recipients.size(), 1u);
  EXPECT_EQ(r.recipients[0].final_recipient,
            "j\xC3\xBCrgen@b\xC3\xBC"
            "cher.example.test");
  EXPECT_EQ(r.recipients[0].status, "5.1.1");
  EXPECT_EQ(r.original.message_id, "job7.10@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.globaltrace"));
  EXPECT_EQ(r.original.subject, "Neuigkeiten f\xC3\xBCr Dezember");
}

TEST(CorpusTest, ArfAbuse) {
  Report r = Parse("arf_abuse.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kFeedback);
  EXPECT_EQ(r.reporting_mta, "mail.example.test");
  const FeedbackReport& f = r.feedback;
  EXPECT_EQ(f.feedback_type, "abuse");
  EXPECT_EQ(f.user_agent, "SomeGenerator/1.0");
  EXPECT_EQ(f.original_mail_from, "b-cjvtcaaaaeaaaaabaaaaaaqgi6m3hk4q3yltm@bounces.sender.test");
  EXPECT_THAT(f.original_rcpt_to, ElementsAre("user@example.test"));
  EXPECT_EQ(f.arrival_date, "Thu, 8 Mar 2005 14:00:00 EDT");
  EXPECT_EQ(f.source_ip, "192.0.2.1");
  EXPECT_EQ(f.reported_domain, "sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.arftrace"));
  EXPECT_EQ(r.original.subject, "Earn money");
  EXPECT_THAT(r.text, HasSubstr("email abuse report"));
  EXPECT_THAT(r.recipients, IsEmpty());
}

TEST(CorpusTest, ArfHeadersOnlyRedacted) {
  Report r = Parse("arf_headers_redacted.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kFeedback);
  EXPECT_EQ(r.feedback.feedback_type, "abuse");  // "ABUSE" lower-cased
  EXPECT_EQ(r.feedback.user_agent, "ISP-FBL/2.1");
  EXPECT_THAT(r.feedback.original_rcpt_to, ElementsAre("redacted@isp.example.test"));
  EXPECT_EQ(r.feedback.arrival_date, "Sun, 6 Dec 2026 11:00:00 +0000");  // Received-Date
  EXPECT_EQ(r.feedback.original_mail_from, "");
  EXPECT_EQ(r.original.message_id, "job7.11@sender.test");
  EXPECT_THAT(r.original.traces, ElementsAre("v1.fbltrace"));
  EXPECT_EQ(r.original.from, "news@sender.test");
}

TEST(CorpusTest, AutoReplyRfc3834) {
  Report r = Parse("autoreply_rfc3834.eml", "");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kAutoReply);
  EXPECT_THAT(r.recipients, IsEmpty());
  EXPECT_EQ(r.original.message_id, "job7.12@sender.test");  // from In-Reply-To
  EXPECT_THAT(r.text, HasSubstr("I am away"));
}

TEST(CorpusTest, Vacation) {
  // "could not be delivered" in its text and a null sender: still an auto-reply.
  Report r = Parse("vacation.eml", "<>");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kAutoReply);
  EXPECT_THAT(r.recipients, IsEmpty());
}

TEST(CorpusTest, ExchangeOutOfOffice) {
  Report r = Parse("exchange_ooo.eml");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kAutoReply);
}

TEST(CorpusTest, PersonsReply) {
  Report r = Parse("person_reply.eml", "pat@example.test");
  SCOPED_TRACE(Describe(r));
  EXPECT_EQ(r.kind, ReportKind::kOther);
  EXPECT_THAT(r.recipients, IsEmpty());
  EXPECT_EQ(r.from, "pat@example.test");
  EXPECT_THAT(r.text, HasSubstr("please take me off this list"));
}

TEST(CorpusTest, EveryFileParsesWithoutNotesOfTruncation) {
  for (const char* name :
       {"postfix_failed.eml", "postfix_delayed.eml", "exim_dsn.eml", "exim_text.eml",
        "exim_delayed_text.eml", "sendmail_dsn.eml", "sendmail_text.eml", "exchange_o365.eml",
        "exchange_text.eml", "gmail_dsn.eml", "qmail.eml", "dsn_several.eml", "global_dsn.eml",
        "arf_abuse.eml", "arf_headers_redacted.eml", "autoreply_rfc3834.eml", "vacation.eml",
        "exchange_ooo.eml", "person_reply.eml"}) {
    absl::StatusOr<Report> r = ParseReport(ReadCorpus(name));
    ASSERT_TRUE(r.ok()) << name << ": " << r.status();
    EXPECT_FALSE(r->truncated) << name << "\n" << Describe(*r);
  }
}

// ---------------------------------------------------------------------------
// Kinds: the signs, one at a time

TEST(KindTest, SignsDecide) {
  struct Case {
    const char* name;
    std::string message;
    std::optional<std::string> envelope;
    ReportKind want;
  };
  const std::string body = "\r\nHello.\r\n";
  const std::string failed_body = "\r\nYour message could not be delivered to a@example.test.\r\n";
  std::vector<Case> cases = {
      {"plain mail", "From: pat@example.test\r\nSubject: hi\r\n" + body, std::nullopt,
       ReportKind::kOther},
      {"plain mail, person's envelope", "From: pat@example.test\r\nSubject: hi\r\n" + body,
       "pat@example.test", ReportKind::kOther},
      {"null sender alone: machine, not a bounce",
       "From: pat@example.test\r\nSubject: hi\r\n" + body, "", ReportKind::kAutoReply},
      {"null sender and bounce wording", "From: pat@example.test\r\nSubject: hi\r\n" + failed_body,
       "<>", ReportKind::kBounceText},
      {"bounce wording without null sender: a person may write it",
       "From: pat@example.test\r\nSubject: hi\r\n" + failed_body, std::nullopt, ReportKind::kOther},
      {"MAILER-DAEMON envelope", "From: x@example.test\r\nSubject: hi\r\n" + body,
       "MAILER-DAEMON@mx.example.test", ReportKind::kBounceText},
      {"postmaster From", "From: Postmaster <postmaster@example.test>\r\nSubject: hi\r\n" + body,
       std::nullopt, ReportKind::kBounceText},
      {"Mail Delivery System name",
       "From: Mail Delivery System <noreply@example.test>\r\nSubject: hi\r\n" + body, std::nullopt,
       ReportKind::kBounceText},
      {"bounce subject", "From: x@example.test\r\nSubject: failure notice\r\n" + body, std::nullopt,
       ReportKind::kBounceText},
      {"bounce subject in a person's reply",
       "From: x@example.test\r\nSubject: Re: Undeliverable: hi\r\n" + body, std::nullopt,
       ReportKind::kOther},
      {"Auto-Submitted: no", "From: x@example.test\r\nAuto-Submitted: no\r\nSubject: hi\r\n" + body,
       std::nullopt, ReportKind::kOther},
      {"Auto-Submitted: auto-generated",
       "From: x@example.test\r\nAuto-Submitted: auto-generated\r\nSubject: hi\r\n" + body,
       std::nullopt, ReportKind::kAutoReply},
      {"Auto-Submitted and a bounce subject (Exim)",
       "From: x@example.test\r\nAuto-Submitted: auto-replied\r\nSubject: Mail delivery failed: "
       "returning message to sender\r\n" +
           body,
       std::nullopt, ReportKind::kBounceText},
      {"X-Autoreply beats a MAILER-DAEMON sender",
       "From: MAILER-DAEMON@example.test\r\nX-Autoreply: yes\r\nSubject: hi\r\n" + body, "",
       ReportKind::kAutoReply},
      {"Precedence: auto_reply",
       "From: x@example.test\r\nPrecedence: auto_reply\r\nSubject: hi\r\n" + body, std::nullopt,
       ReportKind::kAutoReply},
      {"Precedence: bulk is not an auto-reply",
       "From: x@example.test\r\nPrecedence: bulk\r\nSubject: hi\r\n" + body, std::nullopt,
       ReportKind::kOther},
      {"Auto: subject", "From: x@example.test\r\nSubject: Auto: hi\r\n" + body, std::nullopt,
       ReportKind::kAutoReply},
      {"report-type=delivery-status without the part",
       "From: x@example.test\r\nContent-Type: multipart/report; report-type=delivery-status; "
       "boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n<a@example.test>: 550 5.1.1 "
       "unknown\r\n--b--\r\n",
       std::nullopt, ReportKind::kBounceText},
      {"delivery-status part outside multipart/report",
       "From: x@example.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
       "Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@example.test\r\n"
       "Action: failed\r\n--b--\r\n",
       std::nullopt, ReportKind::kDeliveryStatus},
      {"a DSN forwarded by a person stays the person's",
       "From: x@example.test\r\nSubject: Fwd: look\r\nContent-Type: multipart/mixed; "
       "boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee this\r\n--b\r\n"
       "Content-Type: message/rfc822\r\n\r\nFrom: MAILER-DAEMON@example.test\r\n"
       "Content-Type: multipart/report; report-type=delivery-status; boundary=c\r\n\r\n--c\r\n"
       "Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@example.test\r\n"
       "Action: failed\r\n--c--\r\n--b--\r\n",
       std::nullopt, ReportKind::kOther},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Report> r =
        c.envelope ? ParseReport(c.message, *c.envelope) : ParseReport(c.message);
    ASSERT_TRUE(r.ok()) << c.name << ": " << r.status();
    EXPECT_EQ(ReportKindName(r->kind), ReportKindName(c.want)) << c.name << "\n" << Describe(*r);
  }
}

TEST(KindTest, DsnPartOutsideReportIsNoted) {
  absl::StatusOr<Report> r = ParseReport(
      "From: x@example.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
      "Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@example.test\r\n"
      "Action: failed\r\n--b--\r\n");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->recipients.size(), 1u);
  EXPECT_EQ(r->recipients[0].final_recipient, "a@example.test");
  EXPECT_THAT(r->notes, ::testing::Contains("delivery-status part outside a multipart/report"));
}

TEST(KindTest, MboxFromLineSkipped) {
  std::string m = "From MAILER-DAEMON Sun Dec  6 10:00:05 2026\n" + ReadCorpus("qmail.eml");
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, ReportKind::kBounceText);
  EXPECT_EQ(r->recipients.size(), 2u);
}

// ---------------------------------------------------------------------------
// Names

TEST(NamesTest, KindsAndActions) {
  EXPECT_EQ(ReportKindName(ReportKind::kDeliveryStatus), "delivery_status");
  EXPECT_EQ(ReportKindName(ReportKind::kFeedback), "feedback");
  EXPECT_EQ(ReportKindName(ReportKind::kBounceText), "bounce_text");
  EXPECT_EQ(ReportKindName(ReportKind::kAutoReply), "auto_reply");
  EXPECT_EQ(ReportKindName(ReportKind::kOther), "other");
  EXPECT_EQ(DsnActionName(DsnAction::kFailed), "failed");
  EXPECT_EQ(DsnActionName(DsnAction::kDelayed), "delayed");
  EXPECT_EQ(DsnActionName(DsnAction::kDelivered), "delivered");
  EXPECT_EQ(DsnActionName(DsnAction::kRelayed), "relayed");
  EXPECT_EQ(DsnActionName(DsnAction::kExpanded), "expanded");
  EXPECT_EQ(DsnActionName(DsnAction::kUnknown), "unknown");
}

// ---------------------------------------------------------------------------
// Hostile input

std::string DsnHead(const std::string& boundary = "b") {
  return "From: MAILER-DAEMON@mx.example.test\r\n"
         "Subject: Undelivered Mail Returned to Sender\r\n"
         "MIME-Version: 1.0\r\n"
         "Content-Type: multipart/report; report-type=delivery-status; boundary=\"" +
         boundary + "\"\r\n\r\n";
}

TEST(HostileTest, NotAMessage) {
  for (std::string input : {std::string(), std::string("\r\n"), std::string("\x01\x02 junk\r\n"),
                            std::string(100, '\0')}) {
    absl::StatusOr<Report> r = ParseReport(input);
    ASSERT_FALSE(r.ok()) << Describe(*r);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a message"));
  }
}

TEST(HostileTest, FiftyMegabytesRefusedBySize) {
  std::string big = "From: a@b.test\r\nSubject: big\r\n\r\n";
  big.append(50u << 20, 'x');
  absl::StatusOr<Report> r = ParseReport(big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("over the limit of 10485760"));
  // Exactly at the limit is read.
  ParseLimits small;
  small.max_message_bytes = 1000;
  std::string at_limit = "From: a@b.test\r\n\r\n";
  at_limit.append(1000 - at_limit.size(), 'y');
  EXPECT_TRUE(ParseReport(at_limit, small).ok());
  at_limit += "y";
  EXPECT_FALSE(ParseReport(at_limit, small).ok());
}

TEST(HostileTest, TenThousandRecipients) {
  std::string m = DsnHead() +
                  "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
                  "Reporting-MTA: dns; mx.example.test\r\n\r\n";
  for (int i = 0; i < 10000; ++i) {
    m += "Final-Recipient: rfc822; user" + std::to_string(i) +
         "@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n";
  }
  m += "--b--\r\n";
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, ReportKind::kDeliveryStatus);
  ASSERT_EQ(r->recipients.size(), 1000u);
  EXPECT_EQ(r->recipients[0].final_recipient, "user0@example.test");
  EXPECT_EQ(r->recipients[999].final_recipient, "user999@example.test");
  EXPECT_TRUE(r->truncated);
  bool noted = false;
  for (const std::string& n : r->notes) noted |= n.find("recipients after the 1000th") == 0;
  EXPECT_TRUE(noted) << Describe(*r);
}

TEST(HostileTest, RecipientBoundIsTheOptions) {
  std::string m = DsnHead() +
                  "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
                  "Reporting-MTA: dns; mx.example.test\r\n\r\n";
  for (int i = 0; i < 5; ++i) {
    m += "Final-Recipient: rfc822; u" + std::to_string(i) +
         "@example.test\r\nAction: failed\r\n\r\n";
  }
  ParseLimits limits;
  limits.max_recipients = 3;
  absl::StatusOr<Report> r = ParseReport(m, limits);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->recipients.size(), 3u);
  EXPECT_TRUE(r->truncated);
  EXPECT_THAT(r->notes, ::testing::Contains("recipients after the 3rd dropped (2 more)"));
}

TEST(HostileTest, DeepNestingIsBounded) {
  for (bool messages : {false, true}) {
    std::string m = "From: MAILER-DAEMON@mx.example.test\r\nSubject: deep\r\n";
    for (int i = 0; i < 100000 && m.size() < (9u << 20); ++i) {
      if (messages) {
        m += "Content-Type: message/rfc822\r\n\r\nSubject: level\r\n";
      } else {
        m += "Content-Type: multipart/mixed; boundary=\"b" + std::to_string(i) + "\"\r\n\r\n--b" +
             std::to_string(i) + "\r\n";
      }
    }
    m += "Content-Type: text/plain\r\n\r\nhello\r\n";
    absl::StatusOr<Report> r = ParseReport(m);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->truncated) << Describe(*r);
  }
}

TEST(HostileTest, ThousandsOfParts) {
  std::string m = DsnHead();
  for (int i = 0; i < 20000; ++i) m += "--b\r\nContent-Type: text/plain\r\n\r\npart\r\n";
  m += "--b--\r\n";
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->truncated);
  // The DSN part after the bound is never seen; the report still reads as a bounce.
  EXPECT_EQ(r->kind, ReportKind::kBounceText);
}

TEST(HostileTest, EmptyPartsPastTheBoundAreNotBuilt) {
  // 1.4 million empty parts would make GMime build ~2 GB of objects; the pre-scan
  // cuts the message after 10 * max_parts boundary lines.
  std::string m = DsnHead();
  while (m.size() < (9u << 20)) m += "--b\r\n\r\n";
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->truncated);
  EXPECT_THAT(r->notes.front(), HasSubstr("more than 10 * max_parts"));
}

TEST(HostileTest, VeryLongHeaderLines) {
  // One 8 MB subject line, then one folded over a million lines: both cut, not parsed.
  for (std::string piece : {std::string("xxxxxxx "), std::string("\r\n xxxxx")}) {
    std::string m = "From: MAILER-DAEMON@mx.example.test\r\nSubject: ";
    while (m.size() < (8u << 20)) m += piece;
    m += "\r\n\r\nbody\r\n";
    absl::StatusOr<Report> r = ParseReport(m);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->truncated);
    EXPECT_EQ(r->subject, "");
    EXPECT_THAT(r->notes.front(), HasSubstr("header field longer than"));
  }
  // A long but acceptable Diagnostic-Code is kept, cut to max_field_bytes.
  std::string m = DsnHead() +
                  "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
                  "Reporting-MTA: dns; mx.example.test\r\n\r\n"
                  "Final-Recipient: rfc822; a@example.test\r\nAction: failed\r\n"
                  "Diagnostic-Code: smtp; 550 " +
                  std::string(10000, 'z') + "\r\n\r\n--b--\r\n";
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->recipients.size(), 1u);
  EXPECT_EQ(r->recipients[0].diagnostic_code.size(), 2048u);
  EXPECT_TRUE(r->truncated);
}

TEST(HostileTest, ManyHeaderFields) {
  std::string m = "From: a@example.test\r\n";
  while (m.size() < (9u << 20)) m += "X-A: b\r\n";
  m += "\r\nbody\r\n";
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->truncated);
  EXPECT_THAT(r->notes.front(), HasSubstr("max_header_fields 20000"));
}

TEST(HostileTest, MalformedMime) {
  std::vector<std::string> inputs = {
      // Missing boundary parameter, and boundaries never closed.
      DsnHead("") + "--\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n",
      DsnHead() +
          "--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; "
          "a@example.test\r\nAction: failed\r\n",
      // Bad base64.
      DsnHead() +
          "--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: "
          "base64\r\n\r\n!!!!****====\x01\x02\r\n--b--\r\n",
      // NULs and 8-bit junk everywhere.
      std::string(
          "From: MAILER-DAEMON@x.test\r\nSubject: fail\0ure \xff\xfe\r\n\r\n\0\0<a@b.test>:\r\n"
          "550 5.1.1 \x80\x81 no\r\n",
          80),
      DsnHead() +
          "--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; "
          "a\0b@example.test\r\nDiagnostic-Code: smtp; 550 \x1b[31mred\xc3\r\n--b--\r\n",
      // Headers only, no body, no final CRLF.
      "From: a@b.test",
      "Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n--x\r\n--x--",
  };
  for (const std::string& in : inputs) {
    absl::StatusOr<Report> r = ParseReport(in);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    // Every string printable UTF-8 (text may keep \n and \t).
    auto clean = [](const std::string& s, bool text) {
      for (unsigned char c : s) {
        if (c < 0x20 && !(text && (c == '\n' || c == '\t'))) return false;
        if (c == 0x7f) return false;
      }
      return true;
    };
    EXPECT_TRUE(clean(r->subject, false));
    EXPECT_TRUE(clean(r->text, true));
    for (const DsnRecipient& d : r->recipients) {
      EXPECT_TRUE(clean(d.final_recipient, false));
      EXPECT_TRUE(clean(d.diagnostic_code, false)) << d.diagnostic_code;
    }
  }
}

TEST(HostileTest, ManyTraces) {
  std::string m = DsnHead() + "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n";
  for (int i = 0; i < 100; ++i) m += "Volley-Trace: t" + std::to_string(i) + "\r\n";
  m += "\r\n--b--\r\n";
  absl::StatusOr<Report> r = ParseReport(m);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->original.traces.size(), kMaxTraces);
  EXPECT_TRUE(r->truncated);
}

TEST(ThreadsTest, ParallelCallsAgree) {
  std::string m = ReadCorpus("postfix_failed.eml");
  std::string want = Describe(*ParseReport(m));
  std::vector<std::thread> threads;
  std::vector<std::string> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) got[t] = Describe(*ParseReport(m));
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& g : got) EXPECT_EQ(g, want);
}

}  // namespace
}  // namespace volley::feedback
